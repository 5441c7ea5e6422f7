"""Ingest: pull records from a source system incrementally, one chunk per task run."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import sqlalchemy as sa
from interlink.connectors import pagination
from interlink.connectors.errors import RetriableError
from interlink.connectors.files import DropFolder
from interlink.connectors.gauge import ROWS_HELD
from interlink.connectors.rest import RestClient
from interlink.connectors.sql import (
    create_engine,
    identifier,
    read_page,
    read_untracked,
    reflect,
)
from interlink.tasks import retriable
from interlink.tasks.admit import Pages, frame_records, records_frame
from interlink.tasks.watermark import check_unit, cursor_times, newest, order_break, positions
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from sqlalchemy.engine import Engine

from interlink.settings import ConfigError, RestConnection, Settings, SqlConnection


@dataclass(frozen=True)
class Chunk:
    """Raw records of one batch, the newest source watermark in them, the file they came from,
    whether it is the run's last batch, and the records that are not even objects, each with why."""

    records: pd.DataFrame
    watermark: str | None = None
    file: Path | None = None
    last: bool = True
    refused: tuple[tuple[Any, str], ...] = ()
    disorder: str | None = None  # where a source declared sorted went backwards in this chunk
    moments: pd.Series | None = None  # the cursor column parsed to times once (`interlink.tasks.watermark.cursor_times`)


@dataclass(frozen=True)
class RestSource:
    """A REST collection read incrementally.

    `since_param` asks for records whose `cursor_field` is at or after the watermark
    (inclusive, so records sharing the watermark's time are never skipped; delivery
    recognises the ones it already has). `paginator` configures the strategy by name
    (see `interlink.connectors.pagination.PAGINATORS`); undeclared, it is `auto`: found from the first
    answer's link to the next page, or the run stops before reading, naming the one to declare.
    Whatever the paginator, an answer that links a next page it does not follow fails the run,
    as does a read of fewer records than the total the API states at the dotted `total_path`
    in the body or in the header `total_header` (`interlink.connectors.pagination.Checked`).
    Records sit at the dotted `records_path`; without one, an answer that is a top-level array is the records, and an object's only
    list-valued key holds them. With page-number or offset pagination, or `Link` headers that
    link the last page, `concurrent_pages` pages are fetched at once (within the connection's
    rate budget and `max_concurrency`). `until_param`, if the API
    has one, bounds `cursor_field` from above (exclusive), so a sync can be split into windows.
    `sorted`: the API returns records in `cursor_field` order, so each chunk's watermark can
    commit with it (a record out of order then fails the run, naming this setting); otherwise
    the watermark moves only when the whole run is delivered.
    """

    connection: str
    path: str
    cursor_field: str
    since_param: str
    paginator: dict[str, Any] = field(default_factory=lambda: {"type": "auto"})
    records_path: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    concurrent_pages: int = 1
    until_param: str | None = None
    sorted: bool = False
    total_path: str | None = None
    total_header: str | None = None
    cursor_unit: str | None = None  # "epoch_s" or "epoch_ms": a numeric cursor_field of epoch times, guarded like a time

    def __post_init__(self) -> None:
        check_unit(self.cursor_unit, self.setting)
        if self.total_path and self.total_header:
            raise ConfigError(f"{self.setting} has both total_path and total_header: keep the one the API answers")

    @property
    def cursor(self) -> str:
        return self.cursor_field

    @property
    def setting(self) -> str:
        """Where the source is declared, for messages that ask to change it."""
        return f"the RestSource of {self.connection} {self.path}"

    @property
    def dataset(self) -> str:
        """What lineage names the source, on its connection."""
        return self.path

    def before(self, until: str | None) -> RestSource:
        """This source, reading only records whose `cursor_field` is before `until` (None: no bound)."""
        if until is None:
            return self
        if self.until_param is None:
            raise ConfigError(
                f"{self.connection} {self.path} has no until_param, so it cannot be read in windows: set until_param "
                "on the RestSource to the API's exclusive upper bound on the cursor field"
            )
        return replace(self, params={**self.params, self.until_param: until})

    def chunks(self, settings: Settings, since: str | None, chunk_rows: int) -> Iterator[Chunk]:
        """The chunks in order; each next one is read, in a thread, while the caller works on this one."""
        connection = settings.connection(self.connection)
        # A thread of our own rather than `fetch_chunk.submit`: a Prefect future keeps its result
        # for the whole flow run, and so would keep every chunk.
        newest = None  # the newest position so far, to hold a sorted source to its order
        with ThreadPoolExecutor(1, thread_name_prefix=f"read-{self.connection}") as reader:
            ahead = reader.submit(copy_context().run, fetch_chunk, self, connection, since, None, chunk_rows)
            while True:
                chunk, position = ahead.result()
                if position is not None:
                    ahead = reader.submit(copy_context().run, fetch_chunk, self, connection, since, position, chunk_rows)
                if self.sorted and self.cursor_field in chunk.records.columns:
                    column = chunk.records[self.cursor_field]
                    chunk = replace(chunk, disorder=order_break(column, newest, chunk.moments))
                    if not (known := positions(column, moments=chunk.moments).dropna()).empty:
                        newest = known.max() if newest is None else max(newest, known.max())
                yield chunk
                if position is None:
                    return

    def done(self, settings: Settings, chunk: Chunk) -> None:
        """Nothing to do: the watermark commits with the delivered data."""


@task(name="ingest", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=retriable)
def fetch_chunk(
    source: RestSource, connection: RestConnection, since: str | None, position: Any, max_rows: int
) -> tuple[Chunk, Any]:
    """Read pages from `position` (None: the first) until `max_rows` records or the end.

    Returns the chunk and the position of the next page (None when the source is exhausted). A read that would
    lose records (`interlink.connectors.pagination.Checked`) fails here, before its last chunk is handed on.
    """
    try:
        paginator = pagination.Checked(source.paginator, source.total_path, source.total_header)
    except ConfigError as exc:
        raise ConfigError(f"{source.connection} {source.path}: {exc}; fix paginator={{...}} on the RestSource") from None
    if position is not None:
        paginator.resume(position)
    params = dict(source.params)
    if since:
        params[source.since_param] = since
    pages = Pages()  # each page as a table: far smaller than the page's dicts
    rows = 0
    with RestClient.connect(source.connection, connection) as client:
        for page in client.paginate(source.path, paginator, params, source.records_path, source.concurrent_pages):
            pages.add(page)
            rows += len(page)
            if rows >= max_rows:
                break
    frame, refused = ROWS_HELD.track(pages.frame()), pages.refused
    get_run_logger().info("read %d records from %s%s (since %s)", len(frame) + len(refused), source.connection, source.path, since)
    position = paginator.checkpoint()
    moments = cursor_times(frame, source.cursor_field, source.cursor_unit)
    mark = newest(frame[source.cursor_field], since, moments) if source.cursor_field in frame.columns else None
    return Chunk(frame, mark, last=position is None, refused=tuple(refused), moments=moments), position


@dataclass(frozen=True, kw_only=True)
class SqlSource:
    """A table, or the rows of a SELECT (`query`, without `:name` parameters), on a SQL connection,
    read incrementally by its `cursor` column (an update time, or an increasing number).

    Rows whose cursor is at or after the watermark less `lag` are read (inclusive, so rows sharing
    the watermark's value are never skipped; delivery recognises the ones it already has; `lag`
    re-reads a window for rows committed late with an earlier cursor value: a timedelta, or for a
    numeric cursor a number of its units). Chunks come in (cursor, `key`) order, each read by its
    own query and task run; a chunk's watermark is its newest cursor value, as text. Values reach
    the transform as the driver reads them (NULL as None), on SQLite times as the stored text.
    """

    connection: str
    cursor: str
    key: str | tuple[str, ...]
    table: str | None = None
    query: str | None = None
    lag: timedelta | int = timedelta(0)
    columns: tuple[str, ...] | None = None
    cursor_unit: str | None = None  # "epoch_s" or "epoch_ms": a numeric cursor of epoch times, guarded like a time
    sorted: ClassVar[bool] = True  # read in cursor order by the database itself

    def __post_init__(self) -> None:
        if (self.table is None) == (self.query is None):
            raise ConfigError(f"SqlSource on {self.connection!r}: set exactly one of `table` and `query`")
        check_unit(self.cursor_unit, self.setting)

    @property
    def setting(self) -> str:
        return f"the SqlSource of {self.connection} {self.table or 'query'}"

    @property
    def dataset(self) -> str | None:
        return self.table

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.key,) if isinstance(self.key, str) else tuple(self.key)

    def chunks(self, settings: Settings, since: str | None, chunk_rows: int) -> Iterator[Chunk]:
        """The chunks in order, each read when the caller is done with the one before."""
        connection = settings.connection(self.connection)
        if not isinstance(connection, SqlConnection):
            raise ConfigError(f"SqlSource needs a sql connection; {self.connection!r} is {connection.kind}")
        after = None
        while True:
            chunk, after = read_rows(self, connection.url, since, after, chunk_rows)
            yield chunk
            if after is None:
                return

    def done(self, settings: Settings, chunk: Chunk) -> None:
        """Nothing to do: the watermark commits with the delivered data."""

    def selectable(self, engine: Engine) -> sa.FromClause:
        """The table, reflected, or the query as a subquery; `ConfigError` for a name that is not there."""
        if self.table is not None:
            try:
                source = reflect(engine, self.table)
            except sa.exc.NoSuchTableError:
                tables = ", ".join(sa.inspect(engine).get_table_names()[:20]) or "none"
                raise ConfigError(
                    f"connection {self.connection!r} has no table {self.table!r} (SqlSource `table`): "
                    f"create it, or set `table` to one of: {tables}"
                ) from None
        else:
            source = sa.text(self.query).columns(*_probe(engine, self.query)).subquery("source")
        for setting, names in (("cursor", [self.cursor]), ("key", self.keys), ("columns", self.columns or ())):
            for name in names:
                if identifier(name, f"{setting} column") not in source.c:
                    raise ConfigError(
                        f"connection {self.connection!r}: {self.table or 'the query'} has no column {name!r} "
                        f"(SqlSource `{setting}`): use one of {', '.join(source.c.keys())}"
                    )
        return source

    def selected(self) -> list[str] | None:
        """The columns read: `columns` with the cursor and keys, or None for all."""
        return list(dict.fromkeys([*self.columns, self.cursor, *self.keys])) if self.columns else None


def _probe(engine: Engine, query: str) -> list[sa.ColumnClause]:
    """The columns of `query`'s result, typed from its first row (text when it has none)."""
    types = {datetime: sa.DateTime, date: sa.Date, int: sa.Integer, float: sa.Numeric, Decimal: sa.Numeric}
    with engine.connect() as conn:
        result = conn.execute(sa.select(sa.text("*")).select_from(sa.text(f"({query}) AS probe")).limit(1))
        row = result.first() or [None] * len(result.keys())
        return [sa.column(name, types.get(type(value), sa.String)()) for name, value in zip(result.keys(), row, strict=True)]


@task(name="ingest", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=retriable)
def read_rows(
    source: SqlSource, url: str, since: str | None, after: tuple | None, max_rows: int
) -> tuple[Chunk, tuple | None]:
    """Read up to `max_rows` rows after position `after` (None: from the start).

    Returns the chunk and the position (cursor and keys of its last row) of the next one, None after the last.
    """
    engine = create_engine(url)
    try:
        selectable = source.selectable(engine)
        untracked = read_untracked(engine, selectable, source.cursor, source.selected(), max_rows) if after is None else None
        frame = read_page(
            engine, selectable, cursor=source.cursor, keys=source.keys, limit=max_rows,
            since=since, lag=source.lag, after=after, columns=source.selected(),
        )
    except sa.exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise RetriableError(f"{source.connection}: connection lost: {exc.orig}") from exc
        raise
    finally:
        engine.dispose()
    ROWS_HELD.track(frame)
    get_run_logger().info("read %d rows from %s.%s (since %s)", len(frame), source.connection, source.table or "query", since)
    last = len(frame) < max_rows
    position = None if last else tuple(frame.iloc[-1][[source.cursor, *source.keys]])
    refused = () if untracked is None else tuple(
        (row, f"{source.cursor}: no readable value, so the row cannot be read incrementally")
        for row in frame_records(untracked)
    )
    moments = cursor_times(frame, source.cursor, source.cursor_unit)
    return Chunk(frame, newest(frame[source.cursor], since, moments), last=last, refused=refused, moments=moments), position


@dataclass(frozen=True)
class FolderSource:
    """Files dropped in a folder, each read whole as one chunk and archived once delivered."""

    connection: str
    suffix: str = ".csv"
    cursor: ClassVar[None] = None  # files are delivered in name order, each with its name as the watermark
    sorted: ClassVar[bool] = True

    @property
    def setting(self) -> str:
        return f"the FolderSource of {self.connection}"

    dataset: ClassVar[None] = None  # the folder itself

    def chunks(self, settings: Settings, since: str | None, chunk_rows: int) -> Iterator[Chunk]:
        folder = settings.connection(self.connection).path
        files = pending_files(folder, self.suffix)
        for number, file in enumerate(files, 1):
            yield replace(read_file(folder, self.suffix, file), last=number == len(files))

    def done(self, settings: Settings, chunk: Chunk) -> None:
        if chunk.file is not None:
            archive_file(settings.connection(self.connection).path, self.suffix, chunk.file)


@task(name="list-files", cache_policy=NO_CACHE)
def pending_files(folder: Path, suffix: str) -> list[Path]:
    files = DropFolder(folder, suffix).pending()
    get_run_logger().info("%d new %s files in %s", len(files), suffix, folder)
    return files


@task(name="ingest-file", cache_policy=NO_CACHE)
def read_file(folder: Path, suffix: str, file: Path) -> Chunk:
    read = DropFolder(folder, suffix).read(file)
    frame, refused = records_frame(read.records) if read.columns is None else (read.frame(), [])
    get_run_logger().info("read %d records from %s (%d unreadable)", len(frame), file.name, len(read.unreadable) + len(refused))
    return Chunk(frame, watermark=file.name, file=file, refused=(*read.unreadable, *refused))


@task(name="archive-file", cache_policy=NO_CACHE)
def archive_file(folder: Path, suffix: str, file: Path) -> Path:
    return DropFolder(folder, suffix).archive(file)
