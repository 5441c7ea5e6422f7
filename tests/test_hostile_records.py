"""A REST page holding records JSON does not allow, synced end to end: the good records reach the SQL target,
each bad one is a dead letter naming its field. Once the whole page failed every run ("the answer is not JSON")."""

from __future__ import annotations

from pathlib import Path

import great_expectations as gx
import great_expectations.expectations as gxe
import httpx
import pandas as pd
import pytest
import sqlalchemy as sa
from interlink.connectors.sql import create_engine
from interlink.data_checks.policy import Gate
from interlink.flows.pipeline import Pipeline
from interlink.tasks.deliver import SqlTarget, tracked_table
from interlink.tasks.ingest import RestSource
from prefect import task
from prefect.cache_policies import NO_CACHE

from interlink.deadletter import DeadLetters
from interlink.settings import Settings
from tests.test_rest import HOSTILE, served

NAME = "hostile_customers"
TARGET = SqlTarget(
    connection="billing",
    table=tracked_table("hostile_customers", sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String(100))),
    key="id",
)


@task(name="transform", cache_policy=NO_CACHE)
def to_customers(raw: pd.DataFrame) -> pd.DataFrame:
    return raw[["id", "name"]]


def suite() -> gx.ExpectationSuite:
    return gx.ExpectationSuite(name=NAME, expectations=[gxe.ExpectColumnValuesToNotBeNull(column="id")])


def test_a_hostile_page_delivers_its_good_records_and_dead_letters_each_bad_one_naming_its_field(home: Path, monkeypatch: pytest.MonkeyPatch):
    url = f"sqlite:///{home / 'billing.db'}"
    monkeypatch.setenv("INTERLINK_BILLING__URL", url)
    monkeypatch.setenv("INTERLINK_CRM__BASE_URL", "https://crm.test")
    served(monkeypatch, lambda request: httpx.Response(200, content=HOSTILE))
    source = RestSource("crm", "/customers", "updated_at", "since", paginator={"type": "cursor"}, records_path="data")
    pipeline = Pipeline(name=NAME, source=source, source_key="id", transform=to_customers, suite=suite, key="id", target=TARGET,
                        gate=Gate(policy="quarantine"))

    state = pipeline.sync(return_state=True)

    assert state.name == "Quarantined", state.message
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT id, name FROM hostile_customers ORDER BY id")).all() == [(1, "Ada"), (7, "Gu")]
    engine.dispose()
    letters = {letter["record_key"]: letter["reason"] for letter in DeadLetters(Settings.load().state_db).entries(NAME, "open")}
    assert set(letters) == {"2", "3", "4", "5", "6"}
    for key, field in {"2": "name", "3": "score", "4": "score", "5": "'name' twice", "6": "geo.lat"}.items():
        assert field in letters[key], letters[key]
