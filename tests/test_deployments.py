"""Deployments on a real Prefect server (PostgreSQL as its database): schedules, a triggered run, retries."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.server.schemas.schedules import CronSchedule
from sqlalchemy.engine import make_url
from starlette.types import ASGIApp, Receive, Scope, Send

from demo_systems.app import create_app
from demo_systems.server import serve
from deployments import declarations
from interlink.ledger import Ledger
from tests.conftest import SERVICES, service_url

BIN = Path(sys.executable).parent


def wait_until(condition, timeout_s: float, what: str):
    """Poll `condition` (an external system's state) until it returns something truthy, within a bound."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(0.5)
    raise AssertionError(f"{what} did not happen within {timeout_s}s")


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory) -> Iterator[str]:
    """A real Prefect server on a free port, with a fresh PostgreSQL database of its own."""
    service_url("postgresql")  # skips, or fails under REQUIRE_SERVICES=1, when PostgreSQL is down
    database = f"interlink_prefect_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(SERVICES["postgresql"], isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {database}"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    home = tmp_path_factory.mktemp("prefect")
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": make_url(SERVICES["postgresql"]).set(drivername="postgresql+asyncpg", database=database).render_as_string(hide_password=False),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
    }
    log = (home / "server.log").open("w")
    server = subprocess.Popen([BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/api"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, 120, "the Prefect server starting")
        yield url
    finally:
        server.terminate()
        server.wait(30)
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        admin.dispose()


class FailFirst:
    """ASGI middleware: the first `count` requests to `path` answer 503."""

    def __init__(self, app: ASGIApp, path: str, count: int):
        self.app, self.path, self.left = app, path, count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.path and self.left > 0:
            self.left -= 1
            await send({"type": "http.response.start", "status": 503, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"busy"})
            return
        await self.app(scope, receive, send)


def test_declared_deployments_run_on_a_real_prefect_server(prefect_api, crm_db, home, tmp_path):
    crm = FailFirst(create_app(crm_db, api_key="k-deploy"), "/customers", 2)
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
                check_schedules(client)
                run_crm_to_billing(client, home)
        finally:
            runner.terminate()
            runner.wait(30)


def check_schedules(client: SyncPrefectClient) -> None:
    declared = declarations()
    zone = ZoneInfo(declared.timezone)
    for d in declared.deployments:
        flow_name = d.integration if d.flow == "sync" else f"{d.integration}_{d.flow}"
        deployment = wait_until(lambda: _deployment(client, f"{flow_name}/{d.name}"), 120, f"deployment {d.name} registered")
        [schedule] = deployment.schedules
        assert (schedule.schedule.cron, schedule.schedule.timezone) == (d.cron, declared.timezone)
        assert deployment.parameters == d.parameters and set(d.tags) <= set(deployment.tags)
        # the next run, as the server's scheduler computes it from the stored schedule
        [upcoming] = asyncio.run(CronSchedule(cron=schedule.schedule.cron, timezone=schedule.schedule.timezone).get_dates(n=1))
        local = upcoming.astimezone(zone)
        minute, hour = d.cron.split()[:2]
        assert local.minute == int(minute) and (hour == "*" or local.hour == int(hour))
        assert upcoming > datetime.now(UTC) and upcoming - datetime.now(UTC) <= timedelta(days=7)


def run_crm_to_billing(client: SyncPrefectClient, home: Path) -> None:
    deployment = client.read_deployment_by_name("crm_to_billing/crm_to_billing")
    flow_run = client.create_flow_run_from_deployment(deployment.id)
    final = wait_until(
        lambda: (r := client.read_flow_run(flow_run.id)).state.is_final() and r, 180, "the triggered run finishing"
    )
    assert final.state.is_completed(), final.state.message
    [ledger] = [r for r in Ledger(f"sqlite:///{home / 'interlink.db'}").runs("crm_to_billing") if r["flow_run_id"] == str(flow_run.id)]
    assert ledger["state"] == "COMPLETED" and ledger["rows_inserted"] > 4000
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
