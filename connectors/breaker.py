"""A circuit breaker: stop calling a system that keeps failing, and probe it once it has had time to recover.

What counts is a *call*, whatever the caller makes one: for `interlink.connectors.rest` a call is one request with all
of its own retries, so a request that fails after the connection's `max_attempts` attempts is one failure,
not `max_attempts`. Thresholds and retries fit together by that: with the defaults (5 attempts per request,
a threshold of 5 failed requests), a task that retries twice (3 attempts, each ending on one failed request)
makes every attempt it declares and fails with the real error; it takes the failures of several tasks or
runs in one process (or of pages fetched concurrently) to open the circuit. The call whose failure opens the circuit raises its own error (the REST client marks it
`opened_circuit`, so a task does not retry it only to fail fast); later calls fail fast with `CircuitOpen`,
whose message leads with that failure.

Each breaker sets its connection's `interlink_circuit_breaker_open` gauge (1 from opening until a probe closes it) and
counts each opening (`interlink.connectors.telemetry`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum

from interlink.connectors.errors import CircuitOpen, ConnectorError, RetriableError
from interlink.connectors.telemetry import BreakerMetrics

log = logging.getLogger(__name__)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Fails calls to one system fast after `failure_threshold` consecutive failed calls.

    closed -> open after `failure_threshold` consecutive failures; open -> half_open after
    `cooldown_s`; in half_open exactly one probe call goes through while the others fail fast;
    its success closes the circuit, its failure opens it for another cool-down.

    Every `before_call()` that does not raise must be followed by `record_success()`,
    `record_failure(cause)` or `release(probe)`; `guard()` does this. A call made of several
    attempts asks `check()` before each attempt after the first, so it stops once another call
    has opened the circuit. `CircuitOpen` carries the failure that opened the circuit and its
    message leads with it. Thread-safe.
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
        self._cause: BaseException | None = None  # the last failure counted
        self._opened_at = 0.0
        self._opened_times = 0
        self._probing = False
        self._metrics = BreakerMetrics(name)

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

    @property
    def cause(self) -> BaseException | None:
        """The last failure counted: while the circuit is open, the one that opened it."""
        with self._lock:
            return self._cause

    def before_call(self) -> bool:
        """Let a call through, or raise `CircuitOpen` while open or while the probe is in flight.

        Returns True when the call is the half-open circuit's probe.
        """
        with self._lock:
            state = self._current_state()
            if state is BreakerState.OPEN:
                raise self._failing_fast()
            if state is BreakerState.HALF_OPEN:
                if self._probing:
                    raise self._failing_fast("circuit half-open and its probe call is in flight; failing fast")
                self._probing = True
                return True
            return False

    def check(self) -> None:
        """Before a further attempt of a call already let through: raise `CircuitOpen` if the circuit is open now."""
        with self._lock:
            if self._current_state() is BreakerState.OPEN:
                raise self._failing_fast()

    def record_success(self) -> None:
        """The call succeeded: reset the failure count, and close the circuit after a probe."""
        with self._lock:
            self._failures = 0
            if self._state is BreakerState.HALF_OPEN:
                self._probing = False
                self._state = BreakerState.CLOSED
                self._metrics.closed()
                log.info("%s: probe call succeeded; circuit closed", self.name)

    def record_failure(self, cause: BaseException | None = None) -> bool:
        """The call failed with `cause`: open the circuit at the threshold, or again after a probe.

        Returns True when this failure opened the circuit.
        """
        with self._lock:
            if self._state is BreakerState.CLOSED:
                self._failures += 1
                self._cause = cause
                if self._failures >= self.failure_threshold:
                    self._open()
                    log.warning(
                        "%s: circuit open after %d consecutive failures; failing fast for %gs",
                        self.name, self._failures, self.cooldown_s,
                    )
                    return True
            elif self._state is BreakerState.HALF_OPEN:
                self._cause = cause
                self._open()
                log.warning("%s: probe call failed; circuit open again, failing fast for %gs", self.name, self.cooldown_s)
                return True
            return False

    def release(self, probe: bool) -> None:
        """The call ended with an error that does not count: counts unchanged; if it was the probe, the next call probes."""
        if probe:
            with self._lock:
                self._probing = False

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Wrap one call: `before_call()`, then record its outcome.

        An exception for which `counts` is false is neither a failure nor a success: the counts
        are left alone, and a probe that raised it is forgotten so the next call probes instead.
        """
        probe = self.before_call()
        try:
            yield
        except BaseException as exc:
            if self._counts(exc):
                self.record_failure(exc)
            else:
                self.release(probe)
            raise
        self.record_success()

    def counts(self, exc: BaseException) -> bool:
        """Whether `exc` is a failure of the system (and not, say, a request it rightly refused)."""
        return self._counts(exc)

    def _failing_fast(self, what: str | None = None) -> CircuitOpen:
        """`CircuitOpen`, its message led by the failure that opened the circuit, if known (call with the lock held)."""
        if what is None:
            what = f"circuit open, failing fast for another {self._opened_at + self.cooldown_s - self._clock():.1f}s"
        if self._cause is None:
            return CircuitOpen(f"{self.name}: {what}")
        cause = self._cause
        text = str(cause) if isinstance(cause, ConnectorError) else f"{type(cause).__name__}: {cause}"
        return CircuitOpen(f"{text if text.startswith(f'{self.name}:') else f'{self.name}: {text}'}; {what}", cause)

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
        self._metrics.opened()



_REGISTRY: dict[tuple, CircuitBreaker] = {}
_REGISTRY_LOCK = threading.Lock()


def breaker_for(name: str, address: str, threshold: int, cooldown_s: float) -> CircuitBreaker:
    """The circuit breaker of connection `name` to the system at `address`, one per process (and settings),
    shared by every thread of a run; the same name pointed at another system has another breaker.

    Only retriable failures count: a fatal one (a 4xx) says nothing of the system's health.
    """
    key = (name, address, threshold, cooldown_s)
    with _REGISTRY_LOCK:
        if key not in _REGISTRY:
            _REGISTRY[key] = CircuitBreaker(name, threshold, cooldown_s, counts=lambda exc: isinstance(exc, RetriableError))
        return _REGISTRY[key]


def breakers() -> list[CircuitBreaker]:
    """Every connection's circuit breaker in this process."""
    with _REGISTRY_LOCK:
        return list(_REGISTRY.values())
