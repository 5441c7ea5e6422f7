"""json-server 0.17 (npm), a REST server we did not write, started on a free local port for a test.

`make tools` installs it under .interlink/tools; without it the tests that use it skip, or fail
under REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

JSON_SERVER = Path(__file__).resolve().parents[1] / ".interlink" / "tools" / "node_modules" / ".bin" / "json-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def json_server(data: dict, folder: Path) -> Iterator[str]:
    """json-server serving `data` (collections by name) from `folder`/db.json; its base URL."""
    if not JSON_SERVER.exists():
        message = f"json-server is not installed at {JSON_SERVER}: run `make tools`"
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    db = folder / "db.json"
    db.write_text(json.dumps(data))
    log = folder / "json-server.log"
    port = free_port()
    with log.open("wb") as output:
        server = subprocess.Popen(
            [JSON_SERVER, "--host", "127.0.0.1", "--port", str(port), "--quiet", str(db)], stdout=output, stderr=output
        )
    try:
        deadline = time.monotonic() + 30
        while True:  # poll the port until it answers
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"json-server did not answer on port {port}: {log.read_text()[-2000:]}")
                time.sleep(0.05)  # the polling interval, not a wait for an event
        yield f"http://127.0.0.1:{port}"
    finally:
        server.kill()
        server.wait()
