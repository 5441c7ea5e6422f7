"""Log lines as JSON, one object per line, for log shippers: `INTERLINK_LOG_FORMAT=json` (default `text`).

Each line: `time` (ISO-8601, UTC), `level`, `logger`, `message`, and whichever of `integration`, `flow_run_id`,
`flow_name`, `task_run_id`, `batch`, `trace_id`, `exception` (`<type>: <first line>`) and `traceback` have a value.
The message, the exception and the traceback pass through the one masking rule (`interlink.connectors.masking.mask_secrets`).

Prefect configures logging itself, from its `logging.yml`, at `import prefect` and again whenever it sets logging up.
`install` uses the override Prefect documents for every key of that file (`PREFECT_LOGGING_[PATH]_[KEY]`, read from
the environment each time): the `console` handler becomes `JsonLinesHandler` with the `json` formatter, made
`JsonLines`, and the `debug` handler uses it too. So any later setup, and every process started from this one (the
temporary API, Dask workers), writes JSON lines. The console handlers already made in this process are swapped in
place. Prefect's API handler (the logs the Prefect UI shows) is left as it is.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime

from opentelemetry import trace

from interlink.connectors.errors import ConfigError
from interlink.connectors.masking import cut, mask_secrets
from interlink.failure_logs import MAX_CAUSE
from interlink.run_facts import BATCH, INTEGRATION

VARIABLE = "INTERLINK_LOG_FORMAT"
FORMATS = ("text", "json")


class JsonLines(logging.Formatter):
    """A record as one line of JSON, masked. Made by `logging.config` with a format, which it does not need."""

    def __init__(self, *_: object) -> None:
        super().__init__()

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": mask_secrets(record.getMessage()),
            "integration": INTEGRATION.get(),
            **_run(record),
            "batch": BATCH.get(),
            "trace_id": _trace_id(),
        }
        if record.exc_info and record.exc_info[1] is not None:
            line["exception"] = _cause(record.exc_info[1])
            if record.exc_info[2] is not None:
                line["traceback"] = mask_secrets(self.formatException(record.exc_info))
        return json.dumps({k: v for k, v in line.items() if v is not None}, ensure_ascii=False, default=str)


class JsonLinesHandler(logging.StreamHandler):
    """Prefect's console handler's stand-in: each record written as its formatter makes it, one line, no rich markup,
    colours or wrapping. Takes the arguments `logging.yml` gives Prefect's (`styles` is for colours: unused)."""

    def __init__(self, stream=None, styles: dict | None = None, level: int = logging.NOTSET):
        super().__init__(stream)
        self.setLevel(level)
        self.setFormatter(JsonLines())


def _run(record: logging.LogRecord) -> dict[str, str]:
    """The Prefect run a record belongs to: what a run logger put on it, else the run the logging code is in."""
    given = {key: getattr(record, key, None) for key in ("flow_run_id", "flow_name", "task_run_id")}
    facts = {key: str(value) for key, value in given.items() if value not in (None, "", "<unknown>")}
    if context := sys.modules.get("prefect.context"):  # not loaded: no run
        if (task := context.TaskRunContext.get()) is not None:
            facts.setdefault("task_run_id", str(task.task_run.id))
        if (flow := context.FlowRunContext.get()) is not None and flow.flow_run is not None:
            facts.setdefault("flow_run_id", str(flow.flow_run.id))
            facts.setdefault("flow_name", flow.flow.name)
    return facts


def _cause(exc: BaseException) -> str:
    """`interlink.failure_logs.cause`, masked before it is cut."""
    first = cut((str(exc).strip().splitlines() or [""])[0], MAX_CAUSE)
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _trace_id() -> str | None:
    span = trace.get_current_span().get_span_context()
    return format(span.trace_id, "032x") if span.is_valid else None


PREFECT_SETTINGS = {  # logging.yml's keys, as Prefect reads them from the environment
    "PREFECT_LOGGING_FORMATTERS_JSON_CLASS": f"{__name__}.JsonLines",
    "PREFECT_LOGGING_HANDLERS_CONSOLE_CLASS": f"{__name__}.JsonLinesHandler",
    "PREFECT_LOGGING_HANDLERS_CONSOLE_FORMATTER": "json",
    "PREFECT_LOGGING_HANDLERS_DEBUG_FORMATTER": "json",
}


def log_format() -> str:
    """`INTERLINK_LOG_FORMAT`: `text` (unset or blank too) or `json`; anything else is a `ConfigError`."""
    value = os.environ.get(VARIABLE, "").strip() or "text"
    if value not in FORMATS:
        raise ConfigError(f"{VARIABLE}={os.environ[VARIABLE].strip()[:40]!r} is not a log format: set it to json "
                          "(one JSON object per line) or text (the default), or unset it")
    return value


def install() -> bool:
    """With `INTERLINK_LOG_FORMAT=json`, make every console log handler of this process, and of the processes it
    starts, write JSON lines (`JsonLines`); Python's warnings become log records too. Idempotent; whether it did."""
    if log_format() != "json":
        return False
    os.environ.update(PREFECT_SETTINGS)
    logging.captureWarnings(True)
    swapped: dict[logging.Handler, logging.Handler] = {}
    loggers = [logging.getLogger(), *(lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if handler not in swapped:  # a handler on several loggers (Prefect's console) is swapped once
                swapped[handler] = _json(handler)
        logger.handlers = [swapped[h] for h in logger.handlers]
    return True


def _json(handler: logging.Handler) -> logging.Handler:
    """`handler` writing JSON lines if it writes to the console: Prefect's (rich) replaced, any other re-formatted."""
    consoles = [s for s in (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__) if s is not None]
    if not isinstance(handler, logging.StreamHandler) or not any(handler.stream is s for s in consoles):
        return handler
    if isinstance(handler, JsonLinesHandler) or isinstance(handler.formatter, JsonLines):
        return handler
    prefect = sys.modules.get("prefect.logging.handlers")
    if prefect is None or not isinstance(handler, prefect.PrefectConsoleHandler):
        handler.setFormatter(JsonLines())
        return handler
    replacement = JsonLinesHandler(handler.stream, level=handler.level)
    replacement.filters = list(handler.filters)
    if handler.name:
        replacement.name = handler.name  # an incremental setup finds it by name
    return replacement
