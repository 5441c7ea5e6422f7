"""OpenLineage events for runs: a START as a run begins, then COMPLETE, FAIL or ABORT from its final ledger row.

Off unless OpenLineage is configured the client's way: `OPENLINEAGE_URL` (Marquez: `http://marquez:5000`), an
`openlineage.yml` (`OPENLINEAGE_CONFIG`, the working directory or `~/.openlineage`) or `OPENLINEAGE__TRANSPORT__*`
variables; `OPENLINEAGE_DISABLED=true` turns it off. The job namespace is `OPENLINEAGE_NAMESPACE` ("interlink").

Events go out from one background thread. A run's end waits for them at most `LINEAGE_WAIT_S`, then goes on; a
backend that fails or is slow is warned of once per process (logger `interlink.lineage`), later at DEBUG.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import uuid
from collections import deque
from datetime import UTC, datetime
from importlib import metadata
from typing import Any
from urllib.parse import urljoin

import attr
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    RunFacet,
    data_quality_assertions_dataset,
    data_quality_metrics_input_dataset,
    documentation_job,
    error_message_run,
    job_type_job,
    output_statistics_output_dataset,
    processing_engine_run,
    schema_dataset,
)
from openlineage.client.transport.http import HttpTransport
from openlineage.client.transport.http_common import DEFAULT_RETRY_CONFIG
from openlineage.client.uuid import generate_new_uuid
from requests import exceptions as http_errors

from interlink.connectors.masking import plain_url
from interlink.run_facts import Dataset, RunFacts

log = logging.getLogger(__name__)

LINEAGE_WAIT_S = 5.0  # the longest a run's end waits for its events to be sent
QUEUE_MAX = 1000  # events waiting to be sent; past that, new ones are dropped (the backend is down or slow)
HTTP_TIMEOUT_S = 2.0
# The client's default retries (5, backoff 0.3 s, 5 s timeouts) spend about 40 s on one event to a silent backend and
# 9 s on a refused port, with a urllib3 warning per retry. These retry only 5xx answers (0.6 s): a silent backend
# costs an event 2 s, a refused port nothing, so a failure is known, and named, within LINEAGE_WAIT_S.
HTTP_RETRY = {**DEFAULT_RETRY_CONFIG, "total": 2, "connect": 0, "read": 0, "status": 2, "allowed_methods": ["POST"]}
PRODUCER = "https://github.com/interlink/interlink"
FACETS_SCHEMA = f"{PRODUCER}/blob/main/tests/openlineage_spec/InterlinkRunFacets.json"

ENDS = {"COMPLETED": RunState.COMPLETE, "QUARANTINED": RunState.COMPLETE, "CANCELLED": RunState.ABORT}  # others FAIL


@attr.define
class PrefectRunFacet(RunFacet):
    """The Prefect flow run behind this run, and its page in the Prefect UI when one is known."""

    flowRunId: str  # noqa: N815
    url: str | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return f"{FACETS_SCHEMA}#/$defs/PrefectRunFacet"


@attr.define
class TraceRunFacet(RunFacet):
    """The run's OpenTelemetry trace."""

    traceId: str  # noqa: N815

    @staticmethod
    def _get_schema() -> str:
        return f"{FACETS_SCHEMA}#/$defs/TraceRunFacet"


@functools.cache
def emitter() -> Emitter | None:
    """The process's emitter (made once), or None when OpenLineage is not configured or is disabled."""
    if os.environ.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true" or not _configured():
        return None
    try:
        client = _client()
    except Exception as exc:  # a broken openlineage.yml must not fail the run
        log.warning("OpenLineage is configured but its client could not be made (%s): no lineage events are sent",
                    type(exc).__name__)
        return None
    if not (os.environ.get("OPENLINEAGE_URL") or (client.config.transport or {}).get("type")):
        log.warning("The OpenLineage configuration found names no transport: no lineage events are sent")
        return None
    return Emitter(client, os.environ.get("OPENLINEAGE_NAMESPACE") or "interlink")


class Emitter:
    """Sends a run's events from one background thread; never raises, never holds a run up past LINEAGE_WAIT_S."""

    def __init__(self, client: OpenLineageClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self.backend = _backend(client)
        self._run_ids: dict[int, tuple[RunFacts, str]] = {}  # runs without a Prefect flow run id: START's runId
        self._events: deque[RunEvent] = deque()
        self._pending = 0  # events queued or being sent
        self._changed = threading.Condition()
        self._warned = False
        threading.Thread(target=self._send_all, name="interlink-lineage", daemon=True).start()

    def start(self, run: RunFacts, at: datetime) -> None:
        """Queue the run's START event."""
        try:
            run_id = _uuid(run.flow_run_id)
            if run_id is None:
                run_id = str(generate_new_uuid())
                self._run_ids[id(run)] = (run, run_id)
            self._put(self._event(RunState.START, run_id, run, at))
        except Exception as exc:
            self._failed("a START event could not be made", exc)

    def end(self, run: RunFacts, row: dict[str, Any], at: datetime) -> None:
        """Queue the run's end event (COMPLETE, FAIL or ABORT, from the ledger `row`) and wait, at most
        LINEAGE_WAIT_S, for the events queued so far to be sent."""
        try:
            kept = self._run_ids.pop(id(run), None)
            run_id = _uuid(run.flow_run_id) or (kept[1] if kept else str(generate_new_uuid()))
            self._put(self._event(ENDS.get(row["state"], RunState.FAIL), run_id, run, at, row))
        except Exception as exc:
            self._failed("an end event could not be made", exc)
        with self._changed:
            if not self._changed.wait_for(lambda: self._pending == 0, timeout=LINEAGE_WAIT_S):
                self._failed(f"its events were not sent within {LINEAGE_WAIT_S:g} s")

    def _event(self, state: RunState, run_id: str, run: RunFacts, at: datetime, row: dict | None = None) -> RunEvent:
        at = at.replace(tzinfo=UTC) if at.tzinfo is None else at
        return RunEvent(
            eventType=state,
            eventTime=at.isoformat(),
            run=Run(runId=run_id, facets=_run_facets(run, row)),
            job=Job(namespace=self.namespace, name=run.job, facets=_job_facets(run)),
            inputs=[_input(dataset, run if row is not None and n == 0 else None) for n, dataset in enumerate(run.inputs)],
            outputs=[_output(dataset, row if len(run.outputs) == 1 else None) for dataset in run.outputs],
            producer=PRODUCER,
        )

    def _put(self, event: RunEvent) -> None:
        with self._changed:
            dropped = len(self._events) >= QUEUE_MAX
            if not dropped:
                self._events.append(event)
                self._pending += 1
                self._changed.notify_all()
        if dropped:
            self._failed(f"{QUEUE_MAX} events were already waiting, so one was dropped")

    def _send_all(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._events)
                event = self._events.popleft()
            try:
                self.client.emit(event)
            except Exception as exc:
                self._failed("an event was not accepted", exc)
            finally:
                with self._changed:
                    self._pending -= 1
                    self._changed.notify_all()

    def _failed(self, what: str, exc: Exception | None = None) -> None:
        """Log a failure: the first one as a warning, saying what to check; the rest at DEBUG."""
        reason = f"{what} ({_reason(exc)})" if exc else what
        with self._changed:
            warned, self._warned = self._warned, True
        if warned:
            log.debug("OpenLineage backend %s: %s", self.backend, reason)
            return
        log.warning("OpenLineage backend %s: %s. Check that it is up and that OPENLINEAGE_URL (or openlineage.yml) "
                    "points at it; runs go on without waiting for lineage, and later failures are logged at DEBUG",
                    self.backend, reason)


def _configured() -> bool:
    """Whether any OpenLineage configuration is present (else the client would print events to the console)."""
    return bool(
        os.environ.get("OPENLINEAGE_URL") or os.environ.get("OPENLINEAGE_CONFIG")
        or any(name.startswith("OPENLINEAGE__TRANSPORT") for name in os.environ)
        or os.path.isfile("openlineage.yml") or os.path.isfile(os.path.expanduser("~/.openlineage/openlineage.yml"))
    )


def _client() -> OpenLineageClient:
    """The OpenLineage client as configured. An HTTP transport left at the client's retry defaults gets HTTP_RETRY
    and a timeout of at most HTTP_TIMEOUT_S."""
    before = set(os.environ)
    try:
        client = OpenLineageClient()
    finally:  # the client copies OPENLINEAGE_URL into OPENLINEAGE__TRANSPORT__TRANSPORTS__* variables: undo that
        for name in set(os.environ) - before:
            if name.startswith("OPENLINEAGE__"):
                del os.environ[name]
    transport = client.transport
    if isinstance(transport, HttpTransport) and transport.config.retry == DEFAULT_RETRY_CONFIG:
        config = attr.evolve(transport.config, retry=HTTP_RETRY, timeout=min(transport.config.timeout, HTTP_TIMEOUT_S))
        client.transport = HttpTransport(config)
    return client


def _uuid(value: str | None) -> str | None:
    """`value` as a UUID string, or None if it is not one."""
    try:
        return str(uuid.UUID(value)) if value else None
    except ValueError:
        return None


def _backend(client: OpenLineageClient) -> str:
    transport = client.transport
    if isinstance(transport, HttpTransport):
        return plain_url(urljoin(transport.url, transport.endpoint))
    return f"(the {transport.kind} transport)"


def _reason(exc: Exception) -> str:
    """What went wrong, without the URL or message a library put in the exception (they may hold credentials)."""
    if isinstance(exc, http_errors.HTTPError) and exc.response is not None:
        return f"it answered HTTP {exc.response.status_code}"
    if isinstance(exc, http_errors.RetryError):
        return "it kept answering with server errors"
    if isinstance(exc, http_errors.Timeout) or (isinstance(exc, http_errors.ConnectionError) and "timed out" in str(exc)):
        return "it did not answer in time"
    if isinstance(exc, http_errors.ConnectionError):
        return "the connection was refused" if "refused" in str(exc).lower() else "it could not be reached"
    return type(exc).__name__


@functools.cache
def _versions() -> tuple[str, str]:
    """Interlink's version and Prefect's, read without importing Prefect."""
    return metadata.version("interlink"), metadata.version("prefect")


def _run_facets(run: RunFacts, row: dict | None) -> dict[str, RunFacet]:
    interlink, prefect = _versions()
    facets: dict[str, RunFacet] = {
        "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
            version=prefect, name="Prefect", openlineageAdapterVersion=interlink, producer=PRODUCER),
    }
    if run.flow_run_id:
        url = plain_url(run.ui_url) if run.ui_url else None
        facets["prefect"] = PrefectRunFacet(flowRunId=run.flow_run_id, url=url, producer=PRODUCER)
    if run.trace_id:
        facets["trace"] = TraceRunFacet(traceId=run.trace_id, producer=PRODUCER)
    if row is not None and ENDS.get(row["state"], RunState.FAIL) is RunState.FAIL:
        facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=row.get("error") or f"the run ended {row['state']}", programmingLanguage="python", producer=PRODUCER)
    return facets


def _job_facets(run: RunFacts) -> dict[str, Any]:
    return {
        "jobType": job_type_job.JobTypeJobFacet(
            processingType="STREAMING" if run.kind == "stream" else "BATCH", integration="INTERLINK", jobType="FLOW",
            producer=PRODUCER),
        "documentation": documentation_job.DocumentationJobFacet(
            description=f"Interlink integration {run.integration}: {run.kind} run", producer=PRODUCER),
    }


def _schema(dataset: Dataset) -> dict[str, Any]:
    if not dataset.fields:
        return {}
    fields = [schema_dataset.SchemaDatasetFacetFields(name=name, type=kind) for name, kind in dataset.fields]
    return {"schema": schema_dataset.SchemaDatasetFacet(fields=fields, producer=PRODUCER)}


def _input(dataset: Dataset, checked: RunFacts | None) -> InputDataset:
    """An input; if it is the source (the first input) at the run's end, with the data checks (`checked`): they ran
    on the rows read from it, and the spec makes them input facets."""
    facets: dict[str, Any] = {}
    if checked is not None and checked.checks:
        facets["dataQualityAssertions"] = data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet(
            assertions=[
                data_quality_assertions_dataset.Assertion(assertion=check.expectation, success=check.success,
                                                          column=check.column)
                for check in checked.checks.values()
            ],
            producer=PRODUCER,
        )
    if checked is not None and checked.rows_checked:
        metrics = data_quality_metrics_input_dataset
        facets["dataQualityMetrics"] = metrics.DataQualityMetricsInputDatasetFacet(
            rowCount=checked.rows_checked,
            columnMetrics={column: metrics.ColumnMetrics(nullCount=count) for column, count in checked.nulls.items()},
            producer=PRODUCER,
        )
    return InputDataset(namespace=dataset.namespace, name=dataset.name, facets=_schema(dataset), inputFacets=facets)


def _output(dataset: Dataset, row: dict | None) -> OutputDataset:
    """An output; given the run's final ledger `row` (the run's only output), with the rows written to it."""
    facets: dict[str, Any] = {}
    if row is not None:
        written = (row.get("rows_inserted") or 0) + (row.get("rows_updated") or 0)
        facets["outputStatistics"] = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
            rowCount=written, producer=PRODUCER)
    return OutputDataset(namespace=dataset.namespace, name=dataset.name, facets=_schema(dataset), outputFacets=facets)
