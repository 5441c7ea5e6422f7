"""OpenTelemetry traces of Interlink runs, sent over OTLP/HTTP when the standard `OTEL_*` variables ask for it.

`configure()` turns tracing on once per process when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is
set: a global TracerProvider (so Prefect's flow- and task-run spans are exported too), a span per HTTP request
(httpx) and per SQL statement (SQLAlchemy). Off, `span()` costs a function call and `trace_id()` is None.

Every span leaves the process scrubbed (`_Scrubbed`), whatever made it: URLs lose user info, query and fragment;
exception events keep only the exception's type; status messages are kept only on Interlink's own spans (they
name the exception's type); Prefect's state messages, captured HTTP headers and the database user are dropped.
SQL statements are recorded as executed, with placeholders: Interlink binds every value as a parameter.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from opentelemetry import context, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Status, StatusCode

from interlink.connectors.masking import plain_url

SCOPE = "interlink"
EXPORT_TIMEOUT_S = 2.0  # an export's longest wait, its retries included, unless OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT says
QUIETED = ("opentelemetry.exporter.otlp.proto.http", "opentelemetry.sdk._shared_internal")  # a line per retry and batch
log = logging.getLogger(__name__)
_URL_KEYS = frozenset({"url.full", "http.url"})
_DROPPED_KEYS = frozenset({"db.user", "exception.message", "exception.stacktrace", "prefect.state.message"})
_DROPPED_PREFIXES = ("http.request.header.", "http.response.header.")
_OFF = nullcontext(trace.INVALID_SPAN)

_lock = threading.Lock()
_provider: TracerProvider | None = None
_tracer: trace.Tracer | None = None


def configure() -> bool:
    """Turn tracing on for this process when the `OTEL_*` variables ask for it; return whether it is on.

    Idempotent and thread-safe. Call it before the flow run starts (at import of the flow's module): Prefect's
    flow-run span is then the trace's root. It patches `create_engine`, so engines made afterwards are traced; the
    cached state engines are dropped, so the next ones are made, and traced, anew.
    """
    with _lock:
        if _provider is None and _wanted(os.environ):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            timed = {"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"} & set(os.environ)
            _start(OTLPSpanExporter(timeout=None if timed else EXPORT_TIMEOUT_S), set_global=True)
            from interlink.state import state_engine

            state_engine.cache_clear()
    return _provider is not None


def _wanted(environ: Mapping[str, str]) -> bool:
    """Whether the standard variables ask for traces over OTLP."""
    endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    disabled = environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    exporters = {e.strip().lower() for e in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")}
    return bool(endpoint) and not disabled and "none" not in exporters


def _start(exporter: SpanExporter, set_global: bool) -> TracerProvider:
    """Trace into `exporter` (scrubbed, batched), instrumenting httpx and SQLAlchemy. Tests call it with an in-memory
    exporter and `set_global=False` (then Prefect's spans are not made), and undo it with `_stop`."""
    global _provider, _tracer
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "interlink"}))
    provider = TracerProvider(resource=resource)
    provider.sampler = _NotTo(_prefect_api, provider.sampler)  # before any tracer is made: they take it then
    provider.add_span_processor(BatchSpanProcessor(_Scrubbed(exporter)))
    if set_global:
        trace.set_tracer_provider(provider)
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    SQLAlchemyInstrumentor().instrument(tracer_provider=provider)
    _provider, _tracer = provider, provider.get_tracer(SCOPE)
    return provider


def _prefect_api() -> str | None:
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


class _NotTo(Sampler):
    """Leaves out HTTP requests to the Prefect API `api()` answers with, as it is then (orchestration, not the
    integration's traffic; a temporary API starts after tracing does) and requests or statements outside any span (a
    command's own checks and bookkeeping: a trace is a run's), deciding the rest with `inner` (`OTEL_TRACES_SAMPLER`,
    by default every span)."""

    def __init__(self, api: Callable[[], str | None], inner: Sampler) -> None:
        self.api, self.inner = api, inner

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None, trace_state=None):
        if kind is trace.SpanKind.CLIENT:
            if not trace.get_current_span(parent_context).get_span_context().is_valid:
                return SamplingResult(Decision.DROP)
            url, api = (attributes or {}).get("url.full") or (attributes or {}).get("http.url"), self.api()
            if api and isinstance(url, str) and url.startswith(api.rstrip("/") + "/"):
                return SamplingResult(Decision.DROP)
        return self.inner.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"NotToPrefectApi/{self.inner.get_description()}"


def _stop() -> None:
    """Undo `_start` (tests only): uninstrument, flush and shut the provider down."""
    global _provider, _tracer
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    HTTPXClientInstrumentor().uninstrument()
    SQLAlchemyInstrumentor().uninstrument()
    if _provider is not None:
        _provider.shutdown()
    _provider = _tracer = None


def span(name: str, **attributes: Any) -> AbstractContextManager[trace.Span]:
    """A span `name`, child of the current one, with `attributes` (ints and strings; None values are left out).

    An exception leaving it marks the span as failed, naming only the exception's type. Off, a shared no-op.
    """
    if _tracer is None:
        return _OFF
    return _Span(name, {k: v for k, v in attributes.items() if v is not None})


class _Span:
    __slots__ = ("_name", "_attributes", "_span", "_token")

    def __init__(self, name: str, attributes: dict[str, Any]) -> None:
        self._name, self._attributes = name, attributes

    def __enter__(self) -> trace.Span:
        self._span = _tracer.start_span(self._name, attributes=self._attributes)
        self._token = context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        context.detach(self._token)
        if kind is not None:
            self._span.set_attribute("error.type", kind.__qualname__)
            self._span.set_status(Status(StatusCode.ERROR, kind.__name__))
        self._span.end()


def trace_id() -> str | None:
    """The current span's trace id as 32 hex digits; None when tracing is off or there is no span."""
    if _tracer is None:
        return None
    found = trace.get_current_span().get_span_context()
    return format(found.trace_id, "032x") if found.is_valid else None


def flush(timeout_s: float = 5) -> None:
    """Send the spans still buffered, waiting at most `timeout_s` (the end of a one-shot run)."""
    if _provider is not None:
        _provider.force_flush(int(timeout_s * 1000))


class _Scrubbed(SpanExporter):
    """Exports through `inner` copies of the spans that carry nothing private (see the module's docstring). A failed
    export is one warning per process (the exporter's own lines, one per retry and batch, are quieted)."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.warned = False
        for name in QUIETED:
            logging.getLogger(name).setLevel(logging.CRITICAL)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export([_scrubbed(s) for s in spans])
        if result is SpanExportResult.FAILURE and not self.warned:
            self.warned = True
            where = plain_url(getattr(self.inner, "_endpoint", "") or "the OTLP endpoint")
            log.warning("traces not sent to %s (no answer, or refused, within %g s): check OTEL_EXPORTER_OTLP_ENDPOINT and "
                        "that the collector is up; runs go on, later failures are not logged", where, EXPORT_TIMEOUT_S)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _scrubbed(span: ReadableSpan) -> ReadableSpan:
    status = span.status
    if status.description and (span.instrumentation_scope is None or span.instrumentation_scope.name != SCOPE):
        status = Status(status.status_code)
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_clean(span.attributes),
        events=[Event(e.name, _clean(e.attributes), e.timestamp) for e in span.events],
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def _clean(attributes: Any) -> dict[str, Any]:
    clean = {}
    for key, value in (attributes or {}).items():
        if key in _DROPPED_KEYS or key.startswith(_DROPPED_PREFIXES):
            continue
        clean[key] = plain_url(value) if key in _URL_KEYS and isinstance(value, str) else value
    return clean
