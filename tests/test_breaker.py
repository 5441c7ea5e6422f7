"""The circuit breaker: opening, failing fast with the cause that opened it, one probe after the cool-down,
what counts, and its log."""

from __future__ import annotations

import logging
import threading

import pytest
from interlink.connectors.breaker import BreakerState, CircuitBreaker
from interlink.connectors.errors import CircuitOpen, ConnectorError, FatalError, RetriableError


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: FakeClock, **options) -> CircuitBreaker:
    return CircuitBreaker("crm", failure_threshold=3, cooldown_s=30.0, clock=clock, **options)


def fail(cb: CircuitBreaker, exc: BaseException | None = None) -> None:
    with pytest.raises(type(exc) if exc else RetriableError):
        with cb.guard():
            raise exc or RetriableError("crm: GET /customers answered 503")


def succeed(cb: CircuitBreaker) -> None:
    with cb.guard():
        pass


def open_breaker(clock: FakeClock, **options) -> CircuitBreaker:
    cb = breaker(clock, **options)
    for _ in range(3):
        fail(cb)
    assert cb.state == "open"
    return cb


def test_opens_after_the_threshold_of_consecutive_failures_only():
    cb = breaker(FakeClock())
    fail(cb)
    fail(cb)
    assert (cb.state, cb.opened_times) == ("closed", 0)
    fail(cb)
    assert (cb.state, cb.opened_times) == (BreakerState.OPEN, 1)


def test_a_success_resets_the_count_of_consecutive_failures():
    cb = breaker(FakeClock())
    fail(cb)
    fail(cb)
    succeed(cb)
    fail(cb)
    fail(cb)
    assert cb.state == "closed"


def test_fails_fast_while_open_without_calling_the_system():
    clock = FakeClock()
    cb = open_breaker(clock)
    clock.now = 29.9
    called = []
    with pytest.raises(CircuitOpen) as raised:
        with cb.guard():
            called.append(True)
    assert called == []
    assert isinstance(raised.value, ConnectorError) and not isinstance(raised.value, (RetriableError, FatalError))
    assert cb.state == "open"
    # the message leads with the failure that opened the circuit, which it carries
    assert str(raised.value) == "crm: GET /customers answered 503; circuit open, failing fast for another 0.1s"
    assert raised.value.cause is cb.cause and str(raised.value.cause) == "crm: GET /customers answered 503"


def test_a_fast_failure_names_the_cause_that_opened_the_circuit_and_the_connection():
    clock = FakeClock()
    cb = breaker(clock)
    fail(cb, RetriableError("crm: GET /a answered 502"))
    fail(cb, RetriableError("crm: GET /b answered 503"))
    fail(cb, ConnectionResetError("peer went away"))  # not a connector error: its type is named, and the connection
    with pytest.raises(CircuitOpen, match=r"^crm: ConnectionResetError: peer went away; circuit open, failing fast for another 30\.0s$"):
        cb.before_call()

    cb = breaker(clock)
    for _ in range(3):
        cb.before_call()
        cb.record_failure()  # no cause given: the message says only that the circuit is open
    with pytest.raises(CircuitOpen, match=r"^crm: circuit open, failing fast for another 30\.0s$") as raised:
        cb.before_call()
    assert raised.value.cause is None


def test_after_the_cool_down_exactly_one_probe_goes_through_while_the_others_fail_fast():
    clock = FakeClock()
    cb = open_breaker(clock)
    clock.now = 30.0
    assert cb.state == "half_open"
    probing, release = threading.Event(), threading.Event()
    outcomes: list[str] = []
    lock = threading.Lock()

    def call() -> None:
        try:
            with cb.guard():
                with lock:
                    outcomes.append("probe")
                probing.set()
                assert release.wait(timeout=10)
        except CircuitOpen:
            with lock:
                outcomes.append("failed fast")

    probe = threading.Thread(target=call)
    probe.start()
    assert probing.wait(timeout=10)
    others = [threading.Thread(target=call) for _ in range(5)]
    for thread in others:
        thread.start()
    for thread in others:
        thread.join(timeout=10)
    assert outcomes == ["probe"] + ["failed fast"] * 5
    release.set()
    probe.join(timeout=10)

    assert (cb.state, cb.opened_times) == ("closed", 1)
    succeed(cb)


def test_a_failed_probe_opens_the_circuit_for_another_cool_down():
    clock = FakeClock()
    cb = open_breaker(clock)
    clock.now = 30.0
    fail(cb)
    assert (cb.state, cb.opened_times) == ("open", 2)
    clock.now = 59.0
    with pytest.raises(CircuitOpen):
        cb.before_call()
    clock.now = 60.0
    succeed(cb)
    assert (cb.state, cb.opened_times) == ("closed", 2)


def test_errors_that_do_not_count_never_open_the_circuit():
    cb = breaker(FakeClock(), counts=lambda exc: isinstance(exc, RetriableError))
    for _ in range(10):
        fail(cb, FatalError("crm: GET /customers answered 400"))
    assert (cb.state, cb.opened_times) == ("closed", 0)


def test_a_probe_that_raises_an_error_that_does_not_count_leaves_the_next_call_to_probe():
    clock = FakeClock()
    cb = open_breaker(clock, counts=lambda exc: isinstance(exc, RetriableError))
    clock.now = 30.0
    fail(cb, FatalError("crm: GET /customers/x answered 404"))
    assert cb.state == "half_open"
    succeed(cb)
    assert cb.state == "closed"


def test_the_explicit_api_matches_guard():
    clock = FakeClock()
    cb = breaker(clock)
    down = RetriableError("crm: GET /customers answered 503")
    opened = []
    for _ in range(3):
        assert cb.before_call() is False  # not a probe
        opened.append(cb.record_failure(down))
    assert opened == [False, False, True]  # the failure that opened the circuit knows it
    with pytest.raises(CircuitOpen):
        cb.before_call()
    clock.now = 30.0
    assert cb.before_call() is True  # the probe
    with pytest.raises(CircuitOpen, match="^crm: GET /customers answered 503; circuit half-open and its probe call is in flight"):
        cb.before_call()
    cb.record_success()
    assert cb.state == "closed"


def test_a_failed_probe_says_it_opened_the_circuit_again():
    clock = FakeClock()
    cb = open_breaker(clock)
    clock.now = 30.0
    assert cb.before_call() is True
    assert cb.record_failure(RetriableError("crm: GET /customers answered 502")) is True
    with pytest.raises(CircuitOpen, match=r"^crm: GET /customers answered 502; circuit open, failing fast for another 30\.0s$"):
        cb.before_call()


def test_check_fails_fast_while_open_but_lets_a_call_in_flight_go_on_while_half_open():
    clock = FakeClock()
    cb = breaker(clock)
    cb.check()  # closed
    for _ in range(3):
        fail(cb)
    with pytest.raises(CircuitOpen, match="circuit open, failing fast for another 30.0s"):
        cb.check()
    clock.now = 30.0
    assert cb.before_call() is True
    cb.check()  # the probe's further attempts go on
    cb.record_success()


def test_a_call_that_is_not_the_probe_ending_with_an_error_that_does_not_count_leaves_the_probe_alone():
    clock = FakeClock()
    cb = breaker(clock, counts=lambda exc: isinstance(exc, RetriableError))
    assert cb.before_call() is False  # a long call, let through while closed
    for _ in range(3):
        fail(cb)
    clock.now = 30.0
    assert cb.before_call() is True  # the probe
    cb.release(False)  # the long call ends with a 404: no failure, and it was not the probe
    with pytest.raises(CircuitOpen, match="probe call is in flight"):
        cb.before_call()
    cb.release(True)  # the probe ends with a 404: the next call probes
    assert cb.before_call() is True


def test_every_state_change_is_logged(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="interlink.connectors.breaker")
    clock = FakeClock()
    cb = CircuitBreaker("crm", failure_threshold=5, cooldown_s=30.0, clock=clock)
    for _ in range(5):
        fail(cb)
    clock.now = 30.0
    fail(cb)
    clock.now = 60.0
    succeed(cb)

    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("interlink.connectors.breaker", "WARNING", "crm: circuit open after 5 consecutive failures; failing fast for 30s"),
        ("interlink.connectors.breaker", "INFO", "crm: circuit half-open after 30s; letting one probe call through"),
        ("interlink.connectors.breaker", "WARNING", "crm: probe call failed; circuit open again, failing fast for 30s"),
        ("interlink.connectors.breaker", "INFO", "crm: circuit half-open after 30s; letting one probe call through"),
        ("interlink.connectors.breaker", "INFO", "crm: probe call succeeded; circuit closed"),
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"failure_threshold": 0}, "failure_threshold must be at least 1, got 0"),
        ({"cooldown_s": -1}, "cooldown_s must not be negative, got -1"),
    ],
)
def test_invalid_arguments_are_rejected_clearly(kwargs: dict, message: str):
    with pytest.raises(ValueError, match=message):
        CircuitBreaker("crm", **kwargs)
