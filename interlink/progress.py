"""Runs' progress, batch by batch, for whoever watches in this process (e.g. the command line's display).

A flow calls `batch_done` after each batch it has committed and checkpointed; every watcher
registered with `watching` then gets a `Batch` carrying the run's counts so far, the same as its
ledger row holds at that moment. Nothing here knows Prefect or the command line, and a run in
another process (a deployment's, a Dask partition) is not seen. A watcher that fails is logged,
never failing the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

from interlink.ledger import Counts, Entry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Batch:
    integration: str
    number: int  # 1 for the run's first batch
    counts: Counts  # the run's totals so far
    watermark: str | None


Watcher = Callable[[Batch], None]
_watchers: list[Watcher] = []


@contextmanager
def watching(watcher: Watcher) -> Iterator[None]:
    """Call `watcher` with every batch done in this process while the block runs."""
    _watchers.append(watcher)
    try:
        yield
    finally:
        _watchers.remove(watcher)


def batch_done(integration: str, number: int, entry: Entry) -> None:
    """Tell the watchers that batch `number` of `integration`'s run is committed, with `entry` checkpointed."""
    batch = Batch(integration, number, replace(entry.counts), entry.watermark)
    for watcher in tuple(_watchers):
        try:
            watcher(batch)
        except Exception as exc:  # noqa: BLE001 - a display must not fail a sync
            log.warning("progress watcher %r failed: %s: %s", watcher, type(exc).__name__, exc)
