"""Alerts: a JSON notification to a configurable URL when a run fails, quarantines too much, or waits for a person.

The payload names the integration, the state, the run's counts and a link to the run in the
Prefect UI; it carries no secret and no record values. Sending never fails a run: a
destination that does not answer is logged and skipped.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from prefect.settings import PREFECT_UI_URL

from interlink.ledger import Ledger
from interlink.settings import Settings

log = logging.getLogger(__name__)


def alert(integration: str, state: str, flow_run_id: str | None, message: str, counts: dict[str, Any] | None = None) -> None:
    """Send one alert to `INTERLINK_ALERT_URL`, if set."""
    settings = Settings.load()
    if not settings.alert_url:
        return
    payload = {
        "integration": integration,
        "state": state,
        "message": message,
        "counts": counts if counts is not None else _ledgered_counts(settings, integration, flow_run_id),
        "flow_run_id": flow_run_id,
        "link": f"{PREFECT_UI_URL.value() or 'http://127.0.0.1:4200'}/runs/flow-run/{flow_run_id}",
    }
    try:
        httpx.post(settings.alert_url, json=payload, timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        log.warning("alert for %s (%s) not delivered: %s", integration, state, type(exc).__name__)


def _ledgered_counts(settings: Settings, integration: str, flow_run_id: str | None) -> dict[str, int]:
    run = next((r for r in Ledger(settings.state_db).runs(integration, limit=20) if r["flow_run_id"] == flow_run_id), None)
    return {k: v for k, v in (run or {}).items() if k.startswith("rows_")}
