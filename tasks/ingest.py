"""Ingest: pull records from a source system incrementally, a chunk of pages at a time."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from connectors.pagination import CursorPaginator
from connectors.rest import RestClient
from interlink.settings import RestConnection
from tasks import retriable


@dataclass(frozen=True)
class IncrementalEndpoint:
    """A REST collection read incrementally.

    Records sit under `records_field`; `since_param` asks for those whose `cursor_field`
    is at or after a watermark (inclusive, so rows sharing the watermark's timestamp are
    never skipped; delivery recognises the ones it already has).
    """

    connection: str
    path: str
    cursor_field: str
    since_param: str
    records_field: str = "data"
    page_size: int = 500


@dataclass(frozen=True)
class Chunk:
    """Raw records of one chunk, where to resume, and the newest cursor value seen."""

    records: pd.DataFrame
    next_page: str | None
    watermark: str | None


@task(name="ingest", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=retriable)
def fetch_chunk(
    endpoint: IncrementalEndpoint,
    connection: RestConnection,
    since: str | None,
    page: str | None,
    max_rows: int,
) -> Chunk:
    """Read pages from `page` (None: the first) until `max_rows` records or the end."""
    paginator = CursorPaginator(cursor=page)
    params: dict[str, object] = {"limit": endpoint.page_size}
    if since:
        params[endpoint.since_param] = since
    records: list[dict] = []
    with RestClient.connect(endpoint.connection, connection) as client:
        for body in client.paginate(endpoint.path, paginator, params):
            records.extend(body[endpoint.records_field])
            if len(records) >= max_rows:
                break
    frame = pd.DataFrame.from_records(records)
    get_run_logger().info("read %d records from %s%s (since %s)", len(frame), endpoint.connection, endpoint.path, since)
    return Chunk(frame, paginator.cursor if paginator.has_next_page else None, newest(frame, endpoint.cursor_field))


def newest(frame: pd.DataFrame, column: str) -> str | None:
    """The value of `column` with the latest time, as the source wrote it."""
    if frame.empty:
        return None
    times = pd.to_datetime(frame[column], utc=True, errors="coerce", format="ISO8601")
    return None if times.isna().all() else frame[column].loc[times.idxmax()]
