"""Interlink as a team gets it: the wheel built from this repository, installed into a fresh environment outside it,
`interlink init`, the new project's own tests and its example integration (on SQLite, then on PostgreSQL), then
`interlink new integration` and all of it again.

The environment is made by uv (a dependency of the test extra) from the same constraints as ours: seconds, not the
minutes pip takes. Nothing of this repository is on the project's path: what runs is what the wheel installed.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import zipfile
from contextlib import closing
from importlib.metadata import version
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import service_url

ROOT = Path(__file__).parents[1]
UV = Path(sys.executable).with_name("uv")
EXAMPLE = "customers_to_warehouse"


def run(*args: object, cwd: Path, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and done.returncode:
        raise AssertionError(f"{' '.join(map(str, args))} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built the way a release is: an sdist of the repository, and the wheel from that sdist."""
    out = tmp_path_factory.mktemp("dist")
    run(UV, "build", "--quiet", "--out-dir", out, ROOT, cwd=out, env=os.environ | {"UV_NO_PROGRESS": "1"})
    [built] = out.glob("interlink-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment outside the repository, with the wheel installed in it."""
    where = tmp_path_factory.mktemp("venv") / "venv"
    env = os.environ | {"UV_NO_PROGRESS": "1"}
    run(UV, "venv", "--quiet", "--python", sys._base_executable, where, cwd=where.parent, env=env)
    run(UV, "pip", "install", "--quiet", "--python", where / "bin" / "python", "--constraint", ROOT / "constraints.txt", wheel,
        cwd=where.parent, env=env)
    return where


def clean_env(venv: Path, home: Path) -> dict[str, str]:
    """The environment of a user's shell: no Interlink or Prefect settings of ours, the new environment first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INTERLINK_", "PREFECT_", "PYTHON", "VIRTUAL_ENV"))}
    return env | {"PATH": f"{venv / 'bin'}{os.pathsep}{env['PATH']}", "VIRTUAL_ENV": str(venv), "HOME": str(home),
                  "PREFECT_HOME": str(home / ".prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def test_the_wheel_holds_one_namespace(wheel: Path):
    """Every module of the library is under `interlink.`: nothing called `flows`, `tasks` or `connectors` at the top."""
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
        names = set(archive.namelist())
    assert tops == {"interlink", f"interlink-{version('interlink')}.dist-info"}
    for module in ("flows/pipeline.py", "tasks/ingest.py", "connectors/rest.py", "data_checks/gate.py", "deployments/runner.py",
                   "demo_systems/cli.py", "testing.py", "templates/__init__.py", "deployments/deployments.yaml"):
        assert f"interlink/{module}" in names


def test_a_new_team_installs_inits_tests_runs_and_adds_an_integration(venv: Path, wheel: Path, tmp_path: Path):
    warehouse_pg = service_url("postgresql", "wheel")  # a schema of its own
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(venv, home)

    assert run("interlink", "--version", cwd=tmp_path, env=env).stdout.strip() == f"interlink {version('interlink')}"
    # the library is installed as one namespace: a team's own `flows` is free
    assert run(venv / "bin" / "python", "-c", "import flows", cwd=tmp_path, env=env, check=False).returncode == 1

    run("interlink", "init", "acme-integrations", cwd=tmp_path, env=env)
    project = tmp_path / "acme-integrations"
    # The project's own environment, with Interlink from the wheel (as `pip install interlink` would give it); from here on
    # only the project's two commands, `make test` and `make run`, as its README says.
    project_env = project / ".venv"
    run(UV, "venv", "--quiet", "--seed", "--python", sys._base_executable, project_env, cwd=project, env=env)
    run(UV, "pip", "install", "--quiet", "--python", project_env / "bin" / "python", "--constraint", ROOT / "constraints.txt", wheel,
        cwd=project, env=env)
    env = clean_env(project_env, home)

    tested = run("make", "test", cwd=project, env=env)
    assert " passed" in tested.stdout and " failed" not in tested.stdout

    # its example delivers into the SQLite warehouse the Makefile names, then into PostgreSQL
    run("make", "run", cwd=project, env=env)
    with closing(sqlite3.connect(project / "data" / "legacy.db")) as conn:
        seeded = conn.execute("SELECT count(*) FROM customers").fetchone()[0]
    first = newest_run(project, env)
    assert first["state"] == "QUARANTINED" and first["rows_read"] == seeded  # the sample's hostile rows, dead-lettered
    assert first["rows_inserted"] + first["rows_quarantined"] == seeded and first["rows_quarantined"] >= 1
    with closing(sqlite3.connect(project / "data" / "warehouse.db")) as conn:
        assert conn.execute("SELECT count(*) FROM customers").fetchone()[0] == first["rows_inserted"]
    status = json.loads(run(project_env / "bin" / "interlink", "status", "--json", cwd=project, env=env).stdout)
    assert [row["integration"] for row in status] == [EXAMPLE]  # nothing of the demo's

    run("make", "run", cwd=project, env=env | {"INTERLINK_WAREHOUSE__URL": warehouse_pg})
    on_pg = newest_run(project, env)
    assert on_pg["state"] == "QUARANTINED" and on_pg["rows_inserted"] == first["rows_inserted"]
    engine = sa.create_engine(warehouse_pg)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM customers")).scalar() == on_pg["rows_inserted"]
    engine.dispose()

    # a second integration, added by `interlink new`, found without reinstalling; the tests and the example again
    run(project_env / "bin" / "interlink", "new", "integration", "suppliers_to_warehouse", "--source", "sql", "--target", "sql",
        cwd=project, env=env)
    tested = run("make", "test", cwd=project, env=env)
    assert " passed" in tested.stdout and " failed" not in tested.stdout
    run(project_env / "bin" / "interlink", "run", EXAMPLE, cwd=project,
        env=env | {"INTERLINK_LEGACY__URL": "sqlite:///data/legacy.db", "INTERLINK_WAREHOUSE__URL": "sqlite:///data/warehouse.db"})
    again = newest_run(project, env)
    assert again["state"] == "COMPLETED" and again["rows_inserted"] == 0  # incremental: nothing new
    listed = run(project_env / "bin" / "python", "-c", "from interlink.flows import integrations; print(*integrations())",
                 cwd=project, env=env)
    assert listed.stdout.split() == [EXAMPLE, "suppliers_to_warehouse"]  # from the entry point: nothing of the demo's


def newest_run(project: Path, env: dict[str, str]) -> dict:
    """The example's newest ledger row, as `interlink runs --json` reports it."""
    listed = run(project / ".venv" / "bin" / "interlink", "runs", "--json", "--limit", "1", "--integration", EXAMPLE,
                 cwd=project, env=env)
    return json.loads(listed.stdout)[0]
