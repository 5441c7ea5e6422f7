"""A receiver for the benchmark's observed runs: answers 200 to any POST and counts what came, in a process of its own.

    python -m benchmarks.sink          # prints its port on the first line of stdout, then serves until killed

It stands in for the OpenLineage and OTLP/HTTP back ends (`POST /api/v1/lineage`, `POST /v1/traces`): a POST is only
read and kept, so the receiver costs the sender nothing but the request. `GET /counts` then reads what came since the
previous `GET /counts`, as JSON, per path: requests and body bytes; lineage events by `eventType`; OTLP spans by
instrumentation scope and by span name (SQL statements by verb).
"""

from __future__ import annotations

import gzip
import json
import sys
import threading
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LINEAGE, TRACES = "/api/v1/lineage", "/v1/traces"


class Received:
    """The POST bodies by path, summarised when read (`counts`), so the time of a POST is only its read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clear()

    def _clear(self) -> None:
        self._pending: list[tuple[str, bytes, str]] = []
        self._paths: dict[str, Counter] = {}
        self._events: Counter = Counter()
        self._scopes: Counter = Counter()
        self._spans: Counter = Counter()

    def add(self, path: str, body: bytes, encoding: str) -> None:
        with self._lock:
            self._pending.append((path, body, encoding))
            self._paths.setdefault(path, Counter()).update(requests=1, bytes=len(body))

    def counts(self) -> dict:
        """What came since the previous call."""
        with self._lock:
            for path, body, encoding in self._pending:
                self._summarise(path, _decoded(body, encoding))
            counts = {
                "paths": {path: dict(c) for path, c in self._paths.items()},
                "lineage_events": dict(self._events),
                "otlp_spans_by_scope": dict(self._scopes),
                "otlp_spans_by_name": dict(self._spans.most_common(40)),
            }
            self._clear()
            return counts

    def _summarise(self, path: str, body: bytes) -> None:
        if path == LINEAGE:
            self._events[json.loads(body).get("eventType", "?")] += 1
        elif path == TRACES:
            from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

            request = ExportTraceServiceRequest.FromString(body)
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    self._scopes[scope.scope.name or "?"] += len(scope.spans)
                    self._spans.update(_span_name(scope.scope.name, s.name) for s in scope.spans)


def _decoded(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


def _span_name(scope: str, name: str) -> str:
    """A span's name grouped: SQL statements by their verb (`sql SELECT`), Prefect's task runs by task (`prefect
    check-1a2` → `prefect check`), everything else as named."""
    if "sqlalchemy" in scope:
        return "sql " + name.split(" ", 1)[0]
    stem, _, tail = name.rpartition("-")
    if scope == "prefect" and stem and len(tail) == 3 and all(c in "0123456789abcdef" for c in tail):
        return "prefect " + stem
    return name


def handler(received: Received) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the exporters' sessions expect

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path = self.path.split("?", 1)[0]
            received.add(path, body, self.headers.get("Content-Encoding", ""))
            if path == TRACES:
                self._reply(200, b"", "application/x-protobuf")
            else:
                self._reply(200, b"{}", "application/json")

        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] == "/counts":
                self._reply(200, json.dumps(received.counts()).encode(), "application/json")
            else:
                self._reply(404, b"", "text/plain")

        def _reply(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # quiet
            pass

    return Handler


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(Received()))
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
