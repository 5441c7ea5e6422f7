"""Canaries: the whole demo, a failing run, a rejected key and a replay, run as an operator runs them, with canary
secrets in every place a secret is configured and canary people in the sensitive columns; then every output is read.

Secrets: a database password in a URL's user part and in its query, a token and an API key in URL queries, the CRM's
API key (a header), and a CRM that answers 401 echoing that key across the 200th character of its body. People: a
customer delivered (and then refused by the target with their email in the database's error, and present in the
bound parameters of that failing INSERT) and a customer dead-lettered, each sent by the CRM with their email in a
second source field spelt `Email` (a sensitive `email` by meaning, not by spelling). Outputs: stdout and stderr of every command,
the ledger, the dead-letter listings, the GX results and Data Docs, the quality report, and the whole of the
Prefect database (logs, states, artifacts, events) and its result storage, and what the company's own tools got:
the OpenLineage events, the Pushgateway's figures, the OpenTelemetry spans, the JSON log lines. Secrets: 0 hits.
People: 0 hits but in their masked forms, which are seen, as are the failures themselves. What those tools got is
also what happened: a START and an end event per run with its datasets and checks, the ledger's figures, its traces.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import sqlalchemy as sa
from interlink.demo_systems.app import create_app
from interlink.demo_systems.cli import DEMO_PROJECT
from interlink.demo_systems.server import serve
from sqlalchemy.engine import make_url
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from tests.conftest import reset_tables, service_url
from tests.observers import get, lineage_events, lineage_receiver, otlp_receiver, pushgateway

SECRETS = {
    "key": "sk-canary-apikey-4f1d2e9b7a",  # the CRM's API key, sent in a header
    "userinfo": "canary-userinfo-pw-83b1",  # billing's password, in its URL's user part
    "sslpassword": "canary-query-sslpw-51c7",  # in billing's URL query
    "state": "canary-query-token-6a0f",  # a token in the state database's URL query
    "partner password": "canary-rest-pw-90d2",  # a REST connection's URL user part
    "partner key": "canary-rest-apikey-17e8",  # and an API key in its query
}
DELIVERED = ("C9990001", "Ada Lovelace", "ada.canaryq7@example.org", "+44 20 7946 0018")
DEAD_LETTERED = ("C9990002", "Bo Byrne", "bo.canaryq7@@example.org", "+44 20 7946 0019")
PEOPLE = ("canaryq7", "79460018", "7946 0018", "79460019", "7946 0019")  # in clear, in any form
INTERLINK = str(Path(sys.executable).with_name("interlink"))


def echoing_401() -> Starlette:
    """A CRM that refuses the key it got, echoing it so that it straddles the 200th character of the body."""

    async def refuse(request: Request) -> PlainTextResponse:
        key = request.headers.get("x-api-key", "")
        return PlainTextResponse("." * (200 - len(key) // 2) + key + " is not a valid key", 401)

    return Starlette(routes=[Route("/{path:path}", refuse)])


def spelling_email_twice(app: ASGIApp) -> ASGIApp:
    """The CRM, its customers each also carrying their email in a field `Email`, as a legacy CRM may send it."""

    async def wrapped(scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/customers":
            return await app(scope, receive, send)
        start, body = {}, []

        async def rewrite(message):
            if message["type"] == "http.response.start":
                return start.update(message)
            body.append(message.get("body", b""))
            if message.get("more_body"):
                return None
            page = json.loads(b"".join(body))
            for record in page.get("data", []) if isinstance(page, dict) else []:
                record["Email"] = record["email"]
            text = json.dumps(page).encode()
            headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(text)).encode())]})
            await send({"type": "http.response.body", "body": text})

        await app(scope, receive, rewrite)

    return wrapped


def add_people(crm: Path) -> None:
    with closing(sqlite3.connect(crm)) as conn, conn:
        conn.executemany(
            "INSERT INTO customers (id, name, email, phone, country, updated_at) VALUES (?, ?, ?, ?, 'GB', ?)",
            [(*DELIVERED, "2026-07-01T00:00:00.000001Z"), (*DEAD_LETTERED, "2026-07-01T00:00:00.000002Z")],
        )


def refuse_canaries(url: str) -> None:
    """Billing's `customers` with a trigger that refuses the canary, naming their email (PostgreSQL's RAISE)."""
    reset_tables(url, "customers", "interlink_watermarks")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "CREATE TABLE customers (crm_id VARCHAR(32) PRIMARY KEY, name VARCHAR(200), email VARCHAR(254), phone VARCHAR(32),"
            " country VARCHAR(8), currency VARCHAR(3), tax_rate DOUBLE PRECISION, crm_updated_at TIMESTAMP,"
            " row_hash VARCHAR(16) NOT NULL, synced_at TIMESTAMP NOT NULL)"
        ))
        conn.execute(sa.text(
            "CREATE OR REPLACE FUNCTION refuse_canaries() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.email LIKE '%canaryq7%' THEN RAISE EXCEPTION 'customer % is blocked', NEW.email; END IF; RETURN NEW; END $$"
        ))
        conn.execute(sa.text("CREATE TRIGGER refuse_canaries BEFORE INSERT ON customers FOR EACH ROW EXECUTE FUNCTION refuse_canaries()"))
    engine.dispose()


def prefect_database(db: Path) -> str:
    """Every row of every table of Prefect's database, as SQL text."""
    with closing(sqlite3.connect(db)) as conn:
        return "\n".join(conn.iterdump())


def stored_results(folder: Path) -> str:
    """Prefect's result storage: each file, and any base64 in it decoded (results are pickled, then base64-encoded)."""
    texts = []
    for path in (p for p in folder.rglob("*") if p.is_file()):
        raw = path.read_bytes()
        texts.append(raw.decode("utf-8", "replace"))
        for run in re.findall(rb"[A-Za-z0-9+/=\s]{40,}", raw):
            try:
                texts.append(base64.b64decode(b"".join(run.split()), validate=True).decode("utf-8", "replace"))
            except (binascii.Error, ValueError):
                pass
    return "\n".join(texts)


def test_no_secret_and_no_person_in_any_output(tmp_path: Path, crm_db: Path, home: Path):
    add_people(crm_db)
    billing = make_url(service_url("postgresql")).set(password=SECRETS["userinfo"]).update_query_dict(
        {"sslpassword": SECRETS["sslpassword"]}).render_as_string(hide_password=False)
    reset_tables(billing, "customers", "invoices", "interlink_watermarks")
    prefect_home = tmp_path / "prefect"
    prefect_home.mkdir()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "INTERLINK_"))} | DEMO_PROJECT
    outputs: dict[str, str] = {}

    def interlink(*args: str, expect: int = 0, **env: str) -> str:
        done = subprocess.run([INTERLINK, *args], env=base | configured | env, capture_output=True, text=True, timeout=600)
        outputs[f"{' '.join(args)} #{len(outputs)}"] = done.stdout + done.stderr
        assert done.returncode == expect, done.stderr[-3000:]
        return done.stdout if expect == 0 else done.stderr

    with (
        serve(spelling_email_twice(create_app(crm_db, api_key=SECRETS["key"]))) as crm, serve(echoing_401()) as refusing,
        lineage_receiver() as lineage, pushgateway(tmp_path / "pushgateway.log") as gateway,
        otlp_receiver(tmp_path / "spans.jsonl") as traces,
    ):
        host = crm.removeprefix("http://")
        configured = {
            "OPENLINEAGE_URL": lineage, "INTERLINK_PUSHGATEWAY_URL": gateway, "OTEL_EXPORTER_OTLP_ENDPOINT": traces,
            "INTERLINK_LOG_FORMAT": "json",
            "PREFECT_HOME": str(prefect_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",  # a busy machine starts it slowly
            "INTERLINK_HOME": str(home),
            "INTERLINK_STATE_URL": f"sqlite:///{home / 'interlink.db'}?token={SECRETS['state']}",
            "INTERLINK_BILLING__URL": billing,
            "INTERLINK_CRM__BASE_URL": crm, "INTERLINK_CRM__AUTH__KIND": "api_key", "INTERLINK_CRM__AUTH__KEY": SECRETS["key"],
            "INTERLINK_FINANCE__BASE_URL": crm,
            "INTERLINK_PARTNER__KIND": "rest",
            "INTERLINK_PARTNER__BASE_URL": f"http://svc:{SECRETS['partner password']}@{host}/?api_key={SECRETS['partner key']}",
        }
        interlink("demo", "run", "--fault-rate", "0")  # every integration; the demo stands in for what is not configured
        refuse_canaries(billing)
        interlink("run", "crm_to_billing", expect=1)  # the target refuses the canary, naming their email
        refused = interlink("run", "crm_to_billing", expect=2, INTERLINK_CRM__BASE_URL=refusing)  # 401, echoing the key:
        # found by the connection check before the run
        reset_tables(billing, "customers", "interlink_watermarks")
        interlink("dlq", "replay", "crm_to_billing")
        runs = interlink("runs", "--json")
        interlink("runs")
        listed = interlink("dlq", "list", "--json")
        interlink("dlq", "list")
        # only the connections of declared integrations are listed: the partner's URL stands as one of them
        interlink("connectors", "--json", expect=1, INTERLINK_RATES__BASE_URL=configured["INTERLINK_PARTNER__BASE_URL"])
        interlink("report")
        revealed = interlink("dlq", "list", "--json", "--reveal")
        events, pushed = lineage_events(lineage), get(f"{gateway}/metrics")
    del outputs[next(reversed(outputs))]  # the operator asked to see them: the one output that shows people
    spans = (tmp_path / "spans.jsonl").read_text()

    places = dict(outputs)
    with closing(sqlite3.connect(home / "interlink.db")) as conn:
        places["ledger"] = "\n".join(map(str, conn.execute("SELECT * FROM runs").fetchall()))
    places["prefect database"] = prefect_database(prefect_home / "prefect.db")
    places["prefect result storage"] = stored_results(prefect_home)
    files = [p for p in (home / "reports").rglob("*") if p.is_file()] + [p for p in (home / "gx").rglob("*") if p.is_file()]
    places |= {str(p.relative_to(home)): p.read_text(errors="replace") for p in files}
    places |= {"lineage events": json.dumps(events), "pushgateway": pushed, "spans": spans}

    # what is checked is there: the failures, the masked forms, the logs and artifacts
    assert "customer a***@example.org is blocked" in runs and "credentials were rejected" in refused
    assert "postgres:***@127.0.0.1" in runs and "sslpassword=***" in runs
    assert '"email": "b***@example.org"' not in listed and '"email": "b***"' in listed and '"phone": "+***"' in listed
    assert '"Email": "b***"' in listed
    assert DEAD_LETTERED[2] in revealed and DEAD_LETTERED[3] in revealed
    assert any(p.endswith("quality.html") for p in places) and any(p.endswith(".html") and "gx" not in p for p in places)
    assert "dead-lettered" in places["prefect database"] and "crm-to-billing" in places["prefect database"]
    assert "a***@example.org" in places["prefect database"]  # the refusal, masked, in the run's logs and state
    assert "api_key=***" in "".join(v for k, v in places.items() if k.startswith("connectors"))

    observed_as_it_happened(json.loads(runs), events, pushed, spans)
    assert any(line.startswith('{"time": ') for line in outputs["demo run --fault-rate 0 #0"].splitlines())  # JSON logs

    leaks = {(name, where) for name, secret in SECRETS.items() for where, text in places.items() if secret in text}
    leaks |= {(person, where) for person in PEOPLE for where, text in places.items() if person in text}
    assert not leaks, sorted(leaks)


def observed_as_it_happened(runs: list[dict], events: list[dict], pushed: str, spans: str) -> None:
    """Each ledgered run is one START and one end event (its state's) with the same run id, its source and target
    datasets, and its checks; the Pushgateway holds the ledger's figures; each run's trace id names its spans."""
    from prometheus_client.parser import text_string_to_metric_families

    ends = {"COMPLETED": "COMPLETE", "QUARANTINED": "COMPLETE", "FAILED": "FAIL", "CRASHED": "FAIL", "CANCELLED": "ABORT"}
    by_run: dict[str, list[dict]] = {}
    for event in events:
        by_run.setdefault(event["run"]["runId"], []).append(event)
    for run in runs:
        start, end = by_run[run["flow_run_id"]]
        assert (start["eventType"], end["eventType"]) == ("START", ends[run["state"]]), run
        assert start["job"]["name"].startswith(run["integration"]) and end["outputs"] and end["inputs"][0]["name"]
        if run["kind"] == "sync" and run["state"] != "FAILED":
            assertions = end["inputs"][0]["inputFacets"]["dataQualityAssertions"]["assertions"]
            assert assertions and all({"assertion", "success"} <= set(a) for a in assertions)
    assert {run["integration"] for run in runs} >= {"crm_to_billing", "inventory_to_storefront", "invoices_to_billing", "orders_to_erp"}

    figures: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(pushed):
        for sample in family.samples:
            if sample.name == "interlink_rows_read_total" and sample.labels.get("job") == "interlink":
                figures[sample.labels["integration"], sample.labels["kind"]] = sample.value
    ledgered: dict[tuple[str, str], int] = {}
    for run in runs:
        ledgered[run["integration"], run["kind"]] = ledgered.get((run["integration"], run["kind"]), 0) + run["rows_read"]
    assert figures == ledgered

    traced = {json.loads(line)["trace_id"] for line in spans.splitlines()}
    assert traced == {run["trace_id"] for run in runs} and None not in traced
