"""`interlink init DIR` and `interlink new integration NAME`: a team's integrations project, and an integration in it.

What they write are the plain files under `interlink/templates/` (`project/`, `integration/`), each `@{name}` in
them replaced by its value; a path part `dot-x` is written `.x`, and the `.tmpl` suffix is dropped.
"""

from __future__ import annotations

import keyword
import re
import string
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, metadata, version
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

import yaml

from interlink.connectors.errors import ConfigError

SOURCES = ("rest", "sql", "folder")
TARGETS = ("sql", "rest")
ENTRY_POINTS = '[project.entry-points."interlink.integrations"]'
KINDS = {"rest": "REST", "sql": "SQL", "folder": "files"}  # as the integration's docstring names them
CONNECTIONS = Path("deployments/connections.yaml")
DECLARATIONS = Path("deployments/deployments.yaml")
PROJECT_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")  # a distribution name (PEP 508)
VARIABLES = {"rest": "BASE_URL", "sql": "URL", "folder": "PATH"}  # where a connection of each kind is: INTERLINK_<NAME>__…
DOCUMENTATION = ("the tutorial, the how-to guides (REST and SQL sources, drop folders, REST targets, deploying, operating) "
                 "and the reference (pipeline, sources, targets, checks, settings, CLI, testing)")
IMPORTS = {  # what each source and target needs, besides what every integration imports
    "rest": ["from interlink.tasks.ingest import RestSource"],
    "sql": ["from interlink.tasks.ingest import SqlSource"],
    "folder": ["from interlink.tasks.ingest import FolderSource"],
    "target-sql": [
        "import sqlalchemy as sa", "from interlink.connectors.sql import Timestamp",
        "from interlink.tasks.deliver import SqlTarget, tracked_table",
    ],
    "target-rest": ["from interlink.tasks.send import RestTarget"],
}
CONNECTION_LINES = {  # a connection of each kind in connections.yaml; where it is comes from the environment
    "rest": "  kind: rest                               # INTERLINK_{var}__BASE_URL (and __AUTH__… for its credentials)\n"
            "  health_path: /                           # TODO: a cheap GET that needs valid credentials\n",
    "sql": "  kind: sql                                # INTERLINK_{var}__URL, a SQLAlchemy URL\n",
    "folder": "  kind: folder                             # INTERLINK_{var}__PATH, the folder files are dropped in\n",
}


class _Template(string.Template):
    """Only `@{name}` is a placeholder: Python, YAML, Makefiles and e-mail addresses keep their `$`, `{` and `@`."""

    delimiter = "@"
    pattern = r"@(?:(?P<escaped>(?!))|(?P<named>(?!))|\{(?P<braced>[a-z_]+)\}|(?P<invalid>(?!)))"


@dataclass(frozen=True)
class Added:
    """What `new_integration` did: the files it wrote, and the environment variables its new connections need."""

    written: list[Path]
    variables: list[str]


def init(directory: Path) -> list[Path]:
    """Write a new integrations project into `directory` (missing or empty); the files written, relative to it."""
    directory = directory.resolve()
    if not PROJECT_NAME.fullmatch(directory.name):
        raise ConfigError(f"{directory.name!r} is not a project name (the folder's name is the project's, a Python distribution name): use "
                          "letters, digits, '-', '_' and '.', beginning and ending with a letter or digit, e.g. acme-integrations")
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ConfigError(f"{directory} is not empty: `interlink init` makes a project in a new or empty folder")
    project = directory.name
    major, minor = (int(part) for part in re.findall(r"\d+", version("interlink"))[:2])
    values = {"project": project, "package": re.sub(r"\W+", "_", project).strip("_").lower() or "integrations",
              "interlink_spec": f">={major}.{minor},<{major}.{minor + 1}", "documentation": _documentation()}
    rendered = sorted(_rendered(files("interlink.templates") / "project", Path(), values))
    return [_write(directory, path, text) for path, text in rendered]


def new_integration(name: str, source: str, target: str, project: Path | None = None, *,
                    source_connection: str | None = None, target_connection: str | None = None) -> Added:
    """Add integration `name` (`source` → `target`) to the project in `project` (default: the working directory): its
    module, suite and test, its owner (to fill in) in `deployments/deployments.yaml` but no schedule, and the connections
    it names in `deployments/connections.yaml`: `source_connection`/`target_connection` (each one declared already must be
    of its kind), by default new ones `NAME_source` and `NAME_target`. Nothing is written if anything is amiss."""
    project = (project or Path.cwd()).resolve()
    _require_project(project)
    if not _lower_identifier(name) or name.startswith("_"):
        raise ConfigError(f"{name!r} is not an integration name: use a lower-case Python identifier not beginning with '_', "
                          "e.g. orders_to_erp")
    if source not in SOURCES or target not in TARGETS:
        raise ConfigError(f"--source is one of {', '.join(SOURCES)} and --target one of {', '.join(TARGETS)}")
    made = [Path("flows", f"{name}.py"), Path("data_checks", f"{name}.py"), Path("tests", f"test_{name}.py")]
    if existing := [str(path) for path in made if (project / path).exists()]:
        raise ConfigError(f"integration {name!r} exists already ({', '.join(existing)}): choose another name")
    uses = [(source_connection or f"{name}_source", source), (target_connection or f"{name}_target", target)]
    connections, new = _connections(project / CONNECTIONS, uses)
    templates = files("interlink.templates") / "integration"
    values = {"name": name, "suite": f"{name}_suite", "source_kind": KINDS[source], "target_kind": KINDS[target],
              "source_connection": uses[0][0], "target_connection": uses[1][0]}
    values["source"] = _render(templates / f"source-{source}.tmpl", values).rstrip()
    values["target"] = _render(templates / f"target-{target}.tmpl", values).rstrip()
    values["imports"] = _imports(name, source, target)
    texts = [_render(templates / "flow.py.tmpl", values), _render(templates / "suite.py.tmpl", values),
             _render(templates / "test.py.tmpl", values)]
    changed = list(zip(made, texts, strict=True))
    changed += [(path, text) for path, text in ((DECLARATIONS, _declare(project / DECLARATIONS, name)),
                                                 (CONNECTIONS, connections)) if text is not None]
    written = [_write(project, path, text) for path, text in changed]
    return Added(written, [f"INTERLINK_{connection.upper()}__{VARIABLES[kind]}" for connection, kind in new.items()])


def _lower_identifier(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name) and name.islower()


def _documentation() -> str:
    """Where Interlink's documentation is: the installed distribution's `Documentation` URL if it has one, and its parts."""
    try:
        urls = metadata("interlink").get_all("Project-URL") or []
    except PackageNotFoundError:
        urls = []
    url = next((where.strip() for label, _, where in (entry.partition(",") for entry in urls)
                if label.strip().lower() == "documentation"), None)
    return f"[Interlink's documentation]({url}): {DOCUMENTATION}" if url else f"Interlink's documentation: {DOCUMENTATION}"


def _require_project(project: Path) -> None:
    pyproject = project / "pyproject.toml"
    if not pyproject.is_file() or ENTRY_POINTS not in pyproject.read_text():
        raise ConfigError(f"no integrations project in {project} (a pyproject.toml with {ENTRY_POINTS}): "
                          "run this in one, or make one with `interlink init DIR`")


def _imports(name: str, source: str, target: str) -> str:
    """The module's imports, sorted as ruff's isort sorts them: third-party (`import`, then `from`), then the project's."""
    found = {"import pandas as pd", "from interlink.flows.pipeline import Pipeline",
             "from interlink.tasks.transform import blank_to_na", *IMPORTS[source], *IMPORTS[f"target-{target}"]}
    ordered = sorted(found, key=lambda line: (line.startswith("from"), line.split()[1]))
    return "\n".join(ordered) + f"\n\nfrom data_checks.{name} import {name}_suite"


def _connections(path: Path, uses: list[tuple[str, str]]) -> tuple[str | None, dict[str, str]]:
    """`path`'s text with each connection of `uses` (name, kind) it lacks appended (None if it lacks none), and those
    connections; a connection it declares must be of the kind it is used as."""
    text = path.read_text() if path.exists() else ""
    declared = yaml.safe_load(text) or {}
    missing: dict[str, str] = {}
    for connection, kind in uses:
        if not _lower_identifier(connection):
            raise ConfigError(f"{connection!r} is not a connection name: use a lower-case Python identifier, e.g. warehouse")
        has = (declared.get(connection) or {}).get("kind") if connection in declared else missing.get(connection)
        if has is not None and has != kind:
            raise ConfigError(f"connection {connection!r} is of kind {has}, not {kind}: name a {kind} connection, "
                              f"or a new one to add to {CONNECTIONS}")
        if connection not in declared:
            missing[connection] = kind
    if not missing:
        return None, {}
    added = "".join(f"{name}:\n" + CONNECTION_LINES[kind].format(var=name.upper()) for name, kind in missing.items())
    return text + ("\n" if text and not text.endswith("\n") else "") + added, missing


def _declare(path: Path, name: str) -> str | None:
    """`path`'s text with integration `name` added to its `integrations:`, its owner to fill in (None if it is there
    already); its comments kept, and no deployment: a skeleton is not scheduled."""
    text = path.read_text() if path.exists() else ""
    declared = yaml.safe_load(text) or {}
    if name in (declared.get("integrations") or {}):
        return None
    entry = [f"{name}:  # TODO: its owner; schedule it under `deployments:` once it runs\n",
             '  owner: {team: "TODO: team", contact: "TODO: #channel or team address"}\n']
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    start = next((i for i, line in enumerate(lines) if re.fullmatch(r"integrations:\s*(#.*)?", line.rstrip("\n"))), None)
    if start is None and declared.get("integrations") is not None:
        raise ConfigError(f"{DECLARATIONS} writes `integrations:` on one line: write it as a block, then add {name!r} again")
    if start is None:
        lines += ["integrations:\n"] + [f"  {line}" for line in entry]
    else:  # after the mapping's last entry, before the comments and blank lines that lead to the next key
        end = next((i for i in range(start + 1, len(lines)) if lines[i][:1] not in (" ", "\t", "#", "\n")), len(lines))
        while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].startswith("#")):
            end -= 1
        body = [line for line in lines[start + 1:end] if line.strip() and not line.lstrip().startswith("#")]
        indent = re.match(r"[ \t]*", body[0]).group() if body else "  "
        lines[end:end] = [indent + line for line in entry]
    changed = "".join(lines)
    if name not in ((yaml.safe_load(changed) or {}).get("integrations") or {}):
        raise ConfigError(f"{DECLARATIONS}: could not add {name!r} to its `integrations:`: add it by hand")
    return changed


def _rendered(folder: Traversable, under: Path, values: dict[str, str]) -> list[tuple[Path, str]]:
    """Every template below `folder`, as (path to write, text)."""
    found: list[tuple[Path, str]] = []
    for entry in folder.iterdir():
        name = "." + entry.name[4:] if entry.name.startswith("dot-") else entry.name
        if entry.is_dir() and name != "__pycache__":
            found += _rendered(entry, under / name, values)
        elif name.endswith(".tmpl"):
            found.append((under / name.removesuffix(".tmpl"), _render(entry, values)))
    return found


def _render(template: Traversable, values: dict[str, str]) -> str:
    return _Template(template.read_text(encoding="utf-8")).substitute(values)


def _write(root: Path, path: Path, text: str) -> Path:
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_text(text, encoding="utf-8")
    return path
