"""`interlink demo …`: the only commands that start the embedded demo systems.

Registered through the `interlink.commands` entry point, so the core CLI knows nothing of the demo.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from interlink import deployments
from interlink.cli import Integrations, run_flows, serve_deployments
from interlink.settings import ConfigError, Settings

demo = typer.Typer(help="the embedded demo systems", no_args_is_help=True)
FaultRate = Annotated[float, typer.Option(min=0, max=1, help="share of demo API requests answered 429/503")]


# The demo is a project of its own: the example integrations of `interlink.flows`, with the declaration and connections
# shipped beside them, and its own state. A user's project never sees them; `interlink demo …` never sees a user's.
DEMO_PROJECT = {
    "INTERLINK_INTEGRATIONS": "interlink.flows",
    "INTERLINK_DEPLOYMENTS_FILE": str(Path(deployments.__file__).with_name("deployments.yaml")),
    "INTERLINK_CONNECTIONS_FILE": str(Path(deployments.__file__).with_name("connections.yaml")),
}
DEMO_HOME = Path(".interlink", "demo")  # unless INTERLINK_HOME says otherwise: beside a project's own state, never in it
OPERATORS = ("runs", "status", "dlq", "connectors", "reconcile", "report")  # `interlink demo runs` … on the demo's state


@demo.callback()
def demo_project() -> None:
    """Every `interlink demo …` command, and the processes it starts, work on the demo's project: its integrations,
    declaration and connections, its home (`.interlink/demo` unless INTERLINK_HOME is set), and never a configured
    state database."""
    os.environ.update(DEMO_PROJECT)
    os.environ.setdefault("INTERLINK_HOME", str(DEMO_HOME))
    os.environ.pop("INTERLINK_STATE_URL", None)


def add_commands(app: typer.Typer) -> None:
    """Add `demo run`, `demo serve`, `demo mutate`, and the operators' commands on the demo's project, to the `interlink`
    command line."""
    app.add_typer(demo, name="demo")


def _on_the_demo(command: str) -> None:
    def operate(ctx: typer.Context) -> int:
        from interlink.cli import main

        return main([command, *ctx.args])

    demo.command(command, help=f"`interlink {command} …` on the demo's project (its runs, dead letters and systems)",
                 context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []})(operate)


for _command in OPERATORS:
    _on_the_demo(_command)


@demo.command()
def run(
    integrations: Integrations = None,
    chunk_size: Annotated[int | None, typer.Option(min=1, help="rows per batch")] = None,
    fault_rate: FaultRate = 0.02,
) -> int:
    """Run integrations against the demo systems, for what is not configured (by default every integration the demo can stand in for)."""
    from interlink.demo_systems.wiring import demo_systems

    options = {"chunk_size": chunk_size} if chunk_size else {}
    with demo_systems(Settings.load(), fault_rate) as stand_in:
        return run_flows(stand_in, integrations or runnable(stand_in), "sync", **options)


def runnable(stand_in: Settings) -> list[str]:
    """The integrations whose every connection is usable in `stand_in`; a line on stderr for each of the others."""
    from interlink.flows import integrations

    names = []
    for name, (_, pipeline) in integrations().items():
        try:
            stand_in.require(pipeline.connections)
        except ConfigError as exc:
            print(f"interlink demo: {name} skipped: the demo has no stand-in for it ({exc})", file=sys.stderr)
            continue
        names.append(name)
    return names


@demo.command()
def serve(
    limit: Annotated[int | None, typer.Option(min=1, help="most flow runs at once")] = None,
    wait_s: Annotated[float, typer.Option(min=0, help="how long to wait for the Prefect API to come up")] = 60,
    fault_rate: FaultRate = 0.02,
) -> None:
    """`interlink serve` with the demo systems standing in for what is not configured."""
    from interlink.demo_systems.wiring import demo_systems

    with demo_systems(Settings.load(), fault_rate) as stand_in:
        serve_deployments(stand_in, limit, wait_s)


@demo.command()
def mutate(count: Annotated[int, typer.Option(min=1, help="records to change in each system")] = 25) -> None:
    """Change records in every demo system, so the next syncs have work."""
    from interlink.demo_systems.wiring import mutate as change

    for system, changed in change(Settings.load(), count).items():
        print(f"changed {len(changed)} {system}: {', '.join(changed[:8])}{' …' if len(changed) > 8 else ''}")
