"""OpenTelemetry traces (interlink.tracing): spans, their privacy, and OTLP/HTTP export to a receiver process.

In-process tests trace into an in-memory exporter without touching the global TracerProvider (it can be set once
per process); the export test runs a Prefect flow in a child process that turns tracing on from OTEL_* variables."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa
from interlink.connectors.masking import plain_url
from interlink.connectors.sql import COPY_THRESHOLD, WriteMode, create_engine, write
from opentelemetry.instrumentation.httpx import SyncOpenTelemetryTransport
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy.engine import make_url

from interlink import tracing
from tests.conftest import service_url
from tests.observers import otlp_receiver

ROOT = Path(__file__).resolve().parent.parent
SECRET = "pw-5e1c7a90d3"  # distinctive: found anywhere in a span, it leaked
OTEL_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER")


@pytest.fixture
def traced() -> Iterator[InMemorySpanExporter]:
    """Tracing on into memory (scrubbed like the OTLP export), undone afterwards."""
    exporter = InMemorySpanExporter()
    tracing._start(exporter, set_global=False)
    try:
        yield exporter
    finally:
        tracing._stop()


def finished(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    tracing.flush()
    return list(exporter.get_finished_spans())


def dumped(spans: list[ReadableSpan]) -> str:
    return "\n".join(s.to_json() for s in spans)


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "True"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "false"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "otlp"}, True),
    ],
)
def test_the_standard_variables_decide(environ: dict[str, str], wanted: bool) -> None:
    assert tracing._wanted(environ) is wanted


def test_off_costs_nothing_and_has_no_trace_id(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert tracing.configure() is False
    first, second = tracing.span("run", integration="crm"), tracing.span("batch", batch=1)
    assert first is second  # one shared no-op, nothing made per call
    with first as made:
        assert not made.is_recording()
        made.set_attribute("rows", 3)  # callers may annotate the span they get, on or off
        assert tracing.trace_id() is None
    with pytest.raises(ValueError), tracing.span("transform"):
        raise ValueError("still raised")
    tracing.flush()  # nothing to flush, no error


def test_spans_nest_with_their_attributes(traced: InMemorySpanExporter) -> None:
    assert tracing.trace_id() is None  # no span yet
    with tracing.span("run", integration="crm_to_billing", kind="sync", ui_url=None) as run:
        inside = tracing.trace_id()
        with tracing.span("batch", batch=2):
            with tracing.span("ingest", rows=500):
                pass
            with tracing.span("deliver", rows=498):
                pass
    assert tracing.trace_id() is None
    assert inside is not None and re.fullmatch(r"[0-9a-f]{32}", inside)
    assert inside == format(run.get_span_context().trace_id, "032x")
    spans = {s.name: s for s in finished(traced)}
    assert set(spans) == {"run", "batch", "ingest", "deliver"}
    assert {format(s.context.trace_id, "032x") for s in spans.values()} == {inside}
    assert spans["run"].parent is None
    assert spans["batch"].parent.span_id == spans["run"].context.span_id
    assert spans["ingest"].parent.span_id == spans["batch"].context.span_id
    assert spans["deliver"].parent.span_id == spans["batch"].context.span_id
    assert dict(spans["run"].attributes) == {"integration": "crm_to_billing", "kind": "sync"}  # None left out
    assert dict(spans["ingest"].attributes) == {"rows": 500}
    assert spans["run"].resource.attributes["service.name"] == "interlink"
    assert spans["run"].instrumentation_scope.name == "interlink"


def test_an_exception_marks_the_span_failed_without_its_message(traced: InMemorySpanExporter) -> None:
    with pytest.raises(KeyError), tracing.span("run"), tracing.span("transform", batch=1):
        raise KeyError(f"customer {SECRET}@example.com")
    spans = {s.name: s for s in finished(traced)}
    for name in ("run", "transform"):
        assert spans[name].status.status_code is StatusCode.ERROR
        assert spans[name].status.description == "KeyError"
        assert spans[name].attributes["error.type"] == "KeyError"
    assert SECRET not in dumped(list(spans.values()))


def test_urls_lose_credentials_queries_and_fragments() -> None:
    assert plain_url("https://user:pass@api.example.test:8443/v1/items?since=2024&key=x#frag") == (
        "https://api.example.test:8443/v1/items"
    )
    assert plain_url("http://127.0.0.1:8000/customers") == "http://127.0.0.1:8000/customers"


def test_an_http_request_through_a_mock_transport_keeps_no_query_values(traced: InMemorySpanExporter) -> None:
    """The instrumentation patches httpx's real transport; a mock one is wrapped by hand, as an app would."""
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("traceparent"))
        return httpx.Response(200, json=[])

    transport = SyncOpenTelemetryTransport(httpx.MockTransport(handler), tracer_provider=tracing._provider)
    with tracing.span("ingest"), httpx.Client(transport=transport) as client:
        trace = tracing.trace_id()
        client.get(f"https://reader:{SECRET}@crm.example.test/customers", params={"since": "2024-01-01", "key": SECRET})
    (request,) = [s for s in finished(traced) if s.kind is SpanKind.CLIENT]
    assert request.attributes["http.url"] == "https://crm.example.test/customers"
    assert request.parent is not None and format(request.context.trace_id, "032x") == trace
    assert seen[0] is not None and trace in seen[0]  # the trace goes along to the server
    assert SECRET not in dumped([request]) and "2024-01-01" not in dumped([request])


def test_other_spans_lose_exception_and_state_messages(traced: InMemorySpanExporter) -> None:
    """What other instrumentations record of a failure (messages, stack traces) is not exported; its type is."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"refused for {SECRET}")

    transport = SyncOpenTelemetryTransport(httpx.MockTransport(refuse), tracer_provider=tracing._provider)
    with tracing.span("ingest"), pytest.raises(httpx.ConnectError), httpx.Client(transport=transport) as client:
        client.get("https://crm.example.test/customers")
    prefect_like = tracing._provider.get_tracer("prefect")
    with prefect_like.start_as_current_span("flow-run") as run:  # as Prefect's RunTelemetry ends a failed run
        run.add_event("Failed", {"prefect.state.message": f"Flow run failed: {SECRET}", "prefect.state.type": "FAILED"})
        run.set_status(StatusCode.ERROR, f"Flow run failed: {SECRET}")
    spans = finished(traced)
    (request,) = [s for s in spans if s.kind is SpanKind.CLIENT]
    (failure,) = [e for e in request.events if e.name == "exception"]
    assert dict(failure.attributes) == {"exception.type": "httpx.ConnectError", "exception.escaped": "False"}
    flow_run = next(s for s in spans if s.name == "flow-run")
    assert dict(flow_run.events[0].attributes) == {"prefect.state.type": "FAILED"}
    assert all(s.status.status_code is StatusCode.ERROR and s.status.description is None for s in (request, flow_run))
    assert SECRET not in dumped(spans)


@pytest.fixture
def local_server() -> Iterator[tuple[str, list[dict]]]:
    """A real HTTP server on a free port, answering 200 and keeping each request's path and headers."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            received.append({"path": self.path, "headers": dict(self.headers)})
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"[]")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def test_an_http_request_to_a_real_server_keeps_no_credentials(
    traced: InMemorySpanExporter, local_server: tuple[str, list[dict]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, received = local_server
    with tracing.span("ingest"):
        trace = tracing.trace_id()
        with httpx.Client() as client:
            authed = url.replace("http://", f"http://reader:{SECRET}@")
            response = client.get(f"{authed}/customers", params={"token": SECRET}, headers={"X-Api-Key": SECRET})
    assert response.status_code == 200 and received[0]["path"] == f"/customers?token={SECRET}"  # it really went
    assert trace in received[0]["headers"]["traceparent"]
    (request,) = [s for s in finished(traced) if s.kind is SpanKind.CLIENT]
    assert request.attributes["http.url"] == f"{url}/customers"
    assert request.attributes["http.status_code"] == 200
    assert SECRET not in dumped([request])


def test_captured_http_headers_are_dropped(local_server: tuple[str, list[dict]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Even when the instrumentation is told to capture headers (an OTEL_INSTRUMENTATION_HTTP_CAPTURE_* variable)."""
    url, _ = local_server
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST", "Authorization,X-Api-Key")
    exported, raw = InMemorySpanExporter(), InMemorySpanExporter()
    tracing._start(exported, set_global=False).add_span_processor(SimpleSpanProcessor(raw))  # raw: as made
    try:
        with tracing.span("ingest"), httpx.Client() as client:
            client.get(f"{url}/customers", headers={"Authorization": f"Bearer {SECRET}", "X-Api-Key": SECRET})
        made = next(s for s in raw.get_finished_spans() if s.kind is SpanKind.CLIENT)
        assert made.attributes["http.request.header.x_api_key"] == (SECRET,)  # the instrumentation captured it
        (request,) = [s for s in finished(exported) if s.kind is SpanKind.CLIENT]
        assert not [k for k in request.attributes if k.startswith("http.request.header.")]
        assert SECRET not in dumped([request])
    finally:
        tracing._stop()


def exercise(engine: sa.Engine) -> None:
    """Statements as Interlink runs them: DDL, one insert, executemany, a select and a failing insert, all bound."""
    table = sa.Table("tracing_probe", sa.MetaData(), sa.Column("k", sa.String(40), primary_key=True), sa.Column("v", sa.Integer))
    table.drop(engine, checkfirst=True)
    table.create(engine)
    with engine.begin() as conn:
        conn.execute(table.insert().values(k=SECRET, v=1))
        conn.execute(table.insert(), [{"k": f"{SECRET}-{i}", "v": i} for i in range(5)])  # executemany
        assert conn.execute(sa.select(table.c.v).where(table.c.k == SECRET)).scalar_one() == 1
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:  # its error names the duplicate key
        conn.execute(table.insert().values(k=SECRET, v=2))


def check_sql_spans(spans: list[ReadableSpan], placeholder: str) -> None:
    statements = [s.attributes["db.statement"] for s in spans if "db.statement" in s.attributes]
    inserts = [s for s in statements if s.startswith("INSERT INTO tracing_probe")]
    assert len(inserts) == 3 and all(placeholder in s for s in inserts), statements
    failed = [s for s in spans if s.status.status_code is StatusCode.ERROR]
    assert failed and all(s.status.description is None for s in failed)  # the driver's message is not kept
    assert not [s for s in spans if "db.user" in s.attributes]
    assert SECRET not in dumped(spans)


def test_sql_statements_on_sqlite_keep_no_values(traced: InMemorySpanExporter, tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'probe.db'}")
    with tracing.span("deliver"):
        exercise(engine)
    engine.dispose()
    spans = finished(traced)
    check_sql_spans(spans, "?")
    deliver = next(s for s in spans if s.name == "deliver")
    assert all(s.parent.span_id == deliver.context.span_id for s in spans if "db.statement" in s.attributes)


def test_sql_statements_on_postgresql_keep_no_values_nor_password(traced: InMemorySpanExporter) -> None:
    url = make_url(service_url("postgresql")).set(password=SECRET)  # trust login: the password is sent, never needed
    engine = create_engine(url.render_as_string(hide_password=False))
    with tracing.span("deliver"):
        exercise(engine)
        table = sa.Table("tracing_copy", sa.MetaData(), sa.Column("k", sa.String(40)), sa.Column("v", sa.Integer))
        table.create(engine, checkfirst=True)
        rows = pd.DataFrame({"k": [SECRET] * COPY_THRESHOLD, "v": range(COPY_THRESHOLD)})
        with engine.begin() as conn:
            write(conn, table, rows, WriteMode.APPEND)  # goes through COPY, beside SQLAlchemy's events
        table.drop(engine)
    engine.dispose()
    spans = finished(traced)
    check_sql_spans(spans, "%(")
    assert {s.attributes.get("net.peer.name") for s in spans if "db.statement" in s.attributes} == {"127.0.0.1"}
    assert not [s for s in spans if "COPY" in str(s.attributes.get("db.statement"))]  # COPY is not seen: no span


CHILD = """
import sys
import httpx
import sqlalchemy as sa
from prefect import flow, task
from interlink import tracing
from interlink.state import state_engine

http_url, state_url = sys.argv[1], sys.argv[2]
early = state_engine(state_url)  # made before tracing is on, as a process may
assert tracing.configure() and tracing.configure()  # idempotent


@task
def fetch() -> int:
    return httpx.get(http_url, params={"token": "%(secret)s"}).status_code


@flow
def traced_flow() -> str:
    with tracing.span("run", integration="probe", kind="sync"):
        with tracing.span("batch", batch=1):
            with tracing.span("ingest"):
                assert fetch() == 200
            with tracing.span("deliver"):
                engine = state_engine(state_url)
                assert engine is not early
                with engine.connect() as conn:
                    conn.execute(sa.text("SELECT count(*) FROM runs WHERE integration = :name"), {"name": "%(secret)s"})
        return tracing.trace_id()


print(traced_flow())
tracing.flush()
"""


def test_a_flow_run_is_one_trace_at_an_otlp_receiver(tmp_path: Path, local_server: tuple[str, list[dict]]) -> None:
    from prefect.settings import PREFECT_API_URL

    http_url, received = local_server
    out = tmp_path / "spans.jsonl"
    with otlp_receiver(out) as endpoint:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "INTERLINK_"))}
        env |= {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
            "PREFECT_API_URL": PREFECT_API_URL.value(),
            "INTERLINK_HOME": str(tmp_path / "home"),
            "PYTHONPATH": str(ROOT),
        }
        state_url = f"sqlite:///{tmp_path / 'state.db'}"
        child = subprocess.run(
            [sys.executable, "-c", CHILD % {"secret": SECRET}, f"{http_url}/customers", state_url],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=180,
        )
        assert child.returncode == 0, child.stderr[-3000:]
        trace = child.stdout.strip().splitlines()[-1]
        spans = [json.loads(line) for line in out.read_text().splitlines()]  # flush() returned: the receiver has them
    assert received and received[0]["path"] == f"/customers?token={SECRET}"
    by_id = {s["span_id"]: s for s in spans}
    named = {s["name"]: s for s in spans}
    assert {s["trace_id"] for s in spans} == {trace}, [(s["name"], s["trace_id"]) for s in spans]
    flow_span = next(s for s in spans if s["attributes"].get("prefect.run.type") == "flow")
    task_span = next(s for s in spans if s["attributes"].get("prefect.run.type") == "task")
    assert flow_span["parent_span_id"] is None and flow_span["scope"] == "prefect"
    assert named["run"]["parent_span_id"] == flow_span["span_id"]  # Interlink's run inside Prefect's flow run
    assert task_span["parent_span_id"] == named["ingest"]["span_id"]  # Prefect's task span: in the current span
    assert named["batch"]["parent_span_id"] == named["run"]["span_id"]
    assert named["ingest"]["parent_span_id"] == named["batch"]["span_id"]
    assert named["deliver"]["parent_span_id"] == named["batch"]["span_id"]
    (request,) = [s for s in spans if s["attributes"].get("http.url")]  # none to Prefect's API
    assert request["attributes"]["http.url"] == f"{http_url}/customers"
    assert by_id[request["parent_span_id"]] is task_span  # the task's span is current inside the task
    (select,) = [s for s in spans if "FROM runs" in s["attributes"].get("db.statement", "")]
    assert select["parent_span_id"] == named["deliver"]["span_id"]
    assert {s["service"] for s in spans} == {"interlink"}
    assert named["run"]["attributes"] == {"integration": "probe", "kind": "sync"}
    assert SECRET not in out.read_text()


def test_requests_and_statements_outside_any_span_are_not_traced(traced: InMemorySpanExporter, local_server) -> None:
    """A trace is a run's: a command's own checks and bookkeeping (a health GET, the state database) outside any span
    make no trace of their own; the same request inside a span is its child."""
    url, received = local_server
    engine = sa.create_engine("sqlite://")
    with httpx.Client() as client:
        client.get(f"{url}/health")
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        with tracing.span("ingest"):
            client.get(f"{url}/customers")
    assert len(received) == 2  # both requests went
    spans = finished(traced)
    assert sorted(s.name for s in spans) == ["GET", "ingest"]
    (request,) = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert request.attributes["http.url"] == f"{url}/customers" and request.parent is not None
