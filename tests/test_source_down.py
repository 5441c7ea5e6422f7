"""A source that is down, through the whole crm_to_billing sync: the declared retries are made (the client's
`max_attempts` within each of the ingest task's attempts), and the run's error, in Prefect and in the ledger,
names the real cause and the host, not the circuit breaker."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import interlink.connectors.breaker as breaker_module
import interlink.connectors.rest as rest_module
import pytest
from interlink.connectors.errors import AuthError, CircuitOpen, RetriableError
from interlink.connectors.rest import RestClient
from interlink.demo_systems.app import create_app
from interlink.demo_systems.server import serve
from interlink.flows.crm_to_billing import PIPELINE as crm_to_billing
from interlink.tasks import retriable
from interlink.tasks.ingest import fetch_chunk
from prefect.states import Failed

from interlink.ledger import Ledger
from interlink.settings import Settings

from .conftest import API_KEY

CLIENT_ATTEMPTS = 5  # a connection's max_attempts by default
TASK_ATTEMPTS = 1 + fetch_chunk.retries  # the ingest task's first attempt and its declared retries


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A local port that refuses connections: bound, so no one else takes it, but not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def quick(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fresh circuit breakers, and no waiting between attempts; the attempts themselves are as declared.

    The connections are set explicitly: billing on SQLite in the test's home, the CRM's key.
    """
    monkeypatch.setattr(breaker_module, "_REGISTRY", {})  # breakers live for the process; this test starts closed
    monkeypatch.setattr(rest_module, "_backoff", lambda state: 0.0)  # the client's backoff
    monkeypatch.setattr(fetch_chunk, "retry_delay_seconds", [0] * fetch_chunk.retries)  # the task's retry delays
    monkeypatch.setenv("INTERLINK_BILLING__URL", f"sqlite:///{home / 'billing.db'}")
    monkeypatch.setenv("INTERLINK_CRM__AUTH__KIND", "api_key")
    monkeypatch.setenv("INTERLINK_CRM__AUTH__KEY", API_KEY)


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every connection attempt the REST clients make, by host: a real transport that counts its requests."""
    seen: list[str] = []

    class Counting(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(request.url.netloc.decode())
            return super().handle_request(request)

    connect = RestClient.connect.__func__
    monkeypatch.setattr(
        RestClient, "connect", classmethod(lambda cls, name, connection, transport=None: connect(cls, name, connection, transport or Counting()))
    )
    return seen


def last_run() -> dict:
    return Ledger(Settings().state_db).runs("crm_to_billing", limit=1)[0]


def test_a_refused_connection_is_retried_as_declared_and_the_run_fails_naming_connect_error_and_the_host(
    quick, refusing_port, connects, monkeypatch
):
    host = f"127.0.0.1:{refusing_port}"
    monkeypatch.setenv("INTERLINK_CRM__BASE_URL", f"http://{host}")
    monkeypatch.setenv("INTERLINK_FINANCE__BASE_URL", f"http://{host}")

    state = crm_to_billing.sync(return_state=True)

    assert state.is_failed()
    assert connects == [host] * (CLIENT_ATTEMPTS * TASK_ATTEMPTS)  # 5 attempts in each of the task's 3 attempts
    cause = rf"crm: GET /customers: cannot connect to {re.escape(host)} \(ConnectError: .*\) after {CLIENT_ATTEMPTS} attempts"
    with pytest.raises(RetriableError, match=cause):
        state.result()
    assert re.search(rf"RetriableError: {cause}", state.message)
    run = last_run()
    assert run["state"] == "FAILED" and re.fullmatch(rf"RetriableError: {cause}", run["error"])
    assert run["circuits"] is None  # 3 failed requests: below the threshold of 5


def test_a_source_down_across_runs_opens_its_circuit_and_the_fast_failure_still_names_the_cause(
    quick, refusing_port, connects, monkeypatch
):
    host = f"127.0.0.1:{refusing_port}"
    monkeypatch.setenv("INTERLINK_CRM__BASE_URL", f"http://{host}")
    monkeypatch.setenv("INTERLINK_FINANCE__BASE_URL", f"http://{host}")
    cause = rf"crm: GET /customers: cannot connect to {re.escape(host)} \(ConnectError: .*\) after {CLIENT_ATTEMPTS} attempts"

    assert crm_to_billing.sync(return_state=True).is_failed()  # failed requests 1-3 of the threshold of 5
    assert len(connects) == 15

    second = crm_to_billing.sync(return_state=True)
    # requests 4 and 5: the 5th opens the circuit, so the task does not retry only to fail fast
    assert len(connects) == 25
    with pytest.raises(RetriableError, match=rf"^{cause}; circuit now open for 30s$"):
        second.result()
    run = last_run()
    assert re.fullmatch(rf"RetriableError: {cause}; circuit now open for 30s", run["error"])
    assert run["circuits"] == "crm opened 1x, now open"

    third = crm_to_billing.sync(return_state=True)  # within the cool-down: fails fast, with the cause first
    assert len(connects) == 25
    with pytest.raises(CircuitOpen, match=rf"^{cause}; circuit open, failing fast for another \d+\.\ds$"):
        third.result()
    assert re.fullmatch(rf"CircuitOpen: {cause}; circuit open, failing fast for another \d+\.\ds", last_run()["error"])


def test_a_source_answering_429_or_503_sees_every_declared_attempt_and_the_run_names_the_status(quick, crm_db, monkeypatch):
    crm = create_app(crm_db, api_key=API_KEY, fault_rate=1.0, retry_after=0)  # every request a 429 or a 503
    with serve(crm) as url:
        monkeypatch.setenv("INTERLINK_CRM__BASE_URL", url)
        monkeypatch.setenv("INTERLINK_FINANCE__BASE_URL", url)
        state = crm_to_billing.sync(return_state=True)

    assert state.is_failed()
    assert crm.state.hits["/customers"] == CLIENT_ATTEMPTS * TASK_ATTEMPTS
    message = rf"crm: GET /customers answered (429|503) after {CLIENT_ATTEMPTS} attempts"
    with pytest.raises(RetriableError, match=f"^{message}$"):
        state.result()
    assert re.fullmatch(f"RetriableError: {message}", last_run()["error"])


@pytest.mark.parametrize(
    "error, retried",
    [
        (RetriableError("crm: GET /customers: cannot connect to h:1 (ConnectError: refused) after 5 attempts"), True),
        (RetriableError("crm: GET /customers answered 503 after 5 attempts; circuit now open for 30s", opened_circuit=True), False),
        (CircuitOpen("crm: GET /customers answered 503 after 5 attempts; circuit open, failing fast for another 29.0s"), False),
        (AuthError("crm: GET /customers answered 401: the credentials were rejected"), False),
        (ValueError("not a connector error"), False),
    ],
    ids=["retriable", "opened its circuit", "circuit open", "fatal", "other"],
)
def test_a_task_retries_a_failure_that_may_pass_but_not_one_that_would_only_fail_fast(error, retried):
    assert retriable(fetch_chunk, None, Failed(data=error)) is retried
