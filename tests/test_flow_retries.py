"""Flow retries from `deployments.yaml` reach every run: the flow at each deployment's entrypoint carries them,
and a served run that fails is retried as declared (counted by the Prefect server)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from interlink.deployments.runner import declarations, runner_deployments
from prefect.client.orchestration import SyncPrefectClient
from prefect.flows import load_flow_from_entrypoint

from interlink.ledger import Ledger
from interlink.settings import ConfigError
from tests.test_deployments import _deployment, prefect_api, wait_until  # noqa: F401 (prefect_api is a fixture)

BIN = Path(sys.executable).parent
ROOT = Path(__file__).parents[1]

DECLARATION = """\
timezone: Europe/Berlin
retries: 2
retry_delay_seconds: 1
integrations:
  crm_to_billing: {owner: {team: Billing, contact: "#billing-oncall"}}
deployments:
  - integration: crm_to_billing
    flow: sync
    cron: "0 2 * * *"
    parameters: {full_refresh: false}
    tags: [retry-test]
"""


def test_each_deployments_entrypoint_loads_the_flow_with_the_declared_retries(home):
    """What Prefect's runner and a worker do for every run: load the flow again from the entrypoint."""
    declared = declarations()
    assert declared.retries > 0
    for deployment in runner_deployments():
        flow = load_flow_from_entrypoint(deployment.entrypoint)
        assert (flow.name, flow.retries, flow.retry_delay_seconds) == (
            deployment.flow_name, declared.retries, declared.retry_delay_seconds,
        ), deployment.entrypoint


def test_another_declaration_is_named_by_INTERLINK_DEPLOYMENTS_FILE(home, tmp_path, monkeypatch):
    path = tmp_path / "deployments.yaml"
    path.write_text(DECLARATION)
    monkeypatch.setenv("INTERLINK_DEPLOYMENTS_FILE", str(path))
    [deployment] = runner_deployments()
    flow = load_flow_from_entrypoint(deployment.entrypoint)
    assert (flow.retries, flow.retry_delay_seconds) == (2, 1)
    monkeypatch.setenv("INTERLINK_DEPLOYMENTS_FILE", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="INTERLINK_DEPLOYMENTS_FILE names .*missing.yaml, which is not a file"):
        declarations()


def test_a_failing_served_run_is_retried_as_declared(prefect_api, home, tmp_path):  # noqa: F811
    final, states, port, flow_run = serve_failing_run(prefect_api, tmp_path, DECLARATION)
    assert final.state.is_failed(), (final.state, (tmp_path / "serve.log").read_text()[-3000:])
    assert final.run_count == 3, states  # the first attempt and the 2 declared retries
    assert states.count("AwaitingRetry") == 2 and states.count("Running") == 3, states
    assert f"port {port} failed: Connection refused" in final.state.message, final.state.message
    attempts = [r for r in Ledger(f"sqlite:///{home / 'interlink.db'}").runs("crm_to_billing") if r["flow_run_id"] == str(flow_run.id)]
    assert attempts and {r["state"] for r in attempts} == {"FAILED"}, attempts


def test_a_run_waiting_longer_for_its_retry_than_crash_after_s_is_not_crashed(prefect_api, tmp_path):  # noqa: F811
    """No heartbeat comes while a run waits for its flow retry: the crashed-run automation must not take the
    wait for a dead process (its first attempt's heartbeat is 40 s old when the retry starts)."""
    declaration = DECLARATION.replace("retries: 2\nretry_delay_seconds: 1", "retries: 1\nretry_delay_seconds: 40\ncrash_after_s: 31")
    final, states, _, _ = serve_failing_run(prefect_api, tmp_path, declaration)
    assert final.state.is_failed() and final.run_count == 2, (final.state, states)
    assert "Crashed" not in states and states.count("AwaitingRetry") == 1, states


def serve_failing_run(api: str, tmp_path: Path, text: str):
    """`interlink serve` with declaration `text`; one run of crm_to_billing whose every attempt fails at once.
    Returns its final flow run, its state names in order, the refusing port and the created run."""
    declaration = tmp_path / "deployments.yaml"
    declaration.write_text(text)
    with socket.socket() as closed:  # bound but not listening: every connection to it is refused at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        nowhere = f"127.0.0.1:{port}"
        env = {
            **os.environ,  # INTERLINK_HOME from `home`; no other INTERLINK_* variable
            "PREFECT_API_URL": api,
            "PREFECT_RUNNER_POLL_FREQUENCY": "1",
            "INTERLINK_DEPLOYMENTS_FILE": str(declaration),
            "INTERLINK_CRM__BASE_URL": f"http://{nowhere}",
            "INTERLINK_CRM__AUTH__KIND": "api_key",
            "INTERLINK_CRM__AUTH__KEY": "k-retries",
            "INTERLINK_FINANCE__BASE_URL": f"http://{nowhere}",
            "INTERLINK_BILLING__URL": f"postgresql+psycopg://postgres@{nowhere}/billing",  # the run fails reading its watermark
        }
        log = (tmp_path / "serve.log").open("w")
        runner = subprocess.Popen([BIN / "interlink", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            with SyncPrefectClient(api=api) as client:
                deployment = wait_until(lambda: _deployment(client, "crm_to_billing/crm_to_billing"), 60, "the deployment registered")
                flow_run = client.create_flow_run_from_deployment(deployment.id)
                final = wait_until(lambda: (r := client.read_flow_run(flow_run.id)).state.is_final() and r, 150, "the run ending")
                states = [s.name for s in sorted(client.read_flow_run_states(flow_run.id), key=lambda s: s.timestamp)]
        finally:
            runner.terminate()
            runner.wait(30)
    return final, states, port, flow_run
