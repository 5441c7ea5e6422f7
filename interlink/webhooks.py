"""The webhook receiver: a push source tells Interlink to run its integration now, by Standard Webhooks.

`POST /webhooks/{integration}` carries a JSON object and the headers of the Standard Webhooks
specification (standardwebhooks.com): `webhook-id` (the event's id, the same on every retry),
`webhook-timestamp` (unix seconds) and `webhook-signature`, a space-separated list of
`v1,<base64>` signatures, each an HMAC-SHA256 of `{id}.{timestamp}.{body}` under one of the
integration's `whsec_` secrets. The id, the time and the body are signed together, so none can be
changed, nor the request replayed under another id. An integration accepts any of its secrets and a
request may carry several signatures, so a secret is rotated without downtime.

A signed event is committed to `webhook_events` before its integration's deployment is triggered,
and its id is the flow run's idempotency key in Prefect: one id, at most one run. The answers:

    202  the run was triggered: {"event", "status": "triggered", "flow_run_id"}
    200  this id was triggered before: the same answer with "duplicate": true; nothing runs again
    404  the integration has no deployment: the event is kept with that reason, in "error"
    503  the run could not be started (e.g. Prefect is down): the event is kept; the sender's retry
         of the same id, or `interlink webhooks rerun`, triggers it
    400, 401, 404, 413: refused and not kept (malformed, not signed by a secret of the integration,
         timestamp outside the tolerance, unknown integration, body too large)

Every refusal is logged with its reason, never with a secret, a signature or the body.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from connectors.sql import utcnow
from interlink.settings import ConfigError, Settings
from interlink.state import WEBHOOK_EVENTS, state_engine

# (integration, idempotency key or None) -> flow run id; LookupError if the integration has no deployment
Trigger = Callable[[str, str | None], str]

RECEIVED, TRIGGERED, FAILED = "received", "triggered", "failed"
HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
MAX_EVENT_ID = 200  # the column's length
TIMESTAMP = re.compile(r"0|[1-9][0-9]{0,11}")  # unix seconds, as the specification writes them
RETRY_AFTER_S = 60

log = logging.getLogger("interlink.webhooks")


def from_settings(settings: Settings) -> Starlette:
    """The receiver as `interlink webhooks serve` runs it: secrets, limits and state from `settings`."""
    if not settings.webhook_secrets:
        raise ConfigError(
            'INTERLINK_WEBHOOK_SECRETS is not set: give each push integration its whsec_ secret, as JSON: {"orders_to_erp": "whsec_…"}'
        )
    return create_app(
        settings.state_db,
        settings.webhook_secrets,
        deployment_trigger,
        tolerance_s=settings.webhook_tolerance_s,
        max_body=settings.webhook_max_body_bytes,
    )


def create_app(
    state_url: str,
    secrets: dict[str, list[SecretStr]],
    trigger: Trigger,
    tolerance_s: int = 300,
    max_body: int = 1_000_000,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The receiver for the integrations in `secrets`, storing events in the state database at `state_url`."""
    engine = state_engine(state_url)
    signers = {name: [Webhook(secret.get_secret_value()) for secret in keys] for name, keys in secrets.items()}

    async def receive(request: Request) -> JSONResponse:
        integration = request.path_params["integration"]
        event_id = request.headers.get("webhook-id")

        def refuse(status: int, reason: str) -> JSONResponse:
            event = event_id and event_id[:MAX_EVENT_ID]
            log.warning("webhook refused (%s %s): integration=%r event=%r", status, reason, integration[:100], event)
            return JSONResponse({"error": reason}, status)

        if (keys := signers.get(integration)) is None:
            return refuse(404, "unknown integration")
        if (body := await _read(request, max_body)) is None:
            return refuse(413, f"body larger than {max_body} bytes")
        if missing := [name for name in HEADERS if not request.headers.get(name)]:
            return refuse(401, f"missing header {', '.join(missing)}")
        if len(event_id) > MAX_EVENT_ID:
            return refuse(400, f"webhook-id longer than {MAX_EVENT_ID} characters")
        if not TIMESTAMP.fullmatch(timestamp := request.headers["webhook-timestamp"]):
            return refuse(400, "webhook-timestamp is not unix seconds")
        if abs(clock() - int(timestamp)) > tolerance_s:
            return refuse(400, f"webhook-timestamp more than {tolerance_s}s from now")
        try:
            text = body.decode()
        except UnicodeDecodeError:
            return refuse(400, "body is not UTF-8")
        if not _signed(keys, event_id, int(timestamp), text, request.headers["webhook-signature"]):
            return refuse(401, "invalid signature")
        try:
            payload = json.loads(text)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return refuse(400, "body is not a JSON object")
        return await run_in_threadpool(_accept, engine, integration, event_id, payload, trigger)

    return Starlette(routes=[Route("/webhooks/{integration}", receive, methods=["POST"])])


def rerun(state_url: str, event_row_id: int, trigger: Trigger) -> dict[str, Any]:
    """Trigger stored event `event_row_id` again, as a new run, and record the outcome; `LookupError` if there is none."""
    engine = state_engine(state_url)
    with engine.connect() as conn:
        row = conn.execute(sa.select(WEBHOOK_EVENTS).where(WEBHOOK_EVENTS.c.id == event_row_id)).first()
    if row is None:
        raise LookupError(f"no webhook event {event_row_id}")
    return _fire(engine, row.id, row.integration, None, trigger)[0]


def deployment_trigger(integration: str, idempotency_key: str | None = None) -> str:
    """Start deployment `{integration}/{integration}` without waiting for it; the flow run's id.

    Prefect returns the run it made before for a key it has seen, so a key runs at most once.
    The payload is not passed on: a sync reads everything changed since its watermark, so the
    event only says when to run.
    """
    name = f"{integration}/{integration}"
    try:
        run = run_deployment(name, timeout=0, tags=["webhook"], idempotency_key=idempotency_key, as_subflow=False)
    except ObjectNotFound:
        raise LookupError(f"no deployment {name} on the Prefect server") from None
    return str(run.id)


async def _read(request: Request, limit: int) -> bytes | None:
    """The body, or None if it is longer than `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _signed(signers: list[Webhook], event_id: str, timestamp: int, body: str, header: str) -> bool:
    """Whether a `v1` signature in `header` is the one that a secret in `signers` makes (compared in constant time)."""
    given = [_decoded(signature) for version, _, signature in (part.partition(",") for part in header.split()) if version == "v1"]
    at = datetime.fromtimestamp(timestamp, UTC)
    for signer in signers:
        expected = base64.b64decode(signer.sign(event_id, at, body).removeprefix("v1,"))
        if any(hmac.compare_digest(expected, signature) for signature in given):
            return True
    return False


def _decoded(signature: str) -> bytes:
    try:
        return base64.b64decode(signature, validate=True)
    except binascii.Error:
        return b""


def _accept(engine: Engine, integration: str, event_id: str, payload: dict, trigger: Trigger) -> JSONResponse:
    """Store the event (once per id) and trigger its run unless an earlier delivery of the id did."""
    row = _store(engine, integration, event_id, payload)
    if row.status == TRIGGERED:
        return JSONResponse({"event": row.id, "status": TRIGGERED, "flow_run_id": row.flow_run_id, "duplicate": True}, 200)
    outcome, code = _fire(engine, row.id, integration, f"webhook/{integration}/{event_id}", trigger)
    if code == 503:
        outcome["error"] = "the run could not be started; the event is kept: send it again later"
        return JSONResponse(outcome, 503, headers={"Retry-After": str(RETRY_AFTER_S)})
    return JSONResponse(outcome, code)


def _store(engine: Engine, integration: str, event_id: str, payload: dict) -> sa.Row:
    """The event's row: committed now as received, or as an earlier delivery of `event_id` left it."""
    try:
        with engine.begin() as conn:
            conn.execute(
                WEBHOOK_EVENTS.insert().values(
                    integration=integration, event_id=event_id, received_at=utcnow(), payload=payload, status=RECEIVED
                )
            )
    except sa.exc.IntegrityError:
        pass  # seen before
    with engine.connect() as conn:
        where = (WEBHOOK_EVENTS.c.integration == integration) & (WEBHOOK_EVENTS.c.event_id == event_id)
        return conn.execute(sa.select(WEBHOOK_EVENTS).where(where)).one()


def _fire(engine: Engine, row_id: int, integration: str, key: str | None, trigger: Trigger) -> tuple[dict[str, Any], int]:
    """Call the trigger for stored event `row_id`, record the outcome; the outcome and its HTTP status."""
    try:
        flow_run_id, status, error, code = str(trigger(integration, key)), TRIGGERED, None, 202
    except LookupError as exc:
        flow_run_id, status, error, code = None, FAILED, str(exc)[:2000], 404
    except Exception as exc:  # noqa: BLE001 - kept, and answered 503 so the sender retries
        flow_run_id, status, error, code = None, FAILED, f"{type(exc).__name__}: {exc}"[:2000], 503
    if error:
        log.error("webhook event %s of %r: trigger failed: %s", row_id, integration, error)
    with engine.begin() as conn:
        conn.execute(
            WEBHOOK_EVENTS.update()
            .where(WEBHOOK_EVENTS.c.id == row_id)
            .values(status=status, flow_run_id=flow_run_id, error=error)
        )
    outcome = {"event": row_id, "status": status, "flow_run_id": flow_run_id}
    return (outcome | {"error": error} if code == 404 else outcome), code
