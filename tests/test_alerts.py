"""Alerts reach a local HTTP sink when a run fails, quarantines too much, or waits for approval, naming the
integration's owner and the runbook's section for the state."""

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from interlink.data_checks.policy import Gate
from interlink.demo_systems.server import serve
from interlink.flows.crm_to_billing import PIPELINE as crm_to_billing
from interlink.flows.pipeline import sync_flow
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from interlink.alerts import AUTOMATIONS
from tests.conftest import API_KEY

ROOT = Path(__file__).parents[1]


def sink() -> tuple[Starlette, list[dict]]:
    received: list[dict] = []

    async def collect(request: Request) -> JSONResponse:
        received.append(await request.json())
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/alerts", collect, methods=["POST"])]), received


def test_alerts_say_what_happened_with_counts_and_a_link_and_no_secret(systems, home, monkeypatch):
    monkeypatch.setenv("INTERLINK_BILLING__URL", f"sqlite:///{home / 'billing.db'}")
    app, received = sink()
    with serve(app) as url:
        monkeypatch.setenv("INTERLINK_ALERT_URL", f"{url}/alerts")
        with systems(api_key="wrong-key-for-alert"):
            failed = crm_to_billing.sync(return_state=True)
        with systems():
            strict = sync_flow(replace(crm_to_billing, gate=Gate(alert_above=0.05)))
            quarantined = strict(return_state=True)
            relaxed = crm_to_billing.sync(full_refresh=True, return_state=True)  # 10% quarantined is under its 10% alert share
            waiting = sync_flow(replace(crm_to_billing, gate=Gate(policy="approve", approval_timeout_s=1, approval_poll_s=0.2)))
            timed_out = waiting(full_refresh=True, return_state=True)

    assert failed.is_failed() and quarantined.is_completed() and relaxed.is_completed() and timed_out.is_failed()
    by_run = {}
    for payload in received:
        by_run.setdefault(payload["flow_run_id"], []).append(payload)
    [fail] = by_run[str(failed.state_details.flow_run_id)]
    assert fail["integration"] == "crm_to_billing" and fail["state"] == "FAILED" and "credentials were rejected" in fail["message"]
    assert fail["link"].endswith(f"/runs/flow-run/{failed.state_details.flow_run_id}") and "rows_read" in fail["counts"]
    assert (fail["owner"], fail["timezone"], fail["runbook"]) == ("Billing (#billing-oncall)", "Europe/Berlin", "docs/operations/runbook.md#runbook-failed")
    [quarantine] = by_run[str(quarantined.state_details.flow_run_id)]
    assert quarantine["state"] == "QUARANTINED" and quarantine["counts"]["rows_quarantined"] == 505
    assert str(relaxed.state_details.flow_run_id) not in by_run
    assert [p["state"] for p in by_run[str(timed_out.state_details.flow_run_id)]] == ["PAUSED", "FAILED"]
    assert "wrong-key-for-alert" not in str(received) and API_KEY not in str(received)


# Deployed runs: the Prefect server alerts, through the automations declared with the deployments.
STRICT = sync_flow(replace(crm_to_billing, gate=Gate(alert_above=0.05)))  # its 505 of 5100 rows dead-lettered are too many
WAITING = sync_flow(replace(crm_to_billing, gate=Gate(policy="approve", approval_timeout_s=3, approval_poll_s=0.5)))


def served() -> list:
    """Three deployments of crm_to_billing: as shipped, with a strict alert share, and waiting for approval."""
    deployments = []
    for name, flow, entrypoint in [("plain", crm_to_billing.sync, "interlink.flows.crm_to_billing:PIPELINE.sync"),
                                   ("strict", STRICT, f"{__name__}:STRICT"), ("waiting", WAITING, f"{__name__}:WAITING")]:
        deployment = flow.to_deployment(name=name, parameters={"full_refresh": True})
        deployment.entrypoint = entrypoint
        deployments.append(deployment)
    return deployments


def test_deployed_runs_are_alerted_by_the_servers_automations(crm_db, home, tmp_path, monkeypatch):
    from interlink.demo_systems.app import create_app
    from interlink.deployments import automations
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.test_deployments import _deployment, prefect_server, wait_until

    app, received = sink()
    with prefect_server(tmp_path / "prefect", "sqlite") as (api, server_log), serve(app) as sink_url, \
            serve(create_app(crm_db, api_key=API_KEY)) as crm_url, temporary_settings({PREFECT_API_URL: api}):
        monkeypatch.setenv("INTERLINK_ALERT_URL", f"{sink_url}/alerts")
        names = automations.apply()
        assert automations.apply() == names  # idempotent: updated, not duplicated
        env = {
            **os.environ, "PREFECT_API_URL": api, "PREFECT_RUNNER_POLL_FREQUENCY": "1",
            "INTERLINK_CRM__BASE_URL": crm_url, "INTERLINK_CRM__AUTH__KIND": "api_key", "INTERLINK_CRM__AUTH__KEY": API_KEY,
            "INTERLINK_FINANCE__BASE_URL": crm_url, "INTERLINK_BILLING__URL": f"sqlite:///{home / 'billing.db'}",
        }
        code = f"from prefect import serve; from {__name__} import served; serve(*served())"
        with (tmp_path / "serve.log").open("w") as out:
            runner = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            with SyncPrefectClient(api=api) as client:
                assert len(client.read_automations()) == len(names) and set(AUTOMATIONS.values()) <= set(names)
                runs, finals = {}, {}
                for name in ("plain", "strict", "waiting"):
                    deployment = wait_until(lambda n=name: _deployment(client, f"crm_to_billing/{n}"), 90, f"deployment {name}")
                    runs[name] = client.create_flow_run_from_deployment(deployment.id).id
                    finals[name] = wait_until(lambda r=runs[name]: (f := client.read_flow_run(r)).state.is_final() and f, 120, f"the {name} run ending")
        finally:
            runner.terminate()
            runner.wait(60)

        def alerts_of(run_id) -> list[str]:
            return [p["state"] for p in received if p["flow_run_id"] == str(run_id)]

        wait_until(lambda: alerts_of(runs["strict"]) and len(alerts_of(runs["waiting"])) == 2, 120, f"the server's alerts (so far {received})", server_log)
        with SyncPrefectClient(api=api) as client:
            failures = {state.message for state in client.read_flow_run_states(runs["waiting"]) if state.is_failed()}
    by_state = {(p["flow_run_id"], p["state"]): p for p in received}
    assert alerts_of(runs["plain"]) == []  # 505 of 5100 dead-lettered is under its 10 % share
    quarantine = by_state[(str(runs["strict"]), "QUARANTINED")]
    assert alerts_of(runs["strict"]) == ["QUARANTINED"] and quarantine["counts"]["rows_quarantined"] == 505
    assert quarantine["integration"] == "crm_to_billing" and quarantine["deployment"] == "strict"
    assert quarantine["link"].endswith(f"/runs/flow-run/{runs['strict']}") and "505 of 5100 rows" in quarantine["message"]
    assert (quarantine["owner"], quarantine["timezone"]) == ("Billing (#billing-oncall)", "Europe/Berlin")  # deployments.yaml's
    assert quarantine["runbook"] == "docs/operations/runbook.md#runbook-quarantined"
    assert sorted(alerts_of(runs["waiting"])) == ["FAILED", "PAUSED"]
    assert finals["waiting"].state.is_failed()  # the pause expired: failed by the server, then by the flow; alerted once
    assert by_state[(str(runs["waiting"]), "FAILED")]["message"] in failures
    assert API_KEY not in str(received)
