"""Pacing requests to a system: a token bucket per run, or a budget shared across runs through Prefect."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Protocol


class Limiter(Protocol):
    """What a client needs from a limiter: a slot to hold for the duration of one request."""

    def slot(self) -> AbstractContextManager[None]: ...


class RateLimiter:
    """A token bucket shared by all threads of one run.

    At most `burst + rate_per_s * W` requests start in any window of W seconds. With
    `max_concurrency`, `slot()` also keeps at most that many requests in flight at once.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: int = 1,
        max_concurrency: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if not rate_per_s > 0:
            raise ValueError(f"rate_per_s must be greater than 0, got {rate_per_s!r}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1 or None, got {max_concurrency!r}")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_concurrency = max_concurrency
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._updated = clock()
        self._lock = threading.Lock()
        self._slots: AbstractContextManager[object] = (
            threading.BoundedSemaphore(max_concurrency) if max_concurrency else nullcontext()
        )

    def acquire(self) -> None:
        """Block until a request may start, and take its token."""
        # The lock is held while sleeping: waiters queue on it, and the one at the head sleeps
        # exactly until the next token is due instead of polling.
        with self._lock:
            self._refill()
            while self._tokens < 1:
                self._sleep((1 - self._tokens) / self.rate_per_s)
                self._refill()
            self._tokens -= 1

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold a concurrent slot (with `max_concurrency`) and start one request when its token is due."""
        with self._slots:
            self.acquire()  # after the slot: a request waiting for a slot must not bank its token
            yield

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate_per_s)
        self._updated = now


class SharedRateLimit:
    """A request budget shared by every flow run and process, kept by a Prefect global concurrency limit.

    Create the limit once on the Prefect server, with a slot decay: `prefect gcl create crm-api
    --limit 10 --slot-decay-per-second 5` lets bursts of 10 through and then 5 requests per second.
    Each `slot()` takes one slot through `prefect.concurrency.sync.rate_limit`, one API call, and
    waits while the limit is full; slots are never released, they decay. The server answers a full
    limit with a jittered `Retry-After`, so waiting is polling, and the pace achieved is below the
    configured rate (60-80% of it against a local server), never above it.

    When no limit of that name exists, `slot()` does not wait: Prefect skips the acquisition,
    logging a warning only inside a flow or task run (silently outside one). With `strict=True`
    it raises `prefect.concurrency.asyncio.ConcurrencySlotAcquisitionError` instead. A limit
    that is disabled also lets every request through, and one without a slot decay makes
    `slot()` raise `ConcurrencySlotAcquisitionError` even when not strict. After `timeout_s`
    seconds of waiting, `slot()` raises a `TimeoutError`.
    """

    def __init__(self, name: str, *, strict: bool = False, timeout_s: float | None = None):
        self.name = name
        self.strict = strict
        self.timeout_s = timeout_s

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Start one request once the shared budget allows it."""
        from prefect.concurrency.sync import rate_limit  # loaded when first used: Prefect costs seconds to import

        rate_limit(self.name, timeout_seconds=self.timeout_s, strict=self.strict)
        yield
