"""Connections another process stands in for while it runs: the demo's systems under `interlink demo serve`.

That process writes `<INTERLINK_HOME>/stand-ins.json` (its pid, what it is, and where each connection it stands in
for points, as shown: no secret) and removes it when it stops. `interlink connectors`, in another shell, shows those
connections as stood in for while that process lives, instead of "not set".
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

FILE = "stand-ins.json"


@contextmanager
def standing_in(home: Path, by: str, targets: dict[str, str]) -> Iterator[None]:
    """While the block runs, this process (`by`) stands in for the connections in `targets` (name → shown target)."""
    path = home / FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": os.getpid(), "by": by, "connections": targets}))
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def stood_in(home: Path) -> tuple[str, dict[str, str]]:
    """Who stands in for which connections now (`by` with its pid, name → shown target); nothing if no process does."""
    try:
        found = json.loads((home / FILE).read_text())
    except (OSError, ValueError):
        return "", {}
    if not psutil.pid_exists(found.get("pid", 0)):  # it was killed before it could remove the file
        return "", {}
    return f"{found['by']} (pid {found['pid']})", found["connections"]
