"""Delivery to billing.customers on SQLite, PostgreSQL and MariaDB: idempotent upserts and the watermark."""

from dataclasses import replace

import pandas as pd
import pytest
import sqlalchemy as sa
from interlink.connectors.sql import COPY_THRESHOLD, WRITE_BATCH, create_engine, read_watermark, upsert
from interlink.flows.crm_to_billing import PIPELINE
from sqlalchemy import event
from sqlalchemy.engine import Engine

BILLING_CUSTOMERS = PIPELINE.target
from interlink.tasks.deliver import deliver, tracked_table

from interlink.ledger import Counts

INTEGRATION = "crm_to_billing"
COLUMNS = [c.name for c in BILLING_CUSTOMERS.table.columns if c.name != "synced_at"]


def customers(n: int = 3, updated: str = "2024-03-01T10:00:00.123456Z", **columns) -> pd.DataFrame:
    """`n` rows shaped like the transform + enrich output; keyword arguments override whole columns."""
    frame = pd.DataFrame(
        {
            "crm_id": [f"c{i}" for i in range(n)],
            "name": [f"Customer {i}" for i in range(n)],
            "email": [f"c{i}@example.com" for i in range(n)],
            "phone": ["+49301234567"] * n,
            "country": ["DE"] * n,
            "currency": ["EUR"] * n,
            "tax_rate": [0.19] * n,
            "crm_updated_at": pd.to_datetime([updated] * n, utc=True),
        }
    )
    for name, values in columns.items():
        frame[name] = values
    return frame


def run(url: str, rows: pd.DataFrame, watermark: str | None = "2024-03-01T10:00:00Z") -> Counts:
    return deliver(url, BILLING_CUSTOMERS, rows, INTEGRATION, watermark, None).counts


def table_rows(url: str) -> list[tuple]:
    engine = create_engine(url)
    table = BILLING_CUSTOMERS.table
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.select(*(table.c[n] for n in COLUMNS)).order_by(table.c.crm_id))]
    finally:
        engine.dispose()


def by_id(url: str) -> dict[str, dict]:
    return {r[0]: dict(zip(COLUMNS, r)) for r in table_rows(url)}


def watermark_of(url: str) -> str | None:
    engine = create_engine(url)
    try:
        return read_watermark(engine, INTEGRATION)
    finally:
        engine.dispose()


def test_first_delivery_inserts_every_row(billing_url):
    counts = run(billing_url, customers(3))
    assert counts == Counts(rows_inserted=3)
    stored = by_id(billing_url)
    assert sorted(stored) == ["c0", "c1", "c2"]
    assert stored["c1"]["name"] == "Customer 1"
    assert stored["c1"]["email"] == "c1@example.com"
    assert stored["c1"]["currency"] == "EUR"


def test_stored_times_are_naive_utc_with_microseconds(billing_url):
    run(billing_url, customers(1, updated="2024-03-01T12:30:00.123456+02:00"))
    assert by_id(billing_url)["c0"]["crm_updated_at"] == pd.Timestamp("2024-03-01T10:30:00.123456").to_pydatetime()


def test_repeating_a_delivery_changes_nothing(billing_url):
    run(billing_url, customers(3))
    before = table_rows(billing_url)
    counts = run(billing_url, customers(3))
    assert counts == Counts(rows_unchanged=3)
    assert table_rows(billing_url) == before


def test_a_changed_value_updates_that_row_only(billing_url):
    run(billing_url, customers(3))
    changed = customers(3, updated="2024-03-02T00:00:00Z")
    changed.loc[1, "email"] = "new@example.com"
    counts = run(billing_url, changed)
    assert counts == Counts(rows_updated=1, rows_unchanged=2)
    stored = by_id(billing_url)
    assert stored["c1"]["email"] == "new@example.com"
    assert stored["c1"]["crm_updated_at"] == pd.Timestamp("2024-03-02").to_pydatetime()
    assert stored["c0"]["email"] == "c0@example.com"


def test_a_new_row_is_inserted_next_to_existing_ones(billing_url):
    run(billing_url, customers(2))
    counts = run(billing_url, customers(3))
    assert counts == Counts(rows_inserted=1, rows_unchanged=2)
    assert sorted(by_id(billing_url)) == ["c0", "c1", "c2"]


def test_an_older_version_does_not_overwrite_a_newer_one(billing_url):
    run(billing_url, customers(2, updated="2024-03-05T00:00:00Z"))
    before = table_rows(billing_url)
    older = customers(2, updated="2024-03-01T00:00:00Z", name=["Old 0", "Old 1"])
    counts = run(billing_url, older)
    assert counts.rows_updated == 0 and counts.rows_inserted == 0
    assert table_rows(billing_url) == before


def test_an_older_version_does_not_overwrite_a_newer_unchanged_one(billing_url):
    run(billing_url, customers(1, updated="2024-03-01T00:00:00Z"))
    run(billing_url, customers(1, updated="2024-03-09T00:00:00Z"))  # same data, newer version
    counts = run(billing_url, customers(1, updated="2024-03-05T00:00:00Z", name=["Stale"]))
    assert by_id(billing_url)["c0"]["name"] == "Customer 0"
    assert counts.rows_updated == 0


def test_missing_values_are_stored_as_null(billing_url):
    rows = customers(2, currency=pd.array(["EUR", None], dtype="string"), tax_rate=[0.19, float("nan")])
    run(billing_url, rows)
    stored = by_id(billing_url)
    assert stored["c1"]["currency"] is None
    assert stored["c1"]["tax_rate"] is None
    assert stored["c0"]["currency"] == "EUR"


def test_text_and_tax_rates_round_trip(billing_url):
    run(billing_url, customers(2, name=["Jürgen Müller", "José López"], tax_rate=[0.19, 0.081]))
    stored = by_id(billing_url)
    assert (stored["c0"]["name"], stored["c0"]["tax_rate"]) == ("Jürgen Müller", 0.19)
    assert (stored["c1"]["name"], stored["c1"]["tax_rate"]) == ("José López", 0.081)


def test_the_watermark_is_written_with_the_rows(billing_url):
    assert watermark_of(billing_url) is None
    run(billing_url, customers(2), watermark="2024-03-01T10:00:00Z")
    assert watermark_of(billing_url) == "2024-03-01T10:00:00Z"
    run(billing_url, customers(3), watermark="2024-03-02T10:00:00Z")
    assert watermark_of(billing_url) == "2024-03-02T10:00:00Z"


def test_no_watermark_leaves_the_committed_one(billing_url):
    run(billing_url, customers(2), watermark="2024-03-01T10:00:00Z")
    counts = run(billing_url, customers(3), watermark=None)
    assert counts.rows_inserted == 1
    assert watermark_of(billing_url) == "2024-03-01T10:00:00Z"


def test_an_empty_batch_still_moves_the_watermark(billing_url):
    counts = run(billing_url, customers(0), watermark="2024-03-01T10:00:00Z")
    assert counts == Counts()
    assert watermark_of(billing_url) == "2024-03-01T10:00:00Z"
    assert table_rows(billing_url) == []


@pytest.mark.parametrize("n", [WRITE_BATCH * 2 + 500, COPY_THRESHOLD + 500])  # the second COPYs on PostgreSQL
def test_more_rows_than_one_write_batch(billing_url, n):
    counts = run(billing_url, customers(n))
    assert counts == Counts(rows_inserted=n)
    stored = table_rows(billing_url)
    assert len(stored) == n
    assert {r[0] for r in stored} == {f"c{i}" for i in range(n)}
    assert run(billing_url, customers(n)) == Counts(rows_unchanged=n)


# interlink.connectors.sql.upsert on its own

SCRATCH = sa.Table(
    "interlink_upsert_test",
    sa.MetaData(),
    sa.Column("k", sa.String(20), primary_key=True),
    sa.Column("v", sa.String(20)),
    sa.Column("n", sa.Integer),
)


@pytest.fixture
def scratch(billing_url):
    engine = create_engine(billing_url)
    SCRATCH.drop(engine, checkfirst=True)
    SCRATCH.create(engine)
    yield engine
    SCRATCH.drop(engine, checkfirst=True)
    engine.dispose()


def scratch_rows(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(SCRATCH).order_by(SCRATCH.c.k))]


def test_upsert_twice_gives_the_same_rows(scratch):
    rows = [{"k": "a", "v": "x", "n": 1}, {"k": "b", "v": None, "n": 2}]
    with scratch.begin() as conn:
        upsert(conn, SCRATCH, rows, ["k"])
    first = scratch_rows(scratch)
    with scratch.begin() as conn:
        upsert(conn, SCRATCH, rows, ["k"])
    assert scratch_rows(scratch) == first == [("a", "x", 1), ("b", None, 2)]


def test_upsert_updates_existing_keys_and_spares_kept_columns(scratch):
    with scratch.begin() as conn:
        upsert(conn, SCRATCH, [{"k": "a", "v": "x", "n": 1}], ["k"])
    with scratch.begin() as conn:
        upsert(conn, SCRATCH, [{"k": "a", "v": "y", "n": 9}, {"k": "b", "v": "z", "n": 2}], ["k"], keep=["n"])
    assert scratch_rows(scratch) == [("a", "y", 1), ("b", "z", 2)]


@pytest.mark.parametrize("billing_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("n", [3, COPY_THRESHOLD + 10])  # INSERT, then COPY
def test_a_key_another_writer_adds_after_the_plan_is_written_in_parts_and_the_watermark_left_to_the_caller(billing_url, n):
    run(billing_url, customers(0))  # the tables exist
    intruder = create_engine(billing_url)
    intruded = []

    def after_plan(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT CUSTOMERS.CRM_ID") and not intruded:
            intruded.append(True)
            with intruder.begin() as other:
                other.execute(sa.text(
                    "INSERT INTO customers (crm_id, name, crm_updated_at, row_hash, synced_at)"
                    " VALUES ('c1', 'Intruder', '2020-01-01', 'x', now())"
                ))

    event.listen(Engine, "after_cursor_execute", after_plan)
    try:
        delivery = deliver(billing_url, BILLING_CUSTOMERS, customers(n), INTEGRATION, "2024-03-02T00:00:00Z", None)
    finally:
        event.remove(Engine, "after_cursor_execute", after_plan)
        intruder.dispose()
    assert intruded and delivery.failures.empty
    assert delivery.counts == Counts(rows_inserted=n - 1, rows_updated=1)  # the parts saw the intruder's row
    assert not delivery.committed and watermark_of(billing_url) == "2024-03-01T10:00:00Z"
    assert len(table_rows(billing_url)) == n and by_id(billing_url)["c1"]["name"] == "Customer 1"


# A target without an update-time column, and update times that are missing

NO_TIME = replace(BILLING_CUSTOMERS, table=tracked_table(
    "customers", *(sa.Column(c.name, c.type, primary_key=c.primary_key) for c in BILLING_CUSTOMERS.table.columns
                   if c.name not in ("crm_updated_at", "row_hash", "synced_at"))
), updated=None)


def test_without_an_update_time_column_the_hash_alone_decides(billing_url):
    assert deliver(billing_url, NO_TIME, customers(3), INTEGRATION, None, None).counts == Counts(rows_inserted=3)
    assert deliver(billing_url, NO_TIME, customers(3), INTEGRATION, None, None).counts == Counts(rows_unchanged=3)
    changed = customers(4, updated="2020-01-01T00:00:00Z")  # any time, even an older one: there is none to compare
    changed.loc[1, "name"] = "Renamed"
    assert deliver(billing_url, NO_TIME, changed, INTEGRATION, None, None).counts == Counts(rows_inserted=1, rows_updated=1, rows_unchanged=2)
    engine = create_engine(billing_url)
    with engine.connect() as conn:
        names = dict(conn.execute(sa.select(NO_TIME.table.c.crm_id, NO_TIME.table.c.name)).all())
    engine.dispose()
    assert names == {"c0": "Customer 0", "c1": "Renamed", "c2": "Customer 2", "c3": "Customer 3"}


@pytest.mark.parametrize("missing", ["incoming", "stored"])
def test_a_changed_row_with_a_missing_update_time_is_still_delivered(billing_url, missing):
    first = customers(2, crm_updated_at=pd.Series([pd.NaT] * 2, dtype="datetime64[ns, UTC]")) if missing == "stored" else customers(2)
    run(billing_url, first)
    changed = customers(2, name=["Customer 0", "Renamed"])
    if missing == "incoming":
        changed["crm_updated_at"] = pd.Series([pd.NaT] * 2, dtype="datetime64[ns, UTC]")
    assert run(billing_url, changed) == Counts(rows_updated=1, rows_unchanged=1)
    assert by_id(billing_url)["c1"]["name"] == "Renamed"
    assert run(billing_url, changed) == Counts(rows_unchanged=2)
