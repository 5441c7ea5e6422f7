"""Ingest: pull records from a source system incrementally, one chunk per task run."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from connectors import pagination
from connectors.files import DropFolder
from connectors.gauge import ROWS_HELD
from connectors.rest import RestClient
from interlink.settings import ConfigError, RestConnection, Settings
from tasks import retriable


@dataclass(frozen=True)
class Chunk:
    """Raw records of one batch, the newest source watermark in them, the file they came from,
    and whether it is the run's last batch."""

    records: pd.DataFrame
    watermark: str | None = None
    file: Path | None = None
    last: bool = True


@dataclass(frozen=True)
class RestSource:
    """A REST collection read incrementally.

    `since_param` asks for records whose `cursor_field` is at or after the watermark
    (inclusive, so records sharing the watermark's time are never skipped; delivery
    recognises the ones it already has). `paginator` configures the strategy by name
    (see `connectors.pagination.PAGINATORS`); records sit at the dotted `records_path`.
    With page-number or offset pagination, `concurrent_pages` pages are fetched at once
    (within the connection's rate budget and `max_concurrency`). `until_param`, if the API
    has one, bounds `cursor_field` from above (exclusive), so a sync can be split into windows.
    """

    connection: str
    path: str
    cursor_field: str
    since_param: str
    paginator: dict[str, Any] = field(default_factory=lambda: {"type": "cursor"})
    records_path: str | None = "data"
    params: dict[str, Any] = field(default_factory=dict)
    concurrent_pages: int = 1
    until_param: str | None = None

    def before(self, until: str | None) -> RestSource:
        """This source, reading only records whose `cursor_field` is before `until` (None: no bound)."""
        if until is None:
            return self
        if self.until_param is None:
            raise ConfigError(f"{self.connection}{self.path} has no `until_param`: it cannot be read in windows")
        return replace(self, params={**self.params, self.until_param: until})

    def chunks(self, settings: Settings, since: str | None, chunk_rows: int) -> Iterator[Chunk]:
        """The chunks in order; each next one is read, in a thread, while the caller works on this one."""
        connection = settings.connection(self.connection)
        # A thread of our own rather than `fetch_chunk.submit`: a Prefect future keeps its result
        # for the whole flow run, and so would keep every chunk.
        with ThreadPoolExecutor(1, thread_name_prefix=f"read-{self.connection}") as reader:
            ahead = reader.submit(copy_context().run, fetch_chunk, self, connection, since, None, chunk_rows)
            while True:
                chunk, position = ahead.result()
                if position is not None:
                    ahead = reader.submit(copy_context().run, fetch_chunk, self, connection, since, position, chunk_rows)
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

    Returns the chunk and the position of the next page (None when the source is exhausted).
    """
    paginator = pagination.from_config(source.paginator)
    if position is not None:
        paginator.resume(position)
    params = dict(source.params)
    if since:
        params[source.since_param] = since
    pages: list[pd.DataFrame] = []  # a frame per page: far smaller than the page's dicts
    rows = 0
    with RestClient.connect(source.connection, connection) as client:
        for page in client.paginate(source.path, paginator, params, source.records_path, source.concurrent_pages):
            pages.append(pd.DataFrame.from_records(page))
            rows += len(page)
            if rows >= max_rows:
                break
    frame = ROWS_HELD.track(pd.concat(pages, ignore_index=True) if len(pages) > 1 else pages[0])
    get_run_logger().info("read %d records from %s%s (since %s)", len(frame), source.connection, source.path, since)
    position = paginator.checkpoint()
    return Chunk(frame, newest(frame, source.cursor_field), last=position is None), position


@dataclass(frozen=True)
class FolderSource:
    """Files dropped in a folder, each read whole as one chunk and archived once delivered."""

    connection: str
    suffix: str = ".csv"

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
    frame = pd.concat(DropFolder(folder, suffix).read(file), ignore_index=True)
    get_run_logger().info("read %d records from %s", len(frame), file.name)
    return Chunk(frame, watermark=file.name, file=file)


@task(name="archive-file", cache_policy=NO_CACHE)
def archive_file(folder: Path, suffix: str, file: Path) -> Path:
    return DropFolder(folder, suffix).archive(file)


def newest(frame: pd.DataFrame, column: str) -> str | None:
    """The value of `column` with the latest time, as the source wrote it."""
    if frame.empty:
        return None
    times = pd.to_datetime(frame[column], utc=True, errors="coerce", format="ISO8601")
    return None if times.isna().all() else frame[column].loc[times.idxmax()]
