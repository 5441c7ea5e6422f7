"""Pieces the benchmarks share: the machine's description, memory readings, and Prefect task-run timings."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path


def machine(pg_url: str | None = None) -> dict:
    """CPU model, cores, RAM, Python, load average and (given a PostgreSQL URL) the server's version."""
    cpu = next(
        (line.split(":", 1)[1].strip() for line in _lines("/proc/cpuinfo") if line.startswith("model name")), platform.processor()
    )
    ram_kb = next((int(line.split()[1]) for line in _lines("/proc/meminfo") if line.startswith("MemTotal:")), 0)
    out = {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "ram_gb": round(ram_kb / 2**20, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }
    if pg_url:
        import psycopg

        with psycopg.connect(pg_url) as conn:
            out["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
    return out


def _lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def status_mb(field: str) -> float | None:
    """VmRSS / VmHWM of this process from /proc (Linux), in MB."""
    for line in _lines("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return None


def run_child(cmd: list[str], timeout: float, **popen) -> tuple[float, float]:
    """Run `cmd` to completion; its wall seconds and CPU seconds (user + system, from `os.wait4`).

    Not its peak RSS: Linux carries the parent's high-water mark over fork and exec into the child's `ru_maxrss`,
    so a child reads its own (`status_mb("VmHWM")`) instead.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, **popen)
    deadline = started + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            os.wait4(proc.pid, 0)
            raise TimeoutError(f"{cmd} took over {timeout:.0f}s")
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return time.perf_counter() - started, usage.ru_utime + usage.ru_stime


def task_runs(flow_run_id, settle_s: float = 60.0) -> list:
    """Every task run of the flow run, once all are finished (task states reach the API asynchronously)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    client = get_client(sync_client=True)
    flt = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    deadline = time.monotonic() + settle_s
    while True:
        runs, offset = [], 0
        while True:
            page = client.read_task_runs(flow_run_filter=flt, limit=200, offset=offset)
            runs.extend(page)
            if len(page) < 200:
                break
            offset += 200
        if (runs and all(r.end_time is not None for r in runs)) or time.monotonic() > deadline:
            return runs
        time.sleep(1.0)


def _task_seconds(run) -> float:
    if run.start_time and run.end_time:
        return (run.end_time - run.start_time).total_seconds()
    return run.total_run_time.total_seconds()


def busy_seconds(runs: list) -> float:
    """Seconds in which at least one task run was running: overlapping runs (a chunk read ahead) count once."""
    spans = sorted((r.start_time, r.end_time) for r in runs if r.start_time and r.end_time)
    busy, reach = 0.0, None
    for start, end in spans:
        if reach is None or start > reach:
            busy, reach = busy + (end - start).total_seconds(), end
        elif end > reach:
            busy, reach = busy + (end - reach).total_seconds(), end
    return busy


def phase_seconds(runs: list) -> dict[str, dict]:
    """Task-run time and count per task name (`ingest-3f2` → `ingest`)."""
    phases: dict[str, dict] = {}
    for run in runs:
        name = (run.name or run.task_key).rsplit("-", 1)[0]
        entry = phases.setdefault(name, {"seconds": 0.0, "task_runs": 0})
        entry["seconds"] += _task_seconds(run)
        entry["task_runs"] += 1
    return phases
