"""`interlink init` and `interlink new integration`: the project they make passes its own tests, runs its example, and
grows an integration per source and target that passes its tests as generated; each refusal is one line, exit 2.

The generated project runs in subprocesses of this environment, not installed: `PYTHONPATH` is the project and
`INTERLINK_INTEGRATIONS=flows` stands in for its entry point (installing the wheel in a fresh venv is test_wheel's).
"""

import json
import os
import sqlite3
import subprocess
import sys
import tomllib
from contextlib import closing
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from interlink.deployments.declaration import Declarations, read

from interlink import scaffold
from interlink.cli import main

BIN = Path(sys.executable).parent
PAIRS = [(source, target) for source in scaffold.SOURCES for target in scaffold.TARGETS]
TREE = {
    ".github/workflows/ci.yml", ".gitignore", "Makefile", "README.md", "prefect.toml", "pyproject.toml",
    "data_checks/__init__.py", "data_checks/customers.py", "deployments/connections.yaml", "deployments/deployments.yaml",
    "flows/__init__.py", "flows/customers_to_warehouse.py", "flows/sample_data.py",
    "tests/conftest.py", "tests/test_customers_to_warehouse.py",
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project of this module's (each xdist worker makes its own): the example's, then the integrations added to it."""
    made = tmp_path_factory.mktemp("projects") / "acme-integrations"
    scaffold.init(made)
    return made


def clean_env(project: Path) -> dict[str, str]:
    """This environment without the demo's project, Prefect's or pytest's settings: the generated project's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INTERLINK_", "PREFECT_", "PYTEST_"))}
    return env | {"PYTHONPATH": str(project), "INTERLINK_INTEGRATIONS": "flows", "PREFECT_HOME": str(project.parent / "prefect"),
                  "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def run(project: Path, *command: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=project, env=clean_env(project) | env, capture_output=True, text=True, timeout=600)


def test_init_makes_a_project_and_says_what_to_run_next(tmp_path: Path, capsys):
    project = tmp_path / "acme-integrations"
    assert main(["init", str(project)]) == 0
    out = capsys.readouterr().out
    assert "\n  flows/customers_to_warehouse.py\n  flows/sample_data.py\n" in out  # one file a line
    assert f"cd {project} && make run" in out and "make test" in out
    made = {str(path.relative_to(project)) for path in project.rglob("*") if path.is_file()}
    assert made == TREE

    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    major, minor = version("interlink").split(".")[:2]
    assert pyproject["project"]["name"] == "acme-integrations"
    assert pyproject["project"]["dependencies"] == [f"interlink>={major}.{minor},<{major}.{int(minor) + 1}"]
    assert pyproject["project"]["entry-points"]["interlink.integrations"] == {"acme_integrations": "flows"}
    assert pyproject["tool"]["setuptools"]["packages"] == ["flows", "data_checks"]
    assert yaml.safe_load((project / "deployments/connections.yaml").read_text()) == {"legacy": {"kind": "sql"}, "warehouse": {"kind": "sql"}}
    declared = Declarations.model_validate(yaml.safe_load((project / "deployments/deployments.yaml").read_text()))
    assert [(d.integration, d.flow) for d in declared.deployments] == [("customers_to_warehouse", "sync")]
    assert declared.integrations["customers_to_warehouse"].sla is not None
    assert run(project, str(BIN / "ruff"), "check", "--no-cache", ".").returncode == 0


@pytest.mark.parametrize(("directory", "cd"), [("my team/acme", "cd 'my team/acme' && make run"), (".", "\n  make run")])
def test_init_quotes_the_cd_step_and_leaves_it_out_in_the_folder_itself(tmp_path: Path, monkeypatch, capsys, directory, cd):
    (tmp_path / "acme").mkdir()
    monkeypatch.chdir(tmp_path / "acme")
    assert main(["init", directory]) == 0
    out = capsys.readouterr().out
    assert cd in out and out.count("cd ") == (directory != ".")


def test_the_project_says_where_interlink_comes_from_and_where_its_documentation_is(tmp_path: Path, monkeypatch):
    scaffold.init(tmp_path / "plain")
    readme, makefile = ((tmp_path / "plain" / name).read_text() for name in ("README.md", "Makefile"))
    ci = (tmp_path / "plain/.github/workflows/ci.yml").read_text()
    assert "## Where Interlink comes from" in readme and 'PIP_ARGS="--find-links path/to/dir-with-the-wheel"' in readme
    assert 'make test PIP_ARGS="--find-links path/to/dir-with-the-wheel"' in makefile
    assert "#   PIP_INDEX_URL: ${{ secrets.PIP_INDEX_URL }}" in ci and "#   PIP_EXTRA_INDEX_URL:" in ci
    assert yaml.safe_load(ci)["jobs"]["test"]["steps"][-1] == {"run": "make test"}  # commented out until set
    assert "Interlink's documentation: the tutorial, the how-to guides (REST and SQL sources" in readme
    assert "in its repository" not in readme

    class Metadata:
        def get_all(self, field: str) -> list[str]:
            return ["Source, https://git.example/interlink", "Documentation, https://docs.example/interlink"]

    monkeypatch.setattr(scaffold, "metadata", lambda name: Metadata())
    scaffold.init(tmp_path / "linked")
    assert "[Interlink's documentation](https://docs.example/interlink): the tutorial" in (tmp_path / "linked/README.md").read_text()


def test_make_runs_the_integrations_asked_for_and_gives_prefect_its_home_for_run_and_test(tmp_path: Path):
    scaffold.init(tmp_path / "acme")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INTERLINK_", "PREFECT_", "INTEGRATIONS", "MAKE"))}

    def planned(*argv: str) -> list[str]:  # what make would run, without running it
        done = subprocess.run(["make", "-n", *argv], cwd=tmp_path / "acme", env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return [line.rstrip() for line in done.stdout.splitlines()]

    home = f'mkdir -p "{tmp_path / "acme"}/.interlink/prefect"'
    assert planned("run")[-2:] == [home, ".venv/bin/interlink run"]
    assert planned("run", "INTEGRATIONS=customers_to_warehouse orders_to_erp")[-1] == (
        ".venv/bin/interlink run customers_to_warehouse orders_to_erp")
    assert planned("test")[-2:] == [home, ".venv/bin/python -m pytest"]


def test_the_example_delivers_the_sample_rows_and_dead_letters_the_hostile_ones(project: Path):
    from prefect.settings import PREFECT_API_URL

    urls = {"INTERLINK_LEGACY__URL": "sqlite:///data/legacy.db", "INTERLINK_WAREHOUSE__URL": "sqlite:///data/warehouse.db"}
    assert run(project, sys.executable, "-m", "flows.sample_data").returncode == 0
    # on this session's Prefect test server (tests/conftest.py), not a temporary one of its own: a minute less on a busy machine
    done = run(project, str(BIN / "interlink"), "run", "customers_to_warehouse", PREFECT_API_URL=PREFECT_API_URL.value(), **urls)
    assert done.returncode == 0, done.stderr
    assert "read 6, inserted 4, updated 0, unchanged 0, quarantined 2" in done.stdout
    with closing(sqlite3.connect(project / "data/warehouse.db")) as conn:
        assert [row for row in conn.execute("SELECT customer_id, name FROM customers ORDER BY customer_id")] == [
            (1, "Acme Tools"), (2, "Blue Nut"), (4, "Corvid Ltd"), (6, "Eider Oy")]
    listed = run(project, str(BIN / "interlink"), "dlq", "list", "--json", **urls)
    assert {(letter["record_key"], letter["stage"]) for letter in json.loads(listed.stdout)} == {("3", "check"), ("5", "check")}


def test_new_integrations_of_every_pair_pass_the_projects_tests_as_generated(project: Path, monkeypatch, capsys):
    monkeypatch.chdir(project)
    for source, target in PAIRS:
        reuse = ["--target-connection", "warehouse"] if (source, target) == ("sql", "sql") else []
        assert main(["new", "integration", f"{source}_to_{target}", "--source", source, "--target", target, *reuse]) == 0
        assert f"flows/{source}_to_{target}.py" in capsys.readouterr().out
    connections = yaml.safe_load((project / "deployments/connections.yaml").read_text())
    assert connections["folder_to_rest_source"] == {"kind": "folder"} and connections["folder_to_rest_target"]["kind"] == "rest"
    assert "sql_to_sql_target" not in connections and 'connection="warehouse",  # TODO' in (project / "flows/sql_to_sql.py").read_text()
    assert not any("url" in settings or "base_url" in settings for settings in connections.values())
    assert run(project, str(BIN / "ruff"), "check", "--no-cache", ".").returncode == 0

    tested = run(project, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider")
    assert tested.returncode == 0, tested.stdout[-3000:]
    assert f"{4 + 3 * len(PAIRS)} passed" in tested.stdout


def test_a_new_integration_is_declared_not_scheduled_and_says_what_it_needs_to_run(tmp_path: Path, monkeypatch, capsys):
    project = tmp_path / "acme"
    scaffold.init(project)
    declaration = project / "deployments/deployments.yaml"
    comments = [line for line in declaration.read_text().splitlines() if line.startswith("#")]
    monkeypatch.chdir(project)
    argv = ["new", "integration", "orders_to_erp", "--source", "rest", "--target", "sql", "--target-connection", "warehouse"]
    assert main(argv) == 0
    out = capsys.readouterr().out

    declared = read(declaration)
    assert str(declared.integrations["orders_to_erp"].owner).startswith("TODO")
    assert [d.integration for d in declared.deployments] == ["customers_to_warehouse"]
    assert [line for line in declaration.read_text().splitlines() if line.startswith("#")] == comments
    assert "\n  INTERLINK_ORDERS_TO_ERP_SOURCE__BASE_URL\n" in out and "WAREHOUSE" not in out
    assert "`interlink run orders_to_erp`" in out and "make run INTEGRATIONS=orders_to_erp" in out
    assert set(yaml.safe_load((project / "deployments/connections.yaml").read_text())) == {"legacy", "warehouse", "orders_to_erp_source"}
    module = (project / "flows/orders_to_erp.py").read_text()
    assert 'connection="orders_to_erp_source",  # TODO' in module and 'connection="warehouse",  # TODO' in module


@pytest.mark.parametrize(
    ("where", "argv", "says"),
    [
        ("project", ["init", "."], "is not empty"),
        ("outside", ["new", "integration", "orders", "--source", "sql", "--target", "sql"], "no integrations project in"),
        ("project", ["new", "integration", "customers_to_warehouse", "--source", "sql", "--target", "sql"], "exists already"),
        ("project", ["new", "integration", "orders-to-erp", "--source", "sql", "--target", "sql"], "is not an integration name"),
        ("project", ["new", "integration", "__init__", "--source", "sql", "--target", "sql"], "is not an integration name"),
        ("project", ["new", "integration", "orders", "--source", "rest", "--target", "rest", "--target-connection", "warehouse"],
         "'warehouse' is of kind sql, not rest"),
        ("outside", ["init", "my team/ints!"], "'ints!' is not a project name"),
    ],
)
def test_a_refusal_is_one_line_and_exit_2(tmp_path: Path, monkeypatch, capsys, where: str, argv: list[str], says: str):
    scaffold.init(tmp_path / "project")
    monkeypatch.chdir(tmp_path / where if where == "project" else tmp_path)
    before = sorted(tmp_path.rglob("*"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1
    assert sorted(tmp_path.rglob("*")) == before
