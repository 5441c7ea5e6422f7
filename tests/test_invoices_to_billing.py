"""The invoices_to_billing flow, SQL → SQL, source and target on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from interlink.connectors.sql import Timestamp, create_engine, read_watermark, reflect
from interlink.demo_systems import erp_invoices
from interlink.flows.invoices_to_billing import PIPELINE
from interlink.tasks.deliver import tracked_table

from interlink.deadletter import DeadLetters
from interlink.settings import Settings
from tests.conftest import target_database

NAME = PIPELINE.name
CLEAN = [i for i in range(1, erp_invoices.INVOICES + 1) if i % erp_invoices.DIRTY_EVERY != erp_invoices.DIRTY_AT]
TYPED_SOURCE = sa.Table(  # the same invoices as a PostgreSQL or MariaDB ERP keeps them: typed columns
    "erp_invoices", sa.MetaData(),
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("customer_id", sa.String(64)),
    sa.Column("amount", sa.Numeric(14, 2)),
    sa.Column("currency", sa.String(8)),
    sa.Column("status", sa.String(16)),
    sa.Column("notes", sa.Text),
    sa.Column("due_date", sa.Date),
    sa.Column("updated_at", Timestamp),
)


@dataclass
class Databases:
    dialect: str
    erp: str
    billing: str

    def time(self, moment: datetime) -> str | datetime:
        """A source update time as the ERP stores it: text on SQLite."""
        return moment.strftime(erp_invoices.TS_FORMAT + ".%f") if self.dialect == "sqlite" else moment


@pytest.fixture(scope="session")
def invoices_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("erp") / "erp.db"
    erp_invoices.seed(db)
    return db


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def dbs(request, home, monkeypatch, invoices_template) -> Databases:
    """The seeded ERP invoices and an empty billing database, on one dialect."""
    erp = target_database(request, home, monkeypatch, "erp", "erp_invoices")
    billing = target_database(request, home, monkeypatch, "billing", "invoices")
    if request.param == "sqlite":
        home.mkdir(parents=True, exist_ok=True)
        shutil.copy(invoices_template, home / "erp.db")
    else:
        load_typed(erp, invoices_template)
    return Databases(request.param, erp, billing)


def load_typed(url: str, template: Path) -> None:
    """The template's invoices into typed columns: what a typed column cannot hold becomes NULL."""
    with closing(sqlite3.connect(template)) as conn:
        frame = pd.read_sql("SELECT * FROM erp_invoices", conn)
    frame["amount"] = pd.to_numeric(frame["amount"], errors="coerce")
    frame["due_date"] = pd.to_datetime(frame["due_date"], errors="coerce")
    frame["updated_at"] = pd.to_datetime(frame["updated_at"])
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    engine = create_engine(url)
    with engine.begin() as conn:
        TYPED_SOURCE.create(conn)
        conn.execute(TYPED_SOURCE.insert(), rows)
    engine.dispose()


def execute(url: str, statement: str, rows: list[dict] | dict | None = None) -> list[tuple]:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(statement), rows)
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


def add(dbs: Databases, *rows: dict) -> None:
    """New source invoices; unnamed columns get clean values."""
    clean = {"customer_id": "C0001", "amount": 10.5, "currency": "EUR", "status": "open", "notes": None, "due_date": None}
    execute(dbs.erp, "INSERT INTO erp_invoices (id, customer_id, amount, currency, status, notes, due_date, updated_at)"
            " VALUES (:id, :customer_id, :amount, :currency, :status, :notes, :due_date, :updated_at)",
            [{**clean, **row} for row in rows])


def change(dbs: Databases, ids: list[int], when: datetime) -> None:
    """Raise the amount of invoices `ids`, updated at `when`."""
    execute(dbs.erp, "UPDATE erp_invoices SET amount = amount + 1, updated_at = :at WHERE id = :id",
            [{"id": i, "at": dbs.time(when)} for i in ids])


def delivered(url: str) -> pd.DataFrame:
    """The delivered invoices as typed values, without their sync time."""
    engine = create_engine(url)
    table = reflect(engine, "invoices")
    with engine.connect() as conn:
        rows = pd.DataFrame(conn.execute(sa.select(table).order_by(table.c.invoice_id)).mappings().all())
    engine.dispose()
    return rows.drop(columns="synced_at").set_index("invoice_id")


def watermark(url: str) -> str | None:
    engine = create_engine(url)
    try:
        return read_watermark(engine, NAME)
    finally:
        engine.dispose()


def open_letters() -> dict[str, str]:
    return {e["record_key"]: e["reason"] for e in DeadLetters(Settings().state_db).entries(NAME, "open")}


def test_first_run_a_rerun_and_a_delta_each_deliver_exactly_what_changed(dbs):
    first = PIPELINE.sync(chunk_size=64)  # several chunks: 400 invoices
    target = delivered(dbs.billing)
    letters = open_letters()
    assert first["rows_read"] == erp_invoices.INVOICES  # each invoice read once across the chunks
    assert first["rows_inserted"] == len(target) and first["rows_quarantined"] == len(letters) > 0
    assert set(target.index).isdisjoint(int(k) for k in letters)
    assert sorted(set(target.index) | {int(k) for k in letters}) == list(range(1, erp_invoices.INVOICES + 1))
    assert set(CLEAN) <= set(target.index)
    assert all(type(i) is int for i in target.index)  # the integer key stays an integer
    newest = max(execute(dbs.erp, "SELECT updated_at FROM erp_invoices"))[0]
    assert watermark(dbs.billing) == (newest if dbs.dialect == "sqlite" else newest.isoformat())

    # NULLs arrive as NULL, never as the text of a missing value
    nulls = execute(dbs.billing, "SELECT count(*) FROM invoices WHERE notes IS NULL")[0][0]
    source_nulls = execute(dbs.erp, f"SELECT count(*) FROM erp_invoices WHERE notes IS NULL AND id IN ({', '.join(map(str, target.index))})")[0][0]
    assert nulls == source_nulls > 100
    assert execute(dbs.billing, "SELECT count(*) FROM invoices WHERE due_date IS NULL")[0][0] > 50
    for column in ("notes", "customer_id", "currency", "status"):
        assert execute(dbs.billing, f"SELECT count(*) FROM invoices WHERE {column} IN ('None', 'nan', 'NaN', '<NA>', '')")[0][0] == 0
    assert float(target.loc[1, "amount"]) == float(execute(dbs.erp, "SELECT amount FROM erp_invoices WHERE id = 1")[0][0])

    again = PIPELINE.sync()
    assert again["rows_inserted"] == again["rows_updated"] == again["rows_quarantined"] == 0
    pd.testing.assert_frame_equal(delivered(dbs.billing), target)

    changed = [3, 64, 65, 200, 399]
    change(dbs, changed, datetime(2026, 11, 1, 12, 0, 0, 250000))
    third = PIPELINE.sync(chunk_size=2)
    after = delivered(dbs.billing)
    assert third["rows_inserted"] == 0 and third["rows_updated"] == len(changed)
    assert sorted(target.compare(after).index) == changed
    assert after.loc[changed, "erp_updated_at"].eq(pd.Timestamp("2026-11-01 12:00:00.25")).all()


def test_rows_at_the_watermark_time_and_late_rows_inside_the_lag_window_are_delivered(dbs):
    PIPELINE.sync()
    mark = watermark(dbs.billing)
    at = datetime.fromisoformat(mark)
    add(dbs, {"id": 1001, "updated_at": dbs.time(at) if dbs.dialect != "sqlite" else mark},  # exactly the watermark
        {"id": 1002, "updated_at": dbs.time(at - timedelta(minutes=3))})  # committed late, inside the lag window
    second = PIPELINE.sync()
    assert second["rows_inserted"] == 2 and second["rows_updated"] == 0
    assert {1001, 1002} <= set(delivered(dbs.billing).index)


def test_a_numeric_cursor_reads_only_rows_at_or_after_the_watermark(dbs):
    by_id = replace(PIPELINE, source=replace(PIPELINE.source, cursor="id", lag=0))
    first = by_id.sync(chunk_size=150)
    assert first["rows_read"] == erp_invoices.INVOICES
    assert watermark(dbs.billing) == str(erp_invoices.INVOICES)  # stored as text, read back as a number
    add(dbs, {"id": 401, "updated_at": dbs.time(datetime(2026, 1, 1))}, {"id": 402, "updated_at": dbs.time(datetime(2026, 1, 1))})
    second = by_id.sync()
    assert second["rows_read"] == 3  # 400 again (at the watermark), 401, 402
    assert second["rows_inserted"] == 2 and second["rows_updated"] == 0
    assert watermark(dbs.billing) == "402"


def test_a_target_without_an_update_time_column_detects_change_by_hash(dbs):
    table = tracked_table("invoices", *(sa.Column(c.name, c.type, primary_key=c.primary_key, autoincrement=False)
                                        for c in PIPELINE.target.table.columns
                                        if c.name not in ("erp_updated_at", "row_hash", "synced_at")))
    untimed = replace(PIPELINE, target=replace(PIPELINE.target, table=table, updated=None))
    first = untimed.sync()
    assert first["rows_inserted"] == len(delivered(dbs.billing)) > 300
    assert "erp_updated_at" not in delivered(dbs.billing).columns
    assert untimed.sync()["rows_updated"] == 0
    change(dbs, [10, 11], datetime(2026, 11, 2))
    third = untimed.sync()
    assert third["rows_updated"] == 2 and third["rows_inserted"] == 0


def test_hostile_rows_are_delivered_correctly_or_dead_lettered_with_their_reason_and_never_stall_the_run(dbs):
    PIPELINE.sync()
    mark = datetime.fromisoformat(watermark(dbs.billing))
    hostile = [
        {"id": 2001, "notes": "x" * 600, "updated_at": dbs.time(mark + timedelta(seconds=1))},  # over-long text
        {"id": 2002, "customer_id": "C" * 40, "updated_at": dbs.time(mark + timedelta(seconds=1))},
        {"id": 2003, "due_date": date(9999, 12, 31), "updated_at": dbs.time(mark + timedelta(seconds=2))},  # far-future date
        {"id": 2004, "updated_at": dbs.time(datetime(2999, 1, 1))},  # far-future update time
        {"id": 2005, "updated_at": dbs.time(mark - timedelta(minutes=4))},  # older than the watermark, inside the lag
    ]
    if dbs.dialect != "postgresql":  # PostgreSQL's text cannot hold NUL at the source either
        hostile.append({"id": 2006, "notes": "before\x00after", "updated_at": dbs.time(mark + timedelta(seconds=3))})
    if dbs.dialect == "sqlite":
        hostile[2]["due_date"] = "9999-12-31"
    hostile.append({"id": 2007, "updated_at": "not a time" if dbs.dialect == "sqlite" else None})  # cannot be read incrementally
    add(dbs, *hostile)

    second = PIPELINE.sync()
    target, letters = delivered(dbs.billing), open_letters()
    assert {"2001", "2002", "2004", "2007"} <= set(letters)
    assert "updated_at: no readable value" in letters["2007"] and 2007 not in target.index
    assert "notes fit 500 characters" in letters["2001"] and "customer id fits 32 characters" in letters["2002"]
    assert target.loc[2003, "due_date"] == date(9999, 12, 31)
    assert "updated_at: 2999-01-01" in letters["2004"] and "in the future" in letters["2004"] and 2004 not in target.index
    assert 2005 in target.index
    if dbs.dialect != "postgresql":
        assert "notes hold no NUL character" in letters["2006"]
    assert second["rows_inserted"] == 2
    assert not watermark(dbs.billing).startswith("2999")  # a far-future time would hide every later change

    change(dbs, [5], mark + timedelta(hours=1))
    third = PIPELINE.sync()
    assert third["rows_updated"] == 1 and third["rows_inserted"] == 0
    assert open_letters().keys() == letters.keys()


def test_the_demo_mutation_is_delivered_as_exactly_the_mutated_invoices(home, monkeypatch, tmp_path):
    """The demo's own functions: seed once, mutate clean invoices with text times past the watermark."""
    db = tmp_path / "demo-erp.db"
    erp_invoices.seed(db)
    erp_invoices.seed(db)  # a second seed adds nothing
    monkeypatch.setenv("INTERLINK_ERP__URL", f"sqlite:///{db}")
    monkeypatch.setenv("INTERLINK_BILLING__URL", f"sqlite:///{tmp_path / 'billing.db'}")
    assert PIPELINE.sync()["rows_read"] == erp_invoices.INVOICES
    before = delivered(f"sqlite:///{tmp_path / 'billing.db'}")
    changed = erp_invoices.mutate(db, 12, seed=3)
    assert len(changed) == 12 and all(int(i) in CLEAN for i in changed)
    summary = PIPELINE.sync()
    after = delivered(f"sqlite:///{tmp_path / 'billing.db'}")
    assert summary["rows_updated"] == 12 and summary["rows_inserted"] == 0
    assert sorted(before.compare(after).index) == sorted(int(i) for i in changed)
