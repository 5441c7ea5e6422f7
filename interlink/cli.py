"""`interlink`: the operators' command line (typer, tables and progress by rich).

Exit status: 0 done; 1 a run failed, sources and targets differ, or a connection is unhealthy;
2 a usage or configuration mistake (one line on stderr naming the setting and the fix); 130 interrupted.
More commands come from `interlink.commands` entry points (the demo's `interlink demo …`): each
names a function `add_commands(app: typer.Typer)`, loaded only when its command is used.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from contextlib import AbstractContextManager, nullcontext
from enum import StrEnum
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer._click.exceptions import NoArgsIsHelpError  # typer carries its own click
from typer.core import TyperGroup

from flows import CHUNK_ROWS
from interlink.settings import ConfigError, Settings

RUN_COLUMNS = {
    "integration": "integration", "kind": "kind", "state": "state", "attempts": "attempts", "started_at": "started", "rows_read": "read",
    "rows_inserted": "inserted", "rows_updated": "updated", "rows_unchanged": "unchanged", "rows_quarantined": "quarantined",
    "rows_superseded": "superseded", "watermark": "watermark", "decision": "decision", "error": "error", "flow_run_id": "flow run",
}
DLQ_COLUMNS = {
    "id": "id", "integration": "integration", "record_key": "record", "stage": "stage", "status": "status", "reason": "reason",
    "created_at": "created", "flow_run_id": "flow run",
}
INVENTORY_COLUMNS = {"name": "name", "kind": "kind", "target": "target", "used_by": "used by", "healthy": "healthy",
                     "latency_ms": "ms", "reason": "reason"}
COMMANDS = "interlink.commands"  # entry points that add commands, e.g. the demo's `interlink demo …`
EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class Commands(TyperGroup):
    """The core commands, and those of `interlink.commands` entry points, each loaded only when it is used."""

    def list_commands(self, ctx: Any) -> list[str]:
        return sorted({*super().list_commands(ctx), *_plugins()})

    def get_command(self, ctx: Any, name: str) -> Any:
        if name not in self.commands and name in _plugins():
            extra = typer.Typer()
            _plugins()[name].load()(extra)
            self.add_command(typer.main.get_group(extra).commands[name], name)
        return super().get_command(ctx, name)


def _plugins() -> dict[str, Any]:
    return {plugin.name: plugin for plugin in entry_points(group=COMMANDS)}


app = typer.Typer(cls=Commands, name="interlink", help=__doc__.splitlines()[0], no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False, context_settings={"help_option_names": ["-h", "--help"]})
state_app = typer.Typer(help="Interlink's own database", no_args_is_help=True)
dlq_app = typer.Typer(help="the dead-letter store", no_args_is_help=True)
webhooks_app = typer.Typer(help="the webhook receiver", no_args_is_help=True)
app.add_typer(state_app, name="state")
app.add_typer(dlq_app, name="dlq")
app.add_typer(webhooks_app, name="webhooks")

Positive = Annotated[int, typer.Option(min=1)]
Json = Annotated[bool, typer.Option("--json", help="machine-readable output")]
Integrations = Annotated[list[str] | None, typer.Argument(metavar="[INTEGRATION]...", help="default: every integration", show_default=False)]


def main(argv: list[str] | None = None) -> int:
    """Run the command line; every mistake is one line on stderr and exit status 2."""
    try:
        return typer.main.get_command(app).main(argv, prog_name="interlink", standalone_mode=False) or 0
    except NoArgsIsHelpError as exc:
        print(exc.ctx.get_help())
        return EXIT_USAGE
    except typer.TyperException as exc:  # a usage mistake: an unknown option, a value out of range, …
        ctx = getattr(exc, "ctx", None)
        where = f"; see `{ctx.command_path} --help`" if ctx else ""
        message = exc.format_message().replace("Value error, ", "").rstrip(".")
        return _fail(" ".join(f"{message}{where}".split()), EXIT_USAGE)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except (typer.Abort, KeyboardInterrupt):
        return _fail("interrupted", EXIT_INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - anything else is one line too: its kind and the first line of its message
        first = (str(exc).strip().splitlines() or [""])[0]
        return _fail(f"{type(exc).__name__}: {first}" if first else type(exc).__name__, EXIT_FAILED)


def script() -> NoReturn:
    """The `interlink` command: `main`, then the exit handlers (Prefect sends its last logs and events), then exit
    without tearing down every imported module, which costs over a second of CPU with Prefect and GX loaded."""
    code = main()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _fail(message: str, code: int) -> int:
    print(f"interlink: {message}", file=sys.stderr)
    return code


@app.command()
def run(
    integrations: Integrations = None,
    full_refresh: Annotated[bool, typer.Option("--full-refresh", help="ignore the watermark and read everything")] = False,
    chunk_size: Annotated[int, typer.Option(min=1, help="rows per batch")] = CHUNK_ROWS,
    partitions: Annotated[int | None, typer.Option(min=1, metavar="K", help="split each sync into K time windows run in parallel on Dask")] = None,
    as_json: Json = False,
) -> int:
    """Run integrations' syncs now, against exactly the configured systems; progress shows batch by batch."""
    options: dict[str, Any] = {"full_refresh": full_refresh, "chunk_size": chunk_size}
    if partitions is None:
        return run_flows(Settings.load(), integrations or [], "sync", as_json=as_json, **options)
    return run_flows(Settings.load(), integrations or [], "sync_partitioned", as_json=as_json, partitions=partitions, **options)


def run_flows(settings: Settings, names: list[str], which: str, *, as_json: bool = False, **parameters: Any) -> int:
    """Run flow `which` of each integration in `names` (all if empty), once every connection they use is set
    and every database they use answers, showing their progress (`interlink.progress_view`); then a summary
    of each, or all of them as JSON. 1 if any run failed (the others still run)."""
    from flows import integration, integrations
    from interlink.progress_view import display

    pipelines = [integration(name) for name in names or integrations()]
    used = [c for pipeline in pipelines for c in pipeline.connections]
    settings.require(used)
    check_databases(settings, used)
    flows = [getattr(pipeline, which) for pipeline in pipelines]  # a flow that cannot exist fails before any runs
    done: list[dict[str, Any]] = []
    with heartbeats(), display(as_json) as shown:
        for pipeline, flow in zip(pipelines, flows, strict=True):
            with shown.run(pipeline.name, which) as tally:
                state = flow(**parameters, return_state=True)
            if not state.is_completed():
                error = f"{pipeline.name} {which} {state.name.lower()}: {state.message or state.type.value}"
                done.append({"integration": pipeline.name, "state": state.name.upper(), "error": error})
                _fail(error, EXIT_FAILED)
                continue
            summary = state.result()
            done.append({**summary, "state": state.name.upper(), "batches": tally.batches, "seconds": round(tally.seconds, 1)})
            if not as_json:
                print(
                    f"\n{pipeline.name} {which}: read {summary['rows_read']}, inserted {summary['rows_inserted']}, "
                    f"updated {summary['rows_updated']}, unchanged {summary['rows_unchanged']}, "
                    f"quarantined {summary['rows_quarantined']} ({tally})\n"
                    f"watermark: {summary['watermark']}\n"
                    f"data-quality report: {summary['report']}"
                )
    if as_json:
        print(json.dumps(done, default=_json_value, indent=2))
    return EXIT_FAILED if any("error" in run for run in done) else 0


def heartbeats() -> AbstractContextManager:
    """With a Prefect server configured, runs send heartbeats every `HEARTBEAT_S`, as `interlink serve`'s do: the
    server's crashed-run automation crashes a run whose heartbeats stop (killed even before its ledger row exists),
    and at Prefect's default (180 s) it would take a live run for dead. A temporary API has no automation."""
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from deployments.automations import HEARTBEAT_S

    if not PREFECT_API_URL.value():
        return nullcontext()
    return temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: HEARTBEAT_S})


def check_databases(settings: Settings, names: list[str]) -> None:
    """Connect once to the state database (if set) and every SQL connection in `names`: a wrong password or
    an unreachable host is a `ConfigError` naming the connection's variable, before anything is read."""
    from interlink.inventory import sql_problem

    urls = {f"INTERLINK_{n.upper()}__URL": settings.connection(n).url for n in dict.fromkeys(names) if settings.connections[n].kind == "sql"}
    if settings.state_url:
        urls["INTERLINK_STATE_URL"] = settings.state_url
    for variable, url in urls.items():
        if problem := sql_problem(url):
            raise ConfigError(f"{variable}: cannot connect ({problem}): check the host, port, user and password")


@app.command()
def runs(
    integration: Annotated[str | None, typer.Option(help="only this integration's runs")] = None,
    limit: Annotated[int, typer.Option(min=1, help="most runs shown")] = 50,
    as_json: Json = False,
) -> None:
    """The run ledger, newest first: counts, decision, error and a link to each run in the Prefect UI."""
    from interlink.ledger import Ledger

    settings = Settings.load()
    check_databases(settings, [])
    _emit(Ledger(settings.state_db).runs(integration, limit), RUN_COLUMNS, as_json)


@state_app.command("upgrade")
def state_upgrade() -> None:
    """Bring the state database (ledger, dead letters, …) to the newest schema; every run also does it on start."""
    from connectors.sql import create_engine
    from interlink import migrations
    from interlink.settings import mask_url

    settings = Settings.load()
    check_databases(settings, [])
    engine = create_engine(settings.state_db)
    before, after = migrations.upgrade(engine)
    engine.dispose()
    where = mask_url(settings.state_db)
    print(f"state database {where}: " + (f"at {after}, the newest" if before == after else f"upgraded from {before or 'nothing'} to {after}"))


class Status(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"
    REPLAYED = "replayed"


@dlq_app.command("list")
def dlq_list(
    integration: Annotated[str | None, typer.Option(help="only this integration's dead letters")] = None,
    status: Annotated[Status | None, typer.Option(help="only those in this status")] = None,
    as_json: Json = False,
    reveal: Annotated[bool, typer.Option("--reveal", help="show the values of sensitive columns unmasked")] = False,
) -> None:
    """Dead-lettered records: why each failed, and the run that dead-lettered it (sensitive values masked)."""
    from flows import sensitive_columns
    from interlink.deadletter import DeadLetters

    settings = Settings.load()
    check_databases(settings, [])
    letters = DeadLetters(settings.state_db, sensitive_columns())
    _emit(letters.entries(integration, status and status.value, reveal=reveal), DLQ_COLUMNS, as_json)


@dlq_app.command("replay")
def dlq_replay(integration: Annotated[str, typer.Argument(help="the integration whose open dead letters run again")]) -> int:
    """Run an integration's open dead letters through transform → check → deliver again."""
    return run_flows(Settings.load(), [integration], "replay")


@app.command()
def reconcile(
    integration: Annotated[str, typer.Argument(help="the integration to compare")],
    since: Annotated[str | None, typer.Option(help="window start on the source's update time (ISO 8601); default: everything")] = None,
    repair: Annotated[bool, typer.Option("--repair", help="re-deliver missing and changed rows (extra ones are only reported)")] = False,
) -> int:
    """Compare an integration's source and target; 1 when they still differ (after any repair)."""
    from flows import integration as pipeline_of

    settings = Settings.load()
    pipeline = pipeline_of(integration)
    flow = pipeline.reconcile  # a target that is neither SQL nor REST cannot be reconciled: ConfigError
    settings.require(pipeline.connections)
    check_databases(settings, pipeline.connections)
    found = flow(since=since, repair=repair)
    print(
        f"{integration} reconcile: source {found['source_rows']}, dead-lettered {len(found['dead_lettered'])}, "
        f"target {found['target_rows']}, missing {len(found['missing'])}, extra {len(found['extra'])}, "
        f"changed {len(found['changed'])}, repaired {found['repaired']}, not written {len(found['not_written'])}, "
        f"still differing {len(found['unrepaired'])}"
    )
    shown = {"dead_lettered": "dead-lettered", "missing": "missing", "extra": "extra", "changed": "changed",
             "not_written": "not written", "unrepaired": "still differing"}  # as the line above names them
    for kind, label in shown.items():
        if found[kind]:
            print(f"  {label}: {', '.join(map(str, found[kind][:20]))}{' …' if len(found[kind]) > 20 else ''}")
    return EXIT_FAILED if found["extra"] or found["unrepaired"] else 0


@app.command()
def report(html: Annotated[Path | None, typer.Option(metavar="PATH", help="where to write it (default <home>/reports/quality.html)")] = None) -> None:
    """Data quality over time per integration, as one offline HTML page."""
    from flows import sensitive_columns
    from interlink.quality_report import build_report

    settings = Settings.load()
    check_databases(settings, [])
    print(f"quality report: {build_report(settings.state_db, html or settings.reports_dir / 'quality.html', sensitive_columns())}")


@app.command()
def serve(
    limit: Annotated[int | None, typer.Option(min=1, help="most flow runs at once")] = None,
    wait_s: Annotated[float, typer.Option(min=0, help="how long to wait for the Prefect API to come up")] = 60,
) -> None:
    """Register the declared deployments with the Prefect server and run them on their schedules."""
    serve_deployments(Settings.load(), limit, wait_s)


def serve_deployments(settings: Settings, limit: int | None, wait_s: float) -> None:
    from deployments import declarations
    from deployments.serving import serve as serve_with_heartbeats
    from flows import integration

    settings.require([c for d in declarations().deployments for c in integration(d.integration).connections])
    _wait_for_prefect_api(wait_s)
    serve_with_heartbeats(limit=limit)


def _wait_for_prefect_api(timeout_s: float) -> None:
    import time

    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while client.api_healthcheck() is not None:
            if time.monotonic() > deadline:
                raise ConfigError(f"the Prefect API at {client.api_url} did not answer within {timeout_s:g}s: start it (`make serve`)")
            time.sleep(0.5)


@webhooks_app.command("serve")
def webhooks_serve(host: str = "127.0.0.1", port: Annotated[int, typer.Option(min=1, max=65535)] = 8000) -> None:
    """Receive signed events and trigger their integration's deployment."""
    import uvicorn

    from interlink.webhooks import from_settings

    uvicorn.run(from_settings(Settings.load()), host=host, port=port)


@webhooks_app.command("rerun")
def webhooks_rerun(event: Annotated[int, typer.Argument(help="the event's id in the store")]) -> int:
    """Trigger a stored event's integration again (e.g. after its run failed)."""
    from interlink.webhooks import deployment_trigger, rerun

    try:
        result = rerun(Settings.load().state_db, event, deployment_trigger)
    except LookupError as exc:
        return _fail(str(exc), EXIT_FAILED)
    print(f"event {result['event']}: {result['status']} {result['flow_run_id'] or ''}".rstrip())
    return 0


@app.command()
def connectors(as_json: Json = False) -> int:
    """Every configured connection: where it points, who uses it, and whether it answers now (1 if any does not)."""
    from flows import users
    from interlink.inventory import inventory

    rows = inventory(Settings.load(), users())
    shown = rows if as_json else [r | {"used_by": ", ".join(r["used_by"])} for r in rows]
    _emit(shown, INVENTORY_COLUMNS, as_json)
    return 0 if all(r["healthy"] for r in rows) else EXIT_FAILED


def _emit(rows: list[dict[str, Any]], columns: dict[str, str], as_json: bool) -> None:
    """`rows` as JSON (each with its run's `url` in the Prefect UI, if one is configured), or as a table."""
    ui = _ui_url()
    if ui:
        rows = [row | {"url": f"{ui}/runs/flow-run/{row['flow_run_id']}"} if row.get("flow_run_id") else row for row in rows]
    if as_json:
        print(json.dumps(rows, default=_json_value, indent=2))
        return
    from interlink.tables import table

    table(rows, columns)


def _ui_url() -> str | None:
    """The Prefect UI, as Prefect's settings say (`PREFECT_UI_URL`, or derived from `PREFECT_API_URL`)."""
    from prefect.settings import get_current_settings

    url = get_current_settings().ui_url
    return url.rstrip("/") if url else None


def _json_value(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


if __name__ == "__main__":
    script()
