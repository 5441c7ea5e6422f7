"""Alerts reach a local HTTP sink when a run fails, quarantines too much, or waits for approval."""

from dataclasses import replace

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from data_checks.policy import Gate
from demo_systems.server import serve
from flows.crm_to_billing import PIPELINE as crm_to_billing
from flows.pipeline import sync_flow
from tests.conftest import API_KEY


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
    [quarantine] = by_run[str(quarantined.state_details.flow_run_id)]
    assert quarantine["state"] == "QUARANTINED" and quarantine["counts"]["rows_quarantined"] == 505
    assert str(relaxed.state_details.flow_run_id) not in by_run
    assert [p["state"] for p in by_run[str(timed_out.state_details.flow_run_id)]] == ["PAUSED", "FAILED"]
    assert "wrong-key-for-alert" not in str(received) and API_KEY not in str(received)
