"""Against Datasette 0.65 (PyPI), a REST server we did not write: `/db/table.json?_shape=objects&_size=20` pages with
a `next` token for `_next=` and a `next_url` in the body and a `Link` header with rel="next", and states its total in
`filtered_table_rows_count`. Once a RestSource declared without a paginator read 20 of 59 records and exited 0;
now the read is complete, or the run fails with the watermark unmoved. `make tools` installs Datasette into the venv;
without it these tests skip, or fail under REQUIRE_SERVICES=1."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import httpx
import pandas as pd
import pytest
import sqlalchemy as sa
from interlink.connectors.errors import FatalError
from interlink.connectors.sql import create_engine
from interlink.data_checks.policy import Gate
from interlink.flows.pipeline import Pipeline
from interlink.tasks.deliver import SqlTarget, tracked_table
from interlink.tasks.ingest import RestSource, fetch_chunk
from prefect import task
from prefect.cache_policies import NO_CACHE

from interlink.settings import RestConnection, Settings
from tests.json_server import free_port

DATASETTE = Path(sys.executable).parent / "datasette"
TOTAL = 59
PAGE = {"_shape": "objects", "_size": 20}
FOLLOWS_NEXT = {"type": "cursor", "cursor_path": "next", "cursor_param": "_next"}


def updated(i: int) -> str:
    """Two customers to a minute (ids 2 and 3 share one, 4 and 5 the next …), so pages can end inside a minute."""
    return f"2026-01-01T{i // 2 // 60:02d}:{i // 2 % 60:02d}:00Z"


@pytest.fixture(scope="module")
def datasette(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Datasette serving crm.db, a `customers` table of 59 rows; its base URL."""
    if not DATASETTE.exists():
        message = f"Datasette is not installed at {DATASETTE}: run `make tools`"
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    folder = tmp_path_factory.mktemp("datasette")
    with sqlite3.connect(folder / "crm.db") as db:
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, updated_at TEXT)")
        db.executemany("INSERT INTO customers VALUES (?, ?, ?)", [(i, f"Customer {i}", updated(i)) for i in range(1, TOTAL + 1)])
    port = free_port()
    with (folder / "datasette.log").open("wb") as log:
        server = subprocess.Popen(
            [DATASETTE, "serve", str(folder / "crm.db"), "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=log
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:  # poll until it answers
            try:
                httpx.get(f"{url}/-/versions.json", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"Datasette did not answer on port {port}: {(folder / 'datasette.log').read_text()[-2000:]}")
                time.sleep(0.05)  # the polling interval, not a wait for an event
        yield url
    finally:
        server.kill()
        server.wait()


def source(**options: Any) -> RestSource:
    return RestSource("crm", "/crm/customers.json", "updated_at", "updated_at__gte", **{"records_path": "rows", "params": PAGE, **options})


def read(url: str, crm: RestSource) -> list[int]:
    """The ids of every record read, chunk by chunk as a run reads them (20 records a chunk: a page each)."""
    ids, position = [], None
    while True:
        chunk, position = fetch_chunk(crm, RestConnection(base_url=url), None, position, 20)
        ids += chunk.records["id"].tolist()
        if position is None:
            return ids


def test_datasette_pages_with_a_next_token_a_next_url_and_a_link_header_and_states_its_total(datasette):
    answer = httpx.get(f"{datasette}/crm/customers.json", params=PAGE)
    body = answer.json()
    assert len(body["rows"]) == 20 and body["next"] == "20" and body["filtered_table_rows_count"] == TOTAL
    assert "_next=20" in body["next_url"] and "_next=20" in answer.links["next"]["url"]


@pytest.mark.parametrize("paginator", [None, FOLLOWS_NEXT], ids=["undeclared", "declared"])
def test_every_record_is_read_whether_the_paginator_is_declared_or_found(datasette, paginator):
    crm = source(total_path="filtered_table_rows_count") if paginator is None else source(paginator=paginator)
    assert read(datasette, crm) == list(range(1, TOTAL + 1))


# A run end to end: Datasette → transform → checks → a SQLite table and its watermark

NAME = "datasette_customers"
TARGET = SqlTarget(
    connection="billing",
    table=tracked_table(
        "datasette_customers", sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String(100)),
        sa.Column("updated_at", sa.String(40)),
    ),
    key="id",
)


@task(name="transform", cache_policy=NO_CACHE)
def to_customers(raw: pd.DataFrame) -> pd.DataFrame:
    return raw[["id", "name", "updated_at"]]


def customers_suite() -> gx.ExpectationSuite:
    return gx.ExpectationSuite(name=NAME, expectations=[gxe.ExpectColumnValuesToNotBeNull(column="id")])


@pytest.fixture
def run(datasette: str, home: Path, monkeypatch: pytest.MonkeyPatch):
    """Runs a sync of the customers from Datasette with a given source; its final state, the ids delivered and the
    committed watermark."""
    url = f"sqlite:///{home / 'billing.db'}"
    monkeypatch.setenv("INTERLINK_BILLING__URL", url)
    monkeypatch.setenv("INTERLINK_CRM__BASE_URL", datasette)

    def sync(crm: RestSource) -> tuple[Any, list[int], str | None]:
        pipeline = Pipeline(
            name=NAME, source=crm, source_key="id", transform=to_customers, suite=customers_suite, key="id", target=TARGET,
            gate=Gate(policy="quarantine"),
        )
        state = pipeline.sync(return_state=True)
        engine = create_engine(url)
        with engine.connect() as conn:
            ids = conn.execute(sa.text("SELECT id FROM datasette_customers ORDER BY id")).scalars().all() if sa.inspect(conn).has_table(
                "datasette_customers") else []
        engine.dispose()
        return state, ids, TARGET.watermark(Settings.load(), NAME)

    return sync


@pytest.mark.parametrize("paginator", [None, FOLLOWS_NEXT], ids=["undeclared", "declared"])
def test_a_sync_from_datasette_delivers_59_of_59(run, paginator):
    crm = source(sorted=True) if paginator is None else source(paginator=paginator, sorted=True, total_path="filtered_table_rows_count")
    state, ids, watermark = run(crm)
    assert state.name == "Completed", state.message
    assert ids == list(range(1, TOTAL + 1))
    assert watermark == updated(TOTAL)


def test_a_paginator_that_does_not_follow_datasettes_next_fails_the_run_with_the_watermark_unmoved(run):
    state, ids, watermark = run(source(paginator={"type": "cursor"}))  # it looks for `next_cursor`, which Datasette never sends
    assert state.is_failed()
    message = str(state.message)
    assert 'sees no next page, but the answer has a Link header with rel="next"' in message
    assert 'declare the paginator that follows it on the RestSource, e.g. paginator={"type": "link_header", "page_size_param": None}' in message
    assert ids == [] and watermark is None  # not the first 20 of 59, as before


# Keyset pages by `updated_at`, but asks for the next page with `updated_at__gt`, exclusive: the customer that
# shares the last minute of a page is skipped. No answer links a page the paginator left out, so only the total says so.
EXCLUSIVE_KEYSET = {"type": "keyset", "key_field": "updated_at", "key_param": "updated_at__gt", "page_size": 20}
SORTED = {**PAGE, "_sort": "updated_at"}


def test_a_read_short_of_the_stated_total_fails_and_without_the_total_it_would_pass_unseen(datasette):
    crm = source(paginator=EXCLUSIVE_KEYSET, params=SORTED)
    assert read(datasette, crm) == [i for i in range(1, TOTAL + 1) if i != 21]  # customer 21 shares 20's minute
    with pytest.raises(FatalError) as raised:
        read(datasette, source(paginator=EXCLUSIVE_KEYSET, params=SORTED, total_path="filtered_table_rows_count"))
    assert str(raised.value).startswith(
        "crm /crm/customers.json: read 58 records, but the source states 59 (total_path 'filtered_table_rows_count'): 1 would go unread"
    )


def test_a_sync_short_of_the_stated_total_fails_with_nothing_delivered_and_the_watermark_unmoved(run):
    state, ids, watermark = run(source(paginator=EXCLUSIVE_KEYSET, params=SORTED, total_path="filtered_table_rows_count"))
    assert state.is_failed() and "read 58 records, but the source states 59" in str(state.message)
    assert ids == [] and watermark is None
