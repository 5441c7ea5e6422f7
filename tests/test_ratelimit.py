"""Rate limiting: the per-run token bucket on a fake clock, and the budget shared through Prefect."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator

import pytest
from interlink.connectors.ratelimit import Limiter, RateLimiter, SharedRateLimit
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError


class FakeClock:
    """Time that passes only when someone sleeps; remembers each thread's last reading."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self._last = threading.local()
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self._last.value = self.now
            return self.now

    @property
    def last_read(self) -> float:
        """The time this thread last read: for a limiter, when it took its token."""
        return self._last.value

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds


def run_threads(count: int, target: Callable[[], None]) -> None:
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()


def most_starts_in_a_window(starts: list[float], window_s: float) -> int:
    starts = sorted(starts)
    return max(sum(1 for t in starts if first <= t <= first + window_s) for first in starts)


def test_token_bucket_bounds_every_window_and_paces_exactly():
    clock = FakeClock()
    rate, burst, n = 4.0, 3, 200
    limiter = RateLimiter(rate, burst, clock=clock, sleep=clock.sleep)
    starts: list[float] = []
    lock = threading.Lock()
    calls = iter(range(n))

    def worker() -> None:
        while True:
            with lock:
                if next(calls, None) is None:
                    return
            limiter.acquire()
            with lock:
                starts.append(clock.last_read)

    run_threads(8, worker)

    assert len(starts) == n
    for window_s in (0.25, 1.0, 10.0):
        assert most_starts_in_a_window(starts, window_s) <= burst + rate * window_s
    assert most_starts_in_a_window(starts, 1.0) == burst + rate  # the bound is reached, not just respected
    assert clock.now == max(starts) == (n - burst) / rate
    assert clock.sleeps == [1 / rate] * (n - burst)  # one exact sleep per waiting request: no polling


def test_idle_time_refills_the_bucket_up_to_the_burst_only():
    clock = FakeClock()
    limiter = RateLimiter(2.0, burst=3, clock=clock, sleep=clock.sleep)
    clock.now = 100.0
    for _ in range(3):
        limiter.acquire()
    assert clock.sleeps == []
    limiter.acquire()
    assert clock.sleeps == [0.5]


def test_slot_keeps_at_most_max_concurrency_requests_in_flight():
    clock = FakeClock()
    limiter: Limiter = RateLimiter(1000.0, burst=6, max_concurrency=2, clock=clock, sleep=clock.sleep)
    inside = peak = done = 0
    changed = threading.Condition()
    release = threading.Event()
    ready = threading.Barrier(6)

    def worker() -> None:
        nonlocal inside, peak, done
        ready.wait(timeout=10)
        with limiter.slot():
            with changed:
                inside += 1
                peak = max(peak, inside)
                changed.notify_all()
            assert release.wait(timeout=10)
            with changed:
                inside -= 1
                done += 1

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    with changed:
        assert changed.wait_for(lambda: inside == 2, timeout=10)
    release.set()
    for thread in threads:
        thread.join(timeout=10)

    assert (peak, done, inside) == (2, 6, 0)


def test_slot_without_max_concurrency_only_paces():
    clock = FakeClock()
    limiter = RateLimiter(1.0, clock=clock, sleep=clock.sleep)
    with limiter.slot(), limiter.slot():
        pass
    assert clock.sleeps == [1.0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate_per_s": 0}, "rate_per_s must be greater than 0, got 0"),
        ({"rate_per_s": -1.5}, "rate_per_s must be greater than 0, got -1.5"),
        ({"rate_per_s": float("nan")}, "rate_per_s must be greater than 0, got nan"),
        ({"rate_per_s": 1, "burst": 0}, "burst must be at least 1, got 0"),
        ({"rate_per_s": 1, "max_concurrency": 0}, "max_concurrency must be at least 1 or None, got 0"),
    ],
)
def test_invalid_arguments_are_rejected_clearly(kwargs: dict, message: str):
    with pytest.raises(ValueError, match=message):
        RateLimiter(**kwargs)


@pytest.fixture
def global_limit() -> Iterator[Callable[..., str]]:
    """Create global concurrency limits on the test Prefect server; delete them afterwards."""
    names: list[str] = []

    def create(limit: int, slot_decay_per_second: float = 0.0) -> str:
        name = f"test-{uuid.uuid4().hex[:8]}"
        with get_client(sync_client=True) as client:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=limit, slot_decay_per_second=slot_decay_per_second)
            )
        names.append(name)
        return name

    yield create
    with get_client(sync_client=True) as client:
        for name in names:
            client.delete_global_concurrency_limit_by_name(name)


def active_slots(name: str) -> int:
    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(name).active_slots


def test_shared_rate_limit_takes_a_slot_of_the_global_limit_per_request(global_limit):
    name = global_limit(limit=5, slot_decay_per_second=0.001)  # decays one slot per 1000 s
    shared: Limiter = SharedRateLimit(name, strict=True)
    for _ in range(3):
        with shared.slot():
            pass
    assert active_slots(name) == 3  # taken, and not given back on exit: slots only decay


def test_shared_rate_limit_waits_while_the_global_limit_is_full(global_limit):
    name = global_limit(limit=1, slot_decay_per_second=0.001)
    shared = SharedRateLimit(name, timeout_s=0.5)
    with shared.slot():
        pass
    with pytest.raises(TimeoutError):
        with shared.slot():
            pass


def test_shared_rate_limit_without_a_limit_on_the_server_does_not_wait_unless_strict():
    name = f"missing-{uuid.uuid4().hex[:8]}"
    with SharedRateLimit(name).slot():
        pass
    with pytest.raises(ConcurrencySlotAcquisitionError, match="must be created before acquiring slots"):
        with SharedRateLimit(name, strict=True).slot():
            pass


def test_shared_rate_limit_needs_a_slot_decay(global_limit):
    name = global_limit(limit=5)
    with pytest.raises(ConcurrencySlotAcquisitionError, match="do not have a decay configured"):
        with SharedRateLimit(name).slot():
            pass
