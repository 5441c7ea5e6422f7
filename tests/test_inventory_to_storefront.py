"""inventory_to_storefront: ERP stock exports from a drop folder → storefront PATCHes, only what changed."""

from pathlib import Path

import pytest
from interlink.demo_systems.erp_files import stock_changes, write_stock_export
from interlink.demo_systems.storefront_data import product_stock
from interlink.flows.inventory_to_storefront import PIPELINE as inventory_to_storefront

from interlink.deadletter import DeadLetters
from interlink.settings import Settings


@pytest.fixture(autouse=True)
def stock_folder(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERLINK_ERP_STOCK__PATH", str(drop(home)))


def drop(home: Path) -> Path:
    return home / "drops" / "erp_stock"


def test_stock_levels_reach_the_storefront_and_only_changes_are_sent_again(storefront, storefront_db, home):
    stock = product_stock(storefront_db)
    export = stock_changes(stock, 40, seed=2)
    write_stock_export(drop(home), export)
    with storefront() as app:
        first = inventory_to_storefront.sync()
        assert product_stock(storefront_db) == export
        assert sum(app.state.patches_applied.values()) == len(stock)  # nothing was sent before: everything goes once

        nothing = inventory_to_storefront.sync()
        later = stock_changes(export, 5, seed=3)
        write_stock_export(drop(home), later)
        applied_before = sum(app.state.patches_applied.values())
        second = inventory_to_storefront.sync()

    assert first["rows_updated"] == len(stock) and first["rows_inserted"] == 0  # PATCH changes products, it creates none
    assert first["rows_quarantined"] == 0
    assert nothing["rows_read"] == 0
    assert second["rows_updated"] == 5 and second["rows_unchanged"] == len(stock) - 5
    assert sum(app.state.patches_applied.values()) - applied_before == 5
    assert product_stock(storefront_db) == later
    assert len(list((drop(home) / "archive").glob("*.csv"))) == 2 and not list(drop(home).glob("*.csv"))


def test_bad_rows_and_refused_skus_are_dead_lettered_and_the_rest_delivered(storefront, storefront_db, home):
    folder = drop(home)
    folder.mkdir(parents=True)
    (folder / "stock_bad.csv").write_text(
        "sku,warehouse,on_hand,exported_at\n"
        "SKU-00001,W1,5,2026-11-01T00:00:00Z\n"
        "SKU-00001,W2,7,2026-11-01T00:00:00Z\n"  # summed: 12
        "SKU-00002,W1,lots,2026-11-01T00:00:00Z\n"  # not a number
        "SKU-00003,W1,-4,2026-11-01T00:00:00Z\n"  # negative
        "SKU-99999,W1,3,2026-11-01T00:00:00Z\n"  # the storefront has no such product
    )
    with storefront():
        summary = inventory_to_storefront.sync()

    letters = {e["record_key"]: e for e in DeadLetters(Settings().state_db).entries("inventory_to_storefront", "open")}
    assert summary["rows_updated"] == 1 and summary["rows_inserted"] == 0 and summary["rows_quarantined"] == 3
    assert product_stock(storefront_db)["SKU-00001"] == 12
    assert letters["SKU-00002"]["stage"] == "check" and "whole number" in letters["SKU-00002"]["reason"]
    assert letters["SKU-00003"]["stage"] == "check" and "plausible" in letters["SKU-00003"]["reason"]
    assert letters["SKU-99999"]["stage"] == "deliver" and "answered 404" in letters["SKU-99999"]["reason"]
    assert letters["SKU-99999"]["payload"] == [
        {"sku": "SKU-99999", "warehouse": "W1", "on_hand": "3", "exported_at": "2026-11-01T00:00:00Z"}
    ]


def test_lines_that_hold_no_record_are_dead_lettered_and_the_folder_goes_on(storefront, storefront_db, home):
    folder = drop(home)
    folder.mkdir(parents=True)
    header = b"sku,warehouse,on_hand,exported_at\n"
    (folder / "stock_a.csv").write_bytes(
        header
        + b"SKU-00001,W1,5,2026-11-01T00:00:00Z\n"
        + b"SKU-00002,W1,6,2026-11-01T00:00:00Z,surplus\n"  # a field too many
        + b"SKU-00003,W\xfc,7,2026-11-01T00:00:00Z\n"  # not UTF-8
    )
    (folder / "stock_b.csv").write_bytes(b"")  # dropped empty
    (folder / "stock_c.csv").write_bytes(b"sku,sku\nSKU-00004,SKU-00004\n")  # a header that cannot name its rows
    (folder / "stock_d.csv").write_bytes(header + b"SKU-00005,W1,9,2026-11-01T00:00:00Z\n")
    with storefront():
        summary = inventory_to_storefront.sync()
        again = inventory_to_storefront.sync()

    letters = DeadLetters(Settings().state_db).entries("inventory_to_storefront", "open")
    reasons = sorted(e["reason"] for e in letters)
    assert summary["rows_updated"] == 2 and summary["rows_quarantined"] == 3 and again["rows_read"] == 0
    assert product_stock(storefront_db)["SKU-00001"] == 5 and product_stock(storefront_db)["SKU-00005"] == 9
    assert [r.split(":")[0] for r in reasons] == ["line 1", "line 3", "line 4"]
    assert "5 fields where the header has 4" in reasons[1] and "warehouse: bytes that are not UTF-8" in reasons[2]
    assert all(e["stage"] == "ingest" for e in letters) and not list(folder.glob("*.csv"))
    assert sorted(p.name for p in (folder / "archive").iterdir()) == ["stock_a.csv", "stock_b.csv", "stock_c.csv", "stock_d.csv"]
