"""The webhook receiver: a push source tells Interlink to run its integration now.

`POST /webhooks/{integration}` carries a JSON body and three headers:
`X-Interlink-Timestamp` (unix seconds), `X-Interlink-Event-Id`, and
`X-Interlink-Signature: sha256=HEX`, HEX being HMAC-SHA256(the integration's secret,
f"{timestamp}.{body}"). An accepted event is committed to `webhook_events` before its
flow run is triggered, so a failed trigger loses nothing: `rerun` fires it again. An event
id is accepted once per integration. Every refusal is logged with its reason, never with
the secret or the signature.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from prefect.deployments import run_deployment
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from connectors.sql import utcnow
from interlink.state import WEBHOOK_EVENTS, state_engine

Trigger = Callable[[str, dict], str | None]  # (integration, payload) -> flow run id; raises if it cannot start one

RECEIVED, TRIGGERED, FAILED = "received", "triggered", "failed"
MAX_EVENT_ID = 200  # the column's length
MAX_BODY = 1_000_000  # bytes

log = logging.getLogger("interlink.webhooks")


def create_app(
    state_url: str,
    secrets: dict[str, SecretStr],
    trigger: Trigger,
    tolerance_s: int = 300,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The receiver for the integrations in `secrets`, storing events in the state database at `state_url`."""
    engine = state_engine(state_url)

    async def receive(request: Request) -> JSONResponse:
        integration = request.path_params["integration"]
        event_id = request.headers.get("X-Interlink-Event-Id")

        def refuse(status: int, reason: str) -> JSONResponse:
            event = event_id and event_id[:MAX_EVENT_ID]
            log.warning("webhook refused (%s %s): integration=%r event=%r", status, reason, integration[:100], event)
            return JSONResponse({"error": reason}, status)

        if (secret := secrets.get(integration)) is None:
            return refuse(404, "unknown integration")
        body = b""
        async for chunk in request.stream():
            if len(body := body + chunk) > MAX_BODY:
                return refuse(413, "body too large")
        timestamp = request.headers.get("X-Interlink-Timestamp", "")
        signature = request.headers.get("X-Interlink-Signature")
        if not timestamp or not signature:
            return refuse(401, "missing signature")
        if not hmac.compare_digest(sign(secret, timestamp, body).encode(), signature.encode()):
            return refuse(401, "invalid signature")
        try:
            if abs(clock() - int(timestamp)) > tolerance_s:
                return refuse(400, "stale timestamp")
        except ValueError:
            return refuse(400, "invalid timestamp")
        if not event_id:
            return refuse(400, "missing event id")
        if len(event_id) > MAX_EVENT_ID:
            return refuse(400, f"event id longer than {MAX_EVENT_ID} characters")
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return refuse(400, "body is not a JSON object")
        if (row_id := await run_in_threadpool(_store, engine, integration, event_id, payload)) is None:
            return refuse(409, "replayed event")
        return JSONResponse(await run_in_threadpool(_fire, engine, row_id, integration, payload, trigger), 202)

    return Starlette(routes=[Route("/webhooks/{integration}", receive, methods=["POST"])])


def sign(secret: SecretStr, timestamp: str, body: bytes) -> str:
    """The `X-Interlink-Signature` value for `body` sent at `timestamp`."""
    digest = hmac.new(secret.get_secret_value().encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def rerun(state_url: str, event_row_id: int, trigger: Trigger) -> dict[str, Any]:
    """Trigger stored event `event_row_id` again and record the outcome; raises `LookupError` if there is none."""
    engine = state_engine(state_url)
    with engine.connect() as conn:
        row = conn.execute(sa.select(WEBHOOK_EVENTS).where(WEBHOOK_EVENTS.c.id == event_row_id)).first()
    if row is None:
        raise LookupError(f"no webhook event {event_row_id}")
    return _fire(engine, row.id, row.integration, row.payload, trigger)


def deployment_trigger(integration: str, payload: dict | None = None) -> str:
    """Start deployment `{integration}/{integration}` without waiting for it; the flow run's id.

    The payload is not passed on: a sync reads everything changed since its watermark,
    so the event only says when to run.
    """
    return str(run_deployment(f"{integration}/{integration}", timeout=0, tags=["webhook"]).id)


def _store(engine: Engine, integration: str, event_id: str, payload: dict) -> int | None:
    """Commit the event as received; its row id, or None if the integration has seen `event_id` before."""
    try:
        with engine.begin() as conn:
            return conn.execute(
                WEBHOOK_EVENTS.insert().values(
                    integration=integration, event_id=event_id, received_at=utcnow(), payload=payload, status=RECEIVED
                )
            ).inserted_primary_key[0]
    except sa.exc.IntegrityError:
        return None


def _fire(engine: Engine, row_id: int, integration: str, payload: dict, trigger: Trigger) -> dict[str, Any]:
    """Call the trigger for stored event `row_id`, record the outcome, and return it."""
    try:
        flow_run_id, status, error = trigger(integration, payload), TRIGGERED, None
    except Exception as exc:
        flow_run_id, status, error = None, FAILED, f"{type(exc).__name__}: {exc}"[:2000]
        log.error("webhook event %s of %r: trigger failed: %s", row_id, integration, error)
    flow_run_id = None if flow_run_id is None else str(flow_run_id)
    with engine.begin() as conn:
        conn.execute(
            WEBHOOK_EVENTS.update()
            .where(WEBHOOK_EVENTS.c.id == row_id)
            .values(status=status, flow_run_id=flow_run_id, error=error)
        )
    return {"event": row_id, "status": status, "flow_run_id": flow_run_id}
