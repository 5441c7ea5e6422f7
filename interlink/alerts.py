"""Alerts: a JSON notification to a configurable URL when a run fails, crashes, quarantines too much, or waits for a person.

The payload names the integration, its owner (`deployments.yaml`), the state, the run's counts, a
link to the run in the Prefect UI and one to the runbook's section for the state (`runbook()`), and the
declaration's timezone; it carries no secret and no record values. SLA breaches (`SLA_BREACH`) are
seen and alerted by the server alone (`deployments/automations.py`).

Who sends it: for a run of a deployment, the Prefect server, through the Automations declared with
the deployments (`deployments/automations.py`), which react to the run's state events, and to the
`QUARANTINED_EVENT` a run emits when it dead-letters more than its share; nothing is sent from here
then, so a crash no process survives is alerted too. A run outside any deployment (`interlink run`,
often on a temporary local API that runs no automations) is alerted from here, a POST to
`INTERLINK_ALERT_URL`. Sending never fails a run: a destination that does not answer is logged and skipped.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from prefect.client.orchestration import get_client
from prefect.events import emit_event
from prefect.settings import PREFECT_UI_URL

from interlink.connectors.errors import ConfigError
from interlink.ledger import Ledger
from interlink.settings import Settings

log = logging.getLogger(__name__)


QUARANTINED_EVENT = "interlink.run.quarantined"
AUTOMATIONS = {  # the server's automation that alerts each state of a deployment's run, by name
    "FAILED": "interlink: alert failed runs",
    "CRASHED": "interlink: alert crashed runs",
    "PAUSED": "interlink: alert runs paused for approval",
    "QUARANTINED": "interlink: alert runs that dead-letter too much",
}


def alert(
    integration: str, state: str, flow_run_id: str | None, message: str, counts: dict[str, Any] | None = None,
    deployment_id: str | None = None,
) -> None:
    """Alert that run `flow_run_id` of `integration` is in `state` (FAILED, CRASHED, PAUSED or QUARANTINED).

    For a run of deployment `deployment_id` on a server that has the automation for `state`, the server alerts
    (a QUARANTINED alert is the run's `QUARANTINED_EVENT` for it); otherwise a POST to `INTERLINK_ALERT_URL`, if set."""
    if deployment_id and _automated(state):
        if state == "QUARANTINED":
            _quarantined_event(flow_run_id, deployment_id, message, counts or {})
        return
    settings = Settings.load()
    if not settings.alert_url:
        return
    owner, timezone = _declared(integration)
    payload = {
        "integration": integration,
        "state": state,
        "message": message,
        "counts": counts if counts is not None else _ledgered_counts(settings, integration, flow_run_id),
        "flow_run_id": flow_run_id,
        "link": f"{ui_url()}/runs/flow-run/{flow_run_id}",
        "owner": owner,
        "timezone": timezone,
        "runbook": runbook(state),
    }
    try:
        httpx.post(settings.alert_url, json=payload, timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        log.warning("alert for %s (%s) not delivered: %s", integration, state, type(exc).__name__)


def ui_url() -> str:
    """The Prefect UI's address, for links to runs."""
    return PREFECT_UI_URL.value() or "http://127.0.0.1:4200"


def runbook(state: str) -> str:
    """The runbook's section for `state`: `INTERLINK_RUNBOOK_URL` (docs/operations/runbook.md by default) and
    `#runbook-<state>`, e.g. `docs/operations/runbook.md#runbook-sla-breach`."""
    return f"{Settings.load().runbook_url}#runbook-{state.lower().replace('_', '-')}"


def _declared(integration: str) -> tuple[str | None, str | None]:
    """The owner (`Team (#contact)`) and timezone `deployments.yaml` declares for `integration`; None for one it does
    not declare, or when it cannot be read (the alert goes out all the same)."""
    from interlink.deployments.declaration import read

    try:
        declared = read()
    except ConfigError as exc:
        log.warning("alert without its owner: %s", exc)
        return None, None
    found = declared.integrations.get(integration)
    return (str(found.owner), declared.timezone) if found else (None, None)


def _automated(state: str) -> bool:
    """Whether the Prefect server has an enabled automation that alerts `state`; False when it cannot be asked."""
    try:
        with get_client(sync_client=True) as client:
            return any(a.enabled for a in client.read_automations_by_name(AUTOMATIONS[state]))
    except Exception as exc:  # the API out of reach: alert from here
        log.warning("could not read the Prefect server's automations: %s", type(exc).__name__)
        return False


def _quarantined_event(flow_run_id: str | None, deployment_id: str, message: str, counts: dict[str, Any]) -> None:
    emit_event(
        QUARANTINED_EVENT,
        resource={"prefect.resource.id": f"prefect.flow-run.{flow_run_id}"},
        related=[{"prefect.resource.id": f"prefect.deployment.{deployment_id}", "prefect.resource.role": "deployment"}],
        payload={"message": message, "counts": counts},
    )


def _ledgered_counts(settings: Settings, integration: str, flow_run_id: str | None) -> dict[str, int]:
    run = next((r for r in Ledger(settings.state_db).runs(integration, limit=20) if r["flow_run_id"] == flow_run_id), None)
    return {k: v for k, v in (run or {}).items() if k.startswith("rows_")}
