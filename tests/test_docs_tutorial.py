"""The tutorial (docs/tutorial.md), followed to the letter in a project `interlink init` makes, and the README's promises.

Every fenced block of the page is exercised, in order, and counted:
- `bash`: each command runs in the project, as a reader's shell would (an `export` sets the variable for the commands
  after it). Skipped, and why: `pip install …` (Interlink is installed in this repository's venv already), `cd …`
  (every command runs in the project), `prefect server start` and `interlink serve` (they run until stopped: the
  deployments `interlink serve` would register are built from the declaration instead, by `runner_deployments()`).
- `text` titled with the project's folder: the tree `interlink init` writes (but packages' `__init__.py`). Untitled `text`: output of the
  bash block before it; each line, `…` standing for anything, is in that output.
- `python` and `yaml` titled with a path: written into the project; Python is linted, YAML read by Interlink's loaders.

The project's `.venv` is this repository's: `.venv/bin/{python,interlink,prefect}` are scripts that run this venv's,
and `.venv/.installed` is fresh, so `make` uses them as it would a venv it made. The project itself is not
pip-installed here, so its integrations are found through `INTERLINK_INTEGRATIONS=flows` with `PYTHONPATH` the project.
After the page, the tutorial's integration also runs into PostgreSQL, incrementally, and is reconciled there.
"""

from __future__ import annotations

import os
import re
import shlex
import sqlite3
import subprocess
import sys
import types
from contextlib import closing
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from interlink.deployments.declaration import read
from prefect.settings import PREFECT_API_URL

from interlink.settings import declared_connections
from tests.conftest import service_url
from tests.docs_blocks import Block, blocks

ROOT = Path(__file__).parents[1]
VENV = Path(sys.executable).parent
PAGE = "tutorial.md"
LONG_RUNNING = ("prefect server start", "interlink serve")  # run until stopped: checked through runner_deployments()
PROJECT_NAME = "acme-integrations"


class Reader:
    """A reader's shell in the project: a clean environment, the commands of each bash block, what they printed."""

    def __init__(self, where: Path):
        self.where = where  # the folder `interlink init` runs in; the project below it once made
        self.project = where / PROJECT_NAME
        self.env = {"PATH": f"{VENV}:/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", str(where)),
                    "LANG": "C.UTF-8", "INTERLINK_INTEGRATIONS": "flows", "PYTHONPATH": str(self.project)}
        self.output = ""  # of the last bash block
        self.ran: list[str] = []

    def bash(self, block: Block) -> None:
        self.output = ""
        for command in _commands(block.code):
            if command.startswith(("pip install ", "cd ")):
                continue
            if command.startswith("export "):
                for assignment in shlex.split(command)[1:]:
                    name, value = assignment.split("=", 1)
                    self.env[name] = value
                continue
            if any(long in command for long in LONG_RUNNING):
                self.ran.append(f"skipped: {command}")
                continue
            cwd = self.project if self.project.is_dir() else self.where
            done = subprocess.run(command, shell=True, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=1200)
            assert done.returncode == 0, f"{command!r} exited {done.returncode}:\n{done.stdout}\n{done.stderr[-5000:]}"
            self.output += done.stdout
            self.ran.append(command)
            if command == "interlink init " + PROJECT_NAME:
                _venv_of_this_repository(self.project)


def _commands(code: str) -> list[str]:
    """The commands of a bash block: one a line, comments dropped."""
    return [line.split("  #")[0].strip() for line in code.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _venv_of_this_repository(project: Path) -> None:
    bin_ = project / ".venv" / "bin"
    bin_.mkdir(parents=True)
    for name in ("python", "interlink", "prefect"):
        (bin_ / name).write_text(f'#!/bin/sh\nexec {VENV / name} "$@"\n')
        (bin_ / name).chmod(0o755)
    (project / ".venv" / ".installed").touch()  # newer than pyproject.toml: make installs nothing


def _matches(expected: str, output: str) -> list[str]:
    """The lines of `expected` that no line of `output` matches (`…` stands for anything, runs of spaces for one)."""
    lines = [" ".join(line.split()) for line in output.splitlines()]
    missing = []
    for want in filter(str.strip, expected.splitlines()):
        pattern = ".*".join(re.escape(" ".join(part.split())) for part in want.split("…"))
        if not any(re.search(pattern, line) for line in lines):
            missing.append(want)
    return missing


def _tree(project: Path) -> set[str]:
    """The project's files but its packages' `__init__.py` and the stand-in `.venv`."""
    return {str(path.relative_to(project)) for path in project.rglob("*")
            if path.is_file() and path.name != "__init__.py" and ".venv" not in path.parts}


def _yaml(reader: Reader, block: Block) -> None:
    path = reader.project / block.title
    before = yaml.safe_load(path.read_text())
    shown = yaml.safe_load(block.code)
    if block.title == "deployments/connections.yaml":  # the project's connections, without the placeholders `new` added
        assert shown == {name: value for name, value in before.items() if not name.startswith("suppliers_to_warehouse_")}
        path.write_text(block.code)
        assert set(declared_connections(path)) == {"legacy", "warehouse"}
    else:  # the project's declaration, and the new integration's owner and deployment
        declared_by_new = before["integrations"].pop("suppliers_to_warehouse")  # `interlink new` declared it, its owner a TODO
        assert "TODO" in declared_by_new["owner"]["team"] and "TODO" not in str(shown["integrations"]["suppliers_to_warehouse"])
        assert shown["integrations"].items() >= before["integrations"].items()
        assert all(entry in shown["deployments"] for entry in before["deployments"])
        assert {k: v for k, v in shown.items() if k not in ("integrations", "deployments")} == {
            k: v for k, v in before.items() if k not in ("integrations", "deployments")}
        path.write_text(block.code)
        declared = read(path)
        assert [d.name for d in declared.deployments] == ["customers_to_warehouse", "suppliers_to_warehouse"]


@pytest.fixture(scope="module")
def followed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Reader, list[Block], int]:
    """The page followed from the first block to the last; the reader, the blocks, and how many were exercised."""
    reader = Reader(tmp_path_factory.mktemp("reader"))
    page = blocks(PAGE)
    exercised = 0
    for block in page:
        if block.lang == "bash":
            reader.bash(block)
        elif block.lang == "text" and block.title == PROJECT_NAME:
            listed = {line.split("#")[0].strip() for line in block.code.splitlines() if line.strip()}
            assert listed == _tree(reader.project)
        elif block.lang == "text":
            assert not _matches(block.code, reader.output), f"line {block.line}: not in the output:\n{reader.output}"
        elif block.lang == "python" and block.title:
            (reader.project / block.title).write_text(block.code)
        elif block.lang == "yaml" and block.title:
            _yaml(reader, block)
        else:
            continue
        exercised += 1
    return reader, page, exercised


def test_every_block_of_the_tutorial_is_exercised(followed):
    reader, page, exercised = followed
    assert exercised == len(page)
    assert [command for command in reader.ran if command.startswith("skipped")] == [
        "skipped: .venv/bin/prefect server start", "skipped: .venv/bin/interlink serve"]


def test_the_tutorial_says_what_its_commands_print(followed):
    reader, _, _ = followed
    text = (ROOT / "docs" / PAGE).read_text()
    version = subprocess.run([VENV / "interlink", "--version"], capture_output=True, text=True, check=True).stdout.strip()
    assert f"It prints `{version}`" in text


def test_the_python_the_tutorial_writes_is_lint_clean(followed):
    reader, page, _ = followed
    files = [block.title for block in page if block.lang == "python"]
    done = subprocess.run([VENV / "ruff", "check", "--select", "F,E9,I,UP", *files], cwd=reader.project, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_interlink_serve_would_serve_both_integrations_as_declared(followed):
    reader, _, _ = followed
    script = ("from interlink.deployments.runner import runner_deployments\n"
              "for d in runner_deployments():\n"
              "    print(d.name, d.schedules[0].schedule.cron, d.schedules[0].schedule.timezone, d.description.splitlines()[0])\n")
    done = subprocess.run([reader.project / ".venv" / "bin" / "python", "-c", script], cwd=reader.project, env=reader.env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == [
        "customers_to_warehouse 0 2 * * * Europe/Berlin Owner: Data (#data-integrations)",
        "suppliers_to_warehouse 0 3 * * * Europe/Berlin Owner: Data (#data-integrations)",
    ]


def test_the_tutorials_integration_runs_incrementally_into_postgresql(followed):
    reader, _, _ = followed
    legacy = reader.project / "data" / "legacy.db"
    env = {**reader.env, "INTERLINK_LEGACY__URL": f"sqlite:///{legacy}", "INTERLINK_WAREHOUSE__URL": service_url("postgresql", "tutorial"),
           "INTERLINK_HOME": str(reader.project / ".interlink-postgresql"),
           "PREFECT_API_URL": PREFECT_API_URL.value()}  # the test session's Prefect API: no temporary one started per command

    def interlink(*args: str) -> str:
        done = subprocess.run([reader.project / ".venv" / "bin" / "interlink", *args], cwd=reader.project, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr[-3000:]
        return done.stdout

    def warehouse() -> dict[int, tuple]:
        engine = sa.create_engine(env["INTERLINK_WAREHOUSE__URL"])
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT supplier_id, name, email, country FROM suppliers")).all()
        engine.dispose()
        return {row[0]: tuple(row[1:]) for row in rows}

    assert "read 5, inserted 4, updated 0, unchanged 0, quarantined 1" in interlink("run", "suppliers_to_warehouse")
    assert warehouse() == {
        1: ("Acme Tools", "sales@acme.example", "DE"),
        2: ("Blue Nut", None, None),  # NULLs stay NULL
        3: ("Corvid Ltd", "orders@corvid.example", "GB"),
        5: ("Dane & Sons", None, "DK"),
    }
    assert "read 1, inserted 0, updated 0, unchanged 1" in interlink("run", "suppliers_to_warehouse")  # the row at the watermark

    with closing(sqlite3.connect(legacy)) as conn, conn:
        conn.execute("UPDATE suppliers SET country = 'se', changed_at = '2026-03-04 07:00:00' WHERE id = 2")
        conn.execute("INSERT INTO suppliers VALUES (6, 'Eider Oy', NULL, 'fi', '2026-03-04 07:00:00')")  # the same second
        conn.execute("UPDATE suppliers SET changed_at = '2026-03-04 07:00:00' WHERE id = 3")  # touched, not changed
    assert "read 4, inserted 1, updated 1, unchanged 2, quarantined 0" in interlink("run", "suppliers_to_warehouse")
    assert warehouse()[2] == ("Blue Nut", None, "SE") and warehouse()[6] == ("Eider Oy", None, "FI")

    with closing(sqlite3.connect(legacy)) as conn, conn:  # a row committed late, at the watermark's exact time
        conn.execute("INSERT INTO suppliers VALUES (7, 'Fulmar AB', NULL, 'se', '2026-03-04 07:00:00')")
    assert "inserted 1, updated 0" in interlink("run", "suppliers_to_warehouse")
    assert warehouse()[7] == ("Fulmar AB", None, "SE")
    assert "missing 0, extra 0, changed 0" in interlink("reconcile", "suppliers_to_warehouse")


def test_the_tutorials_integration_is_as_short_as_the_pipeline_page_says():
    sizes = {block.title: len(block.code.splitlines()) for block in blocks(PAGE) if block.lang == "python"}
    assert sizes["flows/suppliers_to_warehouse.py"] < 50 and sizes["data_checks/suppliers_to_warehouse.py"] < 20
    assert "a module of under 50\nlines (a transform and the `Pipeline` that names the rest) and a suite of under 20" in (
        ROOT / "docs" / "concepts" / "pipeline.md").read_text()


def test_the_readme_integration_maps_and_checks_as_declared():
    [code] = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    module = types.ModuleType("readme_integration")
    exec(compile(code, "README.md", "exec"), module.__dict__)
    pipeline = module.PIPELINE
    assert (pipeline.name, pipeline.connections) == ("suppliers_to_warehouse", ["legacy", "warehouse"])
    rows = pipeline.transform(pd.DataFrame({"id": ["1", "2"], "name": [" Acme  Tools ", " "], "country": ["uk", None]}, index=[4, 7]))
    assert rows.astype(object).where(rows.notna(), None).to_dict("index") == {
        4: {"supplier_id": 1, "name": "Acme Tools", "country": "GB"}, 7: {"supplier_id": 2, "name": None, "country": None}}
    [expectation] = pipeline.suite().expectations
    assert expectation.column == "name"


def test_the_readme_is_short_and_keeps_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert "make demo   # runs the four integrations end to end against the embedded demo systems" in readme
    assert "make test   # lint + the whole test suite" in readme
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).is_file(), link


def test_the_demo_runs_what_it_can_stand_in_for_and_says_what_it_skips(followed, home, monkeypatch, capsys):
    """An integration whose connection is not declared (the tutorial's, beside the demo's) is skipped, saying why."""
    from interlink.demo_systems.cli import runnable
    from interlink.demo_systems.wiring import demo_systems

    from interlink import flows
    from interlink.settings import Settings

    reader, page, _ = followed
    module, suite = (block.code for block in page if block.title in ("flows/suppliers_to_warehouse.py",
                                                                      "data_checks/suppliers_to_warehouse.py"))
    probe = home.parent / "probe"
    probe.mkdir()
    (probe / "tutorial_suppliers.py").write_text(suite + module.replace(
        "from data_checks.suppliers_to_warehouse import suppliers_to_warehouse_suite\n", ""))
    monkeypatch.syspath_prepend(str(probe))
    monkeypatch.setenv("INTERLINK_INTEGRATIONS", "interlink.flows,tutorial_suppliers")
    monkeypatch.setenv("INTERLINK_LEGACY__URL", f"sqlite:///{reader.project / 'data' / 'legacy.db'}")
    flows.integrations.cache_clear()
    try:
        with demo_systems(Settings.load(), fault_rate=0) as demo:
            names = runnable(demo)
    finally:
        flows.integrations.cache_clear()
    assert names == ["crm_to_billing", "inventory_to_storefront", "invoices_to_billing", "orders_to_erp"]
    err = capsys.readouterr().err
    assert "suppliers_to_warehouse skipped" in err and "connection 'warehouse' is not declared" in err


CONCEPTS = ["index.md", *(f"concepts/{name}.md" for name in ("pipeline", "watermark", "gate", "dead-letters", "ledger"))]


@pytest.mark.parametrize("page", CONCEPTS)
def test_the_overview_pages_blocks_are_true(page: str, capsys):
    """index.md and the concept pages: a diagram, a command whose options Interlink's CLI accepts, YAML that parses,
    a Python declaration that constructs; `make demo` and `make test` as the Makefile has them."""
    from interlink.tasks.ingest import SqlSource

    from interlink.cli import main

    for block in blocks(page):
        if block.lang == "text":
            assert "──>" in block.code
        elif block.lang == "bash":
            for command in _commands(block.code):
                assert command.startswith("interlink "), command
                assert main([*shlex.split(command)[1:], "--help"]) == 0, command
        elif block.lang == "yaml":
            assert isinstance(yaml.safe_load(block.code), dict)
        elif block.lang == "python":
            assert isinstance(eval(block.code, {"SqlSource": SqlSource}), SqlSource)
        else:
            assert block.lang == "sh" and _commands(block.code) == ["make demo", "make test"]
            makefile = (ROOT / "Makefile").read_text()
            assert "\ndemo: $(INSTALLED)\n" in makefile and "\ntest: $(INSTALLED) tools\n" in makefile
    capsys.readouterr()
