"""SLA breaches are seen by the Prefect server: the automations `deployments/automations.py` declares from each
integration's `sla`, on a real `prefect server start`, alerting a real local HTTP receiver."""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import UTC, datetime, timedelta
from datetime import time as clock
from uuid import uuid4

import pytest
from interlink.connectors.errors import ConfigError
from interlink.demo_systems.app import create_app
from interlink.demo_systems.server import serve
from interlink.deployments import automations
from interlink.deployments.declaration import read
from prefect.automations import CallWebhook, DoNothing, Posture
from prefect.client.orchestration import SyncPrefectClient
from prefect.server.events.schemas.events import ReceivedEvent
from prefect.server.utilities.user_templates import render_user_template

from tests.conftest import API_KEY
from tests.test_alerts import sink
from tests.test_crashed_runs import interlink_serve
from tests.test_deployments import _deployment, prefect_server, wait_until

FRESH_S, DONE_S = 10, 12  # orders_to_erp's promises; its run fails at once, so both are breached
GRANULARITY_S = 5  # how often the server evaluates proactive triggers (PREFECT_SERVER_EVENTS_PROACTIVE_GRANULARITY)

DECLARATION = f"""\
timezone: Europe/Berlin
integrations:
  crm_to_billing:
    owner: {{team: Billing, contact: "#billing-oncall"}}
    sla: {{fresh_within: 1h, done_by: "02:00:40"}}
  orders_to_erp:
    owner: {{team: Fulfilment, contact: "#erp-integrations"}}
    sla: {{fresh_within: {FRESH_S}s, done_by: "02:00:{DONE_S}"}}
deployments:
  - integration: crm_to_billing
    cron: "0 2 * * *"
    parameters: {{full_refresh: true}}
  - integration: orders_to_erp
    cron: "0 2 * * *"
"""


def test_declared_builds_one_watch_per_promise(tmp_path, home, monkeypatch):
    declaration = tmp_path / "deployments.yaml"
    declaration.write_text(DECLARATION + "  - integration: crm_to_billing\n    flow: reconcile\n    cron: '0 5 * * 0'\n")
    monkeypatch.setenv("INTERLINK_DEPLOYMENTS_FILE", str(declaration))
    by_name = {a.name: a for a in automations.declared()}  # no alert URL: no webhook block, no server needed
    fresh = by_name[f"interlink: SLA of orders_to_erp: fresh within {FRESH_S}s"]
    done = by_name["interlink: SLA of orders_to_erp: done by 02:00"]
    assert len([n for n in by_name if "SLA" in n]) == 4  # fresh and done by, of each; none for the reconcile deployment
    assert fresh.trigger.posture == done.trigger.posture == Posture.Proactive
    assert fresh.trigger.within == timedelta(seconds=FRESH_S) and done.trigger.within == timedelta(seconds=DONE_S)
    assert fresh.trigger.expect == done.trigger.expect == {"prefect.flow-run.Completed", "prefect.flow-run.Quarantined"}
    assert fresh.trigger.after == fresh.trigger.expect | {"prefect.flow-run.Pending", "prefect.flow-run.Late"}
    assert done.trigger.after == {"prefect.flow-run.Pending", "prefect.flow-run.Late"}
    assert fresh.trigger.for_each == {"related:deployment:prefect.resource.id"} and done.trigger.for_each == {"prefect.resource.id"}
    related = [dict(spec.root) for spec in done.trigger.match_related]
    assert {"prefect.resource.role": "deployment", "prefect.resource.name": "orders_to_erp"} in related
    assert {"prefect.resource.role": "tag", "prefect.resource.id": "prefect.tag.auto-scheduled"} in related
    assert isinstance(fresh.actions[0], DoNothing) and "Fulfilment (#erp-integrations)" in fresh.description

    monkeypatch.setenv("INTERLINK_RUNBOOK_URL", "https://docs.example.com/operations/runbook/")
    [*_, watch] = automations.sla_breaches(read(declaration), block_id=uuid4())
    assert isinstance(watch.actions[0], CallWebhook)
    event = ReceivedEvent(event="prefect.flow-run.Pending", occurred=datetime(2026, 12, 7, 1, tzinfo=UTC), resource={"prefect.resource.id": "prefect.flow-run.abc"},
                          id=uuid4())
    payload = json.loads(asyncio.run(render_user_template(watch.actions[0].payload, {"event": event, "deployment": {"id": "d1"}})))
    assert payload.pop("link").endswith("/deployments/deployment/d1")
    assert payload == {
        "integration": "orders_to_erp", "state": "SLA_BREACH", "counts": None, "flow_run_id": "abc", "deployment": "orders_to_erp",
        "message": f"orders_to_erp: its scheduled sync (cron `0 2 * * *`) was not Completed by 02:00 Europe/Berlin ({DONE_S}s after it began); "
                   "its last event: Pending at 2026-12-07T01:00:00+00:00",
        "owner": "Fulfilment (#erp-integrations)",
        "sla": "each scheduled sync done by 02:00 Europe/Berlin", "timezone": "Europe/Berlin",
        "runbook": "https://docs.example.com/operations/runbook/#runbook-sla-breach",
    }


def test_done_by_counts_from_the_cron_time_in_wall_clock():
    assert automations.done_within("0 2 * * *", clock(6), "x") == timedelta(hours=4)
    assert automations.done_within("0 23 * * 1-5", clock(6), "x") == timedelta(hours=7)  # the next morning
    with pytest.raises(ConfigError, match=r"^integrations.x.sla.done_by: its sync runs more than once a day"):
        automations.done_within("0 * * * *", clock(6), "x")


def test_a_breached_sla_is_alerted_once_by_the_server_and_a_run_in_time_sends_none(crm_db, home, tmp_path):
    app, received = sink()
    declaration = tmp_path / "deployments.yaml"
    declaration.write_text(DECLARATION)
    with prefect_server(tmp_path / "prefect", "sqlite") as (api, server_log), serve(app) as sink_url, \
            serve(create_app(crm_db, api_key=API_KEY)) as crm_url, SyncPrefectClient(api=api) as client:
        env = {  # orders_to_erp's storefront and rates are the CRM, healthy (`interlink serve` checks) and without /orders:
            # its run fails at once
            **os.environ, "PREFECT_API_URL": api, "PREFECT_RUNNER_POLL_FREQUENCY": "1",
            "INTERLINK_DEPLOYMENTS_FILE": str(declaration), "INTERLINK_ALERT_URL": f"{sink_url}/alerts",
            "INTERLINK_CRM__BASE_URL": crm_url, "INTERLINK_CRM__AUTH__KIND": "api_key", "INTERLINK_CRM__AUTH__KEY": API_KEY,
            "INTERLINK_FINANCE__BASE_URL": crm_url, "INTERLINK_BILLING__URL": f"sqlite:///{home / 'billing.db'}",
            "INTERLINK_STOREFRONT__BASE_URL": crm_url, "INTERLINK_RATES__BASE_URL": crm_url, "INTERLINK_ERP__URL": f"sqlite:///{home / 'erp.db'}",
            "INTERLINK_STOREFRONT__HEALTH_PATH": "/countries/DE", "INTERLINK_RATES__HEALTH_PATH": "/countries/DE",
        }
        runner = interlink_serve(env, tmp_path / "serve.log")
        try:
            runs = {}
            for name in ("crm_to_billing", "orders_to_erp"):  # as the scheduler makes them, now
                deployment = wait_until(lambda n=name: runner.poll() is None and _deployment(client, f"{n}/{n}"), 90, f"deployment {name}")
                runs[name] = client.create_flow_run_from_deployment(deployment.id, tags=["auto-scheduled"]).id

            def breaches() -> list[dict]:
                return [p for p in received if p["state"] == "SLA_BREACH"]

            wait_until(lambda: len(breaches()) == 2, 60, f"two SLA breaches of orders_to_erp (so far {received})", server_log)
            crm = wait_until(lambda: (r := client.read_flow_run(runs["crm_to_billing"])).state.is_final() and r, 60, "crm_to_billing ending")
            # A breach alerted again would come a window later; crm_to_billing's deadline is 40 s after it began.
            until = max(time.time() + max(FRESH_S, DONE_S), crm.start_time.timestamp() + 40) + 2 * GRANULARITY_S
            while time.time() < until:  # watching that nothing more comes, for as long as it could take to
                assert len(breaches()) == 2, breaches()
                time.sleep(0.5)
        finally:
            runner.terminate()
            runner.wait(60)
    assert crm.state.is_completed(), crm.state
    by_sla = {p["sla"]: p for p in breaches()}
    assert set(by_sla) == {f"a Completed sync at least every {FRESH_S}s", "each scheduled sync done by 02:00 Europe/Berlin"}
    for alert in by_sla.values():
        assert (alert["integration"], alert["owner"], alert["deployment"]) == ("orders_to_erp", "Fulfilment (#erp-integrations)", "orders_to_erp")
        assert alert["flow_run_id"] == str(runs["orders_to_erp"]) and alert["timezone"] == "Europe/Berlin"
        assert "/deployments/deployment/" in alert["link"] and alert["runbook"] == "docs/operations/runbook.md#runbook-sla-breach"
    [failed] = [p for p in received if p["state"] == "FAILED"]  # the run's own alert names its owner too
    assert (failed["integration"], failed["owner"], failed["runbook"]) == ("orders_to_erp", "Fulfilment (#erp-integrations)", "docs/operations/runbook.md#runbook-failed")
    assert [p for p in received if p["integration"] == "crm_to_billing"] == []
