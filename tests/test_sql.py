"""The SQL connector on SQLite, PostgreSQL and MariaDB: streaming reads, write modes, safe names."""

import uuid
from datetime import date, datetime, timedelta
from decimal import Decimal

import pandas as pd
import pytest
import sqlalchemy as sa
from interlink.connectors import pgcsv, sql
from interlink.connectors.sql import WriteMode

from interlink.settings import ConfigError
from tests.conftest import service_url


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def engine(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}" if request.param == "sqlite" else service_url(request.param)
    engine = sql.create_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def table(engine):
    table = sa.Table(
        f"things_{uuid.uuid4().hex[:8]}",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(50)),
        sa.Column("changed_at", sql.Timestamp),
    )
    sql.ensure_tables(engine, table)
    yield table
    table.drop(engine)


def rows(n: int, name: str = "a", start: int = 0) -> pd.DataFrame:
    base = datetime(2026, 1, 1)
    return pd.DataFrame(
        [{"id": i, "name": f"{name}{i}", "changed_at": base + timedelta(seconds=i)} for i in range(start, start + n)],
        columns=["id", "name", "changed_at"],
    )


def as_tuples(frame: pd.DataFrame) -> list[tuple]:
    return [(r.id, r.name, r.changed_at.to_pydatetime()) for r in frame.itertuples()]


def content(engine, table) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(table).order_by(table.c.id))]


@pytest.mark.parametrize("count", [3, sql.COPY_THRESHOLD + 10])  # the second takes PostgreSQL's COPY path
def test_upsert_twice_gives_the_same_rows_and_updates_changed_ones(engine, table, count):
    for _ in range(2):
        with engine.begin() as conn:
            sql.write(conn, table, rows(count), WriteMode.UPSERT, keys=["id"])
    assert content(engine, table) == as_tuples(rows(count))

    with engine.begin() as conn:
        sql.write(conn, table, pd.concat([rows(2, name="b"), rows(1, start=count)]), WriteMode.UPSERT, keys=["id"])
    after = content(engine, table)
    assert len(after) == count + 1 and [r[1] for r in after[:3]] == ["b0", "b1", "a2"]


def test_append_adds_and_replace_leaves_exactly_the_new_rows(engine, table):
    with engine.begin() as conn:
        sql.write(conn, table, rows(3), WriteMode.APPEND)
        sql.write(conn, table, rows(2, start=3), WriteMode.APPEND)
    assert len(content(engine, table)) == 5
    with engine.begin() as conn:
        sql.write(conn, table, rows(2, name="z", start=10), WriteMode.REPLACE)
    assert [r[:2] for r in content(engine, table)] == [(10, "z10"), (11, "z11")]


def test_a_failed_write_leaves_the_table_as_it_was(engine, table):
    with engine.begin() as conn:
        sql.write(conn, table, rows(3), WriteMode.APPEND)
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        sql.write(conn, table, rows(2, name="new"), WriteMode.REPLACE)
        sql.write(conn, table, rows(1, start=1), WriteMode.APPEND)  # duplicate key: the whole transaction rolls back
    assert content(engine, table) == as_tuples(rows(3))


@pytest.mark.parametrize("count, null_marker", [(3, False), (sql.COPY_THRESHOLD + 10, False), (sql.COPY_THRESHOLD + 10, True)])
def test_nulls_empty_text_odd_text_and_whole_floats_arrive_exactly(engine, count, null_marker):
    """Over COPY_THRESHOLD rows PostgreSQL takes the CSV COPY path, text that reads as its NULL marker included."""
    table = sa.Table(
        f"odd_{uuid.uuid4().hex[:8]}", sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("text", sa.String(50)),
        sa.Column("amount", sa.Double),
        sa.Column("qty", sa.Integer),
        sa.Column("at", sql.Timestamp),
    )
    sql.ensure_tables(engine, table)
    odd = ["plain", "", None, 'quote " and, comma', "line\nbreak", "back\\slash", "ünïcode"] + ["\\N"] * null_marker
    frame = pd.DataFrame({
        "id": range(count),
        "text": pd.Series([odd[i % len(odd)] for i in range(count)], dtype="string"),
        "amount": [0.1 + 0.2 if i % 3 else None for i in range(count)],
        "qty": [float(i) if i % 4 else None for i in range(count)],  # whole numbers as floats, as pandas holds them
        "at": [datetime(2026, 1, 1, 0, 0, 0, 123456) + timedelta(seconds=i) if i % 5 else None for i in range(count)],
    })
    try:
        for mode in (WriteMode.APPEND, WriteMode.UPSERT):
            with engine.begin() as conn:
                sql.write(conn, table, frame, mode, keys=["id"])
        with engine.connect() as conn:
            stored = [tuple(r) for r in conn.execute(sa.select(table).order_by(table.c.id))]
    finally:
        table.drop(engine)
    expected = [
        (r.id, None if pd.isna(r.text) else r.text, None if pd.isna(r.amount) else r.amount,
         None if pd.isna(r.qty) else int(r.qty), None if pd.isna(r.at) else r.at.to_pydatetime())
        for r in frame.itertuples()
    ]
    assert stored == expected


def test_copy_stores_exactly_what_inserts_store_whatever_the_values(monkeypatch):
    """PostgreSQL's COPY path (`interlink.connectors.pgcsv`) against its INSERT path, on values CSV makes hard."""
    engine = sql.create_engine(service_url("postgresql"))
    text = ["plain", "", None, " padded ", 'quote " and, comma', "cr\rlf\n", "back\\slash", "\\N", "\\.", "NULL", "ünïcode 😀"]
    n = len(text) * 3
    frame = pd.DataFrame({
        "id": range(n),
        "text": [text[i % len(text)] for i in range(n)],
        "amount": [[0.1 + 0.2, float("inf"), float("-inf"), float("nan"), -0.0, 1e20, 5e-324][i % 7] for i in range(n)],
        "qty": pd.array([None if i % 4 == 0 else i * 1_000_000_007 for i in range(n)], dtype="Int64"),
        "flag": [i % 2 == 0 for i in range(n)],
        "exact": [Decimal("12.345") if i % 2 else None for i in range(n)],
        "naive_ns": pd.to_datetime([datetime(2026, 1, 1) + timedelta(seconds=i) for i in range(n)]) + pd.Timedelta(nanoseconds=123456789),
        "aware": pd.to_datetime([datetime(2026, 1, 1) + timedelta(hours=i) for i in range(n)]).tz_localize("Europe/Berlin"),
        "day": pd.to_datetime([datetime(2026, 1, 1) + timedelta(days=i) for i in range(n)]),
        "anything": [[1, "two", 3.5, True, None][i % 5] for i in range(n)],
        "hash": pd.Series([f"{i:016x}" for i in range(n)], dtype=object),  # no missing value: to_numpy gives a view
        "huge": [2**64 + i if i % 3 else None for i in range(n)],  # beyond 64 bits: Arrow cannot type it
        "dates": [date(2026, 1, 1) + timedelta(days=i) if i % 2 else None for i in range(n)],
        "maybe": pd.array([[True, None, False][i % 3] for i in range(n)], dtype="boolean"),
        "nulls": pd.Series([None] * n, dtype="string"),
        "blob": [[b"", None, b"\x00\xff,\"\n", b"\\x41", bytearray(b"\\N")][i % 5] for i in range(n)],
    })
    before = frame.copy()
    table = sa.Table(
        f"hard_{uuid.uuid4().hex[:8]}", sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("text", sa.String(50)), sa.Column("amount", sa.Double), sa.Column("qty", sa.BigInteger),
        sa.Column("flag", sa.Boolean), sa.Column("exact", sa.Numeric(10, 3)), sa.Column("naive_ns", sql.Timestamp),
        sa.Column("aware", sa.DateTime(timezone=True)), sa.Column("day", sa.Date), sa.Column("anything", sa.String(20)),
        sa.Column("hash", sa.String(16)), sa.Column("huge", sa.Numeric(30, 0)), sa.Column("dates", sa.Date),
        sa.Column("maybe", sa.Boolean), sa.Column("nulls", sa.Text), sa.Column("blob", sa.LargeBinary),
    )
    stored, written = {}, []
    csv_bytes = pgcsv.csv_bytes  # `sql` loads it on its first COPY
    monkeypatch.setattr(pgcsv, "csv_bytes", lambda rows: written.append(len(rows)) or csv_bytes(rows))
    for path, threshold in (("insert", n + 1), ("copy", 1)):
        monkeypatch.setattr(sql, "COPY_THRESHOLD", threshold)
        sql.ensure_tables(engine, table)
        try:
            with engine.begin() as conn:
                sql.write(conn, table, frame, WriteMode.UPSERT, keys=["id"])
            with engine.connect() as conn:
                stored[path] = [tuple(r) for r in conn.execute(sa.select(table).order_by(table.c.id))]
        finally:
            table.drop(engine)
    engine.dispose()
    assert written == [n] and stored["copy"] == stored["insert"]
    pd.testing.assert_frame_equal(frame, before)


HARD_KEYS = ["plain", "", 'quo"te', "back\\slash", "{brace,comma}", "NULL", "ünï 😀", " sp ", "x" * 50, "[1]", "\\u0041"]


@pytest.mark.parametrize("keys", [HARD_KEYS, [0, -1, 2**31 - 1, 7], ["a", 1]], ids=["text", "integers", "mixed"])
def test_select_in_finds_exactly_the_stored_keys_asked_for(engine, keys):
    """PostgreSQL sends text and integer keys as one JSON text; every dialect finds the same rows."""
    kind = sa.Integer if keys[1] == -1 else sa.String(50)
    table = sa.Table(f"keyed_{uuid.uuid4().hex[:8]}", sa.MetaData(), sa.Column("k", kind, primary_key=True, autoincrement=False), sa.Column("n", sa.Integer))
    stored = [k for k in keys if not isinstance(k, int) or kind is sa.Integer][::2]
    sql.ensure_tables(engine, table)
    try:
        with engine.begin() as conn:
            conn.execute(table.insert(), [{"k": k, "n": n} for n, k in enumerate(stored)])
        with engine.connect() as conn:
            found = sql.select_in(conn, [table.c.k, table.c.n], table.c.k, [*keys, "absent" if kind is not sa.Integer else 99])
            none = sql.select_in(conn, [table.c.k], table.c.k, [])
    finally:
        table.drop(engine)
    assert sorted(map(tuple, found), key=lambda r: r[1]) == [(k, n) for n, k in enumerate(stored)] and none == []


def test_read_chunks_streams_in_bounded_frames(engine, table):
    with engine.begin() as conn:
        sql.write(conn, table, rows(2500), WriteMode.APPEND)
    chunks = list(sql.read_chunks(engine, sql.reflect(engine, table.name), chunk_rows=1000))
    assert [len(c) for c in chunks] == [1000, 1000, 500]
    assert sorted(i for c in chunks for i in c["id"]) == list(range(2500))


def test_incremental_read_rereads_the_lag_window(engine, table):
    with engine.begin() as conn:
        sql.write(conn, table, rows(100), WriteMode.APPEND)
    since = datetime(2026, 1, 1) + timedelta(seconds=90)
    read = lambda lag: [  # noqa: E731
        i for c in sql.read_chunks(engine, table, watermark_column="changed_at", since=since, lag=lag) for i in c["id"]
    ]
    assert read(timedelta(0)) == list(range(90, 100))
    assert read(timedelta(seconds=5)) == list(range(85, 100))


@pytest.mark.parametrize("name", ['customers"; DROP TABLE x; --', "it's", "a b", "1abc", "", "x" * 64])
def test_names_from_configuration_are_validated(engine, name):
    with pytest.raises(ConfigError, match="is not allowed: use 1-63 letters, digits or underscores"):
        sql.reflect(engine, name)


def test_column_names_are_validated_too(engine, table):
    with pytest.raises(ConfigError, match="column 'name;'"):
        next(sql.read_chunks(engine, table, columns=["name;"]))
    with pytest.raises(ConfigError, match="watermark column"):
        next(sql.read_chunks(engine, table, watermark_column="x'--"))


def test_upsert_without_keys_is_refused_with_the_fix(engine, table):
    with pytest.raises(ConfigError, match="needs key columns"), engine.begin() as conn:
        sql.write(conn, table, rows(1), WriteMode.UPSERT)


# Incremental reads with the watermark as the pipeline holds it: text

def test_read_chunks_takes_the_watermark_as_text(engine, table):
    with engine.begin() as conn:
        sql.write(conn, table, rows(100), WriteMode.APPEND)
    read = [i for c in sql.read_chunks(engine, table, watermark_column="changed_at", since="2026-01-01T00:01:30",
                                       lag=timedelta(seconds=5)) for i in c["id"]]
    assert read == list(range(85, 100))


@pytest.mark.parametrize("kind", ["datetime", "integer", "text"])
def test_a_row_exactly_at_the_watermark_is_read_whatever_the_cursor_type(engine, kind):
    """The watermark (text) is converted to the cursor column's type; `>=` keeps the row at it."""
    column = {"datetime": sql.Timestamp, "integer": sa.BigInteger, "text": sa.String(32)}[kind]
    table = sa.Table(f"marks_{uuid.uuid4().hex[:8]}", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True,
                     autoincrement=False), sa.Column("at", column))
    values = {
        "datetime": [datetime(2026, 1, 10) + timedelta(seconds=s) for s in (-1, 0, 0, 1)],
        "integer": [1767999999, 1768000000, 1768000000, 1768000001],
        "text": ["2026-01-09 23:59:59", "2026-01-10 00:00:00", "2026-01-10 00:00:00", "2026-01-10 00:00:01"],
    }[kind]
    since = {"datetime": "2026-01-10T00:00:00", "integer": "1768000000", "text": "2026-01-10 00:00:00"}[kind]
    sql.ensure_tables(engine, table)
    try:
        with engine.begin() as conn:
            conn.execute(table.insert(), [{"id": i, "at": v} for i, v in enumerate(values)])
        reflected = sql.reflect(engine, table.name)
        read = [i for c in sql.read_chunks(engine, reflected, watermark_column="at", since=since) for i in c["id"]]
        page = sql.read_page(engine, reflected, cursor="at", keys=["id"], limit=10, since=since)
        lag = 1 if kind == "integer" else timedelta(seconds=1)  # a text cursor is moved back in its own form
        lagged = sql.read_page(engine, reflected, cursor="at", keys=["id"], limit=10, since=since, lag=lag)
    finally:
        table.drop(engine)
    assert sorted(read) == [1, 2, 3]
    assert page["id"].tolist() == [1, 2, 3]
    assert lagged["id"].tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("declared", ["TEXT", "DATETIME", "TIMESTAMP"])
@pytest.mark.parametrize("since", ["2026-01-10T00:00:00", "2026-01-10 00:00:00", "2026-01-10 00:00:00.000000",
                                   "2026-01-10T00:00:00Z"])
def test_sqlite_text_timestamps_at_the_watermark_are_read_in_any_iso_form(tmp_path, declared, since):
    """SQLite keeps times as text; a row at the watermark is read whether it has 'T' or ' ', fractions or not."""
    engine = sql.create_engine(f"sqlite:///{tmp_path / 'text.db'}")
    stored = [
        "2026-01-09 23:59:59.999", "2026-01-09T23:59:59",  # before
        "2026-01-10 00:00:00", "2026-01-10T00:00:00", "2026-01-10 00:00:00.000000", "2026-01-10T00:00:00.5",  # at or after
        "2026-01-10 00:00:01",
    ]
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE t (id INTEGER PRIMARY KEY, at {declared})"))
        conn.execute(sa.text("INSERT INTO t VALUES (:id, :at)"), [{"id": i, "at": a} for i, a in enumerate(stored)])
    table = sql.reflect(engine, "t")
    read = sorted(i for c in sql.read_chunks(engine, table, watermark_column="at", since=since) for i in c["id"])
    page = sql.read_page(engine, table, cursor="at", keys=["id"], limit=10, since=since)
    engine.dispose()
    assert read == [2, 3, 4, 5, 6]
    assert page["id"].tolist() == [2, 3, 4, 5, 6]
    assert page["at"].tolist() == stored[2:]  # as stored, not parsed


def test_sqlite_integer_epoch_cursor_takes_a_text_watermark_and_a_lag_in_seconds(tmp_path):
    engine = sql.create_engine(f"sqlite:///{tmp_path / 'epoch.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY, at INTEGER)"))
        conn.execute(sa.text("INSERT INTO t VALUES (:id, :at)"), [{"id": i, "at": 1000 + i} for i in range(10)])
    table = sql.reflect(engine, "t")
    page = lambda **kw: sql.read_page(engine, table, cursor="at", keys=["id"], limit=100, **kw)["id"].tolist()  # noqa: E731
    assert page(since="1005") == [5, 6, 7, 8, 9]
    assert page(since="1005", lag=timedelta(seconds=2)) == [3, 4, 5, 6, 7, 8, 9]
    assert page(since="1005", lag=1) == [4, 5, 6, 7, 8, 9]
    engine.dispose()


def test_pages_follow_cursor_then_key_across_rows_sharing_a_cursor_value(engine):
    table = sa.Table(f"pages_{uuid.uuid4().hex[:8]}", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True,
                     autoincrement=False), sa.Column("at", sql.Timestamp))
    sql.ensure_tables(engine, table)
    try:
        with engine.begin() as conn:  # five rows per second: every page boundary falls inside a shared time
            conn.execute(table.insert(), [{"id": i, "at": datetime(2026, 1, 1) + timedelta(seconds=(i * 7 % 50) // 5)}
                                          for i in range(50)])
        reflected, seen, after = sql.reflect(engine, table.name), [], None
        while True:
            page = sql.read_page(engine, reflected, cursor="at", keys=["id"], limit=3, after=after)
            seen += page["id"].tolist()
            if len(page) < 3:
                break
            after = tuple(page.iloc[-1][["at", "id"]])
    finally:
        table.drop(engine)
    assert sorted(seen) == list(range(50)) and len(seen) == 50
