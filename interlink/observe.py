"""A run as the company's own tools see it: OpenLineage events, Prometheus figures, an OpenTelemetry trace.

`observed` wraps a run around its ledgering. As the run starts, its trace begins (the trace id goes to the
run's log and its ledger row) and a lineage START is sent; once the ledger row is final, the row is read back
and what it says is sent: the lineage COMPLETE, FAIL or ABORT, and the figures pushed to a Pushgateway. Each
observer is off unless configured (`interlink.lineage`, `interlink.metrics`, `interlink.tracing`), and none
can fail the run or hold it up for more than its bound.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from interlink import lineage, metrics, tracing
from interlink.ledger import Ledger
from interlink.prefect_urls import ui_url
from interlink.run_facts import INTEGRATION, Dataset, RunFacts
from interlink.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

tracing.configure()  # before a flow run starts in this process, so Prefect's flow-run span roots its trace
log = logging.getLogger(__name__)
_RUN: ContextVar[RunFacts | None] = ContextVar("interlink_run", default=None)


def dataset(settings: Settings, endpoint: Any) -> Dataset:
    """How lineage names a source, lookup or target (`endpoint`): its connection's system, and in it the endpoint's
    `dataset` (a path, a table; the connection itself when it names none), with the target's `schema` if known."""
    connection = settings.connection(endpoint.connection)
    namespace, name = connection.dataset(getattr(endpoint, "dataset", None))
    return Dataset(namespace, name, tuple(getattr(endpoint, "schema", ())))


def run_facts(
    settings: Settings, integration: str, job: str, kind: str, flow_run_id: str | None, reads: list[Any], writes: Any
) -> RunFacts:
    """The facts of a run that `reads` (sources and lookups, or their `Dataset`s) and `writes` (a target). Datasets are
    named only for lineage, and only when it is on."""
    ui, named = ui_url(), lineage.emitter() is not None
    inputs = tuple(r if isinstance(r, Dataset) else dataset(settings, r) for r in reads) if named else ()
    return RunFacts(
        integration, job, kind, flow_run_id, inputs, (dataset(settings, writes),) if named else (),
        ui_url=f"{ui}/runs/flow-run/{flow_run_id}" if ui and flow_run_id else None,
        connections=tuple(dict.fromkeys(e.connection for e in (*reads, writes) if not isinstance(e, Dataset))),
    )


@contextmanager
def observed(facts: RunFacts, settings: Settings) -> Iterator[RunFacts]:
    """Observe the run `facts` describes. Set `facts.ledger_row` to its ledger row inside the block; the observers
    report that row as it ends (no row: nothing is reported at the end)."""
    tracing.configure()
    emitter, before = lineage.emitter(), metrics.snapshot() if settings.pushgateway_url else None
    integration, run = INTEGRATION.set(facts.integration), _RUN.set(facts if emitter else None)
    try:
        with tracing.span(f"run {facts.job}", integration=facts.integration, kind=facts.kind, flow_run_id=facts.flow_run_id):
            facts.trace_id = tracing.trace_id()
            if facts.trace_id:
                _run_log().info("trace %s", facts.trace_id)
            if emitter:
                emitter.start(facts, datetime.now(UTC))
            try:
                yield facts
            finally:
                if facts.ledger_row is not None:
                    row = Ledger(settings.state_db).row(facts.ledger_row)
                    if emitter:
                        emitter.end(facts, row, datetime.now(UTC))
                    metrics.push(settings.state_db, settings.pushgateway_url, facts.integration, facts.connections, before)
    finally:
        INTEGRATION.reset(integration)
        _RUN.reset(run)


def count_checks(rows: pd.DataFrame, expectations: list[dict]) -> None:
    """Count one batch's expectation outcomes into the observed run's, for its lineage (only when lineage is on)."""
    if (facts := _RUN.get()) is not None:
        nulls = rows.isna().sum()
        facts.add_checks(expectations, len(rows), {str(c): int(n) for c, n in nulls.items() if n})


def _run_log() -> logging.Logger | logging.LoggerAdapter:
    """The flow run's logger (its lines reach the Prefect UI), or this module's outside a flow run."""
    from prefect import get_run_logger
    from prefect.context import FlowRunContext

    return get_run_logger() if FlowRunContext.get() else log
