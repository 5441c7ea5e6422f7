"""Nothing lost, nothing stuck: one bad record of each kind among good ones, served by json-server (a REST
server we did not write), delivered to PostgreSQL and MariaDB; and sources that do not keep to cursor order."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa
from interlink.connectors.sql import create_engine, read_watermark
from interlink.flows.crm_to_billing import PIPELINE

from interlink.deadletter import DeadLetters
from interlink.ledger import Ledger
from interlink.settings import Settings
from tests.json_server import json_server

NAME = PIPELINE.name
BASE = datetime(2026, 3, 1, tzinfo=UTC)
COUNTRIES = [
    {"id": "DE", "currency": "EUR", "tax_rate": 0.19},
    {"id": "US", "currency": "USD", "tax_rate": 0.0},
    {"id": "XX", "currency": "XXX", "tax_rate": "12abc"},  # an enrichment answer that is not a number
]


def at(minutes: float) -> str:
    return (BASE + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def customer(i: int, **fields) -> dict:
    return {
        "id": f"c{i:04d}", "name": f"Customer {i}", "email": f"c{i}@example.com", "phone": "+4930123456",
        "country": "DE", "updated_at": at(i), **fields,
    }


GOOD = [customer(i) for i in range(200)]
FUTURE, LONG, NUL, OBJECT, MISSING, NOT_A_NUMBER, SURROGATE = BAD = [
    customer(900, updated_at="2200-01-01T00:00:00Z"),
    customer(901, name="x" * 250),
    customer(902, name="Ada\x00Lovelace"),
    customer(903, name={"first": "A"}),
    {k: v for k, v in customer(904).items() if k != "email"},
    customer(905, country="XX"),
    customer(906, name="Ada \ud800 Lovelace"),  # json-server sends it as the escape "\ud800", which orjson refuses
]
FIELD = {  # what each one's dead letter must name, and the stage it failed at
    FUTURE["id"]: ("updated_at", "ingest"), LONG["id"]: ("name", "deliver"), NUL["id"]: ("name", "deliver"),
    OBJECT["id"]: ("name", "ingest"), MISSING["id"]: ("email", "check"), NOT_A_NUMBER["id"]: ("tax_rate", "enrich"),
    SURROGATE["id"]: ("name", "ingest"),  # a text column (Arrow) cannot hold it, so it never becomes a row
}


def crm_source(sorted_: bool = True, **params):
    """The CRM source read from json-server: `updated_at_gte` filters, `_sort` orders, Link headers page."""
    return replace(
        PIPELINE.source,
        since_param="updated_at_gte",
        paginator={"type": "link_header", "page_size_param": "_limit", "page_size": 50},
        records_path=None,
        params={"_page": 1, **(params or {"_sort": "updated_at,id", "_order": "asc,asc"})},
        sorted=sorted_,
    )


@pytest.fixture
def crm(tmp_path: Path, billing_url: str, monkeypatch: pytest.MonkeyPatch):
    """json-server as the CRM and the finance API; yields a client to change its records."""
    records = GOOD[:100] + BAD + GOOD[100:]
    with json_server({"customers": records, "countries": COUNTRIES}, tmp_path) as url:
        monkeypatch.setenv("INTERLINK_CRM__BASE_URL", url)
        monkeypatch.setenv("INTERLINK_FINANCE__BASE_URL", url)
        with httpx.Client(base_url=url) as client:
            yield client


def delivered(url: str) -> pd.DataFrame:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = pd.read_sql(sa.text("SELECT crm_id, name, tax_rate, crm_updated_at FROM customers ORDER BY crm_id"), conn)
    rows.attrs["watermark"] = read_watermark(engine, NAME)
    engine.dispose()
    return rows.set_index("crm_id")


def open_letters() -> dict[str, dict]:
    return {e["record_key"]: e for e in DeadLetters(Settings().state_db).entries(NAME, "open")}


def last_run() -> dict:
    return Ledger(Settings().state_db).runs(NAME, limit=1)[0]


def adds_up(run: dict) -> bool:
    parts = ("rows_inserted", "rows_updated", "rows_unchanged", "rows_quarantined", "rows_superseded")
    assert run["rows_read"] == sum(run[p] for p in parts), {p: run[p] for p in ("rows_read", *parts)}
    return True


@pytest.mark.parametrize("billing_url", ["postgresql", "mariadb"], indirect=True)
def test_each_bad_record_is_a_dead_letter_naming_its_field_and_the_rest_is_delivered(crm, billing_url):
    pipeline = replace(PIPELINE, source=crm_source())
    state = pipeline.sync(return_state=True)

    assert state.is_completed() and state.name == "Quarantined"
    rows = delivered(billing_url)
    assert set(rows.index) == {r["id"] for r in GOOD}
    letters = open_letters()
    assert set(letters) == set(FIELD)
    for record in BAD:
        letter = letters[record["id"]]
        field, stage = FIELD[record["id"]]
        assert field in letter["reason"] and letter["stage"] == stage, letter
        kept = {k: v for k, v in letter["payload"][0].items() if v is not None}
        assert letter["payload"][1:] == [] and kept == record  # as it came, NUL byte and all, ready to replay
    assert rows.attrs["watermark"] == NOT_A_NUMBER["updated_at"]  # the newest time of a record that became a row
    run = last_run()
    assert run["state"] == "QUARANTINED" and run["rows_read"] == 207 and run["rows_quarantined"] == 7 and adds_up(run)

    # Later changes still arrive: a good record updated, the long name fixed, the finance API corrected.
    crm.patch(f"/customers/{GOOD[7]['id']}", json={"name": "Renamed", "updated_at": at(1000)}).raise_for_status()
    crm.patch(f"/customers/{LONG['id']}", json={"name": "Short", "updated_at": at(1001)}).raise_for_status()
    pipeline.sync()
    rows = delivered(billing_url)
    assert rows.at[GOOD[7]["id"], "name"] == "Renamed" and rows.at[LONG["id"], "name"] == "Short"
    assert rows.attrs["watermark"] == at(1001)
    assert LONG["id"] not in open_letters()  # resolved by the sync that delivered it
    run = last_run()
    assert run["rows_updated"] == 1 and run["rows_inserted"] == 1 and adds_up(run)

    crm.patch("/countries/XX", json={"tax_rate": 0.2}).raise_for_status()
    pipeline.replay()
    assert delivered(billing_url).at[NOT_A_NUMBER["id"], "tax_rate"] == pytest.approx(0.2)
    assert set(open_letters()) == {r["id"] for r in (FUTURE, NUL, OBJECT, MISSING, SURROGATE)}
    assert adds_up(last_run())


class FailingOnce:
    """The real target, whose third delivery fails as if its database went away mid-run."""

    def __init__(self, target, fail_at: int = 3):
        self.target, self.fail_at, self.deliveries = target, fail_at, 0

    def __getattr__(self, name):
        return getattr(self.target, name)

    def deliver(self, settings, rows, integration, watermark, sensitive=()):
        self.deliveries += 1
        if self.deliveries == self.fail_at:
            raise ConnectionError("billing went away")
        return self.target.deliver(settings, rows, integration, watermark, sensitive)


class HeldUntilChecked:
    """The real target, whose first delivery waits until the flow has started checking the next batch."""

    def __init__(self, target, checking: threading.Event):
        self.target, self.checking, self.deliveries = target, checking, 0

    def __getattr__(self, name):
        return getattr(self.target, name)

    def deliver(self, settings, rows, integration, watermark, sensitive=()):
        self.deliveries += 1
        if self.deliveries == 1:
            assert self.checking.wait(60), "the next batch was not checked while this one was being delivered"
        return self.target.deliver(settings, rows, integration, watermark, sensitive)


@pytest.mark.parametrize("billing_url", ["postgresql"], indirect=True)
def test_a_batch_delivered_while_the_next_fails_its_check_is_committed_and_ledgered(tmp_path, billing_url, monkeypatch):
    records = [customer(i, email="not-an-email" if 100 <= i < 200 else f"c{i}@example.com") for i in range(300)]
    checking, checks = threading.Event(), []

    def suite():  # the second batch's check starts while the first batch is still being delivered
        checks.append(1)
        if len(checks) == 2:
            checking.set()
        return PIPELINE.suite()

    with json_server({"customers": records, "countries": COUNTRIES}, tmp_path) as url:
        monkeypatch.setenv("INTERLINK_CRM__BASE_URL", url)
        monkeypatch.setenv("INTERLINK_FINANCE__BASE_URL", url)
        pipeline = replace(PIPELINE, source=crm_source(), suite=suite, target=HeldUntilChecked(PIPELINE.target, checking))
        state = pipeline.sync(chunk_size=100, policy="fail", return_state=True)

    assert state.is_failed() and "GateFailed" in state.message and "100 of 100 rows fail" in state.message
    rows = delivered(billing_url)
    assert set(rows.index) == {r["id"] for r in records[:100]}
    assert rows.attrs["watermark"] == records[99]["updated_at"]
    run = last_run()
    assert run["state"] == "FAILED" and run["rows_inserted"] == 100 and run["watermark"] == records[99]["updated_at"]


@pytest.fixture
def shuffled(tmp_path: Path, billing_url: str, monkeypatch: pytest.MonkeyPatch):
    """json-server serving 500 good customers in no particular order of `updated_at`."""
    records = [customer(i, updated_at=at((i * 7919) % 500)) for i in range(500)]
    with json_server({"customers": records, "countries": COUNTRIES}, tmp_path) as url:
        monkeypatch.setenv("INTERLINK_CRM__BASE_URL", url)
        monkeypatch.setenv("INTERLINK_FINANCE__BASE_URL", url)
        yield records


@pytest.mark.parametrize("billing_url", ["postgresql"], indirect=True)
def test_an_unsorted_source_loses_nothing_even_when_a_run_fails_midway(shuffled, billing_url):
    source = crm_source(sorted_=False, _sort="id")  # in id order: updated_at all over the place
    failing = replace(PIPELINE, source=source, target=FailingOnce(PIPELINE.target))
    state = failing.sync(chunk_size=100, return_state=True)

    assert state.is_failed() and "billing went away" in state.message
    assert len(delivered(billing_url)) == 200  # two batches in, none committed a watermark
    assert delivered(billing_url).attrs["watermark"] is None
    assert last_run()["state"] == "FAILED"

    replace(PIPELINE, source=source).sync(chunk_size=100)
    rows = delivered(billing_url)
    assert set(rows.index) == {r["id"] for r in shuffled}
    assert rows.attrs["watermark"] == max(r["updated_at"] for r in shuffled)  # moved once, at the end
    assert last_run()["rows_inserted"] == 300 and last_run()["rows_unchanged"] == 200


@pytest.mark.parametrize("billing_url", ["postgresql"], indirect=True)
def test_a_source_declared_sorted_that_is_not_fails_naming_the_setting_and_loses_nothing(shuffled, billing_url):
    source = crm_source(sorted_=True, _sort="id")
    state = replace(PIPELINE, source=source).sync(chunk_size=100, return_state=True)

    assert state.is_failed() and "sorted=False" in state.message and "not in updated_at order" in state.message
    assert len(delivered(billing_url)) == 100  # the batch out of order was delivered, its watermark not moved
    assert delivered(billing_url).attrs["watermark"] is None

    replace(PIPELINE, source=replace(source, sorted=False)).sync(chunk_size=100)
    assert set(delivered(billing_url).index) == {r["id"] for r in shuffled}


@pytest.fixture
def odd_times(tmp_path: Path, billing_url: str, monkeypatch: pytest.MonkeyPatch):
    """json-server serving good customers, one whose update time is written in ISO 8601's basic format (two hours
    ago) and one 20 hours ahead: json-server compares `updated_at_gte` as text."""
    now = datetime.now(UTC)
    records = [
        *GOOD,
        customer(950, updated_at=(now - timedelta(hours=2)).strftime("%Y%m%dT%H%M%SZ")),
        customer(951, updated_at=(now + timedelta(hours=20)).strftime("%Y-%m-%dT%H:%M:%SZ")),
    ]
    with json_server({"customers": records, "countries": COUNTRIES}, tmp_path) as url:
        monkeypatch.setenv("INTERLINK_CRM__BASE_URL", url)
        monkeypatch.setenv("INTERLINK_FINANCE__BASE_URL", url)
        with httpx.Client(base_url=url) as client:
            yield client


@pytest.mark.parametrize("billing_url", ["postgresql"], indirect=True)
def test_a_time_written_differently_or_ahead_of_now_never_becomes_the_watermark(odd_times, billing_url):
    pipeline = replace(PIPELINE, source=crm_source(sorted_=False))
    pipeline.sync()
    assert len(delivered(billing_url)) == 202  # both delivered: neither is a bad record
    assert delivered(billing_url).attrs["watermark"] == GOOD[-1]["updated_at"]  # not "2026…T…Z", not tomorrow

    changed = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    odd_times.patch(f"/customers/{GOOD[3]['id']}", json={"name": "Renamed", "updated_at": changed}).raise_for_status()
    pipeline.sync()
    assert delivered(billing_url).at[GOOD[3]["id"], "name"] == "Renamed"
    assert delivered(billing_url).attrs["watermark"] == changed
    assert last_run()["rows_updated"] == 1 and adds_up(last_run())
