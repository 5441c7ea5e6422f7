"""A circuit breaker: stop calling a system that keeps failing, and probe it once it has had time to recover."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum

from connectors.errors import CircuitOpen, RetriableError

log = logging.getLogger(__name__)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Fails calls to one system fast after `failure_threshold` consecutive failures.

    closed -> open after `failure_threshold` consecutive failures; open -> half_open after
    `cooldown_s`; in half_open exactly one probe call goes through while the others fail fast;
    its success closes the circuit, its failure opens it for another cool-down.

    Every `before_call()` that does not raise must be followed by `record_success()` or
    `record_failure()`; `guard()` does both. Thread-safe.
    """

    def __init__(
        self,
        name: str,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        *,
        counts: Callable[[BaseException], bool] = lambda exc: True,
        clock: Callable[[], float] = time.monotonic,
    ):
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, got {failure_threshold!r}")
        if cooldown_s < 0:
            raise ValueError(f"cooldown_s must not be negative, got {cooldown_s!r}")
        self.name = name
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._counts = counts
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._opened_times = 0
        self._probing = False

    @property
    def state(self) -> BreakerState:
        """`closed`, `open` or `half_open` (once the cool-down is over)."""
        with self._lock:
            return self._current_state()

    @property
    def opened_times(self) -> int:
        """How many times the circuit has opened, re-opening after a failed probe included."""
        with self._lock:
            return self._opened_times

    def before_call(self) -> None:
        """Let a call through, or raise `CircuitOpen` while open or while the probe is in flight."""
        with self._lock:
            state = self._current_state()
            if state is BreakerState.OPEN:
                remaining = self._opened_at + self.cooldown_s - self._clock()
                raise CircuitOpen(f"{self.name}: circuit open; failing fast for another {remaining:.1f}s")
            if state is BreakerState.HALF_OPEN:
                if self._probing:
                    raise CircuitOpen(f"{self.name}: circuit half-open and its probe call is in flight; failing fast")
                self._probing = True

    def record_success(self) -> None:
        """The call succeeded: reset the failure count, and close the circuit after a probe."""
        with self._lock:
            self._failures = 0
            if self._state is BreakerState.HALF_OPEN:
                self._probing = False
                self._state = BreakerState.CLOSED
                log.info("%s: probe call succeeded; circuit closed", self.name)

    def record_failure(self) -> None:
        """The call failed: open the circuit at the threshold, or again after a probe."""
        with self._lock:
            if self._state is BreakerState.CLOSED:
                self._failures += 1
                if self._failures >= self.failure_threshold:
                    self._open()
                    log.warning(
                        "%s: circuit open after %d consecutive failures; failing fast for %gs",
                        self.name, self._failures, self.cooldown_s,
                    )
            elif self._state is BreakerState.HALF_OPEN:
                self._open()
                log.warning("%s: probe call failed; circuit open again, failing fast for %gs", self.name, self.cooldown_s)

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Wrap one call: `before_call()`, then record its outcome.

        An exception for which `counts` is false is neither a failure nor a success: the counts
        are left alone, and a probe that raised it is forgotten so the next call probes instead.
        """
        self.before_call()
        try:
            yield
        except BaseException as exc:
            if self._counts(exc):
                self.record_failure()
            else:
                self._forget_probe()
            raise
        self.record_success()

    def _current_state(self) -> BreakerState:
        """The state now, moving open -> half_open once the cool-down is over (call with the lock held)."""
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.cooldown_s:
            self._state = BreakerState.HALF_OPEN
            log.info("%s: circuit half-open after %gs; letting one probe call through", self.name, self.cooldown_s)
        return self._state

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._opened_times += 1
        self._probing = False

    def _forget_probe(self) -> None:
        with self._lock:
            self._probing = False


_REGISTRY: dict[tuple, CircuitBreaker] = {}
_REGISTRY_LOCK = threading.Lock()


def breaker_for(name: str, threshold: int, cooldown_s: float) -> CircuitBreaker:
    """The circuit breaker of connection `name`, one per process (and settings), shared by every thread of a run.

    Only retriable failures count: a fatal one (a 4xx) says nothing of the system's health.
    """
    key = (name, threshold, cooldown_s)
    with _REGISTRY_LOCK:
        if key not in _REGISTRY:
            _REGISTRY[key] = CircuitBreaker(name, threshold, cooldown_s, counts=lambda exc: isinstance(exc, RetriableError))
        return _REGISTRY[key]


def breakers() -> list[CircuitBreaker]:
    """Every connection's circuit breaker in this process."""
    with _REGISTRY_LOCK:
        return list(_REGISTRY.values())
