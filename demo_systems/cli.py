"""`interlink demo …`: the only commands that start the embedded demo systems.

Registered through the `interlink.commands` entry point, so the core CLI knows nothing of the demo.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from interlink.cli import Integrations, run_flows, serve_deployments
from interlink.settings import ConfigError, Settings

demo = typer.Typer(help="the embedded demo systems", no_args_is_help=True)
FaultRate = Annotated[float, typer.Option(min=0, max=1, help="share of demo API requests answered 429/503")]


def add_commands(app: typer.Typer) -> None:
    """Add `demo run`, `demo serve` and `demo mutate` to the `interlink` command line."""
    app.add_typer(demo, name="demo")


@demo.command()
def run(
    integrations: Integrations = None,
    chunk_size: Annotated[int | None, typer.Option(min=1, help="rows per batch")] = None,
    fault_rate: FaultRate = 0.02,
) -> int:
    """Run integrations against the demo systems, for what is not configured (by default every integration the demo can stand in for)."""
    from demo_systems.wiring import demo_systems

    options = {"chunk_size": chunk_size} if chunk_size else {}
    with demo_systems(Settings.load(), fault_rate) as stand_in:
        return run_flows(stand_in, integrations or runnable(stand_in), "sync", **options)


def runnable(stand_in: Settings) -> list[str]:
    """The integrations whose every connection is usable in `stand_in`; a line on stderr for each of the others."""
    from flows import integrations

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
    from demo_systems.wiring import demo_systems

    with demo_systems(Settings.load(), fault_rate) as stand_in:
        serve_deployments(stand_in, limit, wait_s)


@demo.command()
def mutate(count: Annotated[int, typer.Option(min=1, help="records to change in each system")] = 25) -> None:
    """Change records in every demo system, so the next syncs have work."""
    from demo_systems.wiring import mutate as change

    for system, changed in change(Settings.load(), count).items():
        print(f"changed {len(changed)} {system}: {', '.join(changed[:8])}{' …' if len(changed) > 8 else ''}")
