"""SQL databases through SQLAlchemy 2: streaming reads, write modes, watermarks.

Works on SQLite, PostgreSQL and MariaDB/MySQL. Upserts use each dialect's own statement
(`ON CONFLICT … DO UPDATE`, `ON DUPLICATE KEY UPDATE`), so a retried write converges on
the same rows. On PostgreSQL large writes go through COPY (as CSV, Arrow writing the text),
upserts into a temporary staging table first.
Table and column names from configuration pass `identifier()` and are quoted by
SQLAlchemy: no SQL is built from unchecked strings.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa
from interlink.connectors.errors import ConfigError
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url

if TYPE_CHECKING:  # pandas, psycopg and pyarrow load where rows are read or copied, not for the state database
    import pandas as pd

# Microsecond timestamps everywhere (MySQL/MariaDB's DATETIME drops them by default).
Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

WATERMARKS = sa.Table(
    "interlink_watermarks",
    sa.MetaData(),
    sa.Column("integration", sa.String(100), primary_key=True),
    sa.Column("value", sa.String(64), nullable=False),
    sa.Column("flow_run_id", sa.String(36)),
    sa.Column("committed_at", Timestamp, nullable=False),
)

COPY_THRESHOLD = 5000  # rows from which a PostgreSQL write goes through COPY
COPY_PART = 10_000  # rows turned into CSV text at a time, while a thread sends the part before
WRITE_BATCH = 1000  # rows per INSERT statement where COPY is not used
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class WriteMode(StrEnum):
    APPEND = "append"    # insert every row
    REPLACE = "replace"  # the table holds exactly these rows afterwards
    UPSERT = "upsert"    # insert, or update the rows whose keys exist


def identifier(name: str, what: str = "name") -> str:
    """`name` if it is a plain SQL identifier, else a `ConfigError` saying what is allowed."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ConfigError(
            f"{what} {name!r} is not allowed: use 1-63 letters, digits or underscores, not starting with a digit"
        )
    return name


# MySQL/MariaDB errors about the data that its drivers report as OperationalError (e.g. 4025, a CHECK constraint).
_MYSQL_DATA_ERRORS = {1048, 1062, 1216, 1217, 1264, 1292, 1366, 1406, 1451, 1452, 3819, 4025}


def refused_data(exc: BaseException) -> bool:
    """Whether a database error is about the rows written (a value, a constraint), not the database or the connection."""
    if isinstance(exc, sa.exc.DataError | sa.exc.IntegrityError):
        return True
    code = (getattr(getattr(exc, "orig", None), "args", ()) or (None,))[0]
    return isinstance(exc, sa.exc.OperationalError) and not exc.connection_invalidated and code in _MYSQL_DATA_ERRORS


def utcnow() -> datetime:
    """Now, as the naive UTC timestamp that every dialect stores alike."""
    return datetime.now(UTC).replace(tzinfo=None)


def create_engine(url: str) -> Engine:
    """An engine for `url`; a SQLite file gets its folder created.

    Its errors never carry the rows' values: SQLAlchemy's `hide_parameters` leaves the bound parameters out
    of every error message (`[SQL parameters hidden due to hide_parameters=True]`), and the error keeps none
    either (a failed run's error is pickled into Prefect's result storage).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, pool_pre_ping=True, hide_parameters=True)
    sa.event.listen(engine, "handle_error", _without_parameters)
    return engine


def _without_parameters(context: sa.engine.ExceptionContext) -> None:
    if context.sqlalchemy_exception is not None:
        context.sqlalchemy_exception.params = None


def ensure_tables(engine: Engine, *tables: sa.Table) -> None:
    """Create the tables that do not exist yet."""
    for table in tables:
        table.create(engine, checkfirst=True)


def reflect(engine: Engine, name: str) -> sa.Table:
    """The existing table `name`, its columns read from the database."""
    return sa.Table(identifier(name, "table"), sa.MetaData(), autoload_with=engine)


def read_chunks(
    engine: Engine,
    table: sa.Table,
    *,
    chunk_rows: int = 10_000,
    columns: Sequence[str] | None = None,
    watermark_column: str | None = None,
    since: Any = None,
    lag: timedelta = timedelta(0),
) -> Iterator[pd.DataFrame]:
    """Stream `table` in DataFrames of at most `chunk_rows`, without holding the whole result.

    With `watermark_column`, reads only rows at or after `since - lag` in watermark order
    (`since` as read, or as text: see `cursor_bound`): the lag window re-reads rows that
    committed late with an earlier timestamp.
    """
    selected = [table.c[identifier(c, "column")] for c in columns] if columns else list(table.c)
    query = sa.select(*selected)
    if watermark_column:
        mark = table.c[identifier(watermark_column, "watermark column")]
        order = cursor_expression(mark, engine.dialect.name)
        query = query.order_by(order)
        if since is not None:
            query = query.where(order >= cursor_bound(mark, since, engine.dialect.name, lag))
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=chunk_rows).execute(query)
        for part in result.partitions(chunk_rows):
            yield rows_frame(part, result.keys())


def read_page(
    engine: Engine,
    source: sa.FromClause,
    *,
    cursor: str,
    keys: Sequence[str],
    limit: int,
    since: Any = None,
    lag: timedelta | int = timedelta(0),
    after: Sequence[Any] | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Up to `limit` rows of `source` (its `columns`, or all) in (cursor, keys) order, as raw values (NULL as None).

    Only rows whose cursor is at or after `since - lag` and, given `after` (the cursor and keys
    of the last row already read), after that row: keyset pagination, each page its own query.
    Rows without a cursor value (or, on SQLite, without a readable time) cannot be read
    incrementally and are left out.
    """
    dialect = engine.dialect.name
    mark = source.c[cursor]
    order = cursor_expression(mark, dialect)
    selected = [source.c[c] for c in columns] if columns else list(source.c)
    query = sa.select(*(_raw(c, dialect) for c in selected)).where(order.is_not(None))
    if since is not None:
        query = query.where(order >= cursor_bound(mark, since, dialect, lag))
    if after is not None:
        position = [cursor_bound(mark, after[0], dialect), *(sa.literal(v, source.c[k].type) for k, v in zip(keys, after[1:]))]
        query = query.where(sa.tuple_(order, *(source.c[k] for k in keys)) > sa.tuple_(*position))
    query = query.order_by(order, *(source.c[k] for k in keys)).limit(limit)
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=min(limit, 10_000)).execute(query)
        return rows_frame(result, result.keys(), dtype=object)


def read_untracked(engine: Engine, source: sa.FromClause, cursor: str, columns: Sequence[str] | None, limit: int) -> pd.DataFrame:
    """Up to `limit` of the rows `read_page` leaves out (those without a readable cursor value), as raw values."""
    dialect = engine.dialect.name
    selected = [source.c[c] for c in columns] if columns else list(source.c)
    query = sa.select(*(_raw(c, dialect) for c in selected)).where(cursor_expression(source.c[cursor], dialect).is_(None)).limit(limit)
    with engine.connect() as conn:
        result = conn.execute(query)
        return rows_frame(result, result.keys(), dtype=object)


def rows_frame(rows: Iterable[sa.Row], columns: Iterable[str], dtype: Any = None) -> pd.DataFrame:
    """Result rows as a frame. Each row becomes a plain tuple first: pandas asks every row for a `dtype`, and
    a SQLAlchemy `Row` answers a missing attribute through a slow exception path (12x slower at 100k rows)."""
    import pandas as pd

    return pd.DataFrame([tuple(row) for row in rows], columns=list(columns), dtype=dtype)


def cursor_expression(column: sa.ColumnElement, dialect: str) -> sa.ColumnElement:
    """What a cursor column is compared and ordered by: itself, or on SQLite, where times are
    text in any ISO form ('T' or ' ', with or without fractions), its Julian day number."""
    if dialect == "sqlite" and not _numeric(column.type):
        return sa.func.julianday(column)
    return column


def cursor_bound(column: sa.ColumnElement, value: Any, dialect: str, lag: timedelta | int = timedelta(0)) -> sa.ColumnElement:
    """`value` minus `lag`, converted to `column`'s type, to compare with `cursor_expression(column)`.

    `value` is as read, or as text (a watermark): a number for a numeric column (`lag` in its
    units, a timedelta as seconds), a time for a date/time column or any column on SQLite, and
    elsewhere the text itself (a text cursor compares as text, so keep its format).
    """
    kind = column.type
    if _numeric(kind):
        number = value if isinstance(value, int | float | Decimal) else Decimal(str(value))
        number -= Decimal(_seconds(lag)) if isinstance(number, Decimal) else _seconds(lag)
        return sa.literal(math.floor(number) if isinstance(kind, sa.Integer) else number, kind)
    if dialect == "sqlite":
        text = value if isinstance(value, str) and not lag else naive_utc(to_datetime(value) - lag).isoformat(" ")
        return sa.func.julianday(sa.literal(text, sa.String))
    if isinstance(kind, sa.DateTime | sa.Date):
        moment = to_datetime(value) - lag
        if not getattr(kind, "timezone", False):
            moment = naive_utc(moment)
        return sa.literal(moment.date() if isinstance(kind, sa.Date) else moment, kind)
    return sa.literal(str(value) if not lag else _shifted_text(str(value), lag), kind)


def to_datetime(value: Any) -> datetime:
    """A time as read (datetime or date) or as ISO 8601 text."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime.combine(value, datetime.min.time())
    return datetime.fromisoformat(str(value))


def cursor_text(value: Any) -> str:
    """A cursor value as watermark text: ISO 8601 for times, the number's own text, or the text as stored."""
    return value.isoformat() if isinstance(value, date) else str(value)


def _shifted_text(value: str, lag: timedelta) -> str:
    """ISO text `value` moved back by `lag`, in the same form ('T' or ' ', fractions kept)."""
    moment = datetime.fromisoformat(value) - lag
    return moment.isoformat("T" if "T" in value else " ", "microseconds" if "." in value else "seconds")


def naive_utc(moment: datetime) -> datetime:
    """`moment` as the naive UTC time every dialect stores alike (a naive one is taken as UTC)."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _seconds(lag: timedelta | int) -> int | float:
    return lag.total_seconds() if isinstance(lag, timedelta) else lag


def _numeric(kind: sa.types.TypeEngine) -> bool:
    return isinstance(kind, sa.Integer | sa.Numeric)


def _raw(column: sa.ColumnElement, dialect: str) -> sa.ColumnElement:
    """`column` read as the driver gives it: on SQLite no parsing of stored text into times or decimals."""
    return sa.type_coerce(column, sa.types.NullType()).label(column.name) if dialect == "sqlite" else column


def write(conn: Connection, table: sa.Table, rows: pd.DataFrame, mode: WriteMode, keys: Sequence[str] = ()) -> None:
    """Write `rows` (columns named like the table's) to `table` in `mode`, inside the caller's transaction."""
    if mode is WriteMode.REPLACE:
        conn.execute(table.delete())
        mode = WriteMode.APPEND
    if rows.empty:
        return
    if conn.dialect.name == "postgresql" and len(rows) >= COPY_THRESHOLD and _copyable(table, rows):
        _copy(conn, table, rows, keys if mode is WriteMode.UPSERT else None)
        return
    records = rows.astype(object).where(rows.notna(), None).to_dict("records")
    for start in range(0, len(records), WRITE_BATCH):
        batch = records[start : start + WRITE_BATCH]
        if mode is WriteMode.APPEND:
            conn.execute(table.insert(), batch)
        else:
            upsert(conn, table, batch, keys)


def upsert(
    conn: Connection,
    table: sa.Table,
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    keep: Sequence[str] = (),
) -> None:
    """Insert `rows` in one statement, updating the ones whose `keys` already exist (all but the `keep` columns)."""
    if not rows:
        return
    update = [c for c in rows[0] if c not in keys and c not in keep]
    conn.execute(_insert_or_update(conn, table, keys, update), list(rows))


def _insert_or_update(
    conn: Connection, table: sa.Table, keys: Sequence[str], update: Sequence[str], source: sa.Select | None = None
) -> sa.Insert:
    """The dialect's INSERT … ON CONFLICT / ON DUPLICATE KEY statement, from VALUES or from `source`."""
    if not keys:
        raise ConfigError(f"upsert into {table.name!r} needs key columns: declare the table's keys")
    module = {"mysql": mysql, "mariadb": mysql, "postgresql": postgresql, "sqlite": sqlite}.get(conn.dialect.name)
    if module is None:
        raise NotImplementedError(f"upsert is not supported on {conn.dialect.name!r}; use SQLite, PostgreSQL or MariaDB/MySQL")
    stmt = module.insert(table)
    if source is not None:
        stmt = stmt.from_select(list(source.selected_columns.keys()), source)
    if module is mysql:
        return stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in update or keys[:1]})
    if not update:
        return stmt.on_conflict_do_nothing(index_elements=list(keys))
    return stmt.on_conflict_do_update(index_elements=list(keys), set_={c: stmt.excluded[c] for c in update})


def _copyable(table: sa.Table, rows: pd.DataFrame) -> bool:
    """Whether CSV text carries `rows` exactly: no JSON columns."""
    return not any(isinstance(table.c[c].type, sa.JSON) for c in rows.columns)


def _copy(conn: Connection, table: sa.Table, rows: pd.DataFrame, keys: Sequence[str] | None) -> None:
    """COPY `rows` in as CSV: straight into `table`, or, to upsert on `keys`, into a temporary
    staging table and from there with one INSERT … ON CONFLICT."""
    import psycopg
    from interlink.connectors.pgcsv import csv_bytes
    from psycopg import sql as pgsql
    from psycopg.copy import QueuedLibpqWriter

    names = list(rows.columns)
    into = table
    if keys is not None:
        into = sa.Table(
            f"_stage_{table.name}"[:63], sa.MetaData(), *(sa.Column(c, table.c[c].type) for c in names), prefixes=["TEMPORARY"]
        )
        into.create(conn)
    copy = pgsql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        pgsql.Identifier(*filter(None, (into.schema, into.name))), pgsql.SQL(", ").join(map(pgsql.Identifier, names))
    )
    whole = _whole_numbers(table, rows)
    try:
        with conn.connection.driver_connection.cursor() as cursor, cursor.copy(copy, writer=QueuedLibpqWriter(cursor)) as stream:
            for start in range(0, len(whole), COPY_PART):
                stream.write(csv_bytes(whole.iloc[start : start + COPY_PART]))
    except psycopg.Error as exc:  # as SQLAlchemy's own statements raise it: IntegrityError for a duplicate key, …
        raise sa.exc.DBAPIError.instance(f"COPY {into.name}", None, exc, psycopg.Error) from None
    if keys is not None:
        conn.execute(_insert_or_update(conn, table, keys, [c for c in names if c not in keys], sa.select(*into.c)))
        into.drop(conn)


def _whole_numbers(table: sa.Table, rows: pd.DataFrame) -> pd.DataFrame:
    """`rows` with float columns bound for integer columns as integers (`3`, not `3.0`, in the CSV)."""
    import pandas as pd

    floats = [c for c in rows.columns if isinstance(table.c[c].type, sa.Integer) and pd.api.types.is_float_dtype(rows[c])]
    return rows.astype({c: "Int64" for c in floats}) if floats else rows


def select_in(
    conn: Connection,
    columns: Sequence[sa.Column],
    key: sa.Column,
    values: Iterable[Any],
    where: sa.ColumnElement[bool] | None = None,
    batch: int = 1000,
) -> list[sa.Row]:
    """Rows whose `key` is among `values` (and that meet `where`): on PostgreSQL in one query
    (`= ANY(array)`), elsewhere in batches every dialect accepts."""
    values = list(values)
    query = sa.select(*columns) if where is None else sa.select(*columns).where(where)
    if conn.dialect.name == "postgresql":
        return conn.execute(query.where(key == sa.any_(_pg_array(values, key.type)))).all()  # one fetch, not one per row
    rows: list[sa.Row] = []
    for start in range(0, len(values), batch):
        rows.extend(conn.execute(query.where(key.in_(values[start : start + batch]))).all())
    return rows


def _pg_array(values: list[Any], kind: sa.types.TypeEngine) -> sa.ColumnElement:
    """`values` as one PostgreSQL array of `kind`: text and integers sent as one JSON text (psycopg would write
    each element of a list in Python), anything else as a list."""
    if all(type(v) in (str, int) for v in values):
        try:
            listed = orjson.dumps(values).decode()
        except orjson.JSONEncodeError:  # a lone surrogate, an integer beyond 64 bits
            pass
        else:
            elements = sa.func.jsonb_array_elements_text(sa.cast(sa.literal(listed, sa.Text), postgresql.JSONB)).table_valued("value")
            return sa.cast(sa.select(sa.func.array_agg(elements.c.value)).scalar_subquery(), postgresql.ARRAY(kind))
    return sa.literal(values, postgresql.ARRAY(kind))


def read_watermark(engine: Engine, integration: str) -> str | None:
    """The committed watermark of `integration`, or None before its first delivery."""
    ensure_tables(engine, WATERMARKS)
    with engine.connect() as conn:
        return conn.scalar(sa.select(WATERMARKS.c.value).where(WATERMARKS.c.integration == integration))


def write_watermark(conn: Connection, integration: str, value: str, flow_run_id: str | None) -> None:
    """Set the watermark inside the caller's transaction, so it commits with the data."""
    row = {"integration": integration, "value": value, "flow_run_id": flow_run_id, "committed_at": utcnow()}
    upsert(conn, WATERMARKS, [row], ["integration"])
