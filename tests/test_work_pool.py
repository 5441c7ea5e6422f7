"""The production path: a process work pool, the declared deployments deployed with `prefect deploy` from
the generated `prefect.yaml`, and a run picked up by `prefect worker start`, all on a real Prefect server."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import anyio
import psutil
import yaml
from interlink.demo_systems.app import create_app
from interlink.demo_systems.server import serve
from interlink.deployments.prefect_yaml import prefect_yaml
from interlink.deployments.runner import declarations
from prefect.client.orchestration import SyncPrefectClient
from starlette.types import ASGIApp, Receive, Scope, Send

from interlink.ledger import Ledger
from tests.test_deployments import BIN, FailFirst, prefect_server, wait_until


class Held:
    """ASGI middleware: requests to `path` wait while `gate` is not set (in a thread: the server keeps serving)."""

    def __init__(self, app: ASGIApp, path: str, gate: threading.Event):
        self.app, self.path, self.gate = app, path, gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.path:
            await anyio.to_thread.run_sync(self.gate.wait)
        await self.app(scope, receive, send)

ROOT = Path(__file__).parents[1]


def test_prefect_yaml_is_generated_from_the_declaration():
    """One source of truth: the committed prefect.yaml is what deployments.yaml generates, also in a process that has
    imported Prefect's CLI (which changes PyYAML's text style process-wide, as `prefect deploy` in another test did)."""
    import prefect.cli.deployment  # noqa: F401
    assert (ROOT / "prefect.yaml").read_text() == prefect_yaml(declarations()), (
        "prefect.yaml is stale: run `python -m interlink.deployments.prefect_yaml > prefect.yaml`"
    )


def test_a_pooled_deployment_is_retried_as_declared_and_completes(crm_db, home, tmp_path):
    """crm_to_billing deployed with `prefect deploy` to a process pool; the CRM refuses the first two
    attempts' logins (401: fatal, so no task retries), the declared flow retries run it again, and the
    third attempt completes with its ledger row."""
    declared = declarations()
    [sync] = [d for d in declared.deployments if (d.integration, d.flow) == ("crm_to_billing", "sync")]
    test_declared = declared.model_copy(update={"deployments": [sync], "retries": 2, "retry_delay_seconds": 1, "work_pool": "interlink-test"})
    declaration = tmp_path / "deployments.yaml"
    declaration.write_text(yaml.safe_dump(test_declared.model_dump(mode="json", exclude_none=True)))
    (tmp_path / "prefect.yaml").write_text(prefect_yaml(test_declared))

    crm_open = threading.Event()
    crm_open.set()
    crm = Held(FailFirst(create_app(crm_db, api_key="k-pool"), "/customers", 2, status=401), "/customers", crm_open)
    with prefect_server(tmp_path / "prefect", "sqlite") as (url, log), serve(crm) as crm_url:
        env = {
            **{name: value for name, value in os.environ.items() if not name.startswith("PREFECT_")},
            "PREFECT_API_URL": url,
            "PREFECT_HOME": str(tmp_path / "worker-home"),
            "PREFECT_WORKER_QUERY_SECONDS": "1",  # how often the worker asks for due runs (default 10 s)
            "INTERLINK_DEPLOYMENTS_FILE": str(declaration),
            "INTERLINK_CRM__BASE_URL": crm_url,
            "INTERLINK_CRM__AUTH__KIND": "api_key",
            "INTERLINK_CRM__AUTH__KEY": "k-pool",
            "INTERLINK_FINANCE__BASE_URL": crm_url,
            "INTERLINK_BILLING__URL": f"sqlite:///{home / 'billing.db'}",
        }

        def prefect(*args: str) -> str:
            done = subprocess.run([BIN / "prefect", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
            assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
            return done.stdout

        started = time.monotonic()
        prefect("work-pool", "create", "interlink-test", "--type", "process")
        pool_s, started = time.monotonic() - started, time.monotonic()
        prefect("deploy", "--all", "--prefect-file", str(tmp_path / "prefect.yaml"))
        deployed_s = time.monotonic() - started

        with SyncPrefectClient(api=url) as client:
            deployment = client.read_deployment_by_name("crm_to_billing/crm_to_billing")
            [schedule] = deployment.schedules
            assert (schedule.schedule.cron, schedule.schedule.timezone) == (sync.cron, declared.timezone)
            assert deployment.parameters == sync.parameters and set(sync.tags) <= set(deployment.tags)
            assert deployment.entrypoint == "interlink.deployments.runner:DEPLOYED.crm_to_billing.sync"
            assert deployment.work_pool_name == "interlink-test"
            assert deployment.global_concurrency_limit.limit == declared.limit(sync)  # Prefect enforces it, not us
            assert deployment.job_variables["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"  # for the crashed-run automation
            assert deployment.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]

            worker_log = tmp_path / "worker.log"
            with worker_log.open("w") as out:
                # as from a terminal or a service manager: a background job of a script inherits SIGINT ignored, and
                # then Prefect's worker ignores Ctrl-C and its first SIGTERM too (its handler re-sends itself SIGINT)
                worker = subprocess.Popen([BIN / "prefect", "worker", "start", "--pool", "interlink-test"], env=env, cwd=tmp_path,
                                          stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
            try:
                triggered = time.monotonic()
                flow_run = client.create_flow_run_from_deployment(deployment.id)
                final = wait_until(lambda: (r := client.read_flow_run(flow_run.id)).state.is_final() and r, 240,
                                   "the pooled run finishing", worker_log)
                ran_s = time.monotonic() - triggered
                states = [s.name for s in sorted(client.read_flow_run_states(flow_run.id), key=lambda s: s.timestamp)]
                # two runs at once: the deployment's concurrency limit (1) makes one wait for the other's slot. The CRM
                # holds the reading run until the other is seen waiting, so a slow worker cannot run them one by one.
                crm_open.clear()
                pair = [client.create_flow_run_from_deployment(deployment.id).id for _ in range(2)]
                try:
                    wait_until(lambda: any(s.name == "AwaitingConcurrencySlot" for i in pair for s in client.read_flow_run_states(i)),
                               120, "a run waiting for the deployment's concurrency slot", worker_log)
                finally:
                    crm_open.set()
                first, second = sorted(wait_until(lambda: all((runs := [client.read_flow_run(i) for i in pair])[n].state.is_final() for n in (0, 1)) and runs,
                                                  120, "both runs finishing", worker_log), key=lambda r: r.start_time)
                waited = [s.name for s in client.read_flow_run_states(second.id)]
                # the API has the runs final before their processes have flushed and exited: Ctrl-C once they are gone
                wait_until(lambda: not psutil.Process(worker.pid).children(recursive=True), 120, "the runs' processes exiting", worker_log)
            finally:
                worker.send_signal(signal.SIGINT)  # what Ctrl-C does: the worker stops polling and exits
                try:
                    code = worker.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(worker.pid, signal.SIGKILL)
                    raise AssertionError(f"the worker did not exit within 60 s of SIGINT:\n{worker_log.read_text()[-3000:]}") from None
    assert final.state.is_completed(), (final.state, worker_log.read_text()[-3000:])
    assert final.run_count == 3, states  # two failed attempts and the one that completed
    assert states.count("AwaitingRetry") == 2 and states.count("Running") == 3, states
    assert final.work_pool_name == "interlink-test"
    assert first.state.is_completed() and second.state.is_completed(), (first.state, second.state)
    assert first.end_time <= second.start_time and "AwaitingConcurrencySlot" in waited, (first.end_time, second.start_time, waited)
    assert code == 0, worker_log.read_text()[-2000:]
    try:  # nothing the worker started is left behind
        os.killpg(worker.pid, 0)
        raise AssertionError(f"processes of the worker's group {worker.pid} are still running")
    except ProcessLookupError:
        pass
    [row] = [r for r in Ledger(f"sqlite:///{home / 'interlink.db'}").runs("crm_to_billing")
             if r["flow_run_id"] == str(flow_run.id) and r["state"] == "QUARANTINED"]
    assert row["rows_inserted"] > 4000, row
    print(f"\n`prefect work-pool create` {pool_s:.1f} s, `prefect deploy --all` {deployed_s:.1f} s; the triggered run completed "
          f"(3 attempts) {ran_s:.1f} s later, {(final.end_time - final.start_time).total_seconds():.1f} s from its first start")
