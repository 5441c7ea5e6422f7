"""`interlink demo …`: the only commands that start the embedded demo systems.

Registered through the `interlink.commands` entry point, so the core CLI knows nothing of the demo.
"""

from __future__ import annotations

import argparse
import sys

from flows import integrations
from interlink.cli import positive, run_flows
from interlink.settings import ConfigError, Settings


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add `demo run`, `demo serve` and `demo mutate` to the `interlink` command line."""
    demo = commands.add_parser("demo", help="the embedded demo systems").add_subparsers(required=True, metavar="ACTION")

    p = demo.add_parser("run", help="run integrations against the demo systems, for what is not configured "
                        "(by default every integration the demo can stand in for)")
    p.add_argument("integrations", nargs="*", metavar="INTEGRATION")
    p.add_argument("--chunk-size", type=positive, default=None, help="rows per batch")
    p.add_argument("--fault-rate", type=float, default=0.02, help="share of demo API requests answered 429/503 (default 0.02)")
    p.set_defaults(command=run)

    p = demo.add_parser("serve", help="`interlink serve` with the demo systems standing in for what is not configured")
    p.add_argument("--limit", type=positive, default=None, help="most flow runs at once")
    p.add_argument("--wait-s", type=float, default=60, help="how long to wait for the Prefect API to come up")
    p.add_argument("--fault-rate", type=float, default=0.02, help="share of demo API requests answered 429/503 (default 0.02)")
    p.set_defaults(command=serve)

    p = demo.add_parser("mutate", help="change records in every demo system, so the next syncs have work")
    p.add_argument("--count", type=positive, default=25)
    p.set_defaults(command=mutate)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """The named integrations, or every one whose systems are configured or stood in for by the demo."""
    from demo_systems.wiring import demo_systems

    options = {"chunk_size": args.chunk_size} if args.chunk_size else {}
    with demo_systems(settings, args.fault_rate) as demo:
        return run_flows(demo, args.integrations or runnable(demo), "sync", **options)


def runnable(demo: Settings) -> list[str]:
    """The integrations whose every connection is usable in `demo`; a line on stderr for each of the others."""
    names = []
    for name, (_, pipeline) in integrations().items():
        try:
            demo.require(pipeline.connections)
        except ConfigError as exc:
            print(f"interlink demo: {name} skipped: the demo has no stand-in for it ({exc})", file=sys.stderr)
            continue
        names.append(name)
    return names


def serve(args: argparse.Namespace, settings: Settings) -> None:
    from demo_systems.wiring import demo_systems
    from interlink.cli import serve as serve_deployments

    with demo_systems(settings, args.fault_rate) as demo:
        serve_deployments(args, demo)


def mutate(args: argparse.Namespace, settings: Settings) -> None:
    from demo_systems.wiring import mutate as change

    for system, changed in change(settings, args.count).items():
        print(f"changed {len(changed)} {system}: {', '.join(changed[:8])}{' …' if len(changed) > 8 else ''}")
