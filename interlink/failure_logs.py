"""A failed run's logs lead with its cause, in one line.

Prefect logs a failing task or flow run's exception with its whole traceback, up to three times over (the task
run, the flow run and, under a deployment, the engine: "Engine execution exited with unexpected exception"), and
a driver's message may run to pages (SQLAlchemy's carries the statement). `OneLineCause`, on Prefect's run
loggers, makes each such record one line naming the cause, `<type>: <first line of its message>`, and cuts a
`Finished in state Failed('…')` at its message's first line. Tracebacks stay with a debug setting
(`PREFECT_LOGGING_LEVEL=DEBUG`).
"""

from __future__ import annotations

import logging

from interlink.connectors.masking import cut

RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")
MAX_CAUSE = 300  # characters of an exception's first line in a log line


def cause(exc: BaseException) -> str:
    """`<type>: <first line of the message>`, at most `MAX_CAUSE` characters of it, masked before it is cut (so no
    secret is left half shown)."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {cut(first, MAX_CAUSE)}" if first else type(exc).__name__


class OneLineCause(logging.Filter):
    """Each error record carrying an exception: one line naming its cause, without the traceback unless debugging."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and record.levelno >= logging.ERROR and not logging.getLogger("prefect").isEnabledFor(logging.DEBUG):
            message = record.getMessage()
            line = message.replace(repr(exc), cause(exc)) if repr(exc) in message else f"{message}: {cause(exc)}"
            record.msg, record.args, record.exc_info, record.exc_text = line.splitlines()[0], (), None, None
        elif isinstance(record.msg, str) and record.msg.startswith("Finished in state") and "\\n" in record.msg:
            record.msg = record.msg[: record.msg.index("\\n")] + "…')"  # a state's repr: its message's line breaks escaped
        return True


def install() -> None:
    """Put `OneLineCause` on Prefect's run loggers (once)."""
    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, OneLineCause) for f in logger.filters):
            logger.addFilter(OneLineCause())
