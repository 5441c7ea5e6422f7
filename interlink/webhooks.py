"""The webhook receiver: a push source tells Interlink to run its integration now, by Standard Webhooks.

`POST /webhooks/{integration}` carries a JSON object and the headers of the Standard Webhooks
specification (standardwebhooks.com): `webhook-id` (the event's id, the same on every retry),
`webhook-timestamp` (unix seconds) and `webhook-signature`, a space-separated list of
`v1,<base64>` signatures, each an HMAC-SHA256 of `{id}.{timestamp}.{body}` under one of the
integration's `whsec_` secrets. The id, the time and the body are signed together, so none can be
changed, nor the request replayed under another id. An integration accepts any of its secrets and a
request may carry several signatures, so a secret is rotated without downtime.

A signed event is committed to `webhook_events` and answered at once; a background thread of the
receiver then triggers its integration's deployment, oldest event first, with the event's id as the
flow run's idempotency key in Prefect: one id, at most one run, however often it is triggered. The
answers:

    202  stored, its run is triggered in the background: {"event", "status": "received"}
    200  this id was received before: {"event", "status", "flow_run_id", "duplicate": true}, its status
         now ("received" while queued, "triggered" with its run); nothing runs again
    400, 401, 404, 413: refused and not kept (malformed, not signed by a secret of the integration,
         timestamp outside the tolerance, unknown integration, body too large)

While Prefect cannot be reached (down, answering 503), events wait as "received" and the thread tries
again with backoff; those a stopped receiver left are triggered when it starts again. An integration
with no deployment ends its event "failed" with that reason in `error`: the sender's retry of the id
queues it again, and `interlink webhooks rerun` triggers it as a new run.

Every refusal is logged with its reason, never with a secret, a signature or the body.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
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

from interlink.connectors.sql import utcnow
from interlink.settings import ConfigError, Settings
from interlink.state import WEBHOOK_EVENTS, state_engine

# (integration, idempotency key or None) -> flow run id; LookupError if the integration has no deployment
Trigger = Callable[[str, str | None], str]

RECEIVED, TRIGGERED, FAILED = "received", "triggered", "failed"
HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
MAX_EVENT_ID = 200  # the column's length
TIMESTAMP = re.compile(r"0|[1-9][0-9]{0,11}")  # unix seconds, as the specification writes them
BACKOFF_S = (1, 2, 4, 8, 15, 30)  # the waits after the 1st, 2nd, … failure in a row to reach Prefect; then the last
BATCH = 100  # events read from the store at a time

# SQLite takes one writer at a time, and a writer kept waiting sleeps in steps of up to 100 ms: in a burst
# (20 at once) answers took seconds. The receiver's writers take turns here instead.
_WRITES = threading.Lock()

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
    backoff_s: tuple[float, ...] = BACKOFF_S,
) -> Starlette:
    """The receiver for the integrations in `secrets`, storing events in the state database at `state_url`;
    its lifespan runs the `Dispatcher` (`app.state.dispatcher`) that triggers them."""
    engine = state_engine(state_url)
    dispatcher = Dispatcher(engine, trigger, backoff_s)
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
        answer = await run_in_threadpool(_accept, engine, integration, event_id, payload)
        dispatcher.wake()
        return answer

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        with dispatcher:
            yield

    app = Starlette(routes=[Route("/webhooks/{integration}", receive, methods=["POST"])], lifespan=lifespan)
    app.state.dispatcher = dispatcher
    return app


class Dispatcher:
    """Triggers the stored events not yet triggered, oldest first, in a background thread (while entered).

    It starts with the events a stopped receiver left. While Prefect cannot be reached, it waits
    `backoff_s[n]` after the n-th failure in a row and tries again; the idempotency key makes a run that
    was created but not confirmed come back as the same run.
    """

    def __init__(self, engine: Engine, trigger: Trigger, backoff_s: tuple[float, ...] = BACKOFF_S):
        self.engine, self.trigger, self.backoff_s = engine, trigger, backoff_s
        self._woken, self._stopping = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = 0  # in a row

    def __enter__(self) -> Dispatcher:
        self._thread = threading.Thread(target=self._run, name="webhook-dispatcher", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopping.set()
        self._woken.set()
        self._thread.join(30)

    def wake(self) -> None:
        """Look for new events now."""
        self._woken.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._woken.clear()
            try:
                self._drain()
            except Exception as exc:  # noqa: BLE001 - Prefect or the store unreachable: kept, tried again
                wait = self.backoff_s[min(self._failures, len(self.backoff_s) - 1)]
                self._failures += 1
                log.warning("webhook events wait: %s; trying again in %gs", _reason(exc), wait)
                self._stopping.wait(wait)
                continue
            self._woken.wait()

    def _drain(self) -> None:
        while not self._stopping.is_set():
            with self.engine.connect() as conn:
                pending = conn.execute(
                    sa.select(WEBHOOK_EVENTS.c.id, WEBHOOK_EVENTS.c.integration, WEBHOOK_EVENTS.c.event_id)
                    .where(WEBHOOK_EVENTS.c.status == RECEIVED)
                    .order_by(WEBHOOK_EVENTS.c.id)
                    .limit(BATCH)
                ).all()
            if not pending:
                return
            for row in pending:
                if self._stopping.is_set():
                    return
                _fire(self.engine, row.id, row.integration, _key(row.integration, row.event_id), self.trigger)
                self._failures = 0


def rerun(state_url: str, event_row_id: int, trigger: Trigger) -> dict[str, Any]:
    """Trigger stored event `event_row_id` again, as a new run, and record the outcome; `LookupError` if there is none."""
    engine = state_engine(state_url)
    with engine.connect() as conn:
        row = conn.execute(sa.select(WEBHOOK_EVENTS).where(WEBHOOK_EVENTS.c.id == event_row_id)).first()
    if row is None:
        raise LookupError(f"no webhook event {event_row_id}")
    return _fire(engine, row.id, row.integration, None, trigger, transient_too=True)


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


def _accept(engine: Engine, integration: str, event_id: str, payload: dict) -> JSONResponse:
    """Store the event (once per id), or queue an earlier delivery of the id again if it failed."""
    row, new = _store(engine, integration, event_id, payload)
    if row.status == FAILED:
        with _WRITES, engine.begin() as conn:
            conn.execute(WEBHOOK_EVENTS.update().where(WEBHOOK_EVENTS.c.id == row.id).values(status=RECEIVED, error=None))
    elif not new:
        return JSONResponse({"event": row.id, "status": row.status, "flow_run_id": row.flow_run_id, "duplicate": True}, 200)
    return JSONResponse({"event": row.id, "status": RECEIVED}, 202)


def _store(engine: Engine, integration: str, event_id: str, payload: dict) -> tuple[sa.Row, bool]:
    """The event's row and whether it is new: committed now as received, or as an earlier delivery of `event_id` left it."""
    try:
        with _WRITES, engine.begin() as conn:
            conn.execute(
                WEBHOOK_EVENTS.insert().values(
                    integration=integration, event_id=event_id, received_at=utcnow(), payload=payload, status=RECEIVED
                )
            )
        new = True
    except sa.exc.IntegrityError:
        new = False  # seen before
    with engine.connect() as conn:
        where = (WEBHOOK_EVENTS.c.integration == integration) & (WEBHOOK_EVENTS.c.event_id == event_id)
        return conn.execute(sa.select(WEBHOOK_EVENTS).where(where)).one(), new


def _key(integration: str, event_id: str) -> str:
    return f"webhook/{integration}/{event_id}"


def _fire(engine: Engine, row_id: int, integration: str, key: str | None, trigger: Trigger, transient_too: bool = False) -> dict[str, Any]:
    """Call the trigger for stored event `row_id` and record the outcome: triggered, or failed for a lasting
    reason (no deployment, a request Prefect refuses). A transient failure (Prefect unreachable, 5xx, 429)
    is raised and changes nothing, unless `transient_too` records it as failed."""
    try:
        flow_run_id, status, error = str(trigger(integration, key)), TRIGGERED, None
    except Exception as exc:  # noqa: BLE001 - classified, recorded
        if _transient(exc) and not transient_too:
            raise
        flow_run_id, status, error = None, FAILED, _reason(exc)
        log.error("webhook event %s of %r: trigger failed: %s", row_id, integration, error)
    with _WRITES, engine.begin() as conn:
        conn.execute(
            WEBHOOK_EVENTS.update()
            .where(WEBHOOK_EVENTS.c.id == row_id)
            .values(status=status, flow_run_id=flow_run_id, error=error)
        )
    return {"event": row_id, "status": status, "flow_run_id": flow_run_id} | ({"error": error} if error else {})


def _transient(exc: Exception) -> bool:
    """Whether trying again later may succeed: not a missing deployment, nor a request Prefect refuses (4xx but 408, 429)."""
    if isinstance(exc, LookupError):
        return False
    if isinstance(exc, httpx.HTTPStatusError):
        code = exc.response.status_code
        return code >= 500 or code in (408, 429)
    return True


def _reason(exc: Exception) -> str:
    """One line: what went wrong, without the answer's body."""
    if isinstance(exc, LookupError):
        return str(exc)[:2000]
    if isinstance(exc, httpx.HTTPStatusError):
        return f"the Prefect API answered {exc.response.status_code} to {exc.request.method} {exc.request.url.path}"
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"[:2000]
