"""What the data-quality gate costs as a share of a full CRM → billing sync.

    .venv/bin/python benchmarks/gate_share.py --n 1000000        # or: make bench-gate N=1000000

1. Seeds a demo CRM SQLite with N customers and serves it (CRM + finance API, fault rate 0) over
   real HTTP; the target is a SQLite billing file in a fresh temporary `INTERLINK_HOME` per run.
2. Runs the real `interlink.flows.crm_to_billing.sync(full_refresh=True, chunk_size=100_000)` under
   `prefect_test_harness()` (up to 3 times; once if a run takes over 3 minutes) and reads the flow
   run's task runs back from the Prefect API: the time in `check` against the wall time, plus every
   other task kind for a phase breakdown.
3. Measures the gate on its own: `interlink.data_checks.gate.validate` on a synthetic 1M-row × 10-column
   frame with a 15-expectation suite (not-null, unique, regex, between, in-set), in a subprocess of
   its own so its peak RSS (`ru_maxrss` delta) is not mixed with anything else.
4. If the gate's share is above 15 %, profiles `validate` (cProfile) on a real 100k-row chunk of
   the billing suite and on the synthetic frame, and lists where the time goes.

Each measurement runs in its own subprocess; the parent only seeds, orchestrates and reports.
Writes `benchmarks/results/gate.json` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import machine, phase_seconds, status_mb, task_runs

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

RESULTS = ROOT / "benchmarks" / "results"
API_KEY = "sk-bench-7c1e0f9a2b"
CHUNK = 100_000
SINGLE_RUN_AFTER_S = 180.0
SHARE_THRESHOLD = 0.15
PHASES = ("ingest", "transform", "lookup-countries", "enrich", "check", "quarantine", "deliver", "report")


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def _reset_peak() -> bool:
    """Reset this process's RSS high-water mark (VmHWM), so a later peak belongs to what ran since."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------- CRM source


def seed_crm(db: Path, n: int) -> dict:
    """The demo CRM seeded with N customers, by the project's own seeder (timed)."""
    from interlink.demo_systems.crm_data import seed

    started = time.perf_counter()
    seed(db, customers=n)
    return {"seconds": round(time.perf_counter() - started, 2), "method": "interlink.demo_systems.crm_data.seed"}


# --------------------------------------------------------------------------- worker: the sync


def sync_worker(args: argparse.Namespace) -> None:
    from interlink.demo_systems.app import create_app
    from interlink.demo_systems.server import serve
    from prefect.testing.utilities import prefect_test_harness

    out: dict = {"runs": [], "repeats_requested": args.repeats}
    with prefect_test_harness(server_startup_timeout=180), serve(create_app(Path(args.db), API_KEY, fault_rate=0.0)) as url:
        from interlink.flows.crm_to_billing import PIPELINE

        sync = PIPELINE.sync

        for repeat in range(args.repeats):
            home = Path(tempfile.mkdtemp(prefix="interlink-bench-"))
            os.environ.update(
                {
                    "INTERLINK_HOME": str(home),
                    "INTERLINK_CRM__BASE_URL": url,
                    "INTERLINK_CRM__AUTH__KIND": "api_key",
                    "INTERLINK_CRM__AUTH__KEY": API_KEY,
                    "INTERLINK_FINANCE__BASE_URL": url,
                    "INTERLINK_BILLING__URL": f"sqlite:///{home / 'billing.db'}",
                }
            )
            started = time.perf_counter()
            state = sync(full_refresh=True, chunk_size=args.chunk, return_state=True)
            wall = time.perf_counter() - started
            summary = state.result(raise_on_failure=False)
            runs = task_runs(state.state_details.flow_run_id)
            phases = phase_seconds(runs)
            unfinished = sum(r.end_time is None for r in runs)
            record = {
                "repeat": repeat + 1,
                "state": state.name,
                "wall_seconds": round(wall, 3),
                "phases": {k: {"seconds": round(v["seconds"], 3), "task_runs": v["task_runs"]} for k, v in phases.items()},
                "unfinished_task_runs": unfinished,
                "summary": {k: v for k, v in (summary or {}).items() if k.startswith("rows_")}
                if isinstance(summary, dict)
                else str(summary),
            }
            out["runs"].append(record)
            print(f"  sync run {repeat + 1}: {wall:.1f}s, check {phases.get('check', {}).get('seconds', 0):.1f}s", flush=True)
            shutil.rmtree(home, ignore_errors=True)
            if wall > SINGLE_RUN_AFTER_S and repeat + 1 < args.repeats:
                out["stopped_early"] = f"run {repeat + 1} took {wall:.0f}s > {SINGLE_RUN_AFTER_S:.0f}s: not repeated"
                break
    out["process_peak_rss_mb"] = round(_maxrss_mb(), 1)
    Path(args.out).write_text(json.dumps(out, indent=2))


# --------------------------------------------------------------------------- worker: the gate alone


def synthetic_frame(rows: int, seed: int = 11):
    """N rows × 10 columns shaped like billing customers plus two extra fields, ~1-3 % dirty per column."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    dirty = lambda share: rng.random(rows) < share  # noqa: E731

    ids = pd.Series(np.char.add("C", np.char.zfill(np.arange(1, rows + 1).astype(str), 7)), dtype="string")
    dup = np.flatnonzero(dirty(0.005))
    ids.iloc[dup] = ids.iloc[(dup + 1) % rows].to_numpy()  # some duplicate ids
    ids = ids.mask(dirty(0.002))

    first = np.array(["anna", "bob", "carl", "diana", "erik", "fatima", "george", "hannah", "ivan", "julia"])
    last = np.array(["smith", "muller", "dubois", "jansen", "garcia", "rossi", "tanaka", "silva", "roy", "brown"])
    f, l_ = rng.integers(0, 10, rows), rng.integers(0, 10, rows)
    names = pd.Series(np.char.add(np.char.add(np.char.capitalize(first[f]), " "), np.char.capitalize(last[l_])), dtype="string")
    names = names.mask(dirty(0.01))

    domains = np.array(["example.com", "mail.example.org", "corp.example.net", "example.co.uk", "shop.example.de"])
    email = np.char.add(np.char.add(np.char.add(first[f], "."), last[l_]), "@")
    email = np.char.add(email, domains[rng.integers(0, 5, rows)])
    bad = dirty(0.02)
    email[bad] = np.char.replace(email[bad], "@", "@@")
    emails = pd.Series(email, dtype="string").mask(dirty(0.02))

    phones = pd.Series(np.char.add("+49", rng.integers(10**8, 10**11, rows).astype(str)), dtype="string")
    phones = phones.where(~dirty(0.01), "call me").mask(dirty(0.15))  # phone is optional

    codes = np.array(["US", "GB", "DE", "FR", "NL", "ES", "IT", "SE", "PL", "CH"])
    currency_of = {
        "US": "USD",
        "GB": "GBP",
        "DE": "EUR",
        "FR": "EUR",
        "NL": "EUR",
        "ES": "EUR",
        "IT": "EUR",
        "SE": "SEK",
        "PL": "PLN",
        "CH": "CHF",
    }
    country = codes[rng.integers(0, 10, rows)]
    country[dirty(0.02)] = "XX"
    countries = pd.Series(country, dtype="string").mask(dirty(0.01))
    currencies = countries.map(currency_of).astype("string")

    tax = pd.Series(rng.choice([0.0, 0.19, 0.2, 0.21, 0.25], rows))
    tax = tax.where(~dirty(0.005), 0.9).mask(dirty(0.01))

    status = np.array(["active", "trial", "suspended", "closed"])[rng.integers(0, 4, rows)]
    status[dirty(0.01)] = "deleted"
    statuses = pd.Series(status, dtype="string")

    credit = pd.Series(rng.integers(0, 50_000, rows)).where(~dirty(0.005), -1)

    base = np.datetime64("2026-10-01T00:00:00")
    updated = pd.Series(base - rng.integers(1, 90 * 86_400, rows).astype("timedelta64[s]")).dt.tz_localize("UTC")
    updated = updated.mask(dirty(0.005))

    return pd.DataFrame(
        {
            "crm_id": ids,
            "name": names,
            "email": emails,
            "phone": phones,
            "country": countries,
            "currency": currencies,
            "tax_rate": tax,
            "status": statuses,
            "credit_limit": credit,
            "updated_at": updated,
        }
    )


def synthetic_suite():
    """15 expectations on 10 columns: 7 not-null, 1 unique, 3 regex, 2 between, 2 in-set."""
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from interlink.data_checks.customers import E164, EMAIL

    codes = ["US", "GB", "DE", "FR", "NL", "ES", "IT", "SE", "PL", "CH"]
    return gx.ExpectationSuite(
        name="bench_customers_15",
        expectations=[
            gxe.ExpectColumnValuesToNotBeNull(column="crm_id"),
            gxe.ExpectColumnValuesToBeUnique(column="crm_id"),
            gxe.ExpectColumnValuesToMatchRegex(column="crm_id", regex=r"^C\d{7}$"),
            gxe.ExpectColumnValuesToNotBeNull(column="name"),
            gxe.ExpectColumnValuesToNotBeNull(column="email"),
            gxe.ExpectColumnValuesToMatchRegex(column="email", regex=EMAIL),
            gxe.ExpectColumnValuesToMatchRegex(column="phone", regex=E164),
            gxe.ExpectColumnValuesToNotBeNull(column="country"),
            gxe.ExpectColumnValuesToBeInSet(column="country", value_set=codes),
            gxe.ExpectColumnValuesToNotBeNull(column="currency"),
            gxe.ExpectColumnValuesToBeBetween(column="tax_rate", min_value=0, max_value=0.5),
            gxe.ExpectColumnValuesToNotBeNull(column="status"),
            gxe.ExpectColumnValuesToBeInSet(column="status", value_set=["active", "trial", "suspended", "closed"]),
            gxe.ExpectColumnValuesToBeBetween(column="credit_limit", min_value=0, max_value=100_000),
            gxe.ExpectColumnValuesToNotBeNull(column="updated_at"),
        ],
    )


def real_chunk(db: Path, rows: int):
    """A chunk as the flow checks it: the first `rows` CRM records, transformed and enriched (no HTTP)."""
    import sqlite3

    import pandas as pd
    from interlink.demo_systems.crm_data import COUNTRIES
    from interlink.flows.crm_to_billing import add_billing_terms, to_billing_customers

    with sqlite3.connect(db) as conn:
        raw = pd.read_sql_query(
            "SELECT id, name, email, phone, country, updated_at FROM customers ORDER BY updated_at, row_id LIMIT ?",
            conn,
            params=(rows,),
        )
    transformed = to_billing_customers.fn(raw)
    terms = {code: {"currency": c, "tax_rate": r} for code, (c, r) in COUNTRIES.items()}
    return add_billing_terms.fn(transformed, terms)


def gate_worker(args: argparse.Namespace) -> None:
    """Time `validate` (and its RSS peak over the frame already in memory) in a process of its own."""
    from interlink.data_checks.customers import billing_customers
    from interlink.data_checks.gate import context, validate

    home = Path(tempfile.mkdtemp(prefix="interlink-gate-"))
    if args.kind == "synthetic":
        frame, suite = synthetic_frame(args.rows), synthetic_suite()
    else:
        frame, suite = real_chunk(Path(args.db), args.rows), billing_customers()
    ctx = context(home)
    # warm up GX (imports, stores, expectation registry) on a tiny slice, so the timing is the checking
    validate(ctx, frame.head(100), suite, "warmup")
    gc.collect()
    # Building the frame peaks higher than validating it, so ru_maxrss alone cannot see validate's peak:
    # reset the high-water mark (Linux clear_refs 5) and read VmHWM afterwards; ru_maxrss delta as a fallback.
    maxrss_before = _maxrss_mb()
    rss_before = status_mb("VmRSS")
    reset = _reset_peak()
    profiler = cProfile.Profile() if args.profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    validation = validate(ctx, frame, suite, "bench")
    if profiler:
        profiler.disable()
    seconds = time.perf_counter() - started
    maxrss_after = _maxrss_mb()
    hwm = status_mb("VmHWM") if reset else None
    peak_delta = (hwm - rss_before) if hwm is not None and rss_before is not None else maxrss_after - maxrss_before
    out = {
        "kind": args.kind,
        "rows": len(frame),
        "columns": frame.shape[1],
        "expectations": len(suite.expectations),
        "seconds": round(seconds, 3),
        "rows_failing": len(validation.row_failures),
        "batch_failures": validation.batch_failures,
        "rss_before_validate_mb": round(rss_before if rss_before is not None else maxrss_before, 1),
        "peak_rss_mb": round(hwm if hwm is not None else maxrss_after, 1),
        "peak_rss_delta_mb": round(peak_delta, 1),
        "peak_rss_method": "VmHWM after clear_refs=5, minus VmRSS before" if hwm is not None else "ru_maxrss delta",
        "process_maxrss_mb": round(maxrss_after, 1),
        "frame_memory_mb": round(frame.memory_usage(deep=True).sum() / 2**20, 1),
        "profiled": bool(profiler),
    }
    if profiler:
        out["profile"] = _profile_summary(profiler)
    shutil.rmtree(home, ignore_errors=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str))


def _profile_summary(profiler: cProfile.Profile, top: int = 25) -> dict:
    stats = pstats.Stats(profiler)
    total = stats.total_tt
    rows = []
    for (file, line, func), (_cc, ncalls, tottime, cumtime, _callers) in stats.stats.items():
        rows.append(
            {
                "function": f"{_short(file)}:{line}({func})",
                "ncalls": ncalls,
                "tottime": round(tottime, 3),
                "cumtime": round(cumtime, 3),
            }
        )
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(40)
    return {
        "total_seconds": round(total, 3),
        "top_tottime": sorted(rows, key=lambda r: -r["tottime"])[:top],
        "top_cumtime": sorted(rows, key=lambda r: -r["cumtime"])[:top],
        "by_area": _by_area(rows),
        "text_cumulative": text.getvalue()[-12000:],
    }


def _short(file: str) -> str:
    for marker in ("site-packages/", str(ROOT) + "/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return re.sub(r"^.*/lib/python3\.\d+/", "", file)


def _by_area(rows: list[dict]) -> dict:
    """Self time grouped by package, the coarse answer to 'where does the time go'."""
    areas: dict[str, float] = {}
    for r in rows:
        fn = r["function"]
        if fn.startswith("great_expectations/"):
            parts = fn.split("/")
            area = "/".join(parts[:3]) if len(parts) > 3 else parts[0] + "/" + parts[1].split(":")[0]
        elif fn.startswith(("pandas/", "numpy/", "json/", "re/", "copy", "ruamel", "marshmallow/", "data_checks/")):
            area = fn.split("/")[0].split(":")[0]
        elif fn.startswith("~") or fn.startswith("{"):
            area = "builtins: " + fn.split("(", 1)[-1].rstrip(")")[:60]
        else:
            area = fn.split("/")[0].split(":")[0]
        areas[area] = areas.get(area, 0.0) + r["tottime"]
    return dict(sorted(((k, round(v, 3)) for k, v in areas.items()), key=lambda kv: -kv[1])[:20])


# --------------------------------------------------------------------------- orchestration


def _run_worker(mode: str, out: Path, *extra: str, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), mode, "--out", str(out), *extra]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, timeout=timeout, cwd=ROOT)
    result = json.loads(out.read_text())
    result["subprocess_seconds"] = round(time.perf_counter() - started, 1)
    return result


def main(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="interlink-bench-gate-"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    try:
        db = work / "crm.db"
        previous = json.loads(Path(args.reuse_sync).read_text()) if args.reuse_sync else None
        seed_rows = args.n if not previous else min(args.chunk, args.n)  # reused: only the profile needs a CRM
        print(f"seeding CRM with {seed_rows:,} customers …", flush=True)
        seeding = seed_crm(db, seed_rows)
        print(f"  seeded in {seeding['seconds']}s", flush=True)

        sync = {"runs": []}
        if previous:
            print(f"reusing the sync measurement of {args.reuse_sync} ({previous['created']})", flush=True)
            sync, seeding = _sync_from_report(previous), previous["seeding"]
            args.n, args.chunk = previous["N"], previous["chunk_size"]
        elif args.repeats:
            print(f"full sync of N={args.n:,} (chunk {args.chunk:,}), up to {args.repeats} runs …", flush=True)
            sync = _run_worker(
                "_sync",
                work / "sync.json",
                "--db",
                str(db),
                "--repeats",
                str(args.repeats),
                "--chunk",
                str(args.chunk),
                timeout=args.timeout,
            )

        gate = None
        if args.gate_rows:
            print(f"standalone gate: {args.gate_rows:,} rows × 10 columns × 15 expectations …", flush=True)
            gate = _run_worker(
                "_gate", work / "gate.json", "--kind", "synthetic", "--rows", str(args.gate_rows), timeout=args.timeout
            )
            print(f"  {gate['seconds']}s, peak RSS +{gate['peak_rss_delta_mb']} MB", flush=True)

        report = _report(args, seeding, sync, gate)
        share = report["gate_share"]["mean"]
        if args.profile == "always" or (args.profile == "auto" and share is not None and share > SHARE_THRESHOLD):
            why = "gate share above 15 %" if args.profile == "auto" else "--profile always"
            print(f"profiling validate ({why}) …", flush=True)
            profiles = {}
            chunk_rows = min(args.chunk, args.n)
            profiles["billing_suite_real_chunk"] = _run_worker(
                "_gate",
                work / "prof_real.json",
                "--kind",
                "real",
                "--db",
                str(db),
                "--rows",
                str(chunk_rows),
                "--profile",
                timeout=args.timeout,
            )
            if args.gate_rows:
                profiles["synthetic_15"] = _run_worker(
                    "_gate",
                    work / "prof_syn.json",
                    "--kind",
                    "synthetic",
                    "--rows",
                    str(args.profile_rows),
                    "--profile",
                    timeout=args.timeout,
                )
            report["profile"] = profiles
        report["benchmark_seconds"] = round(time.perf_counter() - t0, 1)
        out = RESULTS / "gate.json"
        out.write_text(json.dumps(report, indent=2, default=str))
        print(_markdown(report))
        print(f"\nwrote {out.relative_to(ROOT)} in {report['benchmark_seconds']}s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _sync_from_report(report: dict) -> dict:
    """The sync worker's output, rebuilt from an earlier gate.json (for re-running only the gate parts)."""
    runs = []
    for i, wall in enumerate(report["sync"]["wall_seconds"]):
        phases = {
            name: {"seconds": p["seconds"][i], "task_runs": p["task_runs"]}
            for name, p in report["phases"].items()
            if not name.startswith("(")
        }
        runs.append(
            {
                "wall_seconds": wall,
                "phases": phases,
                "state": report["sync"]["states"][i],
                "summary": report["sync"]["rows"],
                "unfinished_task_runs": report["sync"]["unfinished_task_runs"][i],
            }
        )
    out = {"runs": runs, "process_peak_rss_mb": report["sync"].get("process_peak_rss_mb"), "reused_from": report["created"]}
    if "as requested" not in report["sync"]["note"]:
        out["stopped_early"] = report["sync"]["note"]
    return out


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _report(args, seeding: dict, sync: dict, gate: dict | None) -> dict:
    from interlink.data_checks.customers import billing_customers

    suite = billing_customers()
    runs = sync.get("runs", [])
    walls = [r["wall_seconds"] for r in runs]
    shares = [r["phases"].get("check", {}).get("seconds", 0.0) / r["wall_seconds"] for r in runs]
    names = sorted({p for r in runs for p in r["phases"]}, key=lambda p: (PHASES.index(p) if p in PHASES else 99, p))
    breakdown = {}
    for name in names:
        secs = [r["phases"].get(name, {}).get("seconds", 0.0) for r in runs]
        breakdown[name] = {
            "seconds": [round(s, 3) for s in secs],
            "mean_seconds": _mean(secs),
            "share": _mean([s / w for s, w in zip(secs, walls, strict=True)]),
            "task_runs": runs[0]["phases"].get(name, {}).get("task_runs", 0) if runs else 0,
        }
    outside = [w - sum(p["seconds"] for p in r["phases"].values()) for r, w in zip(runs, walls, strict=True)]
    breakdown["(outside tasks: flow, guards, HTTP server, Prefect)"] = {
        "seconds": [round(s, 3) for s in outside],
        "mean_seconds": _mean(outside),
        "share": _mean([s / w for s, w in zip(outside, walls, strict=True)]),
        "task_runs": 0,
    }

    sync_per_row = (sum(walls) / len(walls) / args.n) if walls else None
    report = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            **machine(),
            "note": "2 cores, shared with a concurrent test run: absolute times are noisy, ratios less so",
        },
        "N": args.n,
        "chunk_size": args.chunk,
        "seeding": seeding,
        "sync": {
            "runs": len(runs),
            "note": sync.get("stopped_early") or (f"{len(runs)} run(s) as requested" if runs else "not run"),
            "wall_seconds": walls,
            "mean_wall_seconds": _mean(walls),
            "seconds_per_row": round(sync_per_row, 9) if sync_per_row else None,
            "rows": runs[0]["summary"] if runs else None,
            "states": [r["state"] for r in runs],
            "process_peak_rss_mb": sync.get("process_peak_rss_mb"),
            "unfinished_task_runs": [r["unfinished_task_runs"] for r in runs],
            "measured": sync.get("reused_from", "this run"),
        },
        "expectations": {
            "flow_suite": {
                "name": suite.name,
                "expectations": len(suite.expectations),
                "columns": len({e.column for e in suite.expectations}),
            },
            "standalone_suite": {"expectations": 15, "columns": 10},
        },
        "phases": breakdown,
        "gate_share": {
            "per_run": [round(s, 4) for s in shares],
            "mean": _mean(shares),
            "definition": "sum of `check` task-run time / sync wall time",
        },
    }
    if gate:
        per_row = gate["seconds"] / gate["rows"]
        report["standalone_gate"] = {
            **{
                k: gate[k]
                for k in (
                    "rows",
                    "columns",
                    "expectations",
                    "seconds",
                    "rows_failing",
                    "batch_failures",
                    "rss_before_validate_mb",
                    "peak_rss_mb",
                    "peak_rss_delta_mb",
                    "peak_rss_method",
                    "frame_memory_mb",
                )
            },
            "seconds_per_row": round(per_row, 9),
            "vs_sync": {
                "sync_seconds_per_row": round(sync_per_row, 9) if sync_per_row else None,
                "gate_per_row_over_sync_per_row": round(per_row / sync_per_row, 4) if sync_per_row else None,
                "note": "standalone 15-expectation gate time per row ÷ full-sync (10-expectation gate) wall time per row",
            },
        }
        report["gate_peak_rss_mb"] = gate["peak_rss_delta_mb"]
    return report


def _markdown(r: dict) -> str:
    lines = [
        f"\n## Gate share — N={r['N']:,}, chunk {r['chunk_size']:,}, {r['sync']['runs']} sync run(s)",
        "",
        f"Sync: {r['sync']['note']}; rows {r['sync']['rows']}",
        "",
        "| phase | task runs | mean s | share of wall |",
        "|---|---:|---:|---:|",
    ]
    for name, p in r["phases"].items():
        share = f"{p['share']:.1%}" if p["share"] is not None else "–"
        lines.append(f"| {name} | {p['task_runs']} | {p['mean_seconds']} | {share} |")
    walls = ", ".join(f"{w:.1f}" for w in r["sync"]["wall_seconds"])
    lines.append(f"| **sync wall** | | **{r['sync']['mean_wall_seconds']}** ({walls}) | 100% |")
    if r["gate_share"]["mean"] is not None:
        lines += [
            "",
            f"**gate_share = {r['gate_share']['mean']:.1%}** "
            f"(per run: {', '.join(f'{s:.1%}' for s in r['gate_share']['per_run'])})",
        ]
    if g := r.get("standalone_gate"):
        v = g["vs_sync"]
        lines += [
            "",
            "| standalone gate | value |",
            "|---|---:|",
            f"| rows × columns × expectations | {g['rows']:,} × {g['columns']} × {g['expectations']} |",
            f"| validate seconds | {g['seconds']} |",
            f"| µs per row (gate) | {g['seconds_per_row'] * 1e6:.2f} |",
            f"| µs per row (full sync, N={r['N']:,}) | {v['sync_seconds_per_row'] * 1e6:.2f} |"
            if v["sync_seconds_per_row"]
            else "| µs per row (full sync) | – |",
            f"| gate/sync per row | {v['gate_per_row_over_sync_per_row']} |",
            f"| peak RSS during validate (delta) | {g['peak_rss_delta_mb']} MB (frame {g['frame_memory_mb']} MB, process peak {g['peak_rss_mb']} MB) |",
            f"| failing rows | {g['rows_failing']:,} |",
        ]
    if prof := r.get("profile"):
        for name, p in prof.items():
            lines += [
                "",
                f"### profile: {name} ({p['rows']:,} rows, {p['seconds']} s under cProfile)",
                "",
                "| self s | calls | function |",
                "|---:|---:|---|",
            ]
            lines += [f"| {t['tottime']} | {t['ncalls']} | `{t['function']}` |" for t in p["profile"]["top_tottime"][:12]]
    return "\n".join(lines)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode")
    for mode in ("run", "_sync", "_gate"):
        p = sub.add_parser(mode)
        p.add_argument("--out", default=None)
        p.add_argument("--db", default=None)
        p.add_argument("--n", type=int, default=1_000_000)
        p.add_argument("--chunk", type=int, default=CHUNK)
        p.add_argument("--repeats", type=int, default=3)
        p.add_argument("--rows", type=int, default=1_000_000)
        p.add_argument("--gate-rows", type=int, default=1_000_000)
        p.add_argument("--profile-rows", type=int, default=200_000)
        p.add_argument("--kind", choices=("synthetic", "real"), default="synthetic")
        p.add_argument("--profile", nargs="?", const="yes", default="auto", choices=("auto", "always", "never", "yes"))
        p.add_argument("--timeout", type=float, default=1800)
        p.add_argument("--reuse-sync", default=None, help="take the sync figures from an earlier gate.json")
    if not argv or argv[0].startswith("-"):
        argv = ["run", *argv]
    args = parser.parse_args(argv)
    if args.mode == "_gate":
        args.profile = args.profile == "yes"
    return args


if __name__ == "__main__":
    ns = parse(sys.argv[1:])
    {"run": main, "_sync": sync_worker, "_gate": gate_worker}[ns.mode](ns)
