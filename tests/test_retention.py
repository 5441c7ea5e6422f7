"""Retention: `interlink state prune` on SQLite, PostgreSQL and MariaDB state databases, with GX results and reports.

alpha declares its own retention (dead letters 100d, reports 100d); beta is not in `integrations:` and has the file's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from interlink.connectors.sql import utcnow
from interlink.deployments.declaration import read
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort
from prefect.exceptions import ObjectNotFound
from prefect.flows import load_flow_from_entrypoint
from prefect.settings import PREFECT_API_URL

from interlink.cli import main
from interlink.retention import RUN_TIME, prune
from interlink.settings import Settings
from interlink.state import DEAD_LETTERS, RUNS, state_engine
from tests.conftest import service_url
from tests.test_deployments import wait_until

DECLARATION = """\
timezone: Europe/Berlin
retention: {dead_letters: 30d, runs: 30d, quality_results: 30d, reports: 10d}
prune: "30 4 * * *"
integrations:
  alpha:
    owner: {team: A, contact: "#a"}
    retention: {dead_letters: 100d, reports: 100d}
deployments: []
"""
NOW = utcnow()
A_OLD, A_NEW, B_RUN = (str(uuid.uuid4()) for _ in range(3))


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def state_url(request: pytest.FixtureRequest, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A state database of each dialect whose ledger and dead letters start empty, and a declaration naming alpha."""
    url = f"sqlite:///{home / 'interlink.db'}" if request.param == "sqlite" else service_url(request.param, "retention")
    with state_engine(url).begin() as conn:
        conn.execute(DEAD_LETTERS.delete())
        conn.execute(RUNS.delete())
    monkeypatch.setenv("INTERLINK_STATE_URL", url)
    (tmp_path / "deployments.yaml").write_text(DECLARATION)
    monkeypatch.setenv("INTERLINK_DEPLOYMENTS_FILE", str(tmp_path / "deployments.yaml"))
    return url


def seed(url: str, home: Path) -> None:
    """Dead letters, ledger rows, GX results and run reports, old and new, of alpha, beta and a run outside Prefect."""
    letters = [  # (integration, key, status, closed days ago)
        ("alpha", "a-open", "open", 200), ("alpha", "a-resolved-150", "resolved", 150), ("alpha", "a-resolved-50", "resolved", 50),
        ("alpha", "a-replayed-5", "replayed", 5), ("beta", "b-open", "open", 200), ("beta", "b-resolved-40", "resolved", 40),
        ("beta", "b-replayed-10", "replayed", 10),
    ]
    runs = [  # (integration, flow run, state, started, finished days ago)
        ("alpha", A_OLD, "COMPLETED", 61, 60), ("alpha", A_NEW, "FAILED", 5, 5), ("alpha", None, "RUNNING", 90, None),
        ("alpha", None, "CRASHED", 45, None), ("beta", B_RUN, "COMPLETED", 10, 10),
    ]
    with state_engine(url).begin() as conn:
        conn.execute(DEAD_LETTERS.insert(), [
            {"integration": i, "record_key": k, "stage": "check", "reason": "r", "values": {}, "payload": [], "status": s,
             "created_at": ago(days + 1), "updated_at": ago(days)} for i, k, s, days in letters
        ])
        conn.execute(RUNS.insert(), [
            {"integration": i, "kind": "sync", "flow_run_id": f, "state": s, "started_at": ago(start),
             "finished_at": end and ago(end), "target": "t"} for i, f, s, start, end in runs
        ])
    for root, suffix in ((home / "gx" / "gx" / "uncommitted" / "validations", "json"), (home / "reports" / "validations", "html")):
        for run, days in ((A_OLD, 60), (A_NEW, 5), (B_RUN, 20), ("local", 45)):
            folder = root / "customers" / run / ago(days).strftime(RUN_TIME)
            folder.mkdir(parents=True)
            (folder / f"interlink-customers.{suffix}").write_text("{}")
    for page in ("index.html", "quality.html", "expectations/customers.html"):  # not per run: kept, however old
        (home / "reports" / page).parent.mkdir(parents=True, exist_ok=True)
        (home / "reports" / page).write_text("<html/>")
        os.utime(home / "reports" / page, (time.time() - 400 * 86400,) * 2)


def stored(url: str, home: Path) -> tuple[set, set, set]:
    """The dead letters' keys, the ledger's rows and the files under the home, as they are now."""
    with state_engine(url).connect() as conn:
        letters = set(conn.scalars(sa.select(DEAD_LETTERS.c.record_key)))
        runs = {(r.integration, r.state) for r in conn.execute(sa.select(RUNS))}
    return letters, runs, {str(p.relative_to(home)) for p in home.rglob("*") if p.is_file() and p.suffix in (".json", ".html")}


def counts(pruned: list) -> dict:
    return {(p.store, p.integration): p.removed for p in pruned}


EXPECTED = {
    ("dead_letters", "alpha"): 1, ("dead_letters", "beta"): 1,  # alpha keeps 100d (the 50-day one stays), beta the file's 30d
    ("runs", "alpha"): 2, ("runs", "beta"): 0,  # the ended 60- and 45-day runs; never the RUNNING one
    ("quality_results", "alpha"): 1, ("quality_results", "beta"): 0, ("quality_results", None): 1,
    ("reports", "alpha"): 0, ("reports", "beta"): 1, ("reports", None): 0,  # alpha keeps reports 100d, beta 10d
}  # results and reports of no integration (a run outside Prefect) are kept as long as any integration keeps them


def test_a_dry_run_removes_nothing_and_says_what_the_prune_then_removes(state_url, home):
    seed(state_url, home)
    before = stored(state_url, home)
    settings, declared = Settings.load(), read()

    dry = prune(settings, declared)
    assert counts(dry) == EXPECTED and not any(p.applied for p in dry)
    assert stored(state_url, home) == before

    done = prune(settings, declared, apply=True)
    assert counts(done) == EXPECTED and all(p.applied for p in done)
    assert [p.oldest_kept for p in done] == [p.oldest_kept for p in dry]
    letters, runs, files = stored(state_url, home)
    assert letters == before[0] - {"a-resolved-150", "b-resolved-40"}  # open ones stay, however old
    assert runs == {("alpha", "FAILED"), ("alpha", "RUNNING"), ("beta", "COMPLETED")}
    gone = {f"{root}/customers/{run}/{ago(days).strftime(RUN_TIME)}/interlink-customers.{suffix}"
            for root, suffix, run, days in [("gx/gx/uncommitted/validations", "json", A_OLD, 60), ("gx/gx/uncommitted/validations", "json", "local", 45),
                                            ("reports/validations", "html", B_RUN, 20)]}
    assert files == before[2] - gone and gone <= before[2]
    assert not (home / "gx" / "gx" / "uncommitted" / "validations" / "customers" / "local").exists()  # emptied folders go too

    oldest = {(p.store, p.integration): p.oldest_kept for p in done}
    assert oldest["dead_letters", "alpha"] == ago(50) and oldest["dead_letters", "beta"] == ago(10)
    assert oldest["runs", "alpha"] == ago(5)  # the RUNNING row is not subject to retention
    assert oldest["reports", "alpha"] == ago(60)  # alpha keeps its reports 100 days
    # alpha's 60-day run has no ledger row now: its report is still kept 100 days, as alpha declares
    assert not any(p.removed for p in prune(settings, declared, apply=True))
    assert stored(state_url, home)[2] == files


def test_a_failure_in_a_store_rolls_that_store_back(state_url, home):
    """The second integration's delete fails: the first integration's dead letters, deleted in the same transaction, are back."""
    seed(state_url, home)
    before = stored(state_url, home)
    engine, deletes = state_engine(state_url), []

    def fail_second_delete(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("DELETE FROM DEAD_LETTERS"):
            deletes.append(statement)
            if len(deletes) == 2:
                raise RuntimeError("injected")

    sa.event.listen(engine, "before_cursor_execute", fail_second_delete)
    try:
        with pytest.raises(RuntimeError, match="injected"):
            prune(Settings.load(), read(), apply=True)
    finally:
        sa.event.remove(engine, "before_cursor_execute", fail_second_delete)
    assert len(deletes) == 2
    assert stored(state_url, home) == before


def test_the_command_is_a_dry_run_unless_told_to_apply(state_url, home, capsys):
    seed(state_url, home)
    assert main(["state", "prune"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "dead letters alpha: would remove 1 (resolved or replayed, older than 100d); oldest kept " in lines[0]
    assert len(lines) == len(EXPECTED) and all("would remove" in line for line in lines), lines
    assert main(["state", "prune", "--apply", "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert {(p["store"], p["integration"]): p["removed"] for p in done} == EXPECTED
    assert done[0]["keep"] == "100d" and all(p["applied"] for p in done)


def test_a_bad_duration_is_one_line(home, tmp_path, monkeypatch, capsys):
    (tmp_path / "deployments.yaml").write_text(DECLARATION.replace("runs: 30d", "runs: 30 days"))
    monkeypatch.setenv("INTERLINK_DEPLOYMENTS_FILE", str(tmp_path / "deployments.yaml"))
    assert main(["state", "prune"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "retention.runs: '30 days' is not a duration" in err, err


def test_the_scheduled_prune_is_a_flow_with_the_declared_retries(home, tmp_path, monkeypatch):
    """The deployment's entrypoint, loaded as a run loads it, run under the test server: it prunes and says what, as an artifact."""
    url = f"sqlite:///{home / 'interlink.db'}"
    (tmp_path / "deployments.yaml").write_text(DECLARATION.replace("timezone: Europe/Berlin", "timezone: UTC\nretries: 1"))
    monkeypatch.setenv("INTERLINK_DEPLOYMENTS_FILE", str(tmp_path / "deployments.yaml"))
    seed(url, home)
    prune_flow = load_flow_from_entrypoint("interlink.deployments.prune:DECLARED")
    assert (prune_flow.name, prune_flow.retries) == ("interlink-prune", 1)
    done = prune_flow()
    assert {(p["store"], p["integration"]): p["removed"] for p in done} == EXPECTED
    assert stored(url, home)[0] == {"a-open", "a-resolved-50", "a-replayed-5", "b-open", "b-replayed-10"}
    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["interlink-prune"])), limit=1,
                                           sort=ArtifactSort.CREATED_DESC)
    assert "| dead letters | alpha | 100d | 1 |" in artifact.data, artifact.data


def test_the_served_prune_deployment_runs(home, tmp_path):
    """`interlink serve`'s deployments (Prefect's runner, in a process of its own) with only the prune declared: it is
    registered on its schedule, and a run of it prunes."""
    url = f"sqlite:///{home / 'interlink.db'}"
    (tmp_path / "deployments.yaml").write_text(DECLARATION)
    seed(url, home)
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith("PREFECT_")},
        "PREFECT_API_URL": PREFECT_API_URL.value(),  # the session's test server
        "PREFECT_HOME": str(tmp_path / "runner"),
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "INTERLINK_DEPLOYMENTS_FILE": str(tmp_path / "deployments.yaml"),
    }
    served = "from prefect import serve; from interlink.deployments.runner import runner_deployments; serve(*runner_deployments())"
    with (tmp_path / "serve.log").open("w") as out:
        runner = subprocess.Popen([sys.executable, "-c", served], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[1])
    try:
        with get_client(sync_client=True) as client:
            deployment = wait_until(lambda: _deployment(client, "interlink-prune/interlink-prune"), 90, "the prune deployment registered",
                                    tmp_path / "serve.log")
            [schedule] = deployment.schedules
            assert (schedule.schedule.cron, schedule.schedule.timezone) == ("30 4 * * *", "Europe/Berlin")
            assert deployment.entrypoint == "interlink.deployments.prune:DECLARED" and "Open dead letters are never removed" in deployment.description
            flow_run = client.create_flow_run_from_deployment(deployment.id)
            final = wait_until(lambda: (r := client.read_flow_run(flow_run.id)).state.is_final() and r, 120, "the prune run finishing",
                               tmp_path / "serve.log")
    finally:
        runner.terminate()
        runner.wait(30)
    assert final.state.is_completed(), final.state.message
    assert stored(url, home)[0] == {"a-open", "a-resolved-50", "a-replayed-5", "b-open", "b-replayed-10"}


def _deployment(client, name: str):
    try:
        return client.read_deployment_by_name(name)
    except ObjectNotFound:
        return None
