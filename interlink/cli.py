"""`interlink`: the operators' command line."""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from flows import CHUNK_ROWS, integration, integrations
from interlink.deadletter import DeadLetters
from interlink.ledger import Ledger
from interlink.settings import ConfigError, Settings

RUN_COLUMNS = (
    "integration", "kind", "state", "started_at", "rows_read", "rows_inserted", "rows_updated", "rows_unchanged",
    "rows_quarantined", "rows_superseded", "watermark",
)
DLQ_COLUMNS = ("integration", "record_key", "stage", "status", "reason")
INVENTORY_COLUMNS = ("name", "kind", "target", "used_by", "healthy", "latency_ms", "reason")
COMMANDS = "interlink.commands"  # entry points that add commands, e.g. the demo's `interlink demo …`


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.command(args, Settings.load()) or 0
    except ConfigError as exc:
        print(f"interlink: {exc}", file=sys.stderr)
        return 2


def positive(text: str) -> int:
    """An argparse type: a whole number above zero."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number above 0, got {text!r}")
    return int(text)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run integrations' syncs once, against exactly the configured systems; with `--partitions K`,
    each split into K time windows run in parallel on Dask."""
    options = {"full_refresh": args.full_refresh, "chunk_size": args.chunk_size}
    if args.partitions is None:
        return run_flows(settings, args.integrations, "sync", **options)
    return run_flows(settings, args.integrations, "sync_partitioned", partitions=args.partitions, **options)


def run_flows(settings: Settings, names: list[str], which: str, **parameters: Any) -> int:
    """Run flow `which` of each integration in `names` (all if empty), once every connection they use is set."""
    pipelines = [integration(name) for name in names or integrations()]
    settings.require([c for pipeline in pipelines for c in pipeline.connections])
    flows = [getattr(pipeline, which) for pipeline in pipelines]  # a flow that cannot exist fails before any runs
    for pipeline, flow in zip(pipelines, flows, strict=True):
        summary = flow(**parameters)
        print(
            f"\n{pipeline.name} {which}: read {summary['rows_read']}, inserted {summary['rows_inserted']}, "
            f"updated {summary['rows_updated']}, unchanged {summary['rows_unchanged']}, "
            f"quarantined {summary['rows_quarantined']}\n"
            f"watermark: {summary['watermark']}\n"
            f"data-quality report: {summary['report']}"
        )
    return 0


def runs(args: argparse.Namespace, settings: Settings) -> None:
    rows = Ledger(settings.state_db).runs(args.integration, args.limit)
    _emit(rows, RUN_COLUMNS, args.json)


def state_upgrade(args: argparse.Namespace, settings: Settings) -> None:
    """Bring the state database (ledger, dead letters, …) to the newest schema; every run also does it on start."""
    from connectors.sql import create_engine
    from interlink import migrations
    from interlink.settings import mask_url

    engine = create_engine(settings.state_db)
    before, after = migrations.upgrade(engine)
    engine.dispose()
    where = mask_url(settings.state_db)
    print(f"state database {where}: " + (f"at {after}, the newest" if before == after else f"upgraded from {before or 'nothing'} to {after}"))


def dlq_list(args: argparse.Namespace, settings: Settings) -> None:
    entries = DeadLetters(settings.state_db).entries(args.integration, args.status)
    _emit(entries, DLQ_COLUMNS, args.json)


def dlq_replay(args: argparse.Namespace, settings: Settings) -> int:
    return run_flows(settings, [args.integration], "replay")


def reconcile(args: argparse.Namespace, settings: Settings) -> int:
    """Compare an integration's source and target; 1 when they still differ (after any repair)."""
    pipeline = integration(args.integration)
    flow = pipeline.reconcile  # a target that is not a SQL database cannot be reconciled: ConfigError
    settings.require(pipeline.connections)
    found = flow(since=args.since, repair=args.repair)
    print(
        f"{args.integration} reconcile: source {found['source_rows']}, target {found['target_rows']}, "
        f"missing {len(found['missing'])}, extra {len(found['extra'])}, changed {len(found['changed'])}, "
        f"repaired {found['repaired']}, still differing {len(found['unrepaired'])}"
    )
    for kind in ("missing", "extra", "changed", "unrepaired"):
        if found[kind]:
            print(f"  {kind}: {', '.join(map(str, found[kind][:20]))}{' …' if len(found[kind]) > 20 else ''}")
    return 1 if found["extra"] or found["unrepaired"] else 0


def report(args: argparse.Namespace, settings: Settings) -> None:
    """Write the data-quality report: every integration's runs and failing checks over time."""
    from interlink.quality_report import build_report

    sensitive = {name: pipeline.gate.sensitive for name, (_, pipeline) in integrations().items()}
    print(f"quality report: {build_report(settings.state_db, args.html or settings.reports_dir / 'quality.html', sensitive)}")


def serve(args: argparse.Namespace, settings: Settings) -> None:
    """Register every declared deployment with the Prefect server and run them on their schedules."""
    from prefect import serve as prefect_serve

    from deployments import declarations, runner_deployments

    settings.require([c for d in declarations().deployments for c in integration(d.integration).connections])
    _wait_for_prefect_api(args.wait_s)
    prefect_serve(*runner_deployments(), limit=args.limit)


def _wait_for_prefect_api(timeout_s: float) -> None:
    import time

    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while client.api_healthcheck() is not None:
            if time.monotonic() > deadline:
                raise ConfigError(f"the Prefect API at {client.api_url} did not answer within {timeout_s:g}s: start it (`make serve`)")
            time.sleep(0.5)


def webhooks_serve(args: argparse.Namespace, settings: Settings) -> None:
    """Receive signed events from push sources and trigger the matching integration's deployment."""
    import uvicorn

    from interlink.webhooks import from_settings

    uvicorn.run(from_settings(settings), host=args.host, port=args.port)


def webhooks_rerun(args: argparse.Namespace, settings: Settings) -> int:
    """Trigger the integration of a stored event again (e.g. after its run failed)."""
    from interlink.webhooks import deployment_trigger, rerun

    try:
        result = rerun(settings.state_db, args.event, deployment_trigger)
    except LookupError as exc:
        print(f"interlink: {exc}", file=sys.stderr)
        return 1
    print(f"event {result['event']}: {result['status']} {result['flow_run_id'] or ''}".rstrip())
    return 0


def connectors(args: argparse.Namespace, settings: Settings) -> int:
    """Every configured connection: where it points, who uses it, and whether it answers now (1 if any does not)."""
    from flows import users
    from interlink.inventory import inventory

    rows = inventory(settings, users())
    shown = rows if args.json else [r | {"used_by": ", ".join(r["used_by"])} for r in rows]
    _emit(shown, INVENTORY_COLUMNS, args.json)
    return 0 if all(r["healthy"] for r in rows) else 1


def _emit(rows: list[dict[str, Any]], columns: tuple[str, ...], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, default=_json_value, indent=2))
        return
    table = [columns] + [tuple(_cell(row[c]) for c in columns) for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())


def _json_value(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= 60 else text[:59] + "…"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interlink", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    p = commands.add_parser("run", help="run integrations' syncs now (all of them by default)")
    p.add_argument("integrations", nargs="*", metavar="INTEGRATION")
    p.add_argument("--full-refresh", action="store_true", help="ignore the watermark and read everything")
    p.add_argument("--chunk-size", type=positive, default=CHUNK_ROWS, help=f"rows per batch (default {CHUNK_ROWS})")
    p.add_argument("--partitions", type=positive, metavar="K", help="split each sync into K time windows run in parallel on Dask")
    p.set_defaults(command=run)

    p = commands.add_parser("runs", help="the run ledger, newest first")
    p.add_argument("--integration")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(command=runs)

    state = commands.add_parser("state", help="Interlink's own database").add_subparsers(required=True, metavar="ACTION")
    p = state.add_parser("upgrade", help="bring it to the newest schema (every run does so on start)")
    p.set_defaults(command=state_upgrade)

    p = commands.add_parser("connectors", help="the connection inventory, with a live health check")
    p.add_argument("--json", action="store_true")
    p.set_defaults(command=connectors)

    p = commands.add_parser("serve", help="register the declared deployments and run them on schedule")
    p.add_argument("--limit", type=int, default=None, help="most flow runs at once")
    p.add_argument("--wait-s", type=float, default=60, help="how long to wait for the Prefect API to come up")
    p.set_defaults(command=serve)

    hooks = commands.add_parser("webhooks", help="the webhook receiver").add_subparsers(required=True, metavar="ACTION")
    p = hooks.add_parser("serve", help="receive signed events and trigger their integration")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(command=webhooks_serve)
    p = hooks.add_parser("rerun", help="trigger a stored event's integration again")
    p.add_argument("event", type=int, help="the event's id in the store")
    p.set_defaults(command=webhooks_rerun)

    p = commands.add_parser("report", help="data quality over time per integration, as one offline HTML page")
    p.add_argument("--html", type=Path, metavar="PATH", help="where to write it (default <home>/reports/quality.html)")
    p.set_defaults(command=report)

    p = commands.add_parser("reconcile", help="compare an integration's source and target, and repair on request")
    p.add_argument("integration")
    p.add_argument("--since", help="window start on the source's update time (ISO 8601); default: everything")
    p.add_argument("--repair", action="store_true", help="re-deliver missing and changed rows (extra ones are only reported)")
    p.set_defaults(command=reconcile)

    dlq = commands.add_parser("dlq", help="the dead-letter store").add_subparsers(required=True, metavar="ACTION")
    p = dlq.add_parser("list", help="dead-lettered records")
    p.add_argument("--integration")
    p.add_argument("--status", choices=["open", "resolved", "replayed"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(command=dlq_list)
    p = dlq.add_parser("replay", help="run an integration's open dead letters through again")
    p.add_argument("integration")
    p.set_defaults(command=dlq_replay)

    for plugin in entry_points(group=COMMANDS):
        plugin.load()(commands)
    return parser


if __name__ == "__main__":
    sys.exit(main())
