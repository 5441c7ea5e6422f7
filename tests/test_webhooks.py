"""The webhook receiver over real HTTP: signatures, freshness, replays, durable storage, triggers."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from prefect import flow
from prefect.client.orchestration import get_client
from pydantic import SecretStr

from demo_systems.server import serve
from interlink.state import WEBHOOK_EVENTS, state_engine
from interlink.webhooks import MAX_BODY, create_app, deployment_trigger, rerun, sign

SECRET = "whsec-test-8c2e4f71a9d03b56"  # distinctive, so a leak anywhere is found
SECRETS = {"orders_to_erp": SecretStr(SECRET), "webhook_probe": SecretStr("whsec-test-probe")}
PAYLOAD = {"order": 1042, "changed": ["status"]}


@pytest.fixture
def state_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/state.db"


class Recorder:
    """A trigger that records its calls and returns a new flow run id, or raises `fail` if set."""

    def __init__(self, state_url: str, fail: Exception | None = None):
        self.state_url, self.fail, self.calls, self.seen = state_url, fail, [], []

    def __call__(self, integration: str, payload: dict) -> str:
        self.calls.append((integration, payload))
        self.seen.append([row.status for row in events(self.state_url)])  # what was committed before the call
        if self.fail:
            raise self.fail
        return str(uuid.uuid4())


def events(state_url: str) -> list:
    with state_engine(state_url).connect() as conn:
        return list(conn.execute(sa.select(WEBHOOK_EVENTS).order_by(WEBHOOK_EVENTS.c.id)))


@pytest.fixture
def receiver(state_url: str) -> Callable:
    """Start the receiver over real HTTP; yields a `post(...)` function sending signed events to it."""

    @contextmanager
    def start(trigger: Callable, clock: Callable[[], float] = time.time) -> Iterator[Callable]:
        with serve(create_app(state_url, SECRETS, trigger, tolerance_s=300, clock=clock)) as url:

            def post(
                integration: str = "orders_to_erp",
                payload: dict = PAYLOAD,
                event_id: str | None = "evt-1",
                timestamp: int | None = None,
                secret: str = SECRET,
                signature: str | None = None,
                signed: bool = True,
            ) -> httpx.Response:
                body = json.dumps(payload).encode()
                ts = str(int(time.time()) if timestamp is None else timestamp)
                headers = {"X-Interlink-Timestamp": ts}
                if signed:
                    headers["X-Interlink-Signature"] = signature or sign(SecretStr(secret), ts, body)
                if event_id is not None:
                    headers["X-Interlink-Event-Id"] = event_id
                return httpx.post(f"{url}/webhooks/{integration}", content=body, headers=headers)

            yield post

    return start


def test_a_signed_event_is_stored_then_triggered(receiver, state_url):
    trigger = Recorder(state_url)
    with receiver(trigger) as post:
        response = post()
    assert response.status_code == 202
    [row] = events(state_url)
    assert response.json() == {"event": row.id, "status": "triggered", "flow_run_id": row.flow_run_id}
    assert trigger.calls == [("orders_to_erp", PAYLOAD)]
    assert trigger.seen == [["received"]]  # committed before the trigger ran
    assert (row.integration, row.event_id, row.payload, row.status, row.error) == ("orders_to_erp", "evt-1", PAYLOAD, "triggered", None)
    assert uuid.UUID(row.flow_run_id) and row.received_at


@pytest.mark.parametrize(
    "options",
    [
        {"secret": "whsec-wrong"},
        {"signature": "sha256=" + "0" * 64},
        {"signature": "garbage"},
        {"signature": sign(SecretStr(SECRET), "1900000000", json.dumps(PAYLOAD).encode())},  # signed for another time
    ],
)
def test_a_bad_signature_is_refused(receiver, state_url, options):
    trigger = Recorder(state_url)
    with receiver(trigger) as post:
        response = post(**options)
    assert (response.status_code, response.json()) == (401, {"error": "invalid signature"})
    assert events(state_url) == [] and trigger.calls == []


def test_a_changed_body_is_refused(receiver, state_url):
    trigger = Recorder(state_url)
    now = int(time.time())
    with receiver(trigger) as post:
        response = post(payload={"order": 666}, timestamp=now, signature=sign(SecretStr(SECRET), str(now), json.dumps(PAYLOAD).encode()))
    assert response.status_code == 401 and events(state_url) == [] and trigger.calls == []


def test_a_missing_signature_is_refused(receiver, state_url):
    trigger = Recorder(state_url)
    with receiver(trigger) as post:
        response = post(signed=False)
    assert (response.status_code, response.json()) == (401, {"error": "missing signature"})
    assert events(state_url) == [] and trigger.calls == []


def test_a_replayed_event_is_refused_and_never_processed_twice(receiver, state_url):
    trigger = Recorder(state_url)
    with receiver(trigger) as post:
        assert post().status_code == 202
        replay = post()
        assert post(integration="orders_to_erp", event_id="evt-2").status_code == 202
    assert (replay.status_code, replay.json()) == (409, {"error": "replayed event"})
    assert [row.event_id for row in events(state_url)] == ["evt-1", "evt-2"]
    assert len(trigger.calls) == 2


@pytest.mark.parametrize("skew", [-301, 301])
def test_a_stale_timestamp_is_refused(receiver, state_url, skew):
    trigger = Recorder(state_url)
    now = 1_900_000_000
    with receiver(trigger, clock=lambda: now) as post:
        response = post(timestamp=now + skew)
        assert post(timestamp=now - 300, event_id="evt-in-time").status_code == 202
    assert (response.status_code, response.json()) == (400, {"error": "stale timestamp"})
    assert [row.event_id for row in events(state_url)] == ["evt-in-time"]


def test_an_unknown_integration_or_a_missing_event_id_is_refused(receiver, state_url):
    trigger = Recorder(state_url)
    with receiver(trigger) as post:
        unknown = post(integration="crm_to_billing")
        anonymous = post(event_id=None)
        not_an_object = post(payload=[1, 2])  # type: ignore[arg-type]
        too_large = post(payload={"blob": "x" * MAX_BODY})
    assert unknown.status_code == 404
    assert (anonymous.status_code, anonymous.json()) == (400, {"error": "missing event id"})
    assert (not_an_object.status_code, not_an_object.json()) == (400, {"error": "body is not a JSON object"})
    assert too_large.status_code == 413
    assert events(state_url) == [] and trigger.calls == []


def test_a_failed_trigger_keeps_the_event_for_rerun(receiver, state_url):
    with receiver(Recorder(state_url, fail=RuntimeError("prefect API unreachable"))) as post:
        response = post()
    [row] = events(state_url)
    assert response.status_code == 202
    assert response.json() == {"event": row.id, "status": "failed", "flow_run_id": None}
    assert row.status == "failed" and row.error == "RuntimeError: prefect API unreachable"

    working = Recorder(state_url)
    result = rerun(state_url, row.id, working)
    [row] = events(state_url)
    assert working.calls == [("orders_to_erp", PAYLOAD)]
    assert result == {"event": row.id, "status": "triggered", "flow_run_id": row.flow_run_id}
    assert row.status == "triggered" and row.error is None and uuid.UUID(row.flow_run_id)
    with pytest.raises(LookupError):
        rerun(state_url, row.id + 1, working)


def test_refusals_are_logged_without_the_secret(receiver, state_url, caplog):
    caplog.set_level(logging.DEBUG)
    bodies = []
    with receiver(Recorder(state_url, fail=RuntimeError("down"))) as post:
        for options in [{}, {}, {"secret": "whsec-wrong", "event_id": "evt-bad"}, {"timestamp": 0, "event_id": "evt-old"}, {"integration": "nope"}]:
            bodies.append(post(**options).text)
    refusals = [r.getMessage() for r in caplog.records if r.name == "interlink.webhooks" and "refused" in r.getMessage()]
    assert len(refusals) == 4
    for reason, event in [("replayed event", "evt-1"), ("invalid signature", "evt-bad"), ("stale timestamp", "evt-old"), ("unknown integration", "evt-1")]:
        assert any(reason in message and repr(event) in message for message in refusals), (reason, refusals)
    assert not any(SECRET in text or "sha256=" in text for text in [caplog.text, *bodies])


@flow(name="webhook-ping")
def ping() -> None:
    """Started by the webhook test; never run."""


def test_the_trigger_starts_a_real_prefect_flow_run(receiver, state_url):
    def trigger(integration: str, payload: dict) -> str:
        with get_client(sync_client=True) as client:
            return str(client.create_flow_run(flow=ping, tags=[integration]).id)

    with receiver(trigger) as post:
        response = post()
    assert response.status_code == 202 and response.json()["status"] == "triggered"
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(uuid.UUID(response.json()["flow_run_id"]))
        assert client.read_flow(run.flow_id).name == "webhook-ping"
    assert run.tags == ["orders_to_erp"]
    assert events(state_url)[0].flow_run_id == str(run.id)


def test_the_default_trigger_runs_the_integrations_deployment(receiver, state_url):
    with get_client(sync_client=True) as client:
        deployment = client.create_deployment(client.create_flow_from_name("webhook_probe"), "webhook_probe")
    with receiver(deployment_trigger) as post:
        response = post(integration="webhook_probe", secret="whsec-test-probe")
    assert response.status_code == 202 and response.json()["status"] == "triggered"
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(uuid.UUID(response.json()["flow_run_id"]))
    assert run.deployment_id == deployment and "webhook" in run.tags
