"""Partitioned syncs: one sync split into time windows that run in parallel on Dask.

The range to read, from the committed watermark (or the source's earliest record) to its
newest record, is cut into K windows of equal length. Each window is a `sync-partition`
task that streams its records chunk by chunk through the sync's own steps
(`interlink.flows.pipeline`) and delivers them without moving the watermark. Once every partition
has succeeded the flow commits the newest watermark any of them saw; if one fails, the
watermark stays and the next run reads the whole range again (upserts are idempotent).

Deliveries of one integration hold a Dask lock, so when two windows carry versions of the
same record the newer one still wins: delivery compares update times under the lock. A dead
letter of a version that a later window's newer version superseded is resolved at the end,
as a sequential sync would have resolved it.

The task runner is a `DaskTaskRunner` on the scheduler at `INTERLINK_DASK_ADDRESS`, or on
a local cluster of one single-threaded worker process per core.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from functools import reduce

import pandas as pd
from interlink.connectors.sql import create_engine, select_in
from interlink.flows import CHUNK_ROWS
from interlink.flows.pipeline import Pipeline, Target, alert_hooks, final_state, guard_batch, ledgered, process_batch, run_report
from interlink.tasks.deliver import Delivery, SqlTarget
from interlink.tasks.gate import volume_guard
from interlink.tasks.ingest import RestSource, fetch_chunk
from interlink.tasks.watermark import later
from prefect import Flow, flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.runtime import flow_run
from prefect.states import State
from prefect.task_runners import TaskRunner

from interlink.deadletter import OPEN, RESOLVED, DeadLetters
from interlink.ledger import Entry
from interlink.settings import ConfigError, Settings

BISECT_STEPS = 12  # probes that find the newest record, to 1/4096 of the range up to now
TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def dask_runner() -> TaskRunner:
    """A `DaskTaskRunner` whose cluster is chosen when a flow run starts (Prefect duplicates the
    flow's runner then): the scheduler at `INTERLINK_DASK_ADDRESS`, or a local cluster.
    Dask is imported here, not with the module: every command finds the integrations by importing
    `flows.*`, and only partitioned runs need it."""
    from prefect_dask import DaskTaskRunner

    class DaskRunner(DaskTaskRunner):
        def duplicate(self) -> DaskTaskRunner:
            if address := Settings.load().dask_address:
                return DaskTaskRunner(address=address)
            local = {"n_workers": os.cpu_count(), "threads_per_worker": 1, "processes": True, "dashboard_address": ":0"}  # any free port
            return DaskTaskRunner(cluster_kwargs=local)

    return DaskRunner()


def partitioned_sync_flow(pipeline: Pipeline) -> Flow:
    """The integration's sync, its range split into `partitions` windows run in parallel."""
    if not getattr(pipeline.source, "until_param", None) or not isinstance(pipeline.target, SqlTarget):
        raise ConfigError(f"{pipeline.name} cannot be partitioned: it needs a REST source with `until_param` and a SQL target")
    if pipeline.gate.policy == "approve":
        raise ConfigError(f"{pipeline.name} cannot be partitioned: an `approve` gate pauses the flow, not a partition")

    @flow(
        name=f"{pipeline.name}_partitioned", task_runner=dask_runner(),
        description=f"Sync {pipeline.source.connection} → {pipeline.target.connection} in parallel windows",
        **alert_hooks(pipeline),
    )
    def sync_partitioned(partitions: int = 2, full_refresh: bool = False, chunk_size: int = CHUNK_ROWS) -> State:
        settings = Settings.load()
        since = None if full_refresh else pipeline.target.watermark(settings, pipeline.name)
        with ledgered(pipeline, settings, "sync", since) as entry:
            bounds = windows(pipeline.source, settings, since, partitions)
            futures = [sync_partition.submit(pipeline, settings, start, end, chunk_size) for start, end in bounds]
            wait(futures)
            parts = [future.result() for future in futures]  # raises the first partition's failure
            for part in parts:
                entry.counts += part.counts
                entry.notes += part.notes
            if pipeline.gate.volume_drop is not None and (note := volume_guard(settings.state_db, pipeline.name, entry.counts.rows_read, pipeline.gate)):
                entry.notes.append(note)
            settle_superseded(pipeline, settings, flow_run.id)
            if newest := reduce(later, (part.watermark for part in parts), None):
                pipeline.target.commit(settings, pipeline.name, newest)
                entry.watermark = newest
                entry.checkpoint()
            entry.report = run_report(pipeline, settings, entry, since)
        return final_state(pipeline, entry)

    return sync_partitioned


@task(name="sync-partition", cache_policy=NO_CACHE)
def sync_partition(pipeline: Pipeline, settings: Settings, since: str | None, until: str | None, chunk_size: int) -> Entry:
    """The records of one window [since, until) through the sync's steps, delivered without moving the watermark."""
    entry = Entry()
    pipeline = replace(pipeline, target=OneAtATime(pipeline.target, f"interlink-deliver-{pipeline.name}"))
    caches: list[dict] = [{} for _ in pipeline.enrichers]
    for chunk in pipeline.source.before(until).chunks(settings, since, chunk_size):
        guard_batch(pipeline, settings, replace(chunk, last=False), entry)  # the flow judges the run's volume
        process_batch(pipeline, settings, chunk.records, caches, None, RESOLVED, entry, chunk.refused, chunk.moments)
        entry.watermark = later(entry.watermark, chunk.watermark)
    return entry


@dataclass(frozen=True)
class OneAtATime:
    """A target whose deliveries, from every partition, hold the Dask lock `lock` in turn."""

    target: Target
    lock: str

    @property
    def connection(self) -> str:
        return self.target.connection

    def watermark(self, settings: Settings, integration: str) -> str | None:
        return self.target.watermark(settings, integration)

    def refusals(self, rows: pd.DataFrame) -> pd.DataFrame:
        return self.target.refusals(rows)

    def unchanged(self, settings: Settings, rows: pd.DataFrame, integration: str) -> pd.Index:
        return self.target.unchanged(settings, rows, integration)

    def deliver(
        self, settings: Settings, rows: pd.DataFrame, integration: str, watermark: str | None, sensitive: tuple[str, ...] = ()
    ) -> Delivery:
        import distributed  # loaded on the Dask worker that runs this

        with distributed.Lock(self.lock):
            return self.target.deliver(settings, rows, integration, watermark, sensitive)

    def commit(self, settings: Settings, integration: str, watermark: str) -> None:
        self.target.commit(settings, integration, watermark)


@task(name="settle-superseded", cache_policy=NO_CACHE)
def settle_superseded(pipeline: Pipeline, settings: Settings, flow_run_id: str | None) -> int:
    """Resolve this run's open dead letters of records the target holds in a newer version, delivered by a later
    window that finished first (a sequential sync resolves them as it goes); returns how many."""
    letters = [e for e in DeadLetters(settings.state_db).entries(pipeline.name, OPEN) if e["flow_run_id"] == flow_run_id]
    failed = {e["record_key"]: _times(pd.Series([r.get(pipeline.source.cursor_field) for r in e["payload"]])).max() for e in letters}
    table, target = pipeline.target.table, pipeline.target
    engine = create_engine(settings.connection(target.connection).url)
    try:
        with engine.connect() as conn:
            held = dict(select_in(conn, [table.c[target.key], table.c[target.updated]], table.c[target.key], failed))
    finally:
        engine.dispose()
    superseded = [key for key, at in failed.items() if key in held and pd.Timestamp(held[key]).tz_localize("UTC") > at]
    return DeadLetters(settings.state_db).settle(pipeline.name, superseded, RESOLVED)


def windows(source: RestSource, settings: Settings, since: str | None, count: int) -> list[tuple[str | None, str | None]]:
    """Up to `count` windows [since, b1), [b1, b2) … [bn, open) of equal length over the records from `since`.

    The first window starts at `since` (None: the beginning) and the last is open, so every
    record falls in exactly one; the bounds between only balance the work.
    """
    start = None if count < 2 else _time(since) if since else _earliest(source, settings)
    if start is None:
        return [(since, None)]
    step = (_newest(source, settings, start) - start) / count
    bounds = sorted({(start + step * i).strftime(TS_FORMAT) for i in range(1, count) if start + step * i > start})
    return list(zip([since, *bounds], [*bounds, None], strict=True))


def _earliest(source: RestSource, settings: Settings) -> pd.Timestamp | None:
    """The oldest update time on the source's first page (the oldest record, for a source read in update order)."""
    first = _first_page(source, settings, None)
    return None if first.empty else _times(first[source.cursor_field]).min()


def _newest(source: RestSource, settings: Settings, start: pd.Timestamp) -> pd.Timestamp:
    """About the newest update time at or after `start`, by bisecting [start, now] on whether records remain."""
    low, high = start, pd.Timestamp.now(tz="UTC")
    for _ in range(BISECT_STEPS):
        middle = low + (high - low) / 2
        if _first_page(source, settings, middle.strftime(TS_FORMAT)).empty:
            high = middle
        else:
            low = middle
    return high


def _first_page(source: RestSource, settings: Settings, since: str | None) -> pd.DataFrame:
    """The records of the first page from `since`: one request (not `chunks`, which would read one ahead)."""
    chunk, _ = fetch_chunk(source, settings.connection(source.connection), since, None, 1)
    return chunk.records


def _time(value: str) -> pd.Timestamp:
    return pd.to_datetime(value, utc=True, format="ISO8601")


def _times(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
