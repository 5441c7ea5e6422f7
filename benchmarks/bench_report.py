"""The sync benchmark's summary: medians over repetitions, Interlink's phases, its observability overhead, the targets,
and the markdown table."""

from __future__ import annotations

from collections.abc import Callable
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
OBSERVED = "interlink_observed"
KINDS = {"full_sync": None, "no_change": "noop", "changed": "changed", "resync": "resync"}  # Interlink's runs → result key
LINEAGE, TRACES = "/api/v1/lineage", "/v1/traces"  # the sink's paths
LABELS = {
    "interlink": "Interlink (crm_to_billing flow, Prefect server)",
    OBSERVED: "Interlink, observed: lineage, metrics, tracing on",
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
    if {"interlink", OBSERVED} <= set(names):
        report["observability"] = _observability(reps)
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


def _run(result: dict, kind: str) -> dict:
    """One of the Interlink contender's four runs (`KINDS`) in its result."""
    return result if KINDS[kind] is None else result[KINDS[kind]]


def _observability(reps: list[dict]) -> dict:
    """Observed ÷ plain Interlink per run kind (medians of the same-repetition ratios), and what the observers received:
    `verified` only when every observed process sent lineage events and spans and pushed its rows read, and `problems`
    says what was missing (or what a plain process sent)."""
    pairs = [(rep["runs"]["interlink"], rep["runs"][OBSERVED]) for rep in reps]

    def ratios(seconds: Callable[[dict], float]) -> dict:
        walls = [seconds(o) / seconds(p) for p, o in pairs]
        return {
            "plain_s": _round(median(seconds(p) for p, _ in pairs)),
            "observed_s": _round(median(seconds(o) for _, o in pairs)),
            "ratio": _round(median(walls), 4),
            "ratio_per_repetition": [_round(w, 4) for w in walls],
        }

    overhead = {
        kind: {
            **ratios(lambda r, k=kind: _run(r, k)["sync_s"]),
            "cpu_ratio": _round(median(_run(o, kind)["cpu_s"] / _run(p, kind)["cpu_s"] for p, o in pairs), 4),
        }
        for kind in KINDS
    }
    overhead["all_four_runs"] = ratios(lambda r: sum(_run(r, k)["sync_s"] for k in KINDS))
    overhead["process"] = ratios(lambda r: r["process_s"])
    received = [_received(o) for _, o in pairs]
    problems = []
    for rep, got in zip(reps, received, strict=True):
        where = f"repetition {rep['repetition']}: the observed process"
        if not got["lineage_events"]:
            problems.append(f"{where} sent no lineage event")
        if not got["otlp_requests"]:
            problems.append(f"{where} sent no OTLP request")
        if got["pushgateway_rows_read_total"] != got["rows_read"]:
            problems.append(f"{where} left interlink_rows_read_total = {got['pushgateway_rows_read_total']} on the Pushgateway, "
                            f"not the {got['rows_read']} rows its runs read")
    for rep, (plain, _) in zip(reps, pairs, strict=True):  # (its environment has no observer variable: bench.OBSERVABILITY)
        got = _received(plain)
        if got["lineage_events"] or got["otlp_requests"]:
            problems.append(f"repetition {rep['repetition']}: the plain Interlink process sent lineage events or spans")
    first = pairs[0][1].get("received", {})
    return {
        "overhead": overhead,
        "received": received,
        "otlp_spans_by_name_first_repetition": first.get("otlp_spans_by_name", {}),
        "verified": not problems,
        "problems": problems,
    }


def _received(result: dict) -> dict:
    """What the sink and the Pushgateway received from one Interlink process (its four runs)."""
    got = result.get("received", {})
    paths = got.get("paths", {})
    scopes = got.get("otlp_spans_by_scope", {})
    return {
        "lineage_events": sum(got.get("lineage_events", {}).values()),
        "lineage_by_type": got.get("lineage_events", {}),
        "otlp_requests": paths.get(TRACES, {}).get("requests", 0),
        "otlp_bytes": paths.get(TRACES, {}).get("bytes", 0),
        "otlp_spans": sum(scopes.values()),
        "otlp_spans_by_scope": scopes,
        "pushgateway_rows_read_total": got.get("pushgateway", {}).get("interlink_rows_read_total"),
        "rows_read": sum(_run(result, kind)["counts"]["rows_read"] for kind in KINDS),
    }


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
    if observed := report.get("observability"):
        void = "" if observed["verified"] else "VOID, observability was not (all) on: " + "; ".join(observed["problems"])
        targets["observability_overhead"] = (
            observed["overhead"]["full_sync"]["ratio"],
            "<=",
            1.03,
            LARGE,
            void or "observed ÷ plain full-sync wall, same-run ratio, median (each run kind: the table above)",
        )
    out = {
        name: {
            "value": _round(value, 4),
            "target": f"{op} {goal}",
            "met": None if value is None or note.startswith("VOID") else (value >= goal if op == ">=" else value <= goal),
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
    if observed := r.get("observability"):
        lines += ["", *_observability_lines(observed)]
    lines += ["", "| target | value | goal | met |", "|---|---:|---|---|"]
    for name, t in r["targets"].items():
        value = "–" if t["value"] is None else t["value"]
        at = f" (stated for {t['stated_for_rows']:,} rows)" if t["stated_for_rows"] and t["stated_for_rows"] != r["rows"] else ""
        met = {True: "yes", False: "**no**", None: "–"}[t["met"]]
        lines.append(f"| {name} | {value} | {t['target']}{at} | {met} |")
    return "\n".join(lines) + "\n"


def _observability_lines(observed: dict) -> list[str]:
    """The observed ÷ plain table, what the observers received, and, loudly, any reason the figures are void."""
    lines = [
        f"Observability overhead: `{OBSERVED}` is the Interlink contender with OpenLineage events (to a sink process), "
        "metrics pushed to a Pushgateway and OTLP/HTTP tracing (to the sink) on; it runs back to back with the plain one, "
        "in turn first. Observed ÷ plain, median of the same-repetition ratios:",
        "",
        "| run | plain wall s | observed wall s | wall ratio | per repetition | CPU ratio |",
        "|---|---:|---:|---:|---|---:|",
    ]
    labels = {"full_sync": "full sync", "no_change": "no source change", "changed": "rows changed", "resync": "full re-sync",
              "all_four_runs": "the four runs together", "process": "the whole process (imports, four runs, exit)"}
    for kind, label in labels.items():
        o = observed["overhead"][kind]
        cpu = f"{o['cpu_ratio']:.3f}" if "cpu_ratio" in o else "–"
        per = ", ".join(f"{w:.3f}" for w in o["ratio_per_repetition"])
        lines.append(f"| {label} | {o['plain_s']:.2f} | {o['observed_s']:.2f} | {o['ratio']:.3f} | {per} | {cpu} |")
    lines += ["", "What each observed process (its four runs) sent; the plain one sends nothing:", "",
              "| repetition | lineage events | OTLP requests | OTLP KB | spans by scope | Pushgateway interlink_rows_read_total "
              "| rows read |", "|---:|---|---:|---:|---|---:|---:|"]
    for number, got in enumerate(observed["received"], 1):
        events = ", ".join(f"{n} {kind}" for kind, n in sorted(got["lineage_by_type"].items())) or "**0**"
        scopes = ", ".join(f"{scope} {n:,}" for scope, n in sorted(got["otlp_spans_by_scope"].items())) or "**0**"
        lines.append(f"| {number} | {events} | {got['otlp_requests']:,} | {got['otlp_bytes'] / 1024:,.0f} | {scopes} "
                     f"| {_count(got['pushgateway_rows_read_total'])} | {got['rows_read']:,} |")
    if not observed["verified"]:
        lines += ["", "**OBSERVABILITY WAS NOT (ALL) ON IN THE OBSERVED RUNS: THE OVERHEAD FIGURE IS VOID.** "
                  + "; ".join(observed["problems"]) + "."]
    return lines


def _count(value: float | None) -> str:
    return "**none**" if value is None else f"{value:,.0f}"
