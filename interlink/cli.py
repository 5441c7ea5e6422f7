"""`interlink`: run, watch, retry, approve and replay a project's integrations; make projects and integrations.

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
from importlib.metadata import entry_points, version
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer._click.exceptions import NoArgsIsHelpError  # typer carries its own click
from typer.core import TyperGroup

from interlink.flows import CHUNK_ROWS
from interlink.json_logs import install as json_logs
from interlink.settings import ConfigError, Settings

RUN_COLUMNS = {
    "integration": "integration", "kind": "kind", "state": "state", "attempts": "attempts", "started_at": "started", "rows_read": "read",
    "rows_inserted": "inserted", "rows_updated": "updated", "rows_unchanged": "unchanged", "rows_quarantined": "quarantined",
    "rows_superseded": "superseded", "watermark": "watermark", "decision": "decision", "error": "error", "trace_id": "trace",
    "flow_run_id": "flow run",
}
DLQ_COLUMNS = {
    "id": "id", "integration": "integration", "record_key": "record", "stage": "stage", "status": "status", "reason": "reason",
    "created_at": "created", "flow_run_id": "flow run",
}
INVENTORY_COLUMNS = {"name": "name", "kind": "kind", "target": "target", "used_by": "used by", "healthy": "healthy",
                     "latency_ms": "ms", "reason": "reason"}
STATUS_COLUMNS = {"integration": "integration", "owner": "owner", "contact": "contact", "last_run": "last run",
                  "last_success": "succeeded", "freshness": "freshness", "why": "SLA", "next_run": "next run",
                  "dead_letters": "open DLQ"}
# what a table shows without --wide, to fit 100 columns
RUN_SHOWN = ("integration", "kind", "state", "started_at", "rows_read", "rows_quarantined", "error", "flow_run_id")
DLQ_SHOWN = ("id", "integration", "record_key", "stage", "status", "reason", "created_at")
INVENTORY_SHOWN = ("name", "kind", "target", "used_by", "healthy", "reason")
STATUS_SHOWN = ("integration", "owner", "last_run", "last_success", "freshness", "next_run", "dead_letters")
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
Wide = Annotated[bool, typer.Option("--wide", help="every column, on one line per row")]
Integrations = Annotated[list[str] | None, typer.Argument(metavar="[INTEGRATION]...", help="default: every integration", show_default=False)]


def _version(shown: bool) -> None:
    if shown:
        print(f"interlink {version('interlink')}")
        raise typer.Exit()


@app.callback()
def _options(
    _: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="the installed version, and exit")] = False,
) -> None:
    """Interlink: integrations between business systems, declared once and run on Prefect."""


def main(argv: list[str] | None = None) -> int:
    """Run the command line; every mistake is one line on stderr and exit status 2."""
    try:
        json_logs()  # with INTERLINK_LOG_FORMAT=json, before anything logs or starts a process
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
    if (handlers := sys.modules.get("prefect.logging.handlers")) is not None:  # a run's last logs, while its API still runs
        handlers.APILogWorker.drain_all(timeout=5)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _fail(message: str, code: int) -> int:
    print(f"interlink: {message}", file=sys.stderr)
    return code


new_app = typer.Typer(help="add to this integrations project", no_args_is_help=True)
app.add_typer(new_app, name="new")
SourceKind = StrEnum("SourceKind", {kind: kind for kind in ("rest", "sql", "folder")})
TargetKind = StrEnum("TargetKind", {kind: kind for kind in ("sql", "rest")})


@app.command()
def init(directory: Annotated[Path, typer.Argument(metavar="DIR", help="where the project goes: a new or empty folder")]) -> None:
    """Make a team's integrations project: an example integration (SQL → SQL) with its checks, tests, schedule and
    connections, a Makefile, a README and a CI workflow, ready to commit. DIR's name is the project's name."""
    import shlex

    from interlink.scaffold import init as make_project

    made = make_project(directory)
    print(f"made {directory}/:", *(f"  {path}" for path in made), sep="\n")
    cd = "" if directory.resolve() == Path.cwd().resolve() else f"cd {shlex.quote(str(directory))} && "
    print(f"next:\n  {cd}make run   # set-up, sample data, the example's first run\n  make test")


@new_app.command("integration")
def new_integration(
    name: Annotated[str, typer.Argument(help="the integration's name, a Python identifier, e.g. orders_to_erp")],
    source: Annotated[SourceKind, typer.Option(help="where its records come from")],
    target: Annotated[TargetKind, typer.Option(help="where they go")],
    source_connection: Annotated[str | None, typer.Option(
        metavar="CONNECTION", help="the connection it reads: one in deployments/connections.yaml, or a new one [default: NAME_source, new]")] = None,
    target_connection: Annotated[str | None, typer.Option(
        metavar="CONNECTION", help="the connection it delivers to, e.g. your warehouse's [default: NAME_target, new]")] = None,
) -> None:
    """Add an integration to the project in the working directory: its module (a pipeline with TODOs for your systems'
    names), its checks, its test, its owner (to fill in) in deployments/deployments.yaml, not scheduled, and new
    connections NAME_source and NAME_target, unless --source-connection/--target-connection name others (a connection
    declared already must be of the kind of --source/--target; one that is not is added)."""
    from interlink.scaffold import new_integration as add

    added = add(name, source.value, target.value, source_connection=source_connection, target_connection=target_connection)
    print("wrote:", *(f"  {path}" for path in added.written), sep="\n")
    if added.variables:
        print("its new connections need, in the environment (`make run` runs every integration, so it fails until they are set):",
              *(f"  {variable}" for variable in added.variables), sep="\n")
    print(f"next: fill in the TODOs in flows/{name}.py, then `interlink connectors` and `interlink run {name}` "
          f"(or `make run INTEGRATIONS={name}`)")


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
    and answers (`check_connections`), showing their progress (`interlink.progress_view`); then a summary
    of each, or all of them as JSON. 1 if any run failed (the others still run)."""
    from interlink.flows import integration, integrations
    from interlink.progress_view import display

    pipelines = [integration(name) for name in names or integrations()]
    flows = [getattr(pipeline, which) for pipeline in pipelines]  # a flow that cannot exist fails before any runs
    check_connections(settings, [c for pipeline in pipelines for c in pipeline.connections])
    start_prefect_api()
    done: list[dict[str, Any]] = []
    with heartbeats(), display(as_json) as shown:
        for pipeline, flow in zip(pipelines, flows, strict=True):
            with shown.run(pipeline.name, which) as tally:
                state = flow(**parameters, return_state=True)
            if not state.is_completed():
                cause = (state.message or state.type.value).strip().splitlines()[0]
                error = f"{pipeline.name} {which} {state.name.lower()}: {cause}"
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

    from interlink.deployments.automations import HEARTBEAT_S

    if not PREFECT_API_URL.value():
        return nullcontext()
    return temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: HEARTBEAT_S})


def check_connections(settings: Settings, names: list[str]) -> None:
    """Before anything is read: every connection in `names` set, then it and the state database (if set) checked
    live (`interlink.inventory.check_connections`). A missing setting, a refused port or login, a missing folder
    is a `ConfigError` naming the variable and the fix."""
    from interlink import inventory

    inventory.check_connections(settings, names)


EPHEMERAL_STARTUP_S = 90  # Prefect's default 20 s was exceeded at load averages of 6–14 on a 2-core machine


def start_prefect_api() -> None:
    """Without a Prefect server (`PREFECT_API_URL` unset), start the temporary API runs report to now, before any run.

    Prefect would start it on first use, and stops it when the process exits (`script` runs the exit handlers). It must
    answer within `PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`, `EPHEMERAL_STARTUP_S` unless set; if it does
    not, a `ConfigError` says what to do."""
    import logging

    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    prefect = get_current_settings()
    if prefect.api.url or not prefect.server.ephemeral.enabled:
        return
    ephemeral = prefect.server.ephemeral
    timeout = ephemeral.startup_timeout_seconds if "startup_timeout_seconds" in ephemeral.model_fields_set else EPHEMERAL_STARTUP_S
    server, logger = SubprocessASGIServer(), logging.getLogger("prefect")  # the instance Prefect's clients use, and its logger
    level = logger.level
    logger.setLevel(logging.WARNING)  # not its note on temporary servers: this one is said in one line if it fails
    try:
        server.start(timeout)
    except RuntimeError:
        server.stop()
        raise ConfigError(
            f"the temporary Prefect API did not start within {timeout}s (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS; "
            "a busy machine is slower): start a Prefect server (`make serve` or `prefect server start`) and set "
            "PREFECT_API_URL to its API, or raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
        ) from None
    finally:
        logger.setLevel(level)


@app.command()
def runs(
    integration: Annotated[str | None, typer.Option(help="only this integration's runs")] = None,
    limit: Annotated[int, typer.Option(min=1, help="most runs shown")] = 50,
    as_json: Json = False,
    wide: Wide = False,
) -> None:
    """The run ledger, newest first: counts, decision, error and a link to each run in the Prefect UI."""
    from interlink.ledger import Ledger

    settings = Settings.load()
    check_connections(settings, [])
    _emit(Ledger(settings.state_db).runs(integration, limit), RUN_COLUMNS, as_json, RUN_SHOWN, wide)


@app.command("status")
def status_command(as_json: Json = False, wide: Wide = False) -> int:
    """Each declared integration: owner, last run, last success, freshness against its SLA, next run, open dead
    letters; 1 if any is in breach of its SLA."""
    from interlink.deployments.declaration import read
    from interlink.status import shown, status

    settings = Settings.load()
    declared = read()
    check_connections(settings, [])
    entries = status(declared, settings.state_db)
    _emit(entries if as_json else [shown(e) for e in entries], STATUS_COLUMNS, as_json, STATUS_SHOWN, wide)
    return EXIT_FAILED if any(e["in_breach"] for e in entries) else 0


@state_app.command("upgrade")
def state_upgrade() -> None:
    """Bring the state database (ledger, dead letters, …) to the newest schema; every run also does it on start."""
    from interlink import migrations
    from interlink.connectors.sql import create_engine
    from interlink.settings import mask_url

    settings = Settings.load()
    check_connections(settings, [])
    engine = create_engine(settings.state_db)
    before, after = migrations.upgrade(engine)
    engine.dispose()
    where = mask_url(settings.state_db)
    print(f"state database {where}: " + (f"at {after}, the newest" if before == after else f"upgraded from {before or 'nothing'} to {after}"))


@state_app.command("prune")
def state_prune(
    apply: Annotated[bool, typer.Option("--apply", help="remove it (without: only say what would be removed)")] = False,
    as_json: Json = False,
) -> None:
    """Remove what is older than its declared retention (`retention:` in deployments.yaml): resolved and replayed dead
    letters, ended runs' ledger rows, GX results, per-run reports; open dead letters never. A dry run unless --apply."""
    from interlink.deployments.declaration import read
    from interlink.retention import prune

    settings = Settings.load()
    declared = read()
    check_connections(settings, [])
    pruned = prune(settings, declared, apply=apply)
    if as_json:
        print(json.dumps([p.as_dict() for p in pruned], default=_json_value, indent=2))
        return
    for found in pruned:
        print(found.line())


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
    limit: Annotated[int | None, typer.Option(min=1, help="only the newest N")] = None,
    wide: Wide = False,
) -> None:
    """Dead-lettered records: why each failed, and the run that dead-lettered it (sensitive values masked)."""
    from interlink.deadletter import DeadLetters, masked
    from interlink.integration_facts import facts

    settings = Settings.load()
    check_connections(settings, [])
    letters = DeadLetters(settings.state_db).entries(integration, status and status.value, reveal=True, limit=limit)
    if not reveal:  # each integration's fields as its latest run recorded them (`interlink.integration_facts`)
        rules = facts(settings.state_db, {letter["integration"] for letter in letters})
        letters = [masked(letter, rules[letter["integration"]].masked if letter["integration"] in rules else ()) for letter in letters]
    _emit(letters, DLQ_COLUMNS, as_json, DLQ_SHOWN, wide)


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
    from interlink.flows import integration as pipeline_of

    settings = Settings.load()
    pipeline = pipeline_of(integration)
    flow = pipeline.reconcile  # a target that is neither SQL nor REST cannot be reconciled: ConfigError
    check_connections(settings, pipeline.connections)
    start_prefect_api()
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
    from interlink.flows import sensitive_columns
    from interlink.quality_report import build_report

    settings = Settings.load()
    check_connections(settings, [])
    print(f"quality report: {build_report(settings.state_db, html or settings.reports_dir / 'quality.html', sensitive_columns())}")


@app.command()
def serve(
    limit: Annotated[int | None, typer.Option(min=1, help="most flow runs at once")] = None,
    wait_s: Annotated[float, typer.Option(min=0, help="how long to wait for the Prefect API to come up")] = 60,
) -> None:
    """Register the declared deployments with the Prefect server and run them on their schedules."""
    serve_deployments(Settings.load(), limit, wait_s)


def serve_deployments(settings: Settings, limit: int | None, wait_s: float) -> None:
    """Serve the declared deployments once every connection they use is set; one that does not answer now is
    told in one line, and served anyway: a scheduler outlives outages, and its runs fail until it answers."""
    from interlink import metrics
    from interlink.deployments.runner import declarations
    from interlink.deployments.serving import serve as serve_with_heartbeats
    from interlink.flows import integration

    used = [c for d in declarations().deployments for c in integration(d.integration).connections]
    settings.require(used)
    try:
        check_connections(settings, used)
    except ConfigError as exc:
        _fail(f"{exc} (serving anyway: its runs fail until it answers)", 0)
    metrics.serve(settings.state_db, settings.metrics_port, settings.metrics_addr)  # every run's figures, from the ledger
    _wait_for_prefect_api(wait_s)
    serve_with_heartbeats(limit=limit)


def _wait_for_prefect_api(timeout_s: float) -> None:
    import time

    from prefect.client.orchestration import get_client

    start_prefect_api()  # none is configured: serve on a temporary one
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while client.api_healthcheck() is not None:
            if time.monotonic() > deadline:
                raise ConfigError(f"the Prefect API at {client.api_url} did not answer within {timeout_s:g}s: start it (`make serve`)")
            time.sleep(0.5)


@webhooks_app.command("serve")
def webhooks_serve(
    host: Annotated[str, typer.Option(help="the address to listen on (0.0.0.0: every interface)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="the port to listen on")] = 8000,
) -> None:
    """Receive signed events and trigger their integration's deployment (on a Prefect server)."""
    import uvicorn
    from prefect.settings import get_current_settings

    from interlink import metrics
    from interlink.webhooks import from_settings

    settings = Settings.load()
    if not get_current_settings().api.url:  # else the first event would start a temporary server, and a stop orphan it
        raise ConfigError("PREFECT_API_URL is not set: the webhook receiver needs a Prefect server: start one (`make serve` or `prefect server start`) and set PREFECT_API_URL to its API")
    metrics.serve(settings.state_db, settings.metrics_port, settings.metrics_addr)  # on a port of its own
    uvicorn.run(from_settings(settings), host=host, port=port)


@webhooks_app.command("rerun")
def webhooks_rerun(event: Annotated[int, typer.Argument(help="the event's id in the store")]) -> int:
    """Trigger a stored event's integration again (e.g. after its run failed)."""
    from interlink.webhooks import deployment_trigger, rerun

    try:
        result = rerun(Settings.load().state_db, event, deployment_trigger)
    except LookupError as exc:
        return _fail(str(exc), EXIT_FAILED)
    if "error" in result:
        return _fail(f"event {result['event']}: {result['status']}: {result['error'].splitlines()[0]}", EXIT_FAILED)
    print(f"event {result['event']}: {result['status']} {result['flow_run_id']}")
    return 0


@app.command()
def connectors(as_json: Json = False, wide: Wide = False) -> int:
    """The connections the declared integrations use: where each points, who uses it (and their owners), whether it
    answers now (1 if any does not). Which connections an integration uses is what its latest run recorded
    (`interlink.integration_facts`); one that has not run since is loaded to ask."""
    from interlink.deployments.declaration import read
    from interlink.integration_facts import facts
    from interlink.inventory import inventory

    settings = Settings.load()
    declared = read().integrations
    users: dict[str, list[str]] = {}
    for name, found in facts(settings.state_db, declared).items():
        for connection in found.connections:
            users.setdefault(connection, []).append(name)
    rows = [r | {"owners": [declared[name].owner.team for name in r["used_by"]]} for r in inventory(settings, users)]
    shown = rows if as_json else [r | {"used_by": ", ".join(f"{n} ({o})" for n, o in zip(r["used_by"], r["owners"], strict=True))} for r in rows]
    _emit(shown, INVENTORY_COLUMNS, as_json, INVENTORY_SHOWN, wide)
    return 0 if all(r["healthy"] for r in rows) else EXIT_FAILED


def _emit(rows: list[dict[str, Any]], columns: dict[str, str], as_json: bool, shown: tuple[str, ...] = (), wide: bool = True) -> None:
    """`rows` as JSON (each with its run's `url` in the Prefect UI, if one is configured), or as a table of the
    `shown` columns within 100 characters (`interlink.tables`), or of all of them if `wide`."""
    ui = _ui_url()
    if ui:
        rows = [row | {"url": f"{ui}/runs/flow-run/{row['flow_run_id']}"} if row.get("flow_run_id") else row for row in rows]
    if as_json:
        print(json.dumps(rows, default=_json_value, indent=2))
        return
    from interlink.tables import pick, table

    table(rows, pick(columns, shown or columns, wide), wide)


def _ui_url() -> str | None:
    """The Prefect UI (`PREFECT_UI_URL`, or derived from `PREFECT_API_URL`), without importing Prefect where it is not
    loaded (`interlink.prefect_urls`)."""
    from interlink.prefect_urls import ui_url

    return ui_url()


def _json_value(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


if __name__ == "__main__":
    script()
