"""Progress of `interlink run` as it goes: live rows in a terminal, one plain line per batch elsewhere, nothing for `--json`.

In a terminal (stdout is a tty) each run is a rich progress row (a spinner, the time so far, the integration)
redrawn after every batch: batches done, rows read, delivered (inserted, updated) and quarantined; log lines
scroll above it.
Otherwise (CI, a pipe, a file) there are no bars, and each batch is one line with the run's totals so far, as
dlt's log collector does; with `--json` there is nothing until the result. The counts come from
`interlink.progress`, so they are those the run's ledger row holds after the batch.
"""

from __future__ import annotations

import io
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TextIO

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Column

from interlink.progress import Batch, watching


@dataclass
class Tally:
    """One run as the display saw it: batches done, and when it started."""

    batches: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def __str__(self) -> str:
        """E.g. `6 batches in 24.5 s`; only the time when no batch was seen (a partitioned sync's are in Dask's processes)."""
        batches = f"{self.batches} batch{'es' * (self.batches != 1)} " if self.batches else ""
        return f"{batches}in {self.seconds:.1f} s"


def plain_text(batch: Batch) -> str:
    c = batch.counts
    return (f"batch {batch.number}: read {c.rows_read}, inserted {c.rows_inserted}, updated {c.rows_updated}, "
            f"unchanged {c.rows_unchanged}, quarantined {c.rows_quarantined}")


def live_text(batch: Batch) -> str:
    """Shorter, for a terminal row: unchanged rows are left to the summary."""
    c = batch.counts
    return f"batch {batch.number}: read {c.rows_read}, inserted {c.rows_inserted}, updated {c.rows_updated}, quarantined {c.rows_quarantined}"


class Display:
    """Runs' progress, shown live (`live`), as a line per batch (`plain`), or not at all (neither)."""

    def __init__(self, live: Progress | None, plain: bool):
        self._live, self._plain = live, plain

    @contextmanager
    def run(self, integration: str, which: str) -> Iterator[Tally]:
        """Show the batches of `integration`'s run (flow `which`) while the block runs it."""
        tally = Tally()
        task = self._live.add_task(integration, total=None, status=f"{which}: starting") if self._live else None

        def seen(batch: Batch) -> None:
            if batch.integration != integration:
                return
            tally.batches = batch.number
            if task is not None:
                self._live.update(task, status=live_text(batch))
            elif self._plain:
                print(f"{integration} {which} {plain_text(batch)} ({tally.seconds:.1f} s)", flush=True)

        try:
            with watching(seen):
                yield tally
        finally:
            if task is not None:
                self._live.update(task, total=1, completed=1)  # the spinner and the clock stopped


@contextmanager
def display(as_json: bool) -> Iterator[Display]:
    """The display for this process's output: live if stdout is a terminal (and not `as_json`)."""
    if as_json or not sys.stdout.isatty():
        yield Display(None, plain=not as_json)
        return
    live = Progress(
        SpinnerColumn(finished_text="•"), TimeElapsedColumn(table_column=Column(no_wrap=True, min_width=7)),
        TextColumn("[bold]{task.description}[/] {task.fields[status]}", table_column=Column()),  # wraps in a narrow terminal
        console=Console(), refresh_per_second=4,
    )
    with live, ExitStack() as stack:
        if sys.__stderr__ and sys.__stderr__.isatty():  # log lines to the same terminal go above the rows
            above = _Above(sys.stderr)  # `live` made sys.stderr print above itself
            for handler in _terminal_log_handlers():
                stack.enter_context(_through(handler, above))
        yield Display(live, plain=False)


class _Above(io.TextIOBase):
    """`live`'s stand-in for stderr, wrapped: a rich console (e.g. Prefect's log handler's) writes to a rich
    proxy's real file, past the live display, but writes to this wrapper through it."""

    def __init__(self, proxy: TextIO):
        self._proxy = proxy

    def write(self, text: str) -> int:
        return self._proxy.write(text)

    def flush(self) -> None:
        self._proxy.flush()

    def isatty(self) -> bool:
        return True


def _terminal_log_handlers() -> list[logging.StreamHandler]:
    loggers = [logging.getLogger(), *(x for x in logging.root.manager.loggerDict.values() if isinstance(x, logging.Logger))]
    return [h for lg in loggers for h in lg.handlers if isinstance(h, logging.StreamHandler) and h.stream is sys.__stderr__]


@contextmanager
def _through(handler: logging.StreamHandler, stream: TextIO) -> Iterator[None]:
    """`handler` writes to `stream` for the time being (a rich handler's console too, like Prefect's)."""
    console = getattr(handler, "console", None)
    old = handler.setStream(stream)
    if isinstance(console, Console):
        console.file = stream
    try:
        yield
    finally:
        handler.setStream(old)
        if isinstance(console, Console):
            console.file = old
