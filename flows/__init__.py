"""Integrations, and the pipeline machinery they are made with (`pipeline`, `partitioned`, `reconcile`).

A project's integrations come from its `interlink.integrations` entry points, each naming a package (every module
in it that declares a `PIPELINE`), a module, or a `Pipeline`:

    [project.entry-points."interlink.integrations"]
    acme = "flows"                      # every module of the project's own `flows/` package

so adding an integration is adding a module: nothing lists them. `INTERLINK_INTEGRATIONS` names modules or packages
to take them from instead (the demo's are the example modules of this package: `interlink demo …` says so).
Each `Pipeline` makes its own flows (`PIPELINE.sync`, `.replay`, and `.reconcile` for a SQL target).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from functools import cache
from importlib.metadata import entry_points
from types import ModuleType
from typing import TYPE_CHECKING, Any

from interlink.connectors.errors import ConfigError

if TYPE_CHECKING:
    from interlink.flows.pipeline import Pipeline

CHUNK_ROWS = 50_000  # rows per batch by default, by measurement (README, "Measured"): fixed costs per batch amortise, three in flight stay small
ENTRY_POINTS = "interlink.integrations"


@cache
def integrations() -> dict[str, tuple[str, Pipeline]]:
    """Every integration by name, with the module that declares it."""
    from interlink.flows.pipeline import Pipeline

    from interlink.settings import Settings

    named = Settings.load().integrations
    if named:
        sources = [(name, lambda name=name: _module(name)) for name in named.replace(" ", "").split(",") if name]
    else:
        sources = [(entry.value, entry.load) for entry in entry_points(group=ENTRY_POINTS)]
    found: dict[str, tuple[str, Pipeline]] = {}
    for module, pipeline in (found_ for where, load in sources for found_ in _pipelines(where, load)):
        if not isinstance(pipeline, Pipeline):
            continue
        if pipeline.name in found and found[pipeline.name][1] is not pipeline:
            raise ConfigError(f"two integrations are named {pipeline.name!r}: in {found[pipeline.name][0]} and {module}")
        found.setdefault(pipeline.name, (module, pipeline))
    return dict(sorted(found.items()))


def _module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise ConfigError(f"INTERLINK_INTEGRATIONS names {name}, which is not an importable module: fix the name, or unset it "
                              f"to use the installed projects' {ENTRY_POINTS} entry points") from None
        raise


def _pipelines(where: str, load: Callable[[], Any]) -> Iterator[tuple[str, Any]]:
    """What `where` declares: its `PIPELINE` (a module), each module's (a package), or itself (a `Pipeline`)."""
    loaded = load()
    if not isinstance(loaded, ModuleType):
        yield where.split(":")[0], loaded
        return
    if hasattr(loaded, "PIPELINE"):
        yield loaded.__name__, loaded.PIPELINE
    for found in pkgutil.iter_modules(getattr(loaded, "__path__", [])):
        name = f"{loaded.__name__}.{found.name}"
        yield name, importlib.import_module(name).__dict__.get("PIPELINE")


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
    if not known:
        raise ConfigError(f"unknown integration {name!r}: this project has none; a project names its integrations in its "
                          f"{ENTRY_POINTS} entry points (`interlink init DIR` makes one that does), or set INTERLINK_INTEGRATIONS")
    if name not in known:
        raise ConfigError(f"unknown integration {name!r}; choose one of: {', '.join(known)}")
    return known[name]
