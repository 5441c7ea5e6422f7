"""Per-connection metrics (`interlink.connectors.telemetry`): each HTTP attempt timed and classed, each retry counted, a
circuit's openings, and a queue's backlog against a real RabbitMQ. The registry is process-wide, so each test uses
a connection name of its own and asserts the change of each sample."""

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pika
import pytest
from interlink.connectors.amqp import AmqpQueue
from interlink.connectors.breaker import CircuitBreaker
from interlink.connectors.errors import CircuitOpen, NotFound, RetriableError
from interlink.connectors.rest import RestClient
from interlink.connectors.telemetry import status_class
from prometheus_client import REGISTRY

AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


class Samples:
    """The HTTP samples of one connection and method, read from the default registry."""

    def __init__(self, connection: str, method: str = "GET"):
        self.connection, self.method = connection, method

    def __call__(self) -> dict[str, float]:
        labels = {"connection": self.connection, "method": self.method}
        values = {"count": REGISTRY.get_sample_value("interlink_http_request_duration_seconds_count", labels)}
        for kind in ("2xx", "3xx", "4xx", "5xx", "error"):
            values[kind] = REGISTRY.get_sample_value("interlink_http_responses_total", {**labels, "status_class": kind})
        values["retries"] = REGISTRY.get_sample_value("interlink_http_retries_total", {"connection": self.connection})
        return {key: value or 0.0 for key, value in values.items()}

    def change(self, before: dict[str, float]) -> dict[str, float]:
        """What changed since `before`, the unchanged samples left out."""
        return {key: value - before[key] for key, value in self().items() if value != before[key]}


def mock_client(name: str, handler, attempts: int = 3, breaker: CircuitBreaker | None = None) -> RestClient:
    return RestClient(name, "https://api.test", transport=httpx.MockTransport(handler), max_attempts=attempts,
                      breaker=breaker, sleep=lambda seconds: None)


def test_status_classes():
    assert [status_class(s) for s in (200, 204, 301, 404, 429, 503, None)] == ["2xx", "2xx", "3xx", "4xx", "4xx", "5xx", "error"]


def test_an_answered_request_is_timed_once_and_counted_2xx():
    name = unique("crm")
    samples = Samples(name)
    before = samples()
    with mock_client(name, lambda request: httpx.Response(200, json={"ok": True})) as rest:
        rest.get_json("/ping")
    assert samples.change(before) == {"count": 1, "2xx": 1}
    total = REGISTRY.get_sample_value("interlink_http_request_duration_seconds_sum", {"connection": name, "method": "GET"})
    assert 0 < total < 5


def test_a_retried_503_counts_each_attempt_and_the_retry():
    name = unique("crm")
    answers = iter([httpx.Response(503), httpx.Response(200, json=[])])
    samples = Samples(name)
    before = samples()
    with mock_client(name, lambda request: next(answers)) as rest:
        assert rest.get_json("/customers") == []
    assert samples.change(before) == {"count": 2, "5xx": 1, "2xx": 1, "retries": 1}


def test_a_404_is_counted_4xx_and_not_retried():
    name = unique("crm")
    samples = Samples(name)
    before = samples()
    with mock_client(name, lambda request: httpx.Response(404, text="no such customer")) as rest, pytest.raises(NotFound):
        rest.get_json("/customers/9")
    assert samples.change(before) == {"count": 1, "4xx": 1}


def test_transport_failures_are_counted_error_per_attempt():
    name = unique("crm")

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    samples = Samples(name, "POST")
    before = samples()
    with mock_client(name, refuse, attempts=3) as rest, pytest.raises(RetriableError, match="after 3 attempts"):
        rest.send("POST", "/invoices", {"id": 1})
    assert samples.change(before) == {"count": 3, "error": 3, "retries": 2}


class Answers(BaseHTTPRequestHandler):
    """/ok 200; /flaky 503 on its first call, then 200; /missing 404."""

    flaky_calls = 0

    def do_GET(self) -> None:
        if self.path == "/flaky":
            type(self).flaky_calls += 1
            status = 503 if type(self).flaky_calls == 1 else 200
        else:
            status = {"/ok": 200}.get(self.path, 404)
        body = b"[]" if status == 200 else b'{"error": "no"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@contextmanager
def http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (Answers,), {"flaky_calls": 0}))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_real_server_over_http():
    name = unique("erp")
    samples = Samples(name)
    with http_server() as url, RestClient(name, url, max_attempts=3, sleep=lambda seconds: None) as rest:
        before = samples()
        assert rest.get_json("/ok") == []
        assert rest.get_json("/flaky") == []
        with pytest.raises(NotFound):
            rest.get_json("/missing")
        assert samples.change(before) == {"count": 4, "2xx": 2, "5xx": 1, "4xx": 1, "retries": 1}
        assert REGISTRY.get_sample_value(
            "interlink_http_request_duration_seconds_bucket", {"connection": name, "method": "GET", "le": "30.0"}
        ) == 4


def test_a_refused_connection_to_a_real_port_is_an_error():
    name = unique("erp")
    samples = Samples(name)
    with socket.socket() as closed:  # bound, not listening: every connection to it is refused at once
        closed.bind(("127.0.0.1", 0))
        before = samples()
        with RestClient(name, f"http://127.0.0.1:{closed.getsockname()[1]}", max_attempts=2, sleep=lambda s: None) as rest:
            with pytest.raises(RetriableError, match="cannot connect"):
                rest.get_json("/ok")
    assert samples.change(before) == {"count": 2, "error": 2, "retries": 1}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_gauge_is_1_from_opening_until_a_probe_closes_it():
    name = unique("billing")
    labels = {"connection": name}
    clock = Clock()
    breaker = CircuitBreaker(name, 2, 30.0, counts=lambda exc: isinstance(exc, RetriableError), clock=clock)
    healthy = [False]

    def gauge() -> float | None:
        return REGISTRY.get_sample_value("interlink_circuit_breaker_open", labels)

    def opened() -> float | None:
        return REGISTRY.get_sample_value("interlink_circuit_breaker_opened_total", labels)

    assert (gauge(), opened()) == (0, 0)  # both series exist from the breaker's creation
    with mock_client(name, lambda request: httpx.Response(200 if healthy[0] else 503, json=[]), attempts=1, breaker=breaker) as rest:
        for _ in range(2):
            with pytest.raises(RetriableError):
                rest.get_json("/x")
        assert (gauge(), opened()) == (1, 1)
        with pytest.raises(CircuitOpen):
            rest.get_json("/x")
        clock.now = 31  # half-open: still 1, the failed probe opens it again
        with pytest.raises(RetriableError, match="circuit now open"):
            rest.get_json("/x")
        assert (gauge(), opened()) == (1, 2)
        clock.now = 62
        healthy[0] = True
        assert rest.get_json("/x") == []
        assert (gauge(), opened()) == (0, 2)


@pytest.fixture
def queue() -> Iterator[AmqpQueue]:
    """A fresh queue on the real broker under a connection name of its own, deleted afterwards."""
    try:
        conn = AmqpQueue(AMQP_URL, f"interlink-test-{uuid.uuid4().hex[:12]}", name=unique("events")).__enter__()
    except pika.exceptions.AMQPConnectionError as exc:
        message = f"RabbitMQ is not reachable at {AMQP_URL}: {exc!r}"
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    yield conn
    conn.delete()
    conn.__exit__(None, None, None)


def test_the_queue_gauge_follows_the_backlog(queue):
    def ready() -> float | None:
        return REGISTRY.get_sample_value("interlink_queue_messages", {"connection": queue.name, "queue": queue.queue})

    assert ready() == 0  # set on entry, from the queue's declaration
    queue.publish([b"%d" % i for i in range(7)])
    assert queue.depth() == 7 and ready() == 7
    fetched = queue.fetch(3, 1.0)
    assert len(fetched) == 3 and ready() == 4  # what the last basic_get said remains, with no extra call
    queue.ack([m.delivery_tag for m in fetched])
    queue.publish([b"late"])
    with AmqpQueue(AMQP_URL, queue.queue, name=queue.name) as again:  # a consumer starting on a backlog sees it at once
        assert ready() == 5
        rest = again.fetch(10, 1.0)
        assert len(rest) == 5 and ready() == 0
        again.ack([m.delivery_tag for m in rest])
