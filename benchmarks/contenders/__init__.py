"""The sync benchmark's contenders, each run in a process of its own: `python -m benchmarks.contenders.NAME CONFIG OUT`.

CONFIG is JSON: the source's `url`, `api_key` and `page` size, the target's libpq URL `pg` and a fresh empty
`schema` in it, and (for Interlink) `chunk`, `concurrent_pages`, `change_share` and its `home` folder.
Each contender writes JSON to OUT with at least `sync_s`, the wall time around the sync itself, and
`peak_rss_mb`, the process's own high-water mark (VmHWM).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import status_mb

FIELDS = ("id", "name", "email", "phone", "country", "updated_at", "company", "city", "plan", "created_at")


def main(run: Callable[[dict], dict]) -> None:
    """Run `run` on the CONFIG of the command line and write its result to OUT."""
    config, out = json.loads(sys.argv[1]), Path(sys.argv[2])
    result = run(config)
    out.write_text(json.dumps({**result, "peak_rss_mb": status_mb("VmHWM")}, indent=2))
