"""Scale-out: the same CPU-heavy CRM → billing sync in 1 and in 2 partitions on a local Dask cluster.

    .venv/bin/python benchmarks/scale_out.py --n 200000        # or: make bench-scale N=200000

1. Seeds a demo CRM SQLite with N customers and serves it (CRM + finance API, fault rate 0) over
   real HTTP; the target and the state database are SQLite files in a fresh `INTERLINK_HOME` per run.
2. Runs `partitioned_sync_flow` of the crm_to_billing pipeline with a CPU-heavy transform: the
   customer transform plus fuzzy surname cleaning (each surname matched to the closest known one
   by a pure-Python edit distance). It stands in for CPU-bound business logic, which holds the GIL.
3. Each configuration (`--partitions`, default 1 and 2) runs `--repeats` times (default 3) on a
   local cluster of one single-threaded worker process per core, under `prefect_test_harness()`,
   in a subprocess of its own. Wall time is from the flow call to its return, cluster start included.

Writes `benchmarks/results/scale_out.json` and prints a markdown table with the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import pandas as pd  # noqa: E402
from interlink.demo_systems.crm_data import LAST_NAMES  # noqa: E402
from interlink.flows.crm_to_billing import to_billing_customers  # noqa: E402
from prefect import task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from benchmarks.common import machine, task_runs  # noqa: E402

API_KEY = "sk-bench-scale-5e2d"
KNOWN = [name.lower() for name in LAST_NAMES]


def distance(a: str, b: str) -> int:
    """Levenshtein distance, in pure Python."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def clean_surname(name: str) -> str:
    """The name with its surname replaced by the closest known one when at most one edit away."""
    *given, surname = name.split(" ")
    best = min(LAST_NAMES, key=lambda known: distance(surname.lower(), known.lower()))
    return " ".join([*given, best]) if distance(surname.lower(), best.lower()) <= 1 else name


@task(name="transform", cache_policy=NO_CACHE)
def heavy_transform(raw: pd.DataFrame) -> pd.DataFrame:
    """The customer transform plus fuzzy surname cleaning: the stand-in for CPU-bound business logic."""
    rows = to_billing_customers.fn(raw)
    return rows.assign(name=rows["name"].map(clean_surname, na_action="ignore"))


def run_worker(args: argparse.Namespace) -> None:
    """In a subprocess: `repeats` partitioned syncs of the served CRM, each into a fresh home."""
    from interlink.demo_systems.app import create_app
    from interlink.demo_systems.server import serve
    from interlink.flows.crm_to_billing import PIPELINE
    from interlink.flows.partitioned import partitioned_sync_flow
    from prefect.testing.utilities import prefect_test_harness

    sync = partitioned_sync_flow(replace(PIPELINE, transform=heavy_transform))
    runs = []
    with prefect_test_harness(server_startup_timeout=180), serve(create_app(Path(args.db), API_KEY, fault_rate=0.0)) as url:
        for repeat in range(args.repeats):
            home = Path(tempfile.mkdtemp(prefix="interlink-scale-"))
            os.environ.update({
                "INTERLINK_HOME": str(home), "INTERLINK_CRM__BASE_URL": url, "INTERLINK_CRM__AUTH__KIND": "api_key",
                "INTERLINK_CRM__AUTH__KEY": API_KEY, "INTERLINK_FINANCE__BASE_URL": url,
                "INTERLINK_BILLING__URL": f"sqlite:///{home / 'billing.db'}",
            })
            started = time.perf_counter()
            state = sync(partitions=args.partitions, chunk_size=args.chunk, return_state=True)
            wall = time.perf_counter() - started
            summary = state.result()
            parts = [r for r in task_runs(state.state_details.flow_run_id) if r.name.startswith("sync-partition")]
            runs.append({
                "wall_seconds": round(wall, 2),
                "partition_seconds": sorted(round(p.total_run_time.total_seconds(), 2) for p in parts),
                "rows": {k: v for k, v in summary.items() if k.startswith("rows_")},
            })
            print(f"  {args.partitions} partition(s), run {repeat + 1}: {wall:.1f}s", flush=True)
            shutil.rmtree(home, ignore_errors=True)
    Path(args.out).write_text(json.dumps(runs))


def main(args: argparse.Namespace) -> None:
    from interlink.demo_systems.crm_data import seed

    work = Path(tempfile.mkdtemp(prefix="interlink-bench-scale-"))
    try:
        db = work / "crm.db"
        print(f"seeding the CRM with {args.n:,} customers …", flush=True)
        seed(db, customers=args.n)
        measured = {}
        for partitions in args.partitions:
            out = work / f"p{partitions}.json"
            command = [sys.executable, __file__, "_run", "--db", str(db), "--out", str(out), "--partitions", str(partitions),
                       "--repeats", str(args.repeats), "--chunk", str(args.chunk)]
            subprocess.run(command, check=True, cwd=ROOT, timeout=args.timeout)
            measured[partitions] = json.loads(out.read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = _report(args, measured)
    out = ROOT / "benchmarks" / "results" / "scale_out.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(_markdown(report))
    print(f"\nwrote {out.relative_to(ROOT)}")


def _report(args: argparse.Namespace, measured: dict[int, list[dict]]) -> dict:
    medians = {k: statistics.median(r["wall_seconds"] for r in runs) for k, runs in measured.items()}
    base = medians[min(medians)]
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {**machine(), "note": "shared with other jobs: absolute times are noisy, ratios less so"},
        "N": args.n, "chunk_size": args.chunk, "repeats": args.repeats,
        "cluster": f"local Dask cluster: {os.cpu_count()} worker processes × 1 thread",
        "transform": "to_billing_customers + fuzzy surname cleaning (pure-Python Levenshtein against 30 known surnames)",
        "configurations": {
            str(k): {"wall_seconds": [r["wall_seconds"] for r in runs], "median_wall_seconds": round(medians[k], 2),
                     "speedup": round(base / medians[k], 2), "partition_seconds": [r["partition_seconds"] for r in runs],
                     "rows": runs[0]["rows"]}
            for k, runs in measured.items()
        },
    }


def _markdown(report: dict) -> str:
    lines = [
        f"\n## Scale-out: N={report['N']:,}, chunk {report['chunk_size']:,}, {report['cluster']}, median of {report['repeats']}",
        "", "| partitions | median wall s | runs (s) | speedup | partition task s (median run) |", "|---:|---:|---|---:|---|",
    ]
    for k, c in report["configurations"].items():
        middle = sorted(zip(c["wall_seconds"], c["partition_seconds"], strict=True))[len(c["wall_seconds"]) // 2][1]
        lines.append(f"| {k} | {c['median_wall_seconds']} | {', '.join(map(str, c['wall_seconds']))} | "
                     f"{c['speedup']}× | {', '.join(map(str, middle))} |")
    return "\n".join(lines)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode")
    run = sub.add_parser("run")
    run.add_argument("--n", type=int, default=200_000)
    run.add_argument("--partitions", type=int, nargs="+", default=[1, 2])
    run.add_argument("--timeout", type=float, default=3600)
    worker = sub.add_parser("_run")
    worker.add_argument("--db", required=True)
    worker.add_argument("--out", required=True)
    worker.add_argument("--partitions", type=int, required=True)
    for p in (run, worker):
        p.add_argument("--repeats", type=int, default=3)
        p.add_argument("--chunk", type=int, default=10_000)
    return parser.parse_args(argv if argv and not argv[0].startswith("-") else ["run", *argv])


if __name__ == "__main__":
    ns = parse(sys.argv[1:])
    {"run": main, "_run": run_worker}[ns.mode](ns)
