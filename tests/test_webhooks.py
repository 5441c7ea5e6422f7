"""The webhook receiver over real HTTP, by Standard Webhooks: signatures made by the specification's own
library (`standardwebhooks`), ids that run once, refusals, the answers a sender sees, the background
dispatcher that triggers stored events, and the receiver as production starts it (`interlink webhooks
serve`) triggering a real deployment's run in Prefect."""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from interlink.demo_systems.server import serve
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.settings import PREFECT_API_URL
from pydantic import SecretStr
from standardwebhooks import Webhook

from interlink.cli import main
from interlink.state import WEBHOOK_EVENTS, state_engine
from interlink.webhooks import create_app, deployment_trigger, rerun
from tests.conftest import service_url

# Distinctive secrets, so a leak anywhere is found: the current one, the one being retired, and one never configured.
SECRET = "whsec_" + base64.b64encode(b"interlink-canary-webhook-8c2e4f71a9").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"interlink-canary-retired-5b17e3c0f2").decode()
STRANGER = "whsec_" + base64.b64encode(b"interlink-canary-stranger-94d1e07a3b").decode()
INTEGRATION = "orders_to_erp"
PAYLOAD = {"type": "order.updated", "data": {"order": 1042, "changed": ["status"]}}
BIN = Path(sys.executable).parent
NOW = 1_900_000_000  # the receiver's clock where a test fixes it
SENDER_TIMEOUT_S = 30  # the specification recommends 15 to 30 s
FAST = (0.05,)  # the dispatcher's backoff in tests that make the trigger fail


def library_signature(secret: str, event_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value the Standard Webhooks library makes."""
    return Webhook(secret).sign(event_id, datetime.fromtimestamp(timestamp, UTC), body.decode())


def events(state_url: str) -> list:
    with state_engine(state_url).connect() as conn:
        return list(conn.execute(sa.select(WEBHOOK_EVENTS).order_by(WEBHOOK_EVENTS.c.id)))


def settled(state_url: str, timeout_s: float = 30) -> list:
    """The stored events once the dispatcher has triggered (or failed) every one."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = events(state_url)
        if all(row.status != "received" for row in rows):
            return rows
        waiting = [row.event_id for row in rows if row.status == "received"]
        assert time.monotonic() < deadline, f"{len(waiting)} events still waiting after {timeout_s}s: {waiting[:5]}"
        time.sleep(0.02)


def wait_for(condition: Callable[[], object], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s}s"
        time.sleep(0.02)


class Recorder:
    """A trigger that records its calls and returns a new flow run id, or raises `fail` while it is set."""

    def __init__(self, state_url: str, fail: Exception | None = None):
        self.state_url, self.fail, self.calls, self.seen = state_url, fail, [], []

    def __call__(self, integration: str, key: str | None) -> str:
        self.calls.append((integration, key))
        self.seen.append([row.status for row in events(self.state_url)])  # what was committed before the call
        if self.fail:
            raise self.fail
        return str(uuid.uuid4())


@pytest.fixture
def state_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/state.db"


@pytest.fixture
def receiver(state_url: str) -> Callable:
    """Start the receiver over real HTTP (uvicorn); yields `post(...)`, which sends an event signed by the library."""

    @contextmanager
    def start(
        trigger: Callable, clock: Callable[[], float] = time.time, secrets: dict | None = None, state: str | None = None, **options
    ) -> Iterator[Callable]:
        secrets = secrets or {INTEGRATION: [SECRET, OLD_SECRET]}
        configured = {name: [SecretStr(s) for s in keys] for name, keys in secrets.items()}
        app = create_app(state or state_url, configured, trigger, clock=clock, **options)
        with serve(app) as url, app.state.dispatcher:  # `serve` runs no lifespan: the dispatcher as the app's lifespan runs it

            def post(
                integration: str = INTEGRATION,
                body: bytes | None = None,
                event_id: str = "evt-1",
                timestamp: int | None = None,
                signed_by: tuple[str, ...] = (SECRET,),
                signed_id: str | None = None,
                signature: str | None = None,
                omit: tuple[str, ...] = (),
            ) -> httpx.Response:
                body = json.dumps(PAYLOAD).encode() if body is None else body
                ts = int(clock()) if timestamp is None else timestamp
                signature = signature or " ".join(library_signature(key, signed_id or event_id, ts, body) for key in signed_by)
                headers = {
                    "webhook-id": event_id,
                    "webhook-timestamp": str(ts),
                    "webhook-signature": signature,
                    "content-type": "application/json",
                }
                headers = {name: value for name, value in headers.items() if name not in omit}
                return httpx.post(f"{url}/webhooks/{integration}", content=body, headers=headers, timeout=SENDER_TIMEOUT_S)

            post.url = url
            yield post

    return start


def deploy(name: str) -> str:
    """Make deployment `name/name` on the test session's Prefect server; its id."""
    with get_client(sync_client=True) as client:
        return str(client.create_deployment(client.create_flow_from_name(name), name))


def runs_of(deployment_id: str) -> list:
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[uuid.UUID(deployment_id)])))


def test_an_event_signed_by_the_library_is_stored_then_triggered(receiver, state_url):
    trigger = Recorder(state_url)
    with receiver(trigger) as post:
        response = post()
        [row] = settled(state_url)
    assert (response.status_code, response.json()) == (202, {"event": row.id, "status": "received"})
    assert trigger.calls == [(INTEGRATION, f"webhook/{INTEGRATION}/evt-1")]  # the id is the run's idempotency key
    assert trigger.seen == [["received"]]  # committed before the trigger ran
    assert (row.integration, row.event_id, row.payload, row.status, row.error) == (INTEGRATION, "evt-1", PAYLOAD, "triggered", None)
    assert uuid.UUID(row.flow_run_id) and row.received_at


def test_the_specifications_published_example_is_accepted(receiver, state_url):
    """Svix's documented example (secret, id, timestamp, body, signature), checked by neither our code nor the library."""
    trigger = Recorder(state_url)
    secrets = {"svix_example": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]}
    with receiver(trigger, clock=lambda: 1614265330, secrets=secrets) as post:
        response = post(
            "svix_example", body=b'{"test": 2432232314}', event_id="msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp=1614265330,
            signature="v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        )
        tampered = post(
            "svix_example", body=b'{"test": 2432232315}', event_id="msg_p5jXN8AQM9LWM0D4loKWxJeK", timestamp=1614265330,
            signature="v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        )
    assert response.status_code == 202 and tampered.status_code == 401
    assert [(row.event_id, row.payload) for row in events(state_url)] == [("msg_p5jXN8AQM9LWM0D4loKWxJek", {"test": 2432232314})]


def test_a_request_signed_for_one_id_is_refused_under_another(receiver, state_url):
    trigger = Recorder(state_url)
    with receiver(trigger) as post:
        moved = post(event_id="evt-B", signed_id="evt-A")
        assert (moved.status_code, moved.json()) == (401, {"error": "invalid signature"})
        assert events(state_url) == [] and trigger.calls == []
        assert post(event_id="evt-A").status_code == 202  # the same request under the id it was signed for
    assert [row.event_id for row in events(state_url)] == ["evt-A"]


@pytest.mark.parametrize(
    "options",
    [
        {"signed_by": (STRANGER,)},
        {"signature": "v1," + base64.b64encode(b"\0" * 32).decode()},
        {"signature": "v1,not-base64!"},
        {"signature": "garbage"},
        {"signature": "v1a," + base64.b64encode(b"\0" * 64).decode()},  # an asymmetric signature: not ours to check
        {"signature": library_signature(SECRET, "evt-1", NOW - 1, json.dumps(PAYLOAD).encode())},  # another time
        {"signature": library_signature(SECRET, "evt-1", NOW, b'{"order": 666}')},  # another body
        {"signature": library_signature(SECRET, "evt-1", NOW, json.dumps(PAYLOAD).encode()).replace("v1,", "v2,")},
    ],
)
def test_a_bad_signature_is_refused(receiver, state_url, options):
    trigger = Recorder(state_url)
    with receiver(trigger, clock=lambda: NOW) as post:
        assert post(event_id="evt-0").status_code == 202  # what the bad ones change was right
        response = post(**options)
        settled(state_url)
    assert (response.status_code, response.json()) == (401, {"error": "invalid signature"})
    assert [row.event_id for row in events(state_url)] == ["evt-0"] and len(trigger.calls) == 1


def test_secrets_rotate_without_downtime(receiver, state_url):
    """Configured [new, old]: either signs; the sender may send both; a retired secret does not."""
    trigger = Recorder(state_url)
    with receiver(trigger) as post:
        new = post(event_id="evt-new", signed_by=(SECRET,))
        old = post(event_id="evt-old", signed_by=(OLD_SECRET,))
        both = post(event_id="evt-both", signed_by=(STRANGER, SECRET))  # space-separated, one matches
    with receiver(trigger, secrets={INTEGRATION: [SECRET]}) as post:  # the old secret retired
        retired = post(event_id="evt-retired", signed_by=(OLD_SECRET,))
        sent_both = post(event_id="evt-sent-both", signed_by=(OLD_SECRET, SECRET))
    assert [r.status_code for r in (new, old, both, retired, sent_both)] == [202, 202, 202, 401, 202]
    assert [row.event_id for row in events(state_url)] == ["evt-new", "evt-old", "evt-both", "evt-sent-both"]


@pytest.mark.parametrize("header", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_missing_header_is_refused(receiver, state_url, header):
    trigger = Recorder(state_url)
    with receiver(trigger) as post:
        response = post(omit=(header,))
    assert (response.status_code, response.json()) == (401, {"error": f"missing header {header}"})
    assert events(state_url) == [] and trigger.calls == []


@pytest.mark.parametrize("skew", [-301, 301])
def test_a_stale_timestamp_is_refused(receiver, state_url, skew):
    trigger = Recorder(state_url)
    now = 1_900_000_000
    with receiver(trigger, clock=lambda: now, tolerance_s=300) as post:
        response = post(timestamp=now + skew)
        assert post(timestamp=now - 300, event_id="evt-in-time").status_code == 202
    assert (response.status_code, response.json()) == (400, {"error": "webhook-timestamp more than 300s from now"})
    assert [row.event_id for row in events(state_url)] == ["evt-in-time"]


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def any_state_url(request: pytest.FixtureRequest, state_url: str) -> str:
    """The state database on each supported dialect, its webhook events emptied."""
    url = state_url if request.param == "sqlite" else service_url(request.param)
    with state_engine(url).begin() as conn:
        conn.execute(WEBHOOK_EVENTS.delete())
    return url


def test_a_replayed_id_is_stored_once_and_never_run_twice(receiver, any_state_url):
    trigger = Recorder(any_state_url)
    with receiver(trigger, state=any_state_url) as post:
        first = post()
        settled(any_state_url)
        replays = [post(), post(timestamp=int(time.time()) - 10)]  # resent as is, and signed again later
        other = post(event_id="evt-2")
        [row, row2] = settled(any_state_url)
    assert first.status_code == 202 and other.status_code == 202
    for replay in replays:
        assert (replay.status_code, replay.json()) == (
            200, {"event": row.id, "status": "triggered", "flow_run_id": row.flow_run_id, "duplicate": True}
        )
    assert [(r.event_id, r.status) for r in (row, row2)] == [("evt-1", "triggered"), ("evt-2", "triggered")]
    assert [key for _, key in trigger.calls] == [f"webhook/{INTEGRATION}/evt-1", f"webhook/{INTEGRATION}/evt-2"]


def test_concurrent_deliveries_of_one_id_make_one_flow_run(receiver, state_url):
    """Sent five times at once to the real trigger: Prefect makes one run, every answer names it."""
    name = f"probe_{uuid.uuid4().hex[:8]}"
    deployment = deploy(name)
    with receiver(deployment_trigger, secrets={name: [SECRET]}) as post, ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda _: post(name, event_id="evt-once"), range(5)))
        [row] = settled(state_url)
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 200, 202]  # one stored it, four found it
    [run] = runs_of(deployment)
    assert (row.status, row.flow_run_id) == ("triggered", str(run.id)) and "webhook" in run.tags


def test_an_integration_without_a_deployment_fails_its_event_with_the_reason(receiver, state_url):
    name = f"probe_{uuid.uuid4().hex[:8]}"
    with receiver(deployment_trigger, secrets={name: [SECRET]}) as post:
        missing = post(name, event_id="evt-early")
        [row] = settled(state_url)
        assert (missing.status_code, missing.json()) == (202, {"event": row.id, "status": "received"})
        assert (row.status, row.error, row.payload) == ("failed", f"no deployment {name}/{name} on the Prefect server", PAYLOAD)

        deployment = deploy(name)  # the operator deploys it; the sender's retry of the same id now runs
        retried = post(name, event_id="evt-early")
        [row] = settled(state_url)
        again = post(name, event_id="evt-early")
    [run] = runs_of(deployment)
    assert (retried.status_code, retried.json()) == (202, {"event": row.id, "status": "received"})
    assert (again.status_code, again.json()) == (200, {"event": row.id, "status": "triggered", "flow_run_id": str(run.id), "duplicate": True})
    assert (row.status, row.error, row.flow_run_id) == ("triggered", None, str(run.id))


def test_an_unknown_integration_is_a_404_and_nothing_is_kept(receiver, state_url):
    trigger = Recorder(state_url)
    with receiver(trigger) as post:
        response = post(integration="crm_to_billing")
    assert (response.status_code, response.json()) == (404, {"error": "unknown integration"})
    assert events(state_url) == [] and trigger.calls == []


def test_events_wait_while_prefect_cannot_be_reached_and_run_once_it_can(receiver, state_url, caplog):
    trigger = Recorder(state_url, fail=RuntimeError("prefect API unreachable"))
    with receiver(trigger, backoff_s=FAST) as post:
        first = post()
        wait_for(lambda: len(trigger.calls) >= 3)  # tried again, with backoff
        [row] = events(state_url)
        queued = post()  # the sender's retry while it waits
        assert (row.status, row.flow_run_id) == ("received", None)
        trigger.fail = None
        [row] = settled(state_url)
    assert (first.status_code, first.json()) == (202, {"event": row.id, "status": "received"})
    assert (queued.status_code, queued.json()) == (200, {"event": row.id, "status": "received", "flow_run_id": None, "duplicate": True})
    assert (row.status, row.error) == ("triggered", None) and uuid.UUID(row.flow_run_id)
    assert set(trigger.calls) == {(INTEGRATION, f"webhook/{INTEGRATION}/evt-1")}  # every try under the one key
    assert "webhook events wait: RuntimeError: prefect API unreachable; trying again in 0.05s" in caplog.text


def test_a_refusal_by_prefect_fails_the_event_and_a_5xx_is_tried_again(receiver, state_url):
    def answered(code: int) -> httpx.HTTPStatusError:
        request = httpx.Request("POST", "http://prefect/api/deployments/x/create_flow_run")
        return httpx.HTTPStatusError(f"{code}", request=request, response=httpx.Response(code, request=request))

    refused, overloaded = Recorder(state_url, fail=answered(422)), Recorder(state_url, fail=answered(503))
    with receiver(refused, backoff_s=FAST) as post:
        post(event_id="evt-refused")
        [row] = settled(state_url)
    with receiver(overloaded, backoff_s=FAST) as post:
        post(event_id="evt-overloaded")
        wait_for(lambda: len(overloaded.calls) >= 2)
    reason = "the Prefect API answered 422 to POST /api/deployments/x/create_flow_run"
    assert (row.status, row.error, len(refused.calls)) == ("failed", reason, 1)
    assert [r.status for r in events(state_url)] == ["failed", "received"]


def test_events_a_stopped_receiver_left_are_triggered_when_it_starts(receiver, state_url):
    down = Recorder(state_url, fail=RuntimeError("prefect API unreachable"))
    with receiver(down, backoff_s=FAST) as post:
        assert [post(event_id=f"evt-{n}").status_code for n in range(3)] == [202] * 3
        wait_for(lambda: down.calls)
    assert {row.status for row in events(state_url)} == {"received"}
    up = Recorder(state_url)
    with receiver(up):
        rows = settled(state_url)
    assert [(row.event_id, row.status) for row in rows] == [("evt-0", "triggered"), ("evt-1", "triggered"), ("evt-2", "triggered")]
    assert [key for _, key in up.calls] == [f"webhook/{INTEGRATION}/evt-{n}" for n in range(3)]  # oldest first


def test_rerun_triggers_a_stored_event_as_a_new_run(receiver, state_url):
    with receiver(Recorder(state_url, fail=LookupError("no deployment"))) as post:
        assert post().status_code == 202
        [row] = settled(state_url)
    assert (row.status, row.error) == ("failed", "no deployment")
    unreachable = rerun(state_url, row.id, Recorder(state_url, fail=RuntimeError("prefect API unreachable")))
    assert unreachable == {"event": row.id, "status": "failed", "flow_run_id": None, "error": "RuntimeError: prefect API unreachable"}
    working = Recorder(state_url)
    result = rerun(state_url, row.id, working)
    [row] = events(state_url)
    assert working.calls == [(INTEGRATION, None)]  # no idempotency key: the operator asked for a new run
    assert result == {"event": row.id, "status": "triggered", "flow_run_id": row.flow_run_id}
    assert row.status == "triggered" and row.error is None and uuid.UUID(row.flow_run_id)
    with pytest.raises(LookupError):
        rerun(state_url, row.id + 1, working)


def test_the_rerun_command_starts_a_stored_events_run(receiver, state_url, home, monkeypatch, capsys):
    name = f"probe_{uuid.uuid4().hex[:8]}"
    with receiver(deployment_trigger, secrets={name: [SECRET]}) as post:
        post(name)
        [row] = settled(state_url)
    assert row.status == "failed"  # no deployment yet
    deployment = deploy(name)
    monkeypatch.setenv("INTERLINK_STATE_URL", state_url)
    assert main(["webhooks", "rerun", str(row.id)]) == 0
    [run] = runs_of(deployment)
    assert capsys.readouterr().out == f"event {row.id}: triggered {run.id}\n"
    assert main(["webhooks", "rerun", str(row.id + 1)]) == 1
    assert capsys.readouterr().err == f"interlink: no webhook event {row.id + 1}\n"


def _json_of_size(size: int) -> bytes:
    body = json.dumps({"blob": ""}).encode()
    return json.dumps({"blob": "x" * (size - len(body))}).encode()


def test_a_body_over_the_limit_is_refused(receiver, state_url):
    trigger = Recorder(state_url)
    with receiver(trigger, max_body=10_000) as post:
        at_limit = post(body=_json_of_size(10_000), event_id="evt-fits")
        over = post(body=_json_of_size(10_001), event_id="evt-over")
        body = _json_of_size(5_000_000)
        chunked = httpx.post(  # no content-length: counted as it streams
            f"{post.url}/webhooks/{INTEGRATION}", content=iter([body[i:i + 65536] for i in range(0, len(body), 65536)]),
            headers={"webhook-id": "evt-chunked", "webhook-timestamp": str(int(time.time())),
                     "webhook-signature": library_signature(SECRET, "evt-chunked", int(time.time()), body)},
            timeout=SENDER_TIMEOUT_S,
        )
        settled(state_url)
    assert at_limit.status_code == 202
    assert (over.status_code, over.json()) == (413, {"error": "body larger than 10000 bytes"})
    assert (chunked.status_code, chunked.json()) == (413, {"error": "body larger than 10000 bytes"})
    assert [row.event_id for row in events(state_url)] == ["evt-fits"] and len(trigger.calls) == 1


@pytest.mark.parametrize(
    "options, reason",
    [
        ({"body": b"[1, 2]"}, "body is not a JSON object"),
        ({"body": b"not json"}, "body is not a JSON object"),
        ({"body": b"\xff\xfe", "signature": "v1,AAAA"}, "body is not UTF-8"),
        ({"event_id": "e" * 201}, "webhook-id longer than 200 characters"),
        ({"signature": "v1,AAAA", "timestamp": "1.9e9"}, "webhook-timestamp is not unix seconds"),
    ],
)
def test_a_malformed_request_is_refused(receiver, state_url, options, reason):
    trigger = Recorder(state_url)
    with receiver(trigger) as post:
        response = post(**options)
    assert (response.status_code, response.json()) == (400, {"error": reason})
    assert events(state_url) == [] and trigger.calls == []


def test_refusals_are_logged_without_secrets_signatures_or_bodies(receiver, state_url, caplog):
    caplog.set_level(logging.DEBUG)
    answers, signatures = [], []
    with receiver(Recorder(state_url, fail=RuntimeError("down")), clock=lambda: NOW) as post:
        for options in [
            {}, {"signed_by": (STRANGER,), "event_id": "evt-bad"}, {"timestamp": 0, "event_id": "evt-old"},
            {"integration": "nope"}, {"event_id": "evt-moved", "signed_id": "evt-orig"},
        ]:
            answers.append(post(**options).text)
    for key, event_id in [(SECRET, "evt-1"), (STRANGER, "evt-bad"), (SECRET, "evt-orig")]:
        signatures.append(library_signature(key, event_id, NOW, json.dumps(PAYLOAD).encode()).split(",")[1][:20])
    refusals = [r.getMessage() for r in caplog.records if r.name == "interlink.webhooks" and "refused" in r.getMessage()]
    for reason, event in [("invalid signature", "evt-bad"), ("from now", "evt-old"), ("unknown integration", "evt-1"), ("invalid signature", "evt-moved")]:
        assert any(reason in message and repr(event) in message for message in refusals), (reason, refusals)
    texts = [caplog.text, *answers]
    for secret in (SECRET, OLD_SECRET, STRANGER):
        raw = base64.b64decode(secret.removeprefix("whsec_")).decode()
        assert not any(secret in text or raw in text or secret.removeprefix("whsec_") in text for text in texts)
    assert not any(s in text for s in signatures for text in texts) and "1042" not in caplog.text  # no signature, no body


@contextmanager
def production_receiver(env: dict[str, str], log: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """`interlink webhooks serve` in its own process on a free port; its base URL once it answers, and the process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with log.open("w") as out:
        process = subprocess.Popen(
            [BIN / "interlink", "webhooks", "serve", "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                httpx.get(f"{url}/webhooks/none", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, f"the receiver did not answer within 60s: {log.read_text()}"
                time.sleep(0.2)
        yield url, process
    finally:
        process.terminate()
        process.wait(30)


def test_the_production_receiver_runs_the_integrations_deployment(home, tmp_path):
    """The receiver as `interlink webhooks serve` runs it, configured by settings only, against the test Prefect server."""
    name = f"probe_{uuid.uuid4().hex[:8]}"
    deployment = deploy(name)
    state = f"sqlite:///{tmp_path}/receiver.db"
    env = {
        **os.environ,  # INTERLINK_HOME from `home`; no other INTERLINK_* variable
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "INTERLINK_STATE_URL": state,
        "INTERLINK_WEBHOOK_SECRETS": json.dumps({name: f"{SECRET} {OLD_SECRET}"}),
        "INTERLINK_WEBHOOK_MAX_BODY_BYTES": "2000",
    }
    body = json.dumps(PAYLOAD).encode()
    log = tmp_path / "receiver.log"

    def send(event_id: str, secret: str = SECRET, timestamp: int | None = None, content: bytes = body) -> httpx.Response:
        ts = int(time.time()) if timestamp is None else timestamp
        headers = {"webhook-id": event_id, "webhook-timestamp": str(ts), "webhook-signature": library_signature(secret, event_id, ts, content)}
        return httpx.post(f"{url}/webhooks/{name}", content=content, headers=headers, timeout=SENDER_TIMEOUT_S)

    with production_receiver(env, log) as (url, _):
        accepted = send("msg_1")
        rotated = send("msg_2", secret=OLD_SECRET)
        stale = send("msg_3", timestamp=int(time.time()) - 3600)
        oversize = send("msg_4", content=_json_of_size(2001))
        rows = settled(state)
        replayed = send("msg_1")
    assert (accepted.status_code, rotated.status_code, stale.status_code, oversize.status_code) == (202, 202, 400, 413), accepted.text
    assert [(row.event_id, row.status) for row in rows] == [("msg_1", "triggered"), ("msg_2", "triggered")]
    assert (replayed.status_code, replayed.json()["flow_run_id"]) == (200, rows[0].flow_run_id)
    runs = {str(run.id): run for run in runs_of(deployment)}
    assert set(runs) == {row.flow_run_id for row in rows}
    assert all("webhook" in run.tags and run.state.is_scheduled() for run in runs.values())
    output = log.read_text()
    assert "refused (400" in output and "refused (413" in output
    stored = (tmp_path / "receiver.db").read_bytes()
    for secret in (SECRET, OLD_SECRET):
        key = secret.removeprefix("whsec_")
        assert key not in output and key.encode() not in stored and base64.b64decode(key) not in stored


@pytest.mark.parametrize(
    "variables, message",
    [
        ({}, 'INTERLINK_WEBHOOK_SECRETS is not set: give each push integration its whsec_ secret, as JSON: {"orders_to_erp": "whsec_…"}'),
        ({"INTERLINK_WEBHOOK_SECRETS": '{"orders_to_erp": "whsec-canary-too-short"}'},
         "INTERLINK_WEBHOOK_SECRETS: secret 1 of orders_to_erp is not a Standard Webhooks secret: use whsec_ and the base64"),
        ({"INTERLINK_WEBHOOK_SECRETS__ORDERS_TO_ERP": f"{SECRET} whsec_Y2FuYXJ5"},  # one variable per integration; 6 bytes
         "INTERLINK_WEBHOOK_SECRETS: secret 2 of orders_to_erp is not a Standard Webhooks secret: use whsec_ and the base64"),
        ({"INTERLINK_WEBHOOK_SECRETS": '{"orders_to_erp": []}'}, "INTERLINK_WEBHOOK_SECRETS: orders_to_erp has no secret"),
        ({"INTERLINK_WEBHOOK_SECRETS": json.dumps({INTEGRATION: SECRET}), "INTERLINK_WEBHOOK_TOLERANCE_S": "0"},
         "INTERLINK_WEBHOOK_TOLERANCE_S: input should be greater than 0"),
        ({"INTERLINK_WEBHOOK_SECRETS": json.dumps({INTEGRATION: SECRET}), "INTERLINK_WEBHOOK_MAX_BODY_BYTES": "-5"},
         "INTERLINK_WEBHOOK_MAX_BODY_BYTES: input should be greater than 0"),
    ],
)
def test_a_bad_webhook_setting_is_one_line_naming_it(home, monkeypatch, capsys, variables, message):
    for variable, value in variables.items():
        monkeypatch.setenv(variable, value)
    assert main(["webhooks", "serve"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"interlink: {message}") and err.count("\n") == 1
    assert "canary" not in err and "Y2FuYXJ5" not in err and SECRET not in err
