"""The shape every integration shares, written once.

A `Pipeline` declares where records come from, how they are mapped and looked up,
the contract they must meet, and where they go. `sync_flow` and `replay_flow` turn it
into Prefect flows: batch by batch, ingest → transform → enrich → check → deliver,
with failing rows dead-lettered, every run ledgered and reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Protocol

import great_expectations as gx
import pandas as pd
from prefect import Flow, Task, flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import FlowRun
from prefect.runtime import flow_run
from prefect.states import Completed, State

from connectors.breaker import breakers
from data_checks.gate import GateRejected
from data_checks.guards import staleness
from data_checks.policy import Gate, SchemaContract
from flows import CHUNK_ROWS
from interlink.alerts import alert
from interlink.deadletter import OPEN, REPLAYED, RESOLVED, DeadLetters
from interlink.ledger import Counts, Entry, Ledger
from interlink.settings import Settings
from tasks.check import check
from tasks.deliver import Delivery
from tasks.gate import decide, schema_guard, volume_guard
from tasks.ingest import Chunk
from tasks.quarantine import quarantine
from tasks.report import publish_report


class Source(Protocol):
    connection: str

    def chunks(self, settings: Settings, since: str | None, chunk_rows: int) -> Iterator[Chunk]: ...

    def done(self, settings: Settings, chunk: Chunk) -> None: ...


class Enricher(Protocol):
    connection: str

    def enrich(self, settings: Settings, rows: pd.DataFrame, cache: dict) -> pd.DataFrame: ...


class Target(Protocol):
    connection: str

    def watermark(self, settings: Settings, integration: str) -> str | None: ...

    def deliver(self, settings: Settings, rows: pd.DataFrame, integration: str, watermark: str | None) -> Delivery: ...


@dataclass(frozen=True)
class Pipeline:
    """An integration, declared.

    `transform` maps raw records to target rows, keeping for each row the index of a raw
    record it came from (a plain function runs as a task named `transform`); `source_key`
    names the raw field that identifies a record, so a dead letter keeps every raw record
    of it, ready to replay.
    """

    name: str
    source: Source
    transform: Callable[[pd.DataFrame], pd.DataFrame]
    suite: Callable[[], gx.ExpectationSuite]
    target: Target
    key: str
    source_key: str
    enrichers: tuple[Enricher, ...] = ()
    gate: Gate = Gate()
    contract: SchemaContract | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.transform, Task):
            object.__setattr__(self, "transform", task(self.transform, name="transform", cache_policy=NO_CACHE))

    @property
    def connections(self) -> list[str]:
        return [self.source.connection, *(e.connection for e in self.enrichers), self.target.connection]

    # The integration's flows, made on first use; a deployment's entrypoint is `flows.<module>:PIPELINE.sync`.
    @cached_property
    def sync(self) -> Flow:
        return sync_flow(self)

    @cached_property
    def replay(self) -> Flow:
        return replay_flow(self)

    @cached_property
    def reconcile(self) -> Flow:
        """Every integration with a SQL target has one; others raise `ConfigError`."""
        from flows.reconcile import reconcile_flow  # it builds on this module

        return reconcile_flow(self)

    @cached_property
    def sync_partitioned(self) -> Flow:
        """The sync split into time windows on Dask; `ConfigError` where the source cannot be windowed."""
        from flows.partitioned import partitioned_sync_flow  # it builds on this module

        return partitioned_sync_flow(self)

    def __getstate__(self) -> dict:
        """Pickled (e.g. for a Dask worker) without the flows made from it."""
        return {k: v for k, v in self.__dict__.items() if not isinstance(v, Flow)}


def alert_hooks(pipeline: Pipeline) -> dict[str, list[Callable]]:
    """Prefect state hooks that alert when a run of `pipeline` fails or dead-letters too much."""

    def failed(flow: Flow, run: FlowRun, state: State) -> None:
        alert(pipeline.name, "FAILED", str(run.id), state.message or "")

    def completed(flow: Flow, run: FlowRun, state: State) -> None:
        summary = state.result(raise_on_failure=False)
        if isinstance(summary, dict) and summary["rows_quarantined"] > pipeline.gate.alert_above * max(summary["rows_read"], 1):
            counts = {k: v for k, v in summary.items() if k.startswith("rows_")}
            alert(pipeline.name, "QUARANTINED", str(run.id), f"{summary['rows_quarantined']} rows dead-lettered", counts)

    return {"on_failure": [failed], "on_crashed": [failed], "on_completion": [completed]}


def alert_pause(pipeline: Pipeline, summary: str, counts: dict) -> None:
    """Alert that a batch of `pipeline` waits for a person's approval."""
    alert(pipeline.name, "PAUSED", flow_run.id, f"waiting for approval: {summary}", counts)


def sync_flow(pipeline: Pipeline) -> Flow:
    """The integration's sync: everything changed since the committed watermark."""

    @flow(
        name=pipeline.name, description=f"Sync {pipeline.source.connection} → {pipeline.target.connection}",
        **alert_hooks(pipeline),
    )
    def sync(full_refresh: bool = False, chunk_size: int = CHUNK_ROWS) -> State:
        settings = Settings.load()
        since = None if full_refresh else pipeline.target.watermark(settings, pipeline.name)
        with ledgered(pipeline, settings, "sync", since) as entry:
            caches: list[dict] = [{} for _ in pipeline.enrichers]
            for chunk in pipeline.source.chunks(settings, since, chunk_size):
                guard_batch(pipeline, settings, chunk, entry)
                process_batch(pipeline, settings, chunk.records, caches, chunk.watermark, RESOLVED, entry)
                pipeline.source.done(settings, chunk)
                entry.watermark = chunk.watermark or entry.watermark
            entry.report = run_report(pipeline, settings, entry, since)
        return final_state(pipeline, entry)

    return sync


def replay_flow(pipeline: Pipeline) -> Flow:
    """The integration's replay: its open dead letters through transform → deliver again."""

    @flow(name=f"{pipeline.name}_replay", description=f"Replay the dead letters of {pipeline.name}", **alert_hooks(pipeline))
    def replay() -> State:
        settings = Settings.load()
        letters = DeadLetters(settings.state_db).entries(pipeline.name, OPEN)
        records = pd.DataFrame.from_records([record for letter in letters for record in letter["payload"]])
        with ledgered(pipeline, settings, "replay", None) as entry:
            process_batch(pipeline, settings, records, [{} for _ in pipeline.enrichers], None, REPLAYED, entry)
            entry.report = run_report(pipeline, settings, entry, None)
        return final_state(pipeline, entry)

    return replay


def guard_batch(pipeline: Pipeline, settings: Settings, chunk: Chunk, entry: Entry) -> None:
    """The guards beyond row expectations: schema contract, freshness, and (on the last batch) volume."""
    gate, raw = pipeline.gate, chunk.records
    if pipeline.contract and not raw.empty and (diff := schema_guard(raw, pipeline.contract)):
        entry.notes.append(f"schema evolved from contract {pipeline.contract.version}: " + "; ".join(diff))
    if warning := staleness(raw, gate.age_field, gate.max_age):
        get_run_logger().warning(warning)
        entry.notes.append(warning)
    if chunk.last and gate.volume_drop is not None:
        if note := volume_guard(settings.state_db, pipeline.name, entry.counts.rows_read + len(raw), gate):
            entry.notes.append(note)


def process_batch(
    pipeline: Pipeline,
    settings: Settings,
    raw: pd.DataFrame,
    caches: list[dict],
    watermark: str | None,
    settled: str,
    entry: Entry,
) -> None:
    """One batch through the steps, counted into `entry`; `caches` keep each enricher's lookups for the run."""
    if raw.empty:
        return
    rows = shape(pipeline, settings, raw, caches)
    validation = check(rows, pipeline.suite(), settings.home, run_name(), pipeline.gate.sensitive)
    try:
        if decision := decide(pipeline.name, rows, validation, pipeline.gate, partial(alert_pause, pipeline)):
            entry.decision = "; ".join(filter(None, [entry.decision, decision]))
    except GateRejected as exc:
        entry.decision = exc.decision
        raise
    keys = (pipeline.source_key, pipeline.key)
    failures = validation.row_failures
    quarantined = quarantine(settings.state_db, pipeline.name, raw, rows, failures, keys, "check", settled, flow_run.id)
    passed = rows.drop(failures.index)
    delivery = pipeline.target.deliver(settings, passed, pipeline.name, watermark)
    if not delivery.failures.empty:
        quarantined += quarantine(settings.state_db, pipeline.name, raw, passed, delivery.failures, keys, "deliver", settled, flow_run.id)
    entry.counts += delivery.counts + Counts(rows_read=len(raw), rows_quarantined=quarantined)


def shape(pipeline: Pipeline, settings: Settings, raw: pd.DataFrame, caches: list[dict]) -> pd.DataFrame:
    """Raw records as the target would get them: transformed, then enriched (`caches` keep each enricher's finds)."""
    rows = pipeline.transform(raw)
    for enricher, cache in zip(pipeline.enrichers, caches, strict=True):
        rows = enricher.enrich(settings, rows, cache)
    return rows


@contextmanager
def ledgered(pipeline: Pipeline, settings: Settings, kind: str, since: str | None) -> Iterator[Entry]:
    """Ledger the run, noting every circuit breaker that opened while it ran."""
    opened = {id(b): b.opened_times for b in breakers()}
    with Ledger(settings.state_db).record(
        pipeline.name, kind=kind, flow_run_id=flow_run.id, target=_target(pipeline, settings), watermark=since
    ) as entry:
        try:
            yield entry
        finally:
            entry.circuits = "; ".join(
                f"{b.name} opened {b.opened_times - opened.get(id(b), 0)}x, now {b.state}"
                for b in breakers()
                if b.opened_times > opened.get(id(b), 0)
            ) or None


def run_report(pipeline: Pipeline, settings: Settings, entry: Entry, since: str | None) -> str:
    return str(
        publish_report(pipeline.name, settings.home, run_name(), entry.counts, (since, entry.watermark), _target(pipeline, settings))
    )


def _target(pipeline: Pipeline, settings: Settings) -> str:
    return settings.connection(pipeline.target.connection).display


def run_name() -> str:
    return flow_run.id or "local"


def final_state(pipeline: Pipeline, entry: Entry) -> State:
    """Completed, named `Quarantined` (a warning in the Prefect UI) when any row was dead-lettered."""
    summary = {"integration": pipeline.name, **vars(entry.counts), "watermark": entry.watermark, "report": entry.report}
    if entry.counts.rows_quarantined:
        return Completed(name="Quarantined", message=f"{entry.counts.rows_quarantined} rows dead-lettered", data=summary)
    return Completed(data=summary)
