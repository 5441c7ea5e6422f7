"""The shape every integration shares, written once.

A `Pipeline` declares where records come from, how they are mapped and looked up,
the contract they must meet, and where they go. `sync_flow` and `replay_flow` turn it
into Prefect flows: batch by batch, ingest → transform → enrich → check → deliver,
with failing rows dead-lettered, every run ledgered and reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import copy_context
from dataclasses import dataclass, replace
from functools import cached_property, partial
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import pandas as pd
from interlink.connectors.breaker import breakers
from interlink.data_checks.gate import GateRejected
from interlink.data_checks.guards import staleness
from interlink.data_checks.policy import Gate, Policy, SchemaContract
from interlink.flows import CHUNK_ROWS
from interlink.tasks.admit import NO_FAILURES, admit, records_frame
from interlink.tasks.check import check
from interlink.tasks.deliver import Delivery
from interlink.tasks.enrich import enrich_batch
from interlink.tasks.gate import decide, schema_guard, target_limits, volume_guard
from interlink.tasks.ingest import Chunk
from interlink.tasks.quarantine import quarantine, quarantine_records, settle
from interlink.tasks.report import publish_report
from interlink.tasks.transform import transform_batch
from interlink.tasks.watermark import later, positions
from prefect import Flow, flow, get_run_logger
from prefect.client.schemas.objects import FlowRun
from prefect.runtime import deployment, flow_run
from prefect.states import Completed, State
from pydantic import Field

from interlink import integration_facts
from interlink.alerts import alert
from interlink.deadletter import OPEN, REPLAYED, RESOLVED, DeadLetters
from interlink.failure_logs import install as one_line_failures
from interlink.json_logs import install as json_logs
from interlink.ledger import QUARANTINED, Counts, Entry, Ledger, success_state
from interlink.observe import count_checks, observed, run_facts
from interlink.progress import batch_done
from interlink.run_facts import BATCH, Dataset
from interlink.settings import Settings
from interlink.tracing import span

if TYPE_CHECKING:
    import great_expectations as gx

one_line_failures()  # wherever a flow runs: a failed run's error logs are its one-line cause
json_logs()  # a run a Prefect worker or runner started: JSON log lines, if INTERLINK_LOG_FORMAT=json


class Source(Protocol):
    """What a pipeline reads from (`RestSource`, `SqlSource`, `FolderSource`): chunks of raw records since a watermark."""

    connection: str
    cursor: str | None  # the field whose times or numbers the watermark follows
    sorted: bool  # records come in cursor order, so each chunk's watermark may commit with it
    setting: str  # where the source is declared, for messages

    def chunks(self, settings: Settings, since: str | None, chunk_rows: int) -> Iterator[Chunk]:
        """The records at or after `since` (the committed watermark; None: everything), about `chunk_rows` at a time."""

    def done(self, settings: Settings, chunk: Chunk) -> None:
        """`chunk` is delivered and its watermark committed (a folder source archives its files)."""


class Enricher(Protocol):
    """A lookup in another system (`Lookup`) that adds columns to transformed rows."""

    connection: str

    def enrich(self, settings: Settings, rows: pd.DataFrame, cache: dict) -> pd.DataFrame:
        """`rows` with the looked-up columns; `cache` lives for the run, so each distinct value is fetched once."""


class Target(Protocol):
    """What a pipeline delivers to (`SqlTarget`, `RestTarget`): it keeps the watermark, refuses before writing what it
    could not hold, and counts only what it confirmed."""

    connection: str

    def watermark(self, settings: Settings, integration: str) -> str | None: ...

    def refusals(self, rows: pd.DataFrame) -> pd.DataFrame: ...

    def unchanged(self, settings: Settings, rows: pd.DataFrame, integration: str) -> pd.Index: ...

    def deliver(
        self, settings: Settings, rows: pd.DataFrame, integration: str, watermark: str | None, sensitive: tuple[str, ...] = ()
    ) -> Delivery: ...

    def commit(self, settings: Settings, integration: str, watermark: str) -> None: ...


class SourceOrderError(Exception):
    """A source declared sorted sent a record out of cursor order."""


@dataclass(frozen=True)
class Pipeline:
    """An integration, declared.

    `transform` maps raw records to target rows, keeping for each row the index of a raw
    record it came from (it runs in a task named `transform`, a record it fails on
    dead-lettered); `source_key`
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
        from interlink.flows.reconcile import reconcile_flow  # it builds on this module

        return reconcile_flow(self)

    @cached_property
    def sync_partitioned(self) -> Flow:
        """The sync split into time windows on Dask; `ConfigError` where the source cannot be windowed."""
        from interlink.flows.partitioned import partitioned_sync_flow  # it builds on this module

        return partitioned_sync_flow(self)

    def __getstate__(self) -> dict:
        """Pickled (e.g. for a Dask worker) without the flows made from it."""
        return {k: v for k, v in self.__dict__.items() if not isinstance(v, Flow)}


def alert_hooks(pipeline: Pipeline) -> dict[str, list[Callable]]:
    """Prefect state hooks that alert when a run of `pipeline` fails or dead-letters too much.

    Their parameters are named as Prefect passes them: the flow engine calls a hook with them in order, the
    runner (a crash it sees from outside the run's process) by name, `flow=`, `flow_run=`, `state=`."""

    def failed(flow: Flow, flow_run: FlowRun, state: State) -> None:
        alert(pipeline.name, "FAILED", str(flow_run.id), state.message or "", deployment_id=_id(flow_run.deployment_id))

    def crashed(flow: Flow, flow_run: FlowRun, state: State) -> None:
        alert(pipeline.name, "CRASHED", str(flow_run.id), state.message or "", deployment_id=_id(flow_run.deployment_id))

    def completed(flow: Flow, flow_run: FlowRun, state: State) -> None:
        summary = state.result(raise_on_failure=False)
        if isinstance(summary, dict) and summary["rows_quarantined"] > pipeline.gate.alert_above * max(summary["rows_read"], 1):
            counts = {k: v for k, v in summary.items() if k.startswith("rows_")}
            message = f"{summary['rows_quarantined']} of {summary['rows_read']} rows dead-lettered (alert above {pipeline.gate.alert_above:.0%})"
            alert(pipeline.name, "QUARANTINED", str(flow_run.id), message, counts, deployment_id=_id(flow_run.deployment_id))

    return {"on_failure": [failed], "on_crashed": [crashed], "on_completion": [completed]}


def _id(deployment_id: Any) -> str | None:
    return str(deployment_id) if deployment_id else None


def alert_pause(pipeline: Pipeline, summary: str, counts: dict) -> None:
    """Alert that a batch of `pipeline` waits for a person's approval."""
    alert(pipeline.name, "PAUSED", flow_run.id, f"waiting for approval: {summary}", counts, deployment_id=deployment.id)


def sync_flow(pipeline: Pipeline) -> Flow:
    """The integration's sync: everything changed since the committed watermark."""

    @flow(
        name=pipeline.name, description=f"Sync {pipeline.source.connection} → {pipeline.target.connection}",
        **alert_hooks(pipeline),
    )
    def sync(
        full_refresh: bool = False,
        chunk_size: int = CHUNK_ROWS,
        policy: Policy = pipeline.gate.policy,
        approve_above: Annotated[float, Field(ge=0, le=1)] = pipeline.gate.approve_above,
    ) -> State:
        """`policy` and `approve_above` override the integration's declared gate for this run (a deployment's parameters)."""
        settings = Settings.load()
        source = pipeline.source
        gated = replace(pipeline, gate=replace(pipeline.gate, policy=policy, approve_above=approve_above))
        with ledgered(pipeline, settings, "sync", None) as entry:
            since = None if full_refresh else pipeline.target.watermark(settings, pipeline.name)
            entry.since = entry.watermark = since
            caches: list[dict] = [{} for _ in pipeline.enrichers]
            newest = since

            def finish(number: int, chunk: Chunk, batch: Prepared, mark: str | None) -> None:
                deliver_batch(gated, settings, batch, mark, RESOLVED, entry)
                source.done(settings, chunk)
                entry.watermark = mark or entry.watermark
                entry.checkpoint()
                batch_done(pipeline.name, number, entry)
                if chunk.disorder:
                    raise SourceOrderError(
                        f"{source.setting} says sorted=True, but its records are not in {source.cursor} order "
                        f"({chunk.disorder}); this batch was delivered without moving the watermark: set sorted=False there"
                    )

            with Behind() as behind:
                for number, chunk in enumerate(ingested(source.chunks(settings, since, chunk_size)), 1):
                    with batch_span(pipeline, number, chunk):
                        if chunk.last:
                            behind.wait()  # the volume guard counts every row before this batch
                        guard_batch(gated, settings, chunk, entry)
                        newest = later(newest, chunk.watermark)
                        mark = chunk.watermark if source.sorted and not chunk.disorder else None
                        batch = prepare_batch(gated, settings, chunk.records, caches, entry, chunk.refused, chunk.moments)
                        behind.submit(finish, number, chunk, batch, mark)
                    if chunk.disorder:
                        behind.wait()
            if not source.sorted and newest and newest != since:
                pipeline.target.commit(settings, pipeline.name, newest)  # the whole run is delivered
                entry.watermark = newest
                entry.checkpoint()
            entry.report = run_report(pipeline, settings, entry, since)
        return final_state(pipeline, entry)

    return sync


def replay_flow(pipeline: Pipeline) -> Flow:
    """The integration's replay: its open dead letters through transform → deliver again."""

    @flow(name=f"{pipeline.name}_replay", description=f"Replay the dead letters of {pipeline.name}", **alert_hooks(pipeline))
    def replay() -> State:
        settings = Settings.load()
        letters = DeadLetters(settings.state_db).entries(pipeline.name, OPEN, reveal=True)  # the records as they came
        keyed = [letter for letter in letters if all(_keyed(record, pipeline.source_key) for record in letter["payload"])]
        records, refused = records_frame([record for letter in keyed for record in letter["payload"]])
        with ledgered(pipeline, settings, "replay", None) as entry:
            if len(keyed) < len(letters):
                entry.notes.append(f"{len(letters) - len(keyed)} dead letters hold records without {pipeline.source_key!r}: "
                                   "left open, as no replay can deliver them; fix them at the source")
            with batch_span(pipeline, 1, None, len(records)):
                process_batch(pipeline, settings, records, [{} for _ in pipeline.enrichers], None, REPLAYED, entry, tuple(refused))
            entry.checkpoint()
            batch_done(pipeline.name, 1, entry)
            entry.report = run_report(pipeline, settings, entry, None)
        return final_state(pipeline, entry)

    return replay


def ingested(chunks: Iterator[Chunk]) -> Iterator[Chunk]:
    """`chunks`, each read in a span of its own (`ingest`; the reads ahead in a source's thread are its children)."""
    while True:
        with span("ingest"):
            chunk = next(chunks, None)
        if chunk is None:
            return
        yield chunk


@contextmanager
def batch_span(pipeline: Pipeline, number: int, chunk: Chunk | None, rows: int | None = None) -> Iterator[None]:
    """Batch `number` of the run: its span (the steps' spans are its children), and its number for the logs."""
    rows = rows if chunk is None else len(chunk.records) + len(chunk.refused)
    token = BATCH.set(number)
    try:
        with span("batch", **{"interlink.integration": pipeline.name, "interlink.batch": number, "interlink.rows": rows}):
            yield
    finally:
        BATCH.reset(token)


def _keyed(record: Any, source_key: str) -> bool:
    """Whether a dead-lettered record can be replayed: it has its source key (or is not even an object, and is refused again)."""
    return not isinstance(record, dict) or record.get(source_key) not in (None, "")


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


@dataclass(frozen=True)
class Prepared:
    """A batch through every step but delivery: its raw records, the rows that passed, and what became of the rest."""

    raw: pd.DataFrame
    rows: pd.DataFrame
    counts: Counts


def process_batch(
    pipeline: Pipeline,
    settings: Settings,
    raw: pd.DataFrame,
    caches: list[dict],
    watermark: str | None,
    settled: str,
    entry: Entry,
    refused: tuple[tuple[Any, str], ...] = (),
    moments: pd.Series | None = None,
) -> None:
    """One batch through the steps, counted into `entry`; `caches` keep each enricher's lookups for the run."""
    deliver_batch(pipeline, settings, prepare_batch(pipeline, settings, raw, caches, entry, refused, moments), watermark, settled, entry)


def prepare_batch(
    pipeline: Pipeline,
    settings: Settings,
    raw: pd.DataFrame,
    caches: list[dict],
    entry: Entry,
    refused: tuple[tuple[Any, str], ...] = (),
    moments: pd.Series | None = None,
) -> Prepared:
    """A batch read, transformed, enriched and checked. A record that fails a step (read, transform, enrich,
    check, or the target's own limits) is dead-lettered with the stage and the reason, and the rest go on."""
    counts = Counts(rows_read=len(raw) + len(refused))
    if raw.empty and not refused:
        return Prepared(raw, raw, counts)
    dead = partial(quarantined_at, pipeline, settings, raw)
    quarantined = quarantine_records(settings.state_db, pipeline.name, refused, pipeline.source_key, flow_run.id) if refused else 0
    completed, failed = admit(raw, pipeline.contract, pipeline.source.cursor, moments)
    quarantined += dead("ingest", failed)
    admitted = _without(completed, failed.index)
    rows, failures = shape(pipeline, settings, admitted, caches)
    shaped = rows.index.union(failures["transform"].index).union(failures["enrich"].index)
    superseded = len(admitted.index.difference(shaped))  # records the transform merged into a newer one
    quarantined += dead("transform", failures["transform"]) + dead("enrich", failures["enrich"])
    to_check = _without(rows, unchanged_at(pipeline, settings, admitted, rows, entry.since, moments))
    failed = checked(pipeline, settings, to_check, entry) if not to_check.empty else NO_FAILURES
    quarantined += dead("check", failed, rows)
    passed = _without(rows, failed.index)
    failed = target_limits(pipeline.target, passed) if not passed.empty else NO_FAILURES
    quarantined += dead("deliver", failed, passed)
    return Prepared(raw, _without(passed, failed.index), counts + Counts(rows_quarantined=quarantined, rows_superseded=superseded))


def _without(frame: pd.DataFrame, labels: pd.Index) -> pd.DataFrame:
    """`frame` less the rows labelled `labels`: itself when there are none (a drop copies every column)."""
    return frame.drop(labels) if len(labels) else frame


def deliver_batch(pipeline: Pipeline, settings: Settings, batch: Prepared, watermark: str | None, settled: str, entry: Entry) -> None:
    """Deliver a prepared batch and count it into `entry`. The watermark commits with the delivered rows, or after
    the dead letters when the target had to be written in parts; the delivered rows' open dead letters are settled."""
    if not batch.counts.rows_read:
        return
    passed, quarantined = batch.rows, 0
    if watermark is not None and not passed.empty:  # before the commit that moves past them: a crash after it
        settle(settings.state_db, pipeline.name, passed[pipeline.key], settled)  # cannot leave them open
    if passed.empty:
        delivery = Delivery(Counts(), committed=watermark is None)
    else:
        with span("deliver", **{"interlink.rows": len(passed), "interlink.connection": pipeline.target.connection}):
            delivery = pipeline.target.deliver(settings, passed, pipeline.name, watermark, pipeline.gate.sensitive)
        quarantined = quarantined_at(pipeline, settings, batch.raw, "deliver", delivery.failures, passed)
    if not delivery.committed:
        pipeline.target.commit(settings, pipeline.name, watermark)
    if watermark is None and not passed.empty:  # read again until delivered (replay: while still open)
        settle(settings.state_db, pipeline.name, passed[pipeline.key].drop(delivery.failures.index), settled)
    entry.counts += batch.counts + delivery.counts + Counts(rows_quarantined=quarantined)


class Behind:
    """Each batch's delivery in a thread of its own while the flow prepares the next: one at a time, in order.

    `submit` waits for the delivery before; `wait` for the last one, raising its error. Leaving the block waits
    too, so a run that fails while a batch is being delivered still finishes (and ledgers) that batch.
    """

    def __enter__(self) -> Behind:
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="deliver")
        self._pending: Future | None = None
        return self

    def submit(self, deliver: Callable[..., None], *args: Any) -> None:
        self.wait()
        self._pending = self._writer.submit(copy_context().run, deliver, *args)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: Any) -> None:
        try:
            self.wait()
        except Exception as late:
            if error is None:
                raise
            get_run_logger().error("delivering the batch before the failure failed too: %s", late)
        finally:
            self._writer.shutdown()


def unchanged_at(
    pipeline: Pipeline, settings: Settings, raw: pd.DataFrame, rows: pd.DataFrame, since: str | None, moments: pd.Series | None
) -> pd.Index:
    """The rows re-read at the inclusive watermark `since` (their raw cursor equals it) that the target already holds
    exactly. They need no check: delivering them changes nothing (they count as unchanged), so a run that finds nothing
    new validates nothing and never loads Great Expectations. Every other row is checked; runs with no `since`
    (a full refresh, a replay, a partition of a partitioned sync, the order-event stream) check every row."""
    cursor = pipeline.source.cursor
    if since is None or cursor is None or cursor not in raw.columns or rows.empty:
        return rows.index[:0]
    mark = positions(pd.Series([since], dtype=object)).iloc[0]
    at_mark = raw.index[(positions(raw[cursor], moments=moments) == mark).to_numpy()]
    candidates = rows.loc[rows.index.intersection(at_mark)]
    return pipeline.target.unchanged(settings, candidates, pipeline.name) if not candidates.empty else candidates.index


def quarantined_at(
    pipeline: Pipeline, settings: Settings, raw: pd.DataFrame, stage: str, failed: pd.DataFrame, rows: pd.DataFrame | None = None
) -> int:
    """Dead-letter the `failed` records of `raw` at `stage`, named by their key in `rows` (before there are rows:
    by a `key` column of `failed`, or their source key); returns how many."""
    if failed.empty:
        return 0
    if rows is not None:
        keys = rows.loc[failed.index, pipeline.key]
    elif "key" in failed.columns:
        keys = failed["key"]
    else:
        keys = raw[pipeline.source_key].reindex(failed.index) if pipeline.source_key in raw.columns else pd.Series(None, index=failed.index, dtype=object)
    return quarantine(settings.state_db, pipeline.name, raw, failed, keys, pipeline.source_key, stage, flow_run.id)


def checked(pipeline: Pipeline, settings: Settings, rows: pd.DataFrame, entry: Entry) -> pd.DataFrame:
    """The rows' check failures (`reason`, `values`); a failed batch, or a person's rejection, raises."""
    with span("check", **{"interlink.rows": len(rows)}):
        validation = check(rows, pipeline.suite, settings.home, run_name(), pipeline.gate.sensitive)
    count_checks(rows, validation.expectations)
    try:
        if decision := decide(pipeline.name, rows, validation, pipeline.gate, partial(alert_pause, pipeline)):
            entry.decision = "; ".join(filter(None, [entry.decision, decision]))
    except GateRejected as exc:
        entry.decision = exc.decision
        raise
    return validation.row_failures


def shape(pipeline: Pipeline, settings: Settings, raw: pd.DataFrame, caches: list[dict]) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Raw records as the target would get them: transformed, then enriched (`caches` keep each enricher's finds);
    and the records each step could not take, as failures (`reason`, `values`, and for enrich the row's `key`)."""
    groups = raw[pipeline.source_key] if pipeline.source_key in raw.columns else None
    with span("transform", **{"interlink.rows": len(raw)}):
        rows, failed = transform_batch(pipeline.transform, raw, groups) if not raw.empty else (raw, NO_FAILURES)
    failures = {"transform": failed, "enrich": NO_FAILURES}
    for enricher, cache in zip(pipeline.enrichers, caches, strict=True):
        if rows.empty:
            break
        before = rows
        with span("enrich", **{"interlink.rows": len(rows), "interlink.connection": enricher.connection}):
            rows, failed = enrich_batch(enricher, settings, rows, cache)
        failed = failed.assign(key=before.loc[failed.index, pipeline.key])
        failures["enrich"] = pd.concat([failures["enrich"], failed]) if not failures["enrich"].empty else failed
    return rows, failures


@contextmanager
def ledgered(pipeline: Pipeline, settings: Settings, kind: str, since: str | None, source: Dataset | None = None) -> Iterator[Entry]:
    """Ledger the run, observed (`interlink.observe`: lineage from `source`, by default the pipeline's, and its
    lookups to its target), noting every circuit breaker that opened while it ran (and, for the read-only commands,
    the connections and masked fields of the integration: `interlink.integration_facts`)."""
    opened = {id(b): b.opened_times for b in breakers()}
    reads = [source or pipeline.source, *pipeline.enrichers]
    facts = run_facts(settings, pipeline.name, flow_run.flow_name or pipeline.name, kind, flow_run.id, reads, pipeline.target)
    with observed(facts, settings), Ledger(settings.state_db).record(
        pipeline.name, kind=kind, flow_run_id=flow_run.id, target=_target(pipeline, settings), watermark=since, trace_id=facts.trace_id
    ) as entry:
        facts.ledger_row = entry.row_id
        integration_facts.record(settings.state_db, pipeline.name, pipeline.connections, pipeline.gate.masked)
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
        publish_report(
            pipeline.name, settings.home, run_name(), entry.counts, (since, entry.watermark), _target(pipeline, settings),
            entry.decision,
        )
    )


def _target(pipeline: Pipeline, settings: Settings) -> str:
    return settings.connection(pipeline.target.connection).display


def run_name() -> str:
    return flow_run.id or "local"


def final_state(pipeline: Pipeline, entry: Entry) -> State:
    """Completed, named `Quarantined` (a warning in the Prefect UI) when any row was dead-lettered: the state the
    ledger gives the run (`interlink.ledger.success_state`). The counts are the flow run's, over all its attempts."""
    summary = {"integration": pipeline.name, **vars(entry.counts), "watermark": entry.watermark, "report": entry.report}
    if success_state(entry.counts) == QUARANTINED:
        return Completed(name="Quarantined", message=f"{entry.counts.rows_quarantined} rows dead-lettered", data=summary)
    return Completed(data=summary)
