"""Deployments on a real Prefect server: schedules the server itself turns into runs, a scheduled run, a triggered run, retries.

Each server here is `prefect server start` in a subprocess, on a free port, with a PREFECT_HOME and a
database of its own (SQLite in that home, or a fresh PostgreSQL database), never the test harness.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa
import yaml
from interlink.demo_systems.app import create_app
from interlink.demo_systems.server import serve
from interlink.deployments.runner import declarations, runner_deployments
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlalchemy.engine import make_url
from starlette.types import ASGIApp, Receive, Scope, Send

from interlink.ledger import Ledger
from tests.conftest import SERVICES, service_url

BIN = Path(sys.executable).parent
# Prefect 3.8.8's scheduler settings (prefect/settings/models/server/services.py,
# ServerServicesSchedulerSettings), shortened so a test sees the runs the server creates within seconds:
SCHEDULER = {
    "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",  # the main loop (default 60 s)
    "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "1",  # newly registered deployments (default 5 s)
    "PREFECT_SERVER_SERVICES_SCHEDULER_MIN_RUNS": "1",  # one upcoming run per deployment is enough (default 3) …
    "PREFECT_SERVER_SERVICES_SCHEDULER_MIN_SCHEDULED_TIME": "PT0S",  # … however soon it is (default 1 h)
}


def wait_until(condition, timeout_s: float, what: str, log: Path | None = None):
    """Poll `condition` (an external system's state) until it returns something truthy, within a bound."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(0.5)
    raise AssertionError(f"{what} did not happen within {timeout_s}s" + (f"; the server's last errors:\n{_errors(log)}" if log else ""))


def _errors(log: Path) -> str:
    lines = log.read_text(errors="replace").splitlines()
    return "\n".join([line for line in lines if "Error" in line or "error" in line][-5:]) or "(none)"


@contextmanager
def prefect_server(home: Path, database: str) -> Iterator[tuple[str, Path]]:
    """`prefect server start` on a free port with its own PREFECT_HOME and a fresh database (`sqlite` in
    that home, or `postgresql`: a new database on the machine's PostgreSQL); yields its API URL and log."""
    home.mkdir(parents=True, exist_ok=True)
    env = {name: value for name, value in os.environ.items() if not name.startswith("PREFECT_")}
    if database == "postgresql":
        service_url("postgresql")  # skips, or fails under REQUIRE_SERVICES=1, when PostgreSQL is down
        name = f"interlink_prefect_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(SERVICES["postgresql"], isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
        db_url = make_url(SERVICES["postgresql"]).set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)
    else:
        db_url = f"sqlite+aiosqlite:///{home / 'prefect.db'}"
    env |= {
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": db_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        **SCHEDULER,
    }
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = home / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen([BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/api"

    def healthy() -> bool:
        if server.poll() is not None:
            raise AssertionError(f"the Prefect server exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, 120, "the Prefect server starting")
        yield url, log
    finally:
        server.terminate()
        server.wait(30)
        if database == "postgresql":
            with admin.connect() as conn:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            admin.dispose()


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory) -> Iterator[str]:
    """A real Prefect server on a free port, with a fresh PostgreSQL database of its own."""
    with prefect_server(tmp_path_factory.mktemp("prefect"), "postgresql") as (url, _):
        yield url


def scheduled_runs(client: SyncPrefectClient, deployment_ids: list[UUID]) -> dict[UUID, list[FlowRun]]:
    """The SCHEDULED flow runs of each deployment, soonest first, as the server has them."""
    runs = client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=deployment_ids)),
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))),
    )
    found: dict[UUID, list[FlowRun]] = {}
    for run in sorted(runs, key=lambda r: r.expected_start_time):
        found.setdefault(run.deployment_id, []).append(run)
    return found


def check_scheduled_runs(client: SyncPrefectClient, log: Path | None = None) -> dict[str, float]:
    """Wait until the server's scheduler has created a SCHEDULED run for every declared deployment, each at
    its cron's next wall-clock time in the declared timezone. Returns, by deployment name, the seconds from
    the deployment's registration to its first scheduled run's creation, both by the server's clock."""
    declared = declarations()
    zone = ZoneInfo(declared.timezone)
    deployments = {}
    for d in declared.deployments:
        flow_name = d.integration if d.flow == "sync" else f"{d.integration}_{d.flow}"
        deployments[d.name] = wait_until(lambda: _deployment(client, f"{flow_name}/{d.name}"), 120, f"deployment {d.name} registered")
    ids = [deployment.id for deployment in deployments.values()]
    since, missing = datetime.now(UTC), list(deployments)

    def every_deployment_scheduled():
        found = scheduled_runs(client, ids)
        missing[:] = [name for name, deployment in deployments.items() if not found.get(deployment.id)]
        return None if missing else found

    try:
        found = wait_until(every_deployment_scheduled, 60, "SCHEDULED runs for every declared deployment", log)
    except AssertionError as exc:
        raise AssertionError(f"no SCHEDULED run for {', '.join(missing)}: {exc}") from None
    took = {}
    for d in declared.deployments:
        run = found[deployments[d.name].id][0]
        assert run.auto_scheduled and run.parameters == d.parameters, run
        local = run.expected_start_time.astimezone(zone)
        minute, hour = d.cron.split()[:2]
        assert local.minute == int(minute) and (hour == "*" or local.hour == int(hour)), (d.name, local)
        assert since - timedelta(minutes=1) < run.expected_start_time <= since + timedelta(days=7), (d.name, local)
        took[d.name] = round((run.created - deployments[d.name].created).total_seconds(), 1)
    return took


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_the_server_schedules_runs_for_every_declared_deployment(database, tmp_path):
    """The server's own scheduler, not our code, creates the runs: this failed on every loop with
    SQLAlchemy 2.1 (`InvalidRequestError: Can't evaluate bulk DML statement`), so nothing was ever scheduled."""
    with prefect_server(tmp_path / "prefect", database) as (url, log), temporary_settings({PREFECT_API_URL: url}):
        for deployment in runner_deployments():
            deployment.apply()  # what `interlink serve` does for each (prefect.serve → Runner.add_deployment)
        with SyncPrefectClient(api=url) as client:
            took = check_scheduled_runs(client, log)
    print(f"\nfirst SCHEDULED run on {database}, seconds after registration: {took}")


def test_a_declared_schedule_fires_and_its_run_completes(crm_db, home, tmp_path):
    """The declared crm_to_billing sync, its cron moved to a minute from now: the server schedules the run,
    the served deployment runs it when it is due, and the run is in the ledger."""
    declared = declarations()
    zone = ZoneInfo(declared.timezone)
    with prefect_server(tmp_path / "prefect", "sqlite") as (url, log), serve(create_app(crm_db, api_key="k-sched")) as crm_url:
        # The next whole minute at least 25 s ahead: the runner needs ~10 s to start and register the deployment, and the
        # scheduler must create the run before it is due (it makes none in the past).
        due = (datetime.now(zone) + timedelta(seconds=25)).replace(second=0, microsecond=0) + timedelta(minutes=1)
        [sync] = [d.model_copy(update={"cron": f"{due.minute} {due.hour} * * *"}) for d in declared.deployments
                  if (d.integration, d.flow) == ("crm_to_billing", "sync")]
        path = tmp_path / "deployments.yaml"
        path.write_text(yaml.safe_dump(declared.model_copy(update={"deployments": [sync], "retries": 0}).model_dump(mode="json")))
        env = {
            **{name: value for name, value in os.environ.items() if not name.startswith("PREFECT_")},
            "PREFECT_API_URL": url,
            "PREFECT_HOME": str(tmp_path / "runner"),
            "INTERLINK_CRM__BASE_URL": crm_url,
            "INTERLINK_CRM__AUTH__KIND": "api_key",
            "INTERLINK_CRM__AUTH__KEY": "k-sched",
            "INTERLINK_FINANCE__BASE_URL": crm_url,
            "INTERLINK_BILLING__URL": f"sqlite:///{home / 'billing.db'}",
            "INTERLINK_DEPLOYMENTS_FILE": str(path),
        }
        served = "from prefect import serve; from interlink.deployments.runner import runner_deployments; serve(*runner_deployments())"
        with (tmp_path / "serve.log").open("w") as out:
            runner = subprocess.Popen([sys.executable, "-c", served], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[1])
        launched = time.monotonic()
        try:
            with SyncPrefectClient(api=url) as client:
                deployment = wait_until(lambda: _deployment(client, "crm_to_billing/crm_to_billing"), 60, "the deployment registered")
                registered = time.monotonic() - launched
                # any state: the runner may already have taken it from SCHEDULED to Pending when it is due soon
                [scheduled] = wait_until(
                    lambda: client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))),
                    30, "the server scheduling the run", log)
                assert scheduled.auto_scheduled and scheduled.expected_start_time == due, (scheduled.expected_start_time, due)
                final = wait_until(lambda: (r := client.read_flow_run(scheduled.id)).state.is_final() and r,
                                   (due - datetime.now(zone)).total_seconds() + 60, "the scheduled run finishing")
                assert final.state.is_completed(), final.state.message
                # the runner starts a run that is due within its prefetch window (Runner(prefetch_seconds=10)), so up to 10 s early
                assert final.start_time >= due - timedelta(seconds=10), (final.start_time, due)
        finally:
            runner.terminate()
            runner.wait(30)
    [row] = [r for r in Ledger(f"sqlite:///{home / 'interlink.db'}").runs("crm_to_billing") if r["flow_run_id"] == str(scheduled.id)]
    assert row["state"] == "QUARANTINED" and row["rows_inserted"] > 4000, row
    print(f"\nregistered {registered:.1f} s after the runner was launched; scheduled for {due.isoformat()}, started {final.start_time.astimezone(zone).isoformat()}, "
          f"finished {final.end_time.astimezone(zone).isoformat()}")


class FailFirst:
    """ASGI middleware: the first `count` requests to `path` answer `status` (503: busy, retried by the task;
    401: refused, which no task retries)."""

    def __init__(self, app: ASGIApp, path: str, count: int, status: int = 503):
        self.app, self.path, self.left, self.status = app, path, count, status

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.path and self.left > 0:
            self.left -= 1
            await send({"type": "http.response.start", "status": self.status, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"failed on purpose"})
            return
        await self.app(scope, receive, send)


def test_declared_deployments_run_on_a_real_prefect_server(prefect_api, crm_db, home, tmp_path):
    # 3 busy answers: the first to `demo serve`'s connection check at start (it says so and serves anyway), two to the run
    crm = FailFirst(create_app(crm_db, api_key="k-deploy"), "/customers", 3)
    with serve(crm) as crm_url:
        env = {
            **os.environ,
            "PREFECT_API_URL": prefect_api,
            "INTERLINK_CRM__BASE_URL": crm_url,
            "INTERLINK_CRM__AUTH__KIND": "api_key",
            "INTERLINK_CRM__AUTH__KEY": "k-deploy",
            "INTERLINK_CRM__MAX_ATTEMPTS": "1",  # so the 503s reach Prefect's task retries
            "INTERLINK_FINANCE__BASE_URL": crm_url,
        }
        log = (tmp_path / "serve.log").open("w")
        # The CRM and finance API as configured; the demo stands in for the other integrations' systems.
        runner = subprocess.Popen([BIN / "interlink", "demo", "serve", "--fault-rate", "0"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[1])
        try:
            with SyncPrefectClient(api=prefect_api) as client:
                check_registered(client)
                check_scheduled_runs(client)
                run_crm_to_billing(client, home)
        finally:
            runner.terminate()
            runner.wait(30)
    started = (tmp_path / "serve.log").read_text()
    # the CRM's first answers are 503s: busy, not down (the preflight lets it be), and the run's retries got through
    assert "INTERLINK_CRM__BASE_URL" not in started and "serving anyway" not in started, started[-2000:]
    assert f"serving {len(declarations().deployments) + 1} deployments on {prefect_api} (crm_to_billing, " in started, started[-2000:]  # + interlink-prune


def check_registered(client: SyncPrefectClient) -> None:
    declared = declarations()
    for d in declared.deployments:
        flow_name = d.integration if d.flow == "sync" else f"{d.integration}_{d.flow}"
        deployment = wait_until(lambda: _deployment(client, f"{flow_name}/{d.name}"), 120, f"deployment {d.name} registered")
        [schedule] = deployment.schedules
        assert (schedule.schedule.cron, schedule.schedule.timezone) == (d.cron, declared.timezone)
        assert deployment.parameters == d.parameters and set(d.tags) <= set(deployment.tags)


def run_crm_to_billing(client: SyncPrefectClient, home: Path) -> None:
    deployment = client.read_deployment_by_name("crm_to_billing/crm_to_billing")
    flow_run = client.create_flow_run_from_deployment(deployment.id)
    final = wait_until(
        lambda: (r := client.read_flow_run(flow_run.id)).state.is_final() and r, 180, "the triggered run finishing"
    )
    assert final.state.is_completed(), final.state.message
    [ledger] = [r for r in Ledger(f"sqlite:///{home / 'interlink.db'}").runs("crm_to_billing") if r["flow_run_id"] == str(flow_run.id)]
    assert ledger["state"] == "QUARANTINED" and ledger["rows_inserted"] > 4000
    [artifact] = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
    assert artifact.key == "crm-to-billing" and f"| inserted | {ledger['rows_inserted']} |" in artifact.data
    ingest = next(t for t in client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))) if t.name.startswith("ingest"))
    states = [s.name for s in client.read_task_run_states(ingest.id)]
    assert states.count("AwaitingRetry") == 2 and states[-1] == "Completed", states


def _deployment(client: SyncPrefectClient, name: str):
    try:
        return client.read_deployment_by_name(name)
    except Exception:  # not registered yet
        return None
