"""Integrations: each module here that declares a `PIPELINE`, plus any `interlink.integrations` entry point.

Adding an integration is adding a module: nothing lists them. Each `Pipeline` makes its own
flows (`PIPELINE.sync`, `.replay`, and `.reconcile` for a SQL target).
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from connectors.errors import ConfigError

if TYPE_CHECKING:
    from flows.pipeline import Pipeline

CHUNK_ROWS = 50_000  # rows per batch by default, by measurement (README, "Measured"): fixed costs per batch amortise, three in flight stay small
ENTRY_POINTS = "interlink.integrations"  # for integrations packaged elsewhere: `name = "package.module:PIPELINE"`


@cache
def integrations() -> dict[str, tuple[str, Pipeline]]:
    """Every integration by name, with the module that declares it."""
    from flows.pipeline import Pipeline

    found: dict[str, tuple[str, Pipeline]] = {}
    candidates = [(f"{__name__}.{m.name}", lambda m=m: importlib.import_module(f"{__name__}.{m.name}").__dict__.get("PIPELINE"))
                  for m in pkgutil.iter_modules(__path__)]
    candidates += [(entry.value.split(":")[0], entry.load) for entry in entry_points(group=ENTRY_POINTS)]
    for module, load in candidates:
        pipeline = load()
        if not isinstance(pipeline, Pipeline):
            continue
        if pipeline.name in found and found[pipeline.name][1] is not pipeline:
            raise ConfigError(f"two integrations are named {pipeline.name!r}: in {found[pipeline.name][0]} and {module}")
        found.setdefault(pipeline.name, (module, pipeline))
    return dict(sorted(found.items()))


def integration(name: str) -> Pipeline:
    """The pipeline of integration `name`."""
    return _found(name)[1]


def users() -> dict[str, list[str]]:
    """The integrations that use each connection, by connection name."""
    found: dict[str, list[str]] = {}
    for name, (_, pipeline) in integrations().items():
        for connection in dict.fromkeys(pipeline.connections):
            found.setdefault(connection, []).append(name)
    return found


def sensitive_columns() -> dict[str, tuple[str, ...]]:
    """Each integration's sensitive fields (`Gate.masked`), whose values are masked wherever they are shown."""
    return {name: pipeline.gate.masked for name, (_, pipeline) in integrations().items()}


def _found(name: str) -> tuple[str, Pipeline]:
    known = integrations()
    if name not in known:
        raise ConfigError(f"unknown integration {name!r}; choose one of: {', '.join(known)}")
    return known[name]
