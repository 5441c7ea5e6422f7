"""Reconcile: a damaged target is found out and repaired, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa
from interlink.connectors.sql import create_engine, read_watermark, utcnow
from interlink.demo_systems.crm_data import mutate
from interlink.flows.crm_to_billing import PIPELINE as crm_to_billing
from interlink.flows.orders_to_erp import PIPELINE as orders_to_erp
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from interlink.deadletter import DeadLetters
from interlink.ledger import Ledger
from interlink.settings import Settings

reconcile = crm_to_billing.reconcile
reconcile_orders = orders_to_erp.reconcile
NOTHING = {"missing": [], "extra": [], "changed": [], "repaired": 0, "not_written": [], "unrepaired": []}


def execute(url: str, *statements: str, **params) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement), params)
    engine.dispose()


def customers(url: str) -> pd.DataFrame:
    """The delivered customers by CRM id, without the sync time; the watermark in `attrs`."""
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = pd.read_sql(sa.text("SELECT * FROM customers ORDER BY crm_id"), conn)
    rows.attrs["watermark"] = read_watermark(engine, "crm_to_billing")
    engine.dispose()
    return rows.drop(columns="synced_at").set_index("crm_id")


def differences(result: dict) -> dict:
    return {k: result[k] for k in NOTHING}


def test_reconcile_finds_missing_changed_and_extra_rows_and_repairs_all_but_the_extra(systems, crm_db, billing_url):
    with systems():
        crm_to_billing.sync()
        clean = customers(billing_url)
        held_back = sorted(e["record_key"] for e in DeadLetters(Settings().state_db).entries("crm_to_billing", "open"))
        assert len(held_back) > 100 and not any(k.startswith("no-key:") for k in held_back)  # the demo CRM's bad records
        assert reconcile() == {
            "integration": "crm_to_billing", "source_rows": len(clean) + len(held_back), "dead_lettered": held_back,
            "target_rows": len(clean), **NOTHING,
        }  # the dead-lettered customers count in the source and in a column of their own, hidden nowhere

        deleted, edited, broken = clean.index[:3]
        execute(f"sqlite:///{crm_db}", "UPDATE customers SET email = NULL WHERE id = :broken", broken=broken)  # fails the check
        execute(
            billing_url,
            "DELETE FROM customers WHERE crm_id IN (:deleted, :broken)",
            "UPDATE customers SET email = 'someone.else@example.com' WHERE crm_id = :edited",
            "INSERT INTO customers (crm_id, name, email, row_hash, synced_at, crm_updated_at)"
            " VALUES ('ghost-1', 'Ghost', 'ghost@example.com', 'made-up', :now, :now)",
            deleted=deleted, edited=edited, broken=broken, now=utcnow(),
        )
        damaged = customers(billing_url)
        found = reconcile()
        assert differences(found) == {
            **NOTHING, "missing": sorted([deleted, broken]), "extra": ["ghost-1"], "changed": [edited],
            "unrepaired": sorted([deleted, edited, broken]),
        }
        assert found["source_rows"] == len(clean) + len(held_back) and found["target_rows"] == len(clean) - 1
        pd.testing.assert_frame_equal(customers(billing_url), damaged)

        state = reconcile(repair=True, return_state=True)
        repaired = customers(billing_url)
        after = reconcile()

    assert differences(state.result()) == {
        **NOTHING, "missing": sorted([deleted, broken]), "extra": ["ghost-1"], "changed": [edited], "repaired": 2,
        "not_written": [broken], "unrepaired": [broken],  # its email now fails the check: counted, not hidden
    }
    pd.testing.assert_frame_equal(repaired.drop(index="ghost-1"), clean.drop(index=broken))
    assert repaired.attrs["watermark"] == clean.attrs["watermark"]
    assert differences(after) == {**NOTHING, "missing": [broken], "extra": ["ghost-1"], "unrepaired": [broken]}

    run = Ledger(Settings().state_db).runs("crm_to_billing", limit=2)[1]
    assert (run["kind"], run["state"], run["rows_read"], run["rows_inserted"], run["rows_updated"]) == (
        "reconcile", "COMPLETED", len(clean) + len(held_back), 1, 1,
    )
    assert run["notes"] == f"{len(held_back)} dead-lettered keys not compared\n1 rows the repair could not write"
    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        )
    assert artifact.key == "crm-to-billing-reconcile"
    assert "| repaired | 2 |" in artifact.data and "| not_written | 1 |" in artifact.data and "| unrepaired | 1 |" in artifact.data
    assert f"| dead_lettered | {len(held_back)} |" in artifact.data
    assert f"`{deleted}`" in artifact.data and "`ghost-1`" in artifact.data


def test_a_window_compares_only_recent_rows_and_finds_source_changes_not_yet_synced(systems, crm_db, home, monkeypatch):
    url = f"sqlite:///{home / 'billing.db'}"
    monkeypatch.setenv("INTERLINK_BILLING__URL", url)
    with systems():
        crm_to_billing.sync()
        watermark = customers(url).attrs["watermark"]
        changed = mutate(crm_db, 5, seed=2)  # newer in the CRM, not yet synced

        found = reconcile(since=watermark)
        reconcile(since=watermark, repair=True)
        synced = crm_to_billing.sync()

    assert differences(found) == {**NOTHING, "changed": changed, "unrepaired": sorted(changed)}
    assert found["source_rows"] == found["target_rows"] == 5 + 1  # and the customer at the watermark
    assert customers(url).attrs["watermark"] == synced["watermark"]
    assert synced["rows_updated"] == 0  # the reconcile delivered them; the sync found them in place


def test_a_clean_erp_target_reports_nothing_and_a_lost_order_line_is_restored(storefront, erp_url):
    # amounts are DOUBLE on every dialect: MariaDB's FLOAT would keep 6 digits and every total would differ
    with storefront():
        orders_to_erp.sync()
        clean = reconcile_orders()
        execute(erp_url, "DELETE FROM erp_order_lines WHERE order_id = (SELECT min(order_id) FROM erp_orders)")
        found = reconcile_orders(repair=True)
        after = reconcile_orders()

    assert differences(clean) == NOTHING and clean["target_rows"] > 1000 and len(clean["dead_lettered"]) > 100
    assert clean["source_rows"] == clean["target_rows"] + len(clean["dead_lettered"])  # the orders held back, counted
    assert len(found["changed"]) == 1 and found["repaired"] == 1 and found["unrepaired"] == []
    assert differences(after) == NOTHING
