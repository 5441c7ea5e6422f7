"""The REST connector end to end against real local HTTP servers: pacing under faults, pagination loops,
the circuit breaker, idempotent retries and OAuth2 client credentials."""

from __future__ import annotations

import bisect
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from interlink.connectors.auth import OAuth2ClientCredentialsConfig
from interlink.connectors.breaker import BreakerState, CircuitBreaker, breaker_for
from interlink.connectors.errors import AuthError, CircuitOpen, NotFound, PaginationLoop, RetriableError
from interlink.connectors.pagination import CursorPaginator, from_config
from interlink.connectors.ratelimit import RateLimiter
from interlink.connectors.rest import RestClient
from interlink.demo_systems import storefront
from interlink.demo_systems.server import serve
from interlink.demo_systems.storefront_data import seed as seed_storefront
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from interlink.settings import RestConnection

RECORDS = 1000
PAGE_SIZE = 20
RATE_PER_S = 50
BURST = 5

CLIENT_ID = "interlink-rest-test"
CLIENT_SECRET = "cs-rest-test-9c41+/:e"  # distinctive, and with characters HTTP Basic must encode


@dataclass
class Seen:
    """What a test server recorded about one request."""

    started: float  # time.monotonic() when the app got it: the client runs in this process, on the same clock
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes
    status: int = 0


@dataclass
class Server:
    """A tiny Starlette app whose `answer(request_number, request)` decides each response; records every request."""

    answer: Callable[[int, Request], Response]
    seen: list[Seen] = field(default_factory=list)

    def app(self) -> Starlette:
        async def handle(request: Request) -> Response:
            started = time.monotonic()
            seen = Seen(
                started, request.method, request.url.path, dict(request.query_params),
                {k.lower(): v for k, v in request.headers.items()}, await request.body(),
            )
            self.seen.append(seen)
            response = self.answer(len(self.seen), request)
            seen.status = response.status_code
            return response

        return Starlette(routes=[Route("/{path:path}", handle, methods=["GET", "POST", "PATCH", "PUT", "DELETE"])])

    def statuses(self) -> list[int]:
        return [s.status for s in self.seen]


def most_starts_in_one_second(starts: list[float]) -> int:
    """The largest number of starts in any closed window [t, t + 1s]."""
    starts = sorted(starts)
    return max(bisect.bisect_right(starts, t + 1.0) - i for i, t in enumerate(starts))


def test_most_starts_in_one_second_counts_a_closed_window():
    assert most_starts_in_one_second([0.0, 0.5, 1.0, 1.01, 2.5]) == 3
    assert most_starts_in_one_second([0.0, 2.0, 4.0]) == 1


# 1. Pacing and retries under faults ----------------------------------------------------------------------------


def flaky_cursor_source(number: int, request: Request) -> Response:
    """`RECORDS` records behind an opaque cursor; every 5th request is a 429, every other 3rd a 503."""
    if number % 5 == 0:
        return JSONResponse({"error": "rate limited"}, 429, headers={"Retry-After": "0"})
    if number % 3 == 0:
        return JSONResponse({"error": "service unavailable"}, 503)
    start = int(request.query_params.get("cursor", "p0").removeprefix("p"))
    end = min(start + PAGE_SIZE, RECORDS)
    data = [{"id": i, "name": f"record {i}"} for i in range(start, end)]
    return JSONResponse({"data": data, "next_cursor": f"p{end}" if end < RECORDS else None})


def test_cursor_pages_through_429s_and_503s_lose_nothing_and_stay_within_the_rate_budget():
    server = Server(flaky_cursor_source)
    sleeps: list[float] = []  # retry waits, recorded instead of slept: only the limiter paces the requests
    limiter = RateLimiter(rate_per_s=RATE_PER_S, burst=BURST)
    with serve(server.app()) as url, RestClient("flaky", url, limiter=limiter, sleep=sleeps.append) as rest:
        pages = list(rest.paginate("/records", CursorPaginator(), records_path="data"))

    ids = [record["id"] for page in pages for record in page]
    assert len(ids) == RECORDS and sorted(ids) == list(range(RECORDS))  # every record, exactly once
    assert len(pages) == RECORDS // PAGE_SIZE

    statuses = server.statuses()
    failures = [s for s in statuses if s != 200]
    assert statuses.count(200) == len(pages)
    assert statuses.count(429) > 0 and statuses.count(503) > 0
    # each failed attempt was retried once: a 429 after its Retry-After of 0 s, a 503 after a backoff
    assert len(sleeps) == len(failures)
    assert all((wait == 0.0) if status == 429 else (wait > 0) for status, wait in zip(failures, sleeps))

    # The bucket lets at most BURST + RATE_PER_S * W tokens be taken in any W seconds, and each request reaches
    # the server after it took its token and (the client being sequential) after the previous one reached it:
    # so the server's own clock must see no more than BURST + RATE_PER_S starts in any second, with no slack.
    starts = [s.started for s in server.seen]  # failed requests included
    assert len(starts) > BURST + RATE_PER_S  # enough requests that an unpaced client would break the budget
    assert most_starts_in_one_second(starts) <= BURST + RATE_PER_S


# 2. A cursor that repeats --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cursors", "repeated", "requests"),
    [
        ({None: "c1", "c1": "c1"}, "c1", 2),  # the same cursor again
        ({None: "a", "a": "b", "b": "a"}, "a", 3),  # a cycle of two
    ],
)
def test_a_repeated_cursor_fails_with_pagination_loop_after_a_bounded_number_of_requests(cursors, repeated, requests):
    def answer(number: int, request: Request) -> Response:
        cursor = request.query_params.get("cursor")
        return JSONResponse({"data": [number], "next_cursor": cursors[cursor]})

    server = Server(answer)
    pages: list[list[Any]] = []
    with serve(server.app()) as url, RestClient("loopy", url) as rest:
        with pytest.raises(PaginationLoop) as raised:
            for page in rest.paginate("/records", CursorPaginator(), records_path="data"):
                pages.append(page)
    assert len(server.seen) == requests <= 3
    assert f"repeated cursor {repeated!r} after {requests} pages" in str(raised.value)
    assert pages == [[n] for n in range(1, requests)]  # the pages before the repeat were delivered, once


# 3-4. The circuit breaker --------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_opens_after_the_threshold_of_failed_requests_fails_fast_and_lets_one_probe_through_after_the_cool_down():
    up = False

    def answer(number: int, request: Request) -> Response:
        if up:
            return JSONResponse({"ok": number})
        return JSONResponse({"error": "down"}, 503, headers={"Retry-After": "0"})

    server = Server(answer)
    clock = FakeClock()
    breaker = CircuitBreaker("flaky", failure_threshold=3, cooldown_s=60, clock=clock)
    sleeps: list[float] = []
    with serve(server.app()) as url, RestClient("flaky", url, max_attempts=2, breaker=breaker, sleep=sleeps.append) as rest:
        for _ in range(2):  # a failed request is one failure, however many attempts it took
            with pytest.raises(RetriableError, match="^flaky: GET /status answered 503 after 2 attempts$"):
                rest.get_json("/status")
        assert breaker.state == BreakerState.CLOSED
        with pytest.raises(RetriableError, match="^flaky: GET /status answered 503 after 2 attempts; circuit now open for 60s$"):
            rest.get_json("/status")  # the third failed request opens the circuit, and says so
        assert len(server.seen) == 6
        assert sleeps == [0.0, 0.0, 0.0]  # Retry-After: 0 honoured after each first 503
        assert breaker.state == BreakerState.OPEN and breaker.opened_times == 1

        with pytest.raises(CircuitOpen, match=r"^flaky: GET /status answered 503 after 2 attempts; circuit open, failing fast for another 60\.0s$"):
            rest.get_json("/status")
        assert len(server.seen) == 6  # failing fast, without a request, naming the failure that opened the circuit

        clock.now += 59.9
        with pytest.raises(CircuitOpen):
            rest.get_json("/status")
        assert len(server.seen) == 6  # still cooling down

        up = True
        clock.now += 0.2  # past the cool-down
        assert breaker.state == BreakerState.HALF_OPEN
        assert rest.get_json("/status") == {"ok": 7}
        assert len(server.seen) == 7  # exactly one probe
        assert breaker.state == BreakerState.CLOSED

        assert rest.get_json("/status") == {"ok": 8}  # closed: calls go through again
    assert breaker.opened_times == 1


def test_a_failed_probe_reopens_the_circuit_after_one_request():
    def answer(number: int, request: Request) -> Response:
        return JSONResponse({"error": "down"}, 503, headers={"Retry-After": "0"})

    server = Server(answer)
    clock = FakeClock()
    breaker = CircuitBreaker("flaky", failure_threshold=1, cooldown_s=60, clock=clock)
    with serve(server.app()) as url, RestClient("flaky", url, max_attempts=2, breaker=breaker, sleep=[].append) as rest:
        with pytest.raises(RetriableError, match="circuit now open for 60s"):
            rest.get_json("/status")
        clock.now += 60
        with pytest.raises(RetriableError, match="circuit now open for 60s") as probe:
            rest.get_json("/status")  # the probe request, with its 2 attempts, fails: open again
        assert probe.value.opened_circuit
        with pytest.raises(CircuitOpen, match="failing fast for another 60.0s"):
            rest.get_json("/status")
    assert len(server.seen) == 4
    assert breaker.state == BreakerState.OPEN and breaker.opened_times == 2


def test_an_open_circuit_does_not_spend_the_rate_budget():
    def answer(number: int, request: Request) -> Response:
        return JSONResponse({"error": "down"}, 503, headers={"Retry-After": "0"})

    clock = FakeClock()
    limiter_waits: list[float] = []

    def limiter_sleep(seconds: float) -> None:
        limiter_waits.append(seconds)
        clock.now += seconds

    server = Server(answer)
    limiter = RateLimiter(rate_per_s=0.01, burst=3, clock=clock, sleep=limiter_sleep)
    breaker = CircuitBreaker("flaky", failure_threshold=3, cooldown_s=10_000, clock=clock)
    with serve(server.app()) as url, RestClient("flaky", url, max_attempts=1, limiter=limiter, breaker=breaker, sleep=[].append) as rest:
        for _ in range(3):
            with pytest.raises(RetriableError):
                rest.get_json("/status")  # three requests spend the three tokens of the burst, and open the circuit
        for _ in range(5):
            with pytest.raises(CircuitOpen):
                rest.get_json("/status")
    assert len(server.seen) == 3
    assert limiter_waits == []  # failing fast never waited for a token


def test_fatal_errors_do_not_open_the_breaker_but_retriable_ones_do():
    down = False

    def answer(number: int, request: Request) -> Response:
        if down:
            return JSONResponse({"error": "down"}, 503, headers={"Retry-After": "0"})
        return JSONResponse({"error": "no such thing"}, 404)

    server = Server(answer)
    name = f"notfound-{uuid.uuid4().hex}"  # its own breaker in the process-wide registry
    with serve(server.app()) as url:
        connection = RestConnection(base_url=url, max_attempts=1, breaker_threshold=3, breaker_cooldown_s=60)
        with RestClient.connect(name, connection) as rest:
            for n in range(5):
                with pytest.raises(NotFound, match="no such thing"):
                    rest.get_json(f"/things/{n}")
            assert len(server.seen) == 5  # each 404 tried once
            breaker = breaker_for(name, url, 3, 60)
            assert (breaker.state, breaker.opened_times) == (BreakerState.CLOSED, 0)

            down = True  # the same breaker does count retriable failures
            for _ in range(3):
                with pytest.raises(RetriableError):
                    rest.get_json("/things/1")
            with pytest.raises(CircuitOpen):
                rest.get_json("/things/1")
    assert len(server.seen) == 8
    assert (breaker.state, breaker.opened_times) == (BreakerState.OPEN, 1)


def test_a_connection_dropped_mid_response_is_retried():
    def answer(number: int, request: Request) -> Response:
        if number > 1:
            return JSONResponse({"ok": number})

        async def cut_short() -> AsyncIterator[bytes]:
            yield b'{"ok": '
            raise ConnectionResetError("the backend went away mid-response")  # uvicorn then closes the connection

        return StreamingResponse(cut_short(), media_type="application/json")

    server = Server(answer)
    with serve(server.app()) as url, RestClient("flaky", url, sleep=[].append) as rest:
        assert rest.get_json("/status") == {"ok": 2}
    assert len(server.seen) == 2


# 5. Idempotent writes ------------------------------------------------------------------------------------------


def test_send_carries_the_idempotency_key_and_the_json_body_and_a_retry_repeats_the_same_key():
    def answer(number: int, request: Request) -> Response:
        if number == 1:
            return JSONResponse({"error": "busy"}, 503)
        seen = server.seen[-1]
        return JSONResponse({"key": seen.headers.get("idempotency-key"), "body": seen.body.decode()})

    server = Server(answer)
    sleeps: list[float] = []
    with serve(server.app()) as url, RestClient("things", url, sleep=sleeps.append) as rest:
        response = rest.send("PATCH", "/things/1", {"v": 1}, idempotency_key="k1")
        assert response.status_code == 200
        assert response.json() == {"key": "k1", "body": '{"v":1}'}
        assert [(s.method, s.path, s.status) for s in server.seen] == [("PATCH", "/things/1", 503), ("PATCH", "/things/1", 200)]
        assert [s.headers.get("idempotency-key") for s in server.seen] == ["k1", "k1"]  # the SAME key on the retry
        assert all(s.body == b'{"v":1}' and s.headers["content-type"] == "application/json" for s in server.seen)
        assert len(sleeps) == 1  # one backoff before the retry

        rest.send("PUT", "/things/2", [1, 2])
    assert server.seen[-1].method == "PUT" and server.seen[-1].body == b"[1,2]"
    assert "idempotency-key" not in server.seen[-1].headers  # no key, no header


# 6. OAuth2 client credentials against the demo storefront ------------------------------------------------------


@pytest.fixture(scope="module")
def storefront_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("storefront") / "storefront.db"
    seed_storefront(db)
    return db


def order_ids(db: Path) -> list[str]:
    with closing(sqlite3.connect(db)) as conn:
        return sorted(row[0] for row in conn.execute("SELECT id FROM orders"))


@pytest.fixture
def storefront_app(storefront_db: Path) -> Callable[..., Iterator[tuple[Starlette, str]]]:
    @contextmanager
    def start(**options: Any) -> Iterator[tuple[Starlette, str]]:
        app = storefront.create_app(storefront_db, CLIENT_ID, CLIENT_SECRET, **options)
        with serve(app) as url:
            yield app, url

    return start


def oauth_client(url: str, secret: str = CLIENT_SECRET, **options: Any) -> RestClient:
    config = OAuth2ClientCredentialsConfig(token_url=f"{url}/oauth/token", client_id=CLIENT_ID, client_secret=secret)
    return RestClient("storefront", url, auth=config.build(), **options)


@pytest.mark.parametrize("concurrency", [1, 4])
@pytest.mark.parametrize("fault_rate", [0.0, 0.3])
def test_oauth2_pages_every_order_exactly_once_with_one_token(storefront_app, storefront_db, fault_rate, concurrency):
    expected = order_ids(storefront_db)
    assert len(expected) == 2000
    with storefront_app(fault_rate=fault_rate, retry_after=0, fault_seed=5) as (app, url):
        with oauth_client(url, sleep=[].append) as rest:
            paginator = from_config({"type": "page_number", "total_pages_path": "total_pages"})
            pages = list(rest.paginate("/orders", paginator, {"per_page": 200}, records_path="orders", concurrency=concurrency))
        ids = [order["id"] for page in pages for order in page]
        assert len(ids) == len(expected) and sorted(ids) == expected
        assert len(pages) == 10
        assert app.state.hits["/oauth/token"] == 1
        if fault_rate:
            assert app.state.hits["/orders"] > 10  # faults were answered, and retried
        else:
            assert app.state.hits["/orders"] == 10


def test_oauth2_with_a_wrong_secret_fails_with_auth_error_that_hides_the_secret(storefront_app):
    wrong = "cs-wrong-5d1e0f7a"
    with storefront_app() as (app, url), oauth_client(url, secret=wrong, sleep=[].append) as rest:
        with pytest.raises(AuthError) as raised:
            list(rest.paginate("/orders", from_config({"type": "page_number", "total_pages_path": "total_pages"})))
    message = str(raised.value)
    assert "/oauth/token answered 401" in message
    assert wrong not in message and CLIENT_SECRET not in message
    assert wrong not in repr(raised.value)
    assert app.state.hits["/oauth/token"] == 1  # a rejected secret is not retried
    assert app.state.hits["/orders"] == 0
