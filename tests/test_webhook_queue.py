"""The receiver answers at once and triggers in the background: `interlink webhooks serve` in its own process
against a real `prefect server start`, reached through a proxy that can make the Prefect API answer 503."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest
from interlink.demo_systems.server import serve
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.settings import PREFECT_API_URL, temporary_settings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.test_deployments import prefect_server
from tests.test_webhooks import BIN, SECRET, events, library_signature, production_receiver, settled, wait_for

BURST = 50  # events sent 20 at a time; each takes Prefect 0.1-0.5 s to run (load 2-10 on 2 cores)
HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}


class Outage:
    """A proxy to the Prefect API that, while `down`, forwards each POST and answers 503 in its place: the
    server made the run, the receiver never hears of it. GETs pass, so the receiver gets as far as that."""

    def __init__(self, api_url: str):
        self.api_url, self.down, self.refused = api_url, False, Counter()
        client = httpx.AsyncClient(timeout=30)

        async def forward(request: Request) -> Response:
            answer = await client.request(
                request.method, f"{self.api_url}/{request.path_params['path']}", params=request.query_params,
                headers={k: v for k, v in request.headers.items() if k not in HOP_BY_HOP}, content=await request.body(),
            )
            if self.down and request.method == "POST":
                self.refused[request.path_params["path"].rsplit("/", 1)[-1]] += 1
                return Response(b'{"detail": "Service Unavailable"}', 503, media_type="application/json")
            return Response(answer.content, answer.status_code, {k: v for k, v in answer.headers.items() if k not in HOP_BY_HOP})

        self.app = Starlette(routes=[Route("/api/{path:path}", forward, methods=["GET", "POST", "PATCH", "PUT", "DELETE"])])


@pytest.fixture(scope="module")
def prefect(tmp_path_factory) -> Iterator[Outage]:
    """A real Prefect server (on PostgreSQL, as production runs it), and the proxy in front of it (up)."""
    with prefect_server(tmp_path_factory.mktemp("prefect"), "postgresql") as (api_url, _):
        outage = Outage(api_url)
        with serve(outage.app) as proxy_url:
            outage.url = f"{proxy_url}/api"
            yield outage


@pytest.fixture
def bare_env(home: Path, tmp_path: Path) -> dict[str, str]:
    """An environment with no Prefect setting but an empty PREFECT_HOME, and a state database of its own."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "INTERLINK_STATE_URL": f"sqlite:///{tmp_path}/receiver-{uuid.uuid4().hex[:8]}.db",
    }


@pytest.fixture
def receiver_env(prefect: Outage, bare_env: dict[str, str]) -> dict[str, str]:
    """What `interlink webhooks serve` runs with: the Prefect API through the proxy, without the client's own retries."""
    return bare_env | {"PREFECT_API_URL": prefect.url, "PREFECT_CLIENT_MAX_RETRIES": "0"}  # the receiver's own backoff is tested


def deploy(prefect: Outage, name: str) -> str:
    with temporary_settings({PREFECT_API_URL: prefect.api_url}), get_client(sync_client=True) as client:
        return str(client.create_deployment(client.create_flow_from_name(name), name))


def runs_by_key(prefect: Outage, deployment: str) -> tuple[Counter, set[str]]:
    """The deployment's flow runs on the server: how many each idempotency key has, and their ids."""
    with temporary_settings({PREFECT_API_URL: prefect.api_url}), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[uuid.UUID(deployment)])), limit=200)
    return Counter(run.idempotency_key for run in runs), {str(run.id) for run in runs}


def send(url: str, name: str, event_id: str) -> tuple[httpx.Response, float]:
    ts, body = int(time.time()), json.dumps({"type": "order.updated"}).encode()
    headers = {"webhook-id": event_id, "webhook-timestamp": str(ts), "webhook-signature": library_signature(SECRET, event_id, ts, body)}
    started = time.perf_counter()
    response = httpx.post(f"{url}/webhooks/{name}", content=body, headers=headers, timeout=30)
    return response, time.perf_counter() - started


def stop(process: subprocess.Popen, state_url: str) -> list[psutil.Process]:
    """SIGTERM the receiver; the processes still alive afterwards that it started (its environment's state URL)."""
    process.send_signal(signal.SIGTERM)
    assert process.wait(15) == -signal.SIGTERM  # shut down cleanly, then uvicorn re-raises the signal it caught

    def started_by_it(p: psutil.Process) -> bool:
        try:
            return p.environ().get("INTERLINK_STATE_URL") == state_url
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return False

    return [p for p in psutil.process_iter() if started_by_it(p)]


def test_the_first_event_is_answered_at_once_and_its_run_made_in_the_background(prefect, receiver_env, tmp_path):
    name = f"probe_{uuid.uuid4().hex[:8]}"
    deployment = deploy(prefect, name)
    env = receiver_env | {"INTERLINK_WEBHOOK_SECRETS": json.dumps({name: SECRET})}
    with production_receiver(env, tmp_path / "receiver.log") as (url, process):
        answer, seconds = send(url, name, "evt-first")
        [row] = settled(env["INTERLINK_STATE_URL"])
        left = stop(process, env["INTERLINK_STATE_URL"])
    assert (answer.status_code, answer.json()) == (202, {"event": row.id, "status": "received"})
    assert seconds < 1, f"the first answer took {seconds:.2f}s"
    keys, run_ids = runs_by_key(prefect, deployment)
    assert (row.status, keys, run_ids) == ("triggered", {f"webhook/{name}/evt-first": 1}, {row.flow_run_id})
    assert left == []


def test_a_burst_while_prefect_answers_503_runs_every_event_exactly_once(prefect, receiver_env, tmp_path):
    name = f"probe_{uuid.uuid4().hex[:8]}"
    deployment = deploy(prefect, name)
    env = receiver_env | {"INTERLINK_WEBHOOK_SECRETS": json.dumps({name: SECRET})}
    ids = [f"evt-{n:03}" for n in range(BURST)]
    prefect.down, prefect.refused = True, Counter()
    try:
        with production_receiver(env, tmp_path / "receiver.log") as (url, _), ThreadPoolExecutor(20) as pool:
            started = time.monotonic()
            answers = list(pool.map(lambda event_id: send(url, name, event_id), ids))
            wait_for(lambda: prefect.refused["create_flow_run"] >= 2)  # runs made, their answers lost, twice
            prefect.down = False
            rows = settled(env["INTERLINK_STATE_URL"], timeout_s=60)
    finally:
        prefect.down = False
    assert [response.status_code for response, _ in answers] == [202] * BURST
    keys, run_ids = runs_by_key(prefect, deployment)
    assert keys == {f"webhook/{name}/{event_id}": 1 for event_id in ids}  # none lost, none twice
    assert sorted((row.event_id, row.status) for row in rows) == [(event_id, "triggered") for event_id in ids]
    assert {row.flow_run_id for row in rows} == run_ids
    print(f"burst of {BURST}: slowest answer {max(s for _, s in answers):.2f}s; 503s: {dict(prefect.refused)}; {time.monotonic() - started:.1f}s")


def test_events_left_by_a_stopped_receiver_run_when_it_starts_again(prefect, receiver_env, tmp_path):
    name = f"probe_{uuid.uuid4().hex[:8]}"
    deployment = deploy(prefect, name)
    env = receiver_env | {"INTERLINK_WEBHOOK_SECRETS": json.dumps({name: SECRET})}
    state = env["INTERLINK_STATE_URL"]
    prefect.down, prefect.refused = True, Counter()
    try:
        with production_receiver(env, tmp_path / "first.log") as (url, process):
            assert [send(url, name, f"evt-{n}")[0].status_code for n in range(3)] == [202] * 3
            wait_for(lambda: prefect.refused["create_flow_run"] >= 1)  # the oldest one's run was made, unconfirmed
            left = stop(process, state)
    finally:
        prefect.down = False
    assert left == [] and {row.status for row in events(state)} == {"received"}
    with production_receiver(env, tmp_path / "second.log"):
        rows = settled(state)
    keys, run_ids = runs_by_key(prefect, deployment)
    assert keys == {f"webhook/{name}/evt-{n}": 1 for n in range(3)}
    assert [row.status for row in rows] == ["triggered"] * 3 and {row.flow_run_id for row in rows} == run_ids


def test_the_receiver_refuses_to_start_without_a_prefect_server(bare_env):
    env = bare_env | {"INTERLINK_WEBHOOK_SECRETS": json.dumps({"x": SECRET})}
    done = subprocess.run([BIN / "interlink", "webhooks", "serve"], env=env, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "interlink: PREFECT_API_URL is not set: the webhook receiver needs a Prefect server: start one "
        "(`make serve` or `prefect server start`) and set PREFECT_API_URL to its API\n"
    )
    assert not Path(env["INTERLINK_STATE_URL"].removeprefix("sqlite:///")).exists()  # nothing written
