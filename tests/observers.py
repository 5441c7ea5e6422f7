"""The standard tools' receiving ends, as real processes for tests: an OpenLineage backend shaped like Marquez
(`tests/lineage_receiver.py`), Debian's Prometheus Pushgateway and Prometheus, an OTLP/HTTP trace receiver
(`tests/otlp_receiver.py`). A missing Debian binary skips its test, or fails it under REQUIRE_SERVICES=1."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

HERE = Path(__file__).parent
DEADLINE_S = 60


def binary(name: str) -> str:
    path = shutil.which(name, path=f"/usr/bin:{os.environ.get('PATH', '')}")
    if path is None:
        message = f"{name} is not installed (Debian: apt-get install {name}; `make tools`)"
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def poll(what: str, found: Callable[[], object], process: subprocess.Popen | None = None, deadline_s: float = DEADLINE_S) -> object:
    """What `found` returns once it is truthy (errors count as not yet); fails if `process` ends or the deadline passes."""
    deadline, last = time.monotonic() + deadline_s, None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            pytest.fail(f"{what}: the process ended with {process.returncode}")
        try:
            if result := found():
                return result
        except OSError as exc:
            last = exc
        time.sleep(0.2)
    pytest.fail(f"{what}: not within {deadline_s}s ({last})")


@contextmanager
def started(argv: list[str], log: Path, ready_url: str) -> Iterator[subprocess.Popen]:
    with log.open("w") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        poll(f"{argv[0]} ready ({log})", lambda: get(ready_url) is not None, process)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def printing_its_port(argv: list[str]) -> Iterator[int]:
    """A receiver process that prints its port on its first line, then serves; the port."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        port = process.stdout.readline().strip()
        assert port, f"{argv[1]} did not start (exit {process.wait()})"
        yield int(port)
    finally:
        process.kill()
        process.wait()


@contextmanager
def lineage_receiver(status: int = 201) -> Iterator[str]:
    """tests/lineage_receiver.py in its own process, answering POSTs with `status`; its base URL (`OPENLINEAGE_URL`)."""
    with printing_its_port([sys.executable, str(HERE / "lineage_receiver.py"), "--status", str(status)]) as port:
        yield f"http://127.0.0.1:{port}"


def lineage_events(url: str) -> list[dict]:
    """The events the lineage receiver at `url` stored, in the order received."""
    return json.loads(get(f"{url}/api/v1/events/lineage"))["events"]


@contextmanager
def otlp_receiver(out: Path) -> Iterator[str]:
    """tests/otlp_receiver.py in its own process, writing the spans it gets to `out` as JSON lines; its endpoint
    (`OTEL_EXPORTER_OTLP_ENDPOINT`)."""
    with printing_its_port([sys.executable, str(HERE / "otlp_receiver.py"), str(out)]) as port:
        yield f"http://127.0.0.1:{port}"


@contextmanager
def pushgateway(log: Path) -> Iterator[str]:
    """Debian's Prometheus Pushgateway on a free port, keeping what it gets in memory only (Debian's default persists it
    to one file under /var/lib/prometheus: every Pushgateway would start with what the others got); its URL
    (`INTERLINK_PUSHGATEWAY_URL`)."""
    address = f"127.0.0.1:{free_port()}"
    argv = [binary("prometheus-pushgateway"), f"--web.listen-address={address}", "--persistence.file="]
    with started(argv, log, f"http://{address}/-/ready"):
        yield f"http://{address}"
