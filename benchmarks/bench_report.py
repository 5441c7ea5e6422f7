"""The sync benchmark's summary: medians over repetitions, Interlink's phases, the targets, and the markdown table."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from statistics import median

PHASES = {  # phase → Prefect task names
    "fetch": ("ingest",),
    "transform": ("transform",),
    "enrich": ("lookup-countries", "enrich"),
    "check": ("check", "quarantine"),
    "deliver": ("deliver",),
}
OVERHEAD = "orchestration (flow wall − time any task ran)"  # Prefect, and the flow's own code: guards, ledger, watermark
SMALL, LARGE = 100_000, 1_000_000
LABELS = {
    "interlink": "Interlink (crm_to_billing flow, Prefect server)",
    "baseline": "hand-written: httpx + psycopg COPY",
    "dlt": "dlt {dlt}: rest_api → postgres, defaults",
}


def summarise(raw: dict, others: dict[int, dict]) -> dict:
    """`raw` (every repetition's figures) with medians, ratios and targets; `others`: earlier reports by N."""
    n, reps = raw["settings"]["n"], raw["repetitions"]
    names = [name for name in raw["settings"]["contenders"] if all(name in rep["runs"] for rep in reps)]
    contenders = {name: _medians(n, [rep["runs"][name] for rep in reps]) for name in names}
    report = {
        "rows": n,
        **{f"{name}_rows_per_s": contenders[name]["rows_per_s"] for name in names},
        "dlt_version": _version("dlt"),
        **{k: raw[k] for k in ("created", "machine", "settings", "source_generation_s", "benchmark_s")},
        "contenders": contenders,
    }
    if "interlink" in names:
        runs = [rep["runs"]["interlink"] for rep in reps]
        report.update(
            interlink_peak_rss_mb=contenders["interlink"]["peak_rss_mb"],
            noop_incremental_s=_round(median(r["noop"]["sync_s"] for r in runs)),
            interlink_max_source_rows_held=max(r["max_source_rows_held"] for r in runs),
            interlink_phases=_phases(runs),
            interlink_task_runs={name: p["task_runs"] for name, p in runs[0]["phases"].items()},
            interlink_runs=_interlink_runs(runs),
        )
    report["ratios"] = {
        f"interlink_vs_{other}_throughput": _round(
            median(rep["runs"][other]["sync_s"] / rep["runs"]["interlink"]["sync_s"] for rep in reps)
        )
        for other in ("baseline", "dlt")
        if {"interlink", other} <= set(names)
    }
    if {"interlink", "baseline"} <= set(names):
        report["ratios"]["interlink_resync_vs_baseline_throughput"] = _round(
            median(rep["runs"]["baseline"]["sync_s"] / rep["runs"]["interlink"]["resync"]["sync_s"] for rep in reps)
        )
    report["targets"] = _targets(report, others)
    report["repetitions"] = reps
    return report


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _medians(n: int, runs: list[dict]) -> dict:
    return {
        "sync_s": _round(median(r["sync_s"] for r in runs)),
        "rows_per_s": round(median(n / r["sync_s"] for r in runs)),
        "peak_rss_mb": _round(median(r["peak_rss_mb"] for r in runs), 1),
        "process_s": _round(median(r["process_s"] for r in runs)),
        "process_cpu_s": _round(median(r["process_cpu_s"] for r in runs)),
        "rows_in_target": [r["rows_in_target"] for r in runs],
        "sync_s_per_repetition": [_round(r["sync_s"]) for r in runs],
    }


def _phases(runs: list[dict]) -> dict:
    """Median seconds and share of the full sync's wall time per phase, the orchestration overhead last."""

    def split(run: dict) -> dict[str, float]:
        tasks = {name: p["seconds"] for name, p in run["phases"].items()}
        out = {phase: sum(tasks.pop(t, 0.0) for t in names) for phase, names in PHASES.items()}
        return {**out, "other tasks": sum(tasks.values()), OVERHEAD: run["outside_tasks_s"]}

    splits = [split(run) for run in runs]
    return {
        phase: {
            "seconds": _round(median(s[phase] for s in splits)),
            "share": _round(median(s[phase] / run["sync_s"] for s, run in zip(splits, runs, strict=True)), 4),
        }
        for phase in splits[0]
    }


def _interlink_runs(runs: list[dict]) -> dict:
    """Interlink's four runs: wall time and row counts."""

    def one(kind: str) -> dict:
        counts = [r[kind]["counts"] for r in runs]
        same = counts.count(counts[0]) == len(counts)
        return {**_wall_cpu([r[kind] for r in runs]), **counts[0], "same_counts_every_repetition": same}

    full = {**_wall_cpu(runs), **runs[0]["counts"]}
    changed = {**one("changed"), "rows_changed_at_source": runs[0]["changed"]["rows_changed_at_source"]}
    return {"full_sync": full, "no_change": one("noop"), "changed": changed, "resync": one("resync")}


def _wall_cpu(runs: list[dict]) -> dict:
    """Median wall and CPU seconds of one kind of run (CPU only where the contender measured it)."""
    cpu = [r["cpu_s"] for r in runs if "cpu_s" in r]
    return {"sync_s": _round(median(r["sync_s"] for r in runs)), "cpu_s": _round(median(cpu)) if cpu else None}


def _rss_ratio(report: dict, others: dict[int, dict]) -> tuple[float | None, str]:
    n, rss = report["rows"], report.get("interlink_peak_rss_mb")
    other_n = {SMALL: LARGE, LARGE: SMALL}.get(n)
    other = others.get(other_n)
    if rss is None or other is None:
        return None, f"needs benchmarks/results/bench-{SMALL}.json and bench-{LARGE}.json"
    small, large = (rss, other["interlink_peak_rss_mb"]) if n == SMALL else (other["interlink_peak_rss_mb"], rss)
    return large / small, f"{large:.0f} MB at {LARGE:,} ÷ {small:.0f} MB at {SMALL:,} (the other from {other['created']})"


def _targets(report: dict, others: dict[int, dict]) -> dict:
    """Each target of the issue: its value in this run, the goal, whether it is met, and the N it is stated for."""
    ratios, phases, incremental = report["ratios"], report.get("interlink_phases", {}), report.get("interlink_runs")
    rss_ratio, rss_note = _rss_ratio(report, others)
    targets = {
        "interlink_vs_baseline_throughput": (
            ratios.get("interlink_vs_baseline_throughput"),
            ">=",
            0.5,
            None,
            "same-run ratio, median",
        ),
        "interlink_vs_dlt_throughput": (ratios.get("interlink_vs_dlt_throughput"), ">=", 3.0, LARGE, "same-run ratio, median"),
        "peak_rss_1m_vs_100k": (rss_ratio, "<=", 1.25, None, rss_note),
        "noop_incremental_s": (report.get("noop_incremental_s"), "<=", 5.0, LARGE, "seconds"),
        "orchestration_overhead_share": (phases.get(OVERHEAD, {}).get("share"), "<=", 0.05, None, "of full-sync wall"),
    }
    out = {
        name: {
            "value": _round(value, 4),
            "target": f"{op} {goal}",
            "met": None if value is None else (value >= goal if op == ">=" else value <= goal),
            "stated_for_rows": at,
            "note": note,
        }
        for name, (value, op, goal, at, note) in targets.items()
    }
    if incremental:
        changed = incremental["changed"]
        moved = changed["rows_inserted"] + changed["rows_updated"]
        out["changed_run_moves_only_changed_rows"] = {
            "value": f"{moved} rows moved for {changed['rows_changed_at_source']} changed",
            "target": "inserted 0, updated = rows changed at the source",
            "met": changed["rows_inserted"] == 0 and changed["rows_updated"] == changed["rows_changed_at_source"],
            "stated_for_rows": None,
            "note": f"read {changed['rows_read']}: the changed rows and those at the inclusive watermark",
        }
        resync = incremental["resync"]
        out["resync_writes_nothing"] = {
            "value": f"{resync['rows_inserted'] + resync['rows_updated']} rows written of {resync['rows_read']} read",
            "target": "inserted 0, updated 0: the target holds every row already",
            "met": resync["rows_inserted"] == 0 and resync["rows_updated"] == 0,
            "stated_for_rows": None,
            "note": f"{resync['rows_unchanged']} unchanged, {resync['rows_quarantined']} dead-lettered again",
        }
    return out


def markdown(r: dict) -> str:
    m, s = r["machine"], r["settings"]
    lines = [
        f"## Sync benchmark: {r['rows']:,} rows, REST → PostgreSQL ({r['created'][:10]})",
        "",
        f"Machine: {m['cpu']}, {m['cpus']} cores, {m['ram_gb']} GB RAM, Python {m['python']}, PostgreSQL {m.get('postgresql')}. "
        f"Medians of {s['repeat']} repetitions, contenders in rotated order; source page {s['page']:,} rows, "
        f"Interlink chunk {s['chunk']:,} rows, {s['concurrent_pages']} concurrent pages. Load average at the start: "
        f"{', '.join(map(str, m['load_avg']))}.",
        "",
        "| contender | sync wall s | rows/s | peak RSS MB | process wall s | process CPU s | rows in target |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, c in r["contenders"].items():  # Interlink's process runs its four runs: its full sync alone is below
        label = LABELS.get(name, name).format(dlt=r["dlt_version"])
        lines.append(
            f"| {label} | {c['sync_s']:.1f} | {c['rows_per_s']:,} | {c['peak_rss_mb']:.0f} | {c['process_s']:.1f} "
            f"| {c['process_cpu_s']:.1f} | {c['rows_in_target'][0]:,} |"
        )
    if phases := r.get("interlink_phases"):
        lines += ["", "Interlink full sync by phase (median seconds, share of the sync's wall time; fetch runs in a thread "
                  "alongside the other phases, reading the next chunk, so the shares add up to more than 100 %):", ""]
        lines += ["| " + " | ".join(phases) + " |", "|" + "---:|" * len(phases)]
        lines.append("| " + " | ".join(f"{p['seconds']:.1f} ({p['share']:.1%})" for p in phases.values()) + " |")
    if inc := r.get("interlink_runs"):
        lines += ["", "Interlink's runs: the full sync, incremental runs, then a full re-sync (median wall; rows of the first "
                  "repetition):", ""]
        lines += ["| run | wall s | CPU s | read | inserted | updated | unchanged | quarantined |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        runs = (
            ("full sync", "full_sync"),
            ("no source change", "no_change"),
            (f"{s['change_share']:.0%} of rows changed", "changed"),
            ("full re-sync into the populated target", "resync"),
        )
        for label, key in runs:
            i = inc[key]
            cpu = "–" if i["cpu_s"] is None else f"{i['cpu_s']:.2f}"
            lines.append(
                f"| {label} | {i['sync_s']:.2f} | {cpu} | {i['rows_read']:,} | {i['rows_inserted']:,} | {i['rows_updated']:,} "
                f"| {i['rows_unchanged']:,} | {i['rows_quarantined']:,} |"
            )
        if (ratio := r["ratios"].get("interlink_resync_vs_baseline_throughput")) is not None:
            lines += ["", f"The full re-sync runs at {ratio:.3f}× the COPY script's full load (median of same-run ratios)."]
    lines += ["", "| target | value | goal | met |", "|---|---:|---|---|"]
    for name, t in r["targets"].items():
        value = "–" if t["value"] is None else t["value"]
        at = f" (stated for {t['stated_for_rows']:,} rows)" if t["stated_for_rows"] and t["stated_for_rows"] != r["rows"] else ""
        met = {True: "yes", False: "**no**", None: "–"}[t["met"]]
        lines.append(f"| {name} | {value} | {t['target']}{at} | {met} |")
    return "\n".join(lines) + "\n"
