"""Which project Interlink works on: a team's (the working directory, its entry points), or the demo's (`interlink demo`).

The demo's example integrations sit in `interlink.flows` and its declaration and connections in `interlink.deployments`,
but only `interlink demo …` (and this repository's tests, through DEMO_PROJECT) ever look there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from interlink.demo_systems.cli import DEMO_PROJECT, demo_project

from interlink import flows
from interlink.cli import main


def interlink(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("INTERLINK_")} | env
    return subprocess.run([sys.executable, "-m", "interlink.cli", *args], cwd=cwd, env=clean, capture_output=True, text=True)


def test_outside_a_project_a_command_says_so_in_one_line(tmp_path: Path):
    done = interlink("status", cwd=tmp_path, INTERLINK_HOME=str(tmp_path / "home"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert f"no deployments/connections.yaml in {tmp_path}" in done.stderr and "interlink init" in done.stderr


def test_a_project_without_a_declaration_names_the_file(tmp_path: Path):
    (tmp_path / "deployments").mkdir()
    (tmp_path / "deployments" / "connections.yaml").write_text("warehouse: {kind: sql}\n")
    done = interlink("status", cwd=tmp_path, INTERLINK_HOME=str(tmp_path / "home"))
    assert done.returncode == 2 and "no deployments/deployments.yaml in" in done.stderr


def test_the_demo_integrations_are_not_a_projects(tmp_path: Path):
    """This repository holds the demo's examples, but without the demo's setting none of them is an integration."""
    repo = Path(__file__).parents[1]
    done = interlink("run", "crm_to_billing", cwd=repo, INTERLINK_HOME=str(tmp_path / "home"))
    assert done.returncode == 2
    assert "this project has none" in done.stderr and "interlink.integrations entry points" in done.stderr


def test_a_misspelt_integrations_module_is_one_line(tmp_path: Path):
    done = interlink("run", "x", cwd=Path(__file__).parents[1], INTERLINK_HOME=str(tmp_path / "home"),
                     INTERLINK_INTEGRATIONS="interlink.flowz")
    assert done.returncode == 2 and "INTERLINK_INTEGRATIONS names interlink.flowz" in done.stderr


def test_integrations_come_from_the_named_package(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch):
    """A package named by INTERLINK_INTEGRATIONS (as an entry point names one): each module with a PIPELINE, no other."""
    package = tmp_path / "acme_flows"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helpers.py").write_text("PIPELINE = 'not a pipeline'\n")
    (package / "invoices.py").write_text(
        "from dataclasses import replace\n"
        "from interlink.flows.invoices_to_billing import PIPELINE as EXAMPLE\n"
        "PIPELINE = replace(EXAMPLE, name='acme_invoices')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("INTERLINK_INTEGRATIONS", "acme_flows")
    flows.integrations.cache_clear()
    try:
        assert list(flows.integrations()) == ["acme_invoices"]
        assert flows.integrations()["acme_invoices"][0] == "acme_flows.invoices"
    finally:
        flows.integrations.cache_clear()


def test_the_demo_works_on_its_own_project(monkeypatch: pytest.MonkeyPatch):
    for variable in DEMO_PROJECT:
        monkeypatch.delenv(variable, raising=False)
    demo_project()
    assert {v: os.environ[v] for v in DEMO_PROJECT} == DEMO_PROJECT
    assert all(Path(os.environ[v]).is_file() for v in ("INTERLINK_DEPLOYMENTS_FILE", "INTERLINK_CONNECTIONS_FILE"))


def test_version(capsys):
    from importlib.metadata import version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"interlink {version('interlink')}\n"


def test_the_demo_run_in_a_teams_project_keeps_to_itself(tmp_path: Path):
    """`interlink demo …` inside a team's project: its runs and dead letters in its own home, none in the team's, and
    neither project's commands show the other's integrations."""
    from interlink.scaffold import init

    project = tmp_path / "acme"
    init(project)
    team = {"INTERLINK_INTEGRATIONS": "flows", "PYTHONPATH": str(project)}  # what the project's entry point names
    assert interlink("demo", "run", "invoices_to_billing", cwd=project).returncode == 0
    demo_runs = json.loads(interlink("demo", "runs", "--json", cwd=project).stdout)
    assert {run["integration"] for run in demo_runs} == {"invoices_to_billing"}
    assert (project / ".interlink" / "demo" / "interlink.db").is_file()
    assert json.loads(interlink("runs", "--json", cwd=project, **team).stdout) == []  # the team's ledger: untouched
    assert json.loads(interlink("dlq", "list", "--json", cwd=project, **team).stdout) == []
    team_status = json.loads(interlink("status", "--json", cwd=project, **team).stdout)
    assert [row["integration"] for row in team_status] == ["customers_to_warehouse"]
    demo_status = json.loads(interlink("demo", "status", "--json", cwd=project).stdout)
    assert "customers_to_warehouse" not in {row["integration"] for row in demo_status}
