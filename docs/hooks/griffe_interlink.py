"""A Griffe extension: the repository's folders installed as `interlink.flows`, `interlink.tasks`, … (setuptools'
package-dir) are loaded as those subpackages of `interlink`.

Griffe reads the editable install's finder only for its search paths, so statically `interlink` is the folder
`interlink/` alone and `interlink.flows` is not found. Each subpackage's folder comes from the import system (the
editable finder's mapping, or the installed package), without importing it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import griffe

SUBPACKAGES = ("flows", "tasks", "connectors", "data_checks", "deployments", "demo_systems")


class MappedSubpackages(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: object) -> None:
        if pkg.name != "interlink":
            return
        for name in SUBPACKAGES:
            if name in pkg.members:  # a regular install: already a folder of interlink/
                continue
            spec = importlib.util.find_spec(f"interlink.{name}")
            if spec is None or not spec.submodule_search_locations:
                continue
            folder = Path(next(iter(spec.submodule_search_locations)))
            module = loader.load(folder, try_relative_path=True)  # loaded as the top-level package `name` …
            loader.modules_collection.del_member(name)
            pkg.set_member(name, module)  # … and moved under `interlink`
