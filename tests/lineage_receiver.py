"""A lineage backend shaped like Marquez's API, run as its own process by tests/test_lineage.py.

POST /api/v1/lineage stores the JSON event and answers 201 (or `--status`, storing nothing);
GET /api/v1/events/lineage answers {"events": [...]} in the order received. It prints its port, then serves.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

EVENTS: list[dict] = []
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    status = 201

    def do_POST(self) -> None:  # noqa: N802
        if self.path != "/api/v1/lineage":
            return self._answer(404, {"error": "not found"})
        event = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        if self.status == 201:
            with LOCK:
                EVENTS.append(event)
        self._answer(self.status, {})

    def do_GET(self) -> None:  # noqa: N802
        if self.path != "/api/v1/events/lineage":
            return self._answer(404, {"error": "not found"})
        with LOCK:
            self._answer(200, {"events": list(EVENTS)})

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # quiet: the test reads events, not access logs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--status", type=int, default=201, help="the status to answer POSTs with")
    Handler.status = parser.parse_args().status
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    sys.stdout.close()
    server.serve_forever()


if __name__ == "__main__":
    main()
