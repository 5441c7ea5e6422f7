"""Per-connection Prometheus metrics of the connectors, in prometheus_client's default registry.

Every series is labelled `connection`, the connection's declared name (`crm`), never an address:

- `interlink_http_request_duration_seconds{connection, method}`: a histogram of each HTTP attempt, from sending the
  request to its body read, failed attempts included (a timeout counts its time waited);
- `interlink_http_responses_total{connection, method, status_class}`: each attempt by its answer's class, `2xx` to
  `5xx`, or `error` when no answer came (timeout, refused, reset);
- `interlink_http_retries_total{connection}`: each retry a request's retry policy made;
- `interlink_circuit_breaker_open{connection}`: 1 from the circuit opening until a probe call closes it (so 1 in
  half-open too: the system is not trusted yet), else 0; `interlink_circuit_breaker_opened_total{connection}`
  counts each opening, re-opening after a failed probe included;
- `interlink_queue_messages{connection, queue}`: the messages ready on a queue (its consumer's backlog), as last seen.

The label children are resolved once per connection (and method), so a request costs one observe and one increment.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)  # API answers: 5 ms to 30 s

REQUEST_DURATION = Histogram(
    "interlink_http_request_duration_seconds", "Duration of each HTTP attempt, failed ones included",
    ["connection", "method"], buckets=HTTP_BUCKETS,
)
RESPONSES = Counter(
    "interlink_http_responses", "HTTP attempts by the class of their answer (2xx..5xx), or error when none came",
    ["connection", "method", "status_class"],
)
RETRIES = Counter("interlink_http_retries", "Retries made by HTTP requests' retry policy", ["connection"])
BREAKER_OPEN = Gauge("interlink_circuit_breaker_open", "1 while the circuit is open or half-open, 0 when closed", ["connection"])
BREAKER_OPENED = Counter("interlink_circuit_breaker_opened", "Times the circuit opened", ["connection"])
QUEUE_MESSAGES = Gauge("interlink_queue_messages", "Messages ready on the queue, as last seen", ["connection", "queue"])


def status_class(status: int | None) -> str:
    """`2xx` … `5xx` for an HTTP status, `error` for None (no answer)."""
    return "error" if status is None else f"{status // 100}xx"


class HttpMetrics:
    """The HTTP metrics of one connection."""

    def __init__(self, connection: str):
        self.connection = connection
        self._retries = RETRIES.labels(connection)
        self._children: dict[tuple[str, int | None], tuple] = {}

    def observe(self, method: str, status: int | None, seconds: float) -> None:
        """One attempt that took `seconds` and was answered `status` (None: no answer)."""
        key = (method, None if status is None else status // 100)
        if (children := self._children.get(key)) is None:
            children = self._children[key] = (
                REQUEST_DURATION.labels(self.connection, method),
                RESPONSES.labels(self.connection, method, status_class(status)),
            )
        children[0].observe(seconds)
        children[1].inc()

    def retried(self) -> None:
        self._retries.inc()


class BreakerMetrics:
    """The circuit-breaker metrics of one connection; the gauge starts at 0 so the series exists from the start."""

    def __init__(self, connection: str):
        self._open = BREAKER_OPEN.labels(connection)
        self._opened = BREAKER_OPENED.labels(connection)
        self._open.set(0)

    def opened(self) -> None:
        self._open.set(1)
        self._opened.inc()

    def closed(self) -> None:
        self._open.set(0)


def queue_messages(connection: str, queue: str) -> Gauge:
    """The gauge of the messages ready on `queue` of `connection`."""
    return QUEUE_MESSAGES.labels(connection, queue)
