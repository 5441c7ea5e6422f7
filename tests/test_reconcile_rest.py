"""Reconcile a REST target by reading it back item by item, against json-server (a REST server we did not write):
missing, changed and dead-lettered keys counted, a repair's unwritten rows counted and named."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import great_expectations as gx
import great_expectations.expectations as gxe
import httpx
import pandas as pd
import pytest
from interlink.flows.pipeline import Pipeline
from interlink.tasks.ingest import FolderSource
from interlink.tasks.send import RestTarget
from prefect import task
from prefect.cache_policies import NO_CACHE

from interlink.deadletter import DeadLetters, Reject
from interlink.ledger import Ledger
from interlink.settings import Settings
from tests.json_server import json_server

NAME = "products_to_shop"
SOURCE = [{"id": f"p{i:02d}", "name": f"Product {i}", "stock": i * 10} for i in range(1, 13)]


@task(name="transform", cache_policy=NO_CACHE)
def to_products(raw: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"id": raw["id"], "name": raw["name"], "stock": pd.to_numeric(raw["stock"]).astype("int64")}, index=raw.index)


def products_suite() -> gx.ExpectationSuite:
    return gx.ExpectationSuite(
        name="products", expectations=[gxe.ExpectColumnValuesToNotBeNull(column="id"), gxe.ExpectColumnValuesToBeBetween(column="stock", min_value=0)],
    )


PIPELINE = Pipeline(
    name=NAME, source=FolderSource(connection="products_drop"), source_key="id", transform=to_products, suite=products_suite,
    key="id", target=RestTarget(connection="shop", path="/products/{id}", key="id", fields=("name", "stock")),
)


@pytest.fixture
def shop(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The source as a pending CSV file (p08's stock now negative: it fails the check); json-server holding the
    products as delivered, but p03 deleted, p05 and p07 edited, and p99 never delivered."""
    folder = home / "drop"
    folder.mkdir(parents=True)
    monkeypatch.setenv("INTERLINK_PRODUCTS_DROP__PATH", str(folder))
    source = pd.DataFrame(SOURCE)
    source.loc[source["id"] == "p08", "stock"] = -1
    source.to_csv(folder / "products.csv", index=False)
    held = {r["id"]: dict(r) for r in SOURCE if r["id"] != "p03"}
    held["p05"]["stock"], held["p07"]["name"] = 7, "edited"
    held["p99"] = {"id": "p99", "name": "Ghost", "stock": 1}
    with json_server({"products": list(held.values())}, tmp_path) as url:
        monkeypatch.setenv("INTERLINK_SHOP__BASE_URL", url)
        with httpx.Client(base_url=url) as client:
            yield client


def test_a_rest_target_is_read_back_by_key_and_a_repair_counts_what_it_could_not_write(shop):
    DeadLetters(Settings.load().state_db).put(NAME, [Reject("p07", "deliver", "held back", {}, [])], None)

    found = PIPELINE.reconcile()
    repair = PIPELINE.reconcile(repair=True)
    after = PIPELINE.reconcile()

    assert found == {
        "integration": NAME, "source_rows": 12, "dead_lettered": ["p07"], "target_rows": 11, "missing": ["p03"], "extra": [],
        "changed": ["p05", "p08"], "repaired": 0, "not_written": [], "unrepaired": ["p03", "p05", "p08"],
    }  # p99 is not found by key: reading back by key cannot see extra items
    assert repair == {**found, "repaired": 1, "not_written": ["p03", "p08"], "unrepaired": ["p03", "p08"]}
    # p08 fails the check; p03 is absent and PATCH cannot create it (json-server answers 404)
    assert after == {**found, "missing": ["p03"], "changed": ["p08"], "unrepaired": ["p03", "p08"]}
    assert shop.get("/products/p05").json() == {"id": "p05", "name": "Product 5", "stock": 50}
    assert shop.get("/products/p07").json()["name"] == "edited"  # dead-lettered: compared and repaired never
    run = Ledger(Settings().state_db).runs(NAME, limit=2)[1]
    assert (run["kind"], run["rows_read"], run["rows_updated"]) == ("reconcile", 12, 1)


def test_a_rest_target_path_that_answers_no_object_fails_naming_the_setting(shop):
    target = RestTarget(connection="shop", path="/products?id={id}", key="id", fields=("name", "stock"))  # a list, not an item
    state = replace(PIPELINE, target=target).reconcile(return_state=True)
    assert state.is_failed() and "answered no object" in state.message and "`path` on the RestTarget" in state.message
