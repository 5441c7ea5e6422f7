"""The whole crm_to_billing flow against the real demo HTTP server, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager

import pandas as pd
import pytest
import sqlalchemy as sa
from interlink.connectors.errors import AuthError
from interlink.connectors.sql import create_engine, read_watermark
from interlink.demo_systems.crm_data import add_country, mutate
from interlink.flows.crm_to_billing import PIPELINE as crm_to_billing
from interlink.tasks.ingest import fetch_chunk
from sqlalchemy import event
from sqlalchemy.engine import Engine

from interlink.deadletter import DeadLetters
from interlink.ledger import Ledger
from interlink.settings import Settings


def crm_rows(crm_db) -> pd.DataFrame:
    with closing(sqlite3.connect(crm_db)) as conn:
        return pd.read_sql("SELECT * FROM customers", conn)


def target(url: str) -> pd.DataFrame:
    """The delivered rows, without the sync time, in key order."""
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = pd.read_sql(sa.text("SELECT * FROM customers ORDER BY crm_id"), conn)
    watermark = read_watermark(engine, "crm_to_billing")
    engine.dispose()
    rows.attrs["watermark"] = watermark
    return rows.drop(columns="synced_at")


def assert_every_customer_delivered_or_dead_lettered(source: pd.DataFrame, delivered: pd.DataFrame) -> None:
    open_keys = {e["record_key"] for e in DeadLetters(Settings().state_db).entries("crm_to_billing", "open")}
    assert set(delivered["crm_id"]).isdisjoint(open_keys)
    assert set(delivered["crm_id"]) | open_keys == set(source["id"])


def last_run() -> dict:
    return Ledger(Settings().state_db).runs("crm_to_billing", limit=1)[0]


def test_first_sync_delivers_every_valid_customer_and_dead_letters_the_rest(systems, crm_db, billing_url):
    with systems():
        summary = crm_to_billing.sync()

    source = crm_rows(crm_db)
    delivered = target(billing_url)
    run = last_run()
    assert run["state"] == "QUARANTINED"  # completed, with rows dead-lettered: Prefect's Completed named Quarantined
    assert run["rows_read"] == summary["rows_read"] == len(source)
    assert run["rows_inserted"] == len(delivered) > 4000
    assert run["watermark"] == delivered.attrs["watermark"] == source["updated_at"].max()
    open_letters = DeadLetters(Settings().state_db).entries("crm_to_billing", "open")
    assert len(open_letters) == run["rows_quarantined"] > 0
    assert_every_customer_delivered_or_dead_lettered(source, delivered)
    # normalised: lower-case trimmed emails, E.164 phones, ISO country codes with billing terms
    assert (delivered["email"] == delivered["email"].str.strip().str.lower()).all()
    assert delivered["phone"].dropna().str.fullmatch(r"\+\d{8,15}").all()
    assert delivered["currency"].notna().all() and delivered["tax_rate"].between(0, 0.5).all()
    # de-duplicated by CRM id: the latest version of a duplicated customer wins
    latest = source.sort_values("updated_at").drop_duplicates("id", keep="last").set_index("id")
    duplicated = source["id"][source["id"].duplicated()]
    delivered_by_id = delivered.set_index("crm_id")
    checked = [i for i in duplicated if i in delivered_by_id.index]
    assert checked
    for crm_id in checked:
        assert delivered_by_id.at[crm_id, "name"] == " ".join(latest.at[crm_id, "name"].split())


def test_rerun_delivers_nothing_and_a_crm_change_delivers_exactly_the_changed_rows(systems, crm_db, billing_url):
    with systems():
        crm_to_billing.sync()
        before = target(billing_url)
        again = crm_to_billing.sync()
        assert again["rows_inserted"] == again["rows_updated"] == again["rows_quarantined"] == 0
        pd.testing.assert_frame_equal(target(billing_url), before)

        changed = mutate(crm_db, 25, seed=1)
        third = crm_to_billing.sync()

    after = target(billing_url)
    assert third["rows_inserted"] == 0 and third["rows_updated"] == 25
    differs = before.set_index("crm_id").compare(after.set_index("crm_id")).index
    assert sorted(differs) == changed
    assert after.attrs["watermark"] == crm_rows(crm_db)["updated_at"].max()


def test_a_rerun_checks_no_row_the_target_holds_unchanged_but_checks_a_changed_one_at_the_watermark(systems, crm_db, home, billing_url):
    """The record re-read at the inclusive watermark is not validated again while billing holds it exactly
    (no validation result, no GX); changed at the same update time, it is checked, and quarantined when bad."""
    from interlink.data_checks.gate import docs_index, validated

    with systems():
        crm_to_billing.sync()
        rerun = crm_to_billing.sync(return_state=True)
        summary = rerun.result()
        assert (summary["rows_read"], summary["rows_unchanged"], summary["rows_quarantined"]) == (1, 1, 0)
        assert not validated(home, str(rerun.state_details.flow_run_id))
        assert summary["report"] == str(docs_index(home))
        with closing(sqlite3.connect(crm_db)) as conn, conn:
            newest = conn.execute("SELECT id FROM customers ORDER BY updated_at DESC LIMIT 1").fetchone()[0]
            conn.execute("UPDATE customers SET email = 'not-an-email' WHERE id = ?", (newest,))  # same updated_at
        changed = crm_to_billing.sync(return_state=True)
    found = changed.result()
    assert (found["rows_read"], found["rows_quarantined"], found["rows_unchanged"]) == (1, 1, 0)
    assert validated(home, str(changed.state_details.flow_run_id))
    [letter] = [e for e in DeadLetters(Settings().state_db).entries("crm_to_billing", "open") if e["record_key"] == newest]
    assert letter["stage"] == "check" and "email" in letter["reason"]
    assert target(billing_url).set_index("crm_id").at[newest, "email"] != "not-an-email"


@contextmanager
def crash_on_insert(number: int) -> Iterator[list[int]]:
    """Raise inside the `number`-th INSERT into customers, after the earlier ones ran."""
    inserts: list[int] = []

    def before_execute(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT INTO CUSTOMERS"):
            inserts.append(1)
            if len(inserts) == number:
                raise RuntimeError("injected crash in the middle of delivery")

    event.listen(Engine, "before_cursor_execute", before_execute)
    try:
        yield inserts
    finally:
        event.remove(Engine, "before_cursor_execute", before_execute)


def test_a_crash_mid_delivery_leaves_target_and_watermark_unchanged_and_the_next_run_completes(systems, crm_db, billing_url):
    with systems():
        with crash_on_insert(3) as inserts:
            state = crm_to_billing.sync(return_state=True)
        assert state.is_failed() and len(inserts) == 3  # two write batches ran before the crash
        crashed = target(billing_url)
        assert crashed.empty and crashed.attrs["watermark"] is None
        assert last_run()["state"] == "FAILED" and "injected crash" in last_run()["error"]

        recovered = crm_to_billing.sync()

    delivered = target(billing_url)
    assert recovered["rows_inserted"] == len(delivered) == delivered["crm_id"].nunique() > 4000
    assert delivered.attrs["watermark"] == crm_rows(crm_db)["updated_at"].max()


def test_a_wrong_api_key_fails_fast_with_a_clear_message_and_no_retries(systems, home, monkeypatch):
    monkeypatch.setenv("INTERLINK_BILLING__URL", f"sqlite:///{home / 'billing.db'}")
    with systems(api_key="not-the-key") as app:
        state = crm_to_billing.sync(return_state=True)
    assert state.is_failed()
    with pytest.raises(AuthError, match="GET /customers answered 401: the credentials were rejected"):
        state.result()
    assert app.state.hits["/customers"] == 1
    assert last_run()["state"] == "FAILED"


def test_429_and_503_are_retried_and_lose_no_record(systems, crm_db, home, monkeypatch):
    monkeypatch.setenv("INTERLINK_BILLING__URL", f"sqlite:///{home / 'billing.db'}")
    with systems(fault_rate=0.3, retry_after=0, fault_seed=3) as app:
        summary = crm_to_billing.sync(chunk_size=2000)
    pages = -(-len(crm_rows(crm_db)) // 500)
    assert app.state.hits["/customers"] > pages  # faults were answered and retried
    assert summary["rows_read"] == len(crm_rows(crm_db))
    assert_every_customer_delivered_or_dead_lettered(crm_rows(crm_db), target(f"sqlite:///{home / 'billing.db'}"))


def test_replay_delivers_fixed_records_and_keeps_still_bad_ones_open(systems, crm_db, home, monkeypatch):
    monkeypatch.setenv("INTERLINK_BILLING__URL", f"sqlite:///{home / 'billing.db'}")
    store = DeadLetters(f"sqlite:///{home / 'interlink.db'}")
    with systems():
        crm_to_billing.sync()
        unknown_country = [
            e for e in store.entries("crm_to_billing", "open") if "currency" in e["values"] and "country" not in e["values"]
        ]
        codes = {record["country"].strip().upper() for e in unknown_country for record in e["payload"]}
        for code in codes:
            add_country(crm_db, code, "EUR", 0.2)  # the finance team adds the missing countries

        replayed = crm_to_billing.replay()
        after = {e["record_key"]: e for e in store.entries("crm_to_billing")}
        again = crm_to_billing.replay()

    fixed = [e for e in unknown_country if e["reason"].count("expect_") == 1]
    still_bad = [e for e in unknown_country if e["reason"].count("expect_") > 1]
    assert fixed and still_bad
    assert replayed["rows_inserted"] == len(fixed)
    assert all(after[e["record_key"]]["status"] == "replayed" for e in fixed)
    for entry in still_bad:
        now = after[entry["record_key"]]
        assert now["status"] == "open" and "currency" not in now["values"] and now["reason"] != entry["reason"]
    delivered = set(target(f"sqlite:///{home / 'billing.db'}")["crm_id"])
    assert {e["record_key"] for e in fixed} <= delivered
    assert again["rows_inserted"] == again["rows_updated"] == 0
    assert {k: e["status"] for k, e in after.items()} == {e["record_key"]: e["status"] for e in store.entries("crm_to_billing")}


def test_each_run_publishes_its_counts_and_data_docs_as_an_artifact(systems, home, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    monkeypatch.setenv("INTERLINK_BILLING__URL", f"sqlite:///{home / 'billing.db'}")
    with systems():
        state = crm_to_billing.sync(return_state=True)
    summary = state.result()
    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        )
    assert artifact.key == "crm-to-billing"
    assert f"| inserted | {summary['rows_inserted']} |" in artifact.data
    assert f"| quarantined | {summary['rows_quarantined']} |" in artifact.data
    assert "| expect_column_values_to_match_regex(email) | failed | 145 |" in artifact.data
    assert "| expect_column_values_to_be_unique(crm_id) | passed | 0 |" in artifact.data
    assert f"Data Docs: `{summary['report']}`" in artifact.data
    pages = list((home / "reports" / "validations" / "billing_customers").glob(f"{state.state_details.flow_run_id}/*/*.html"))
    assert len(pages) == 1
    page = pages[0].read_text()
    assert "***" in page and not re.search(r"[\w.+-]{2,}@@?[\w.-]*example\.", page)  # emails masked in Data Docs


def test_an_open_circuit_fails_the_run_fast_and_is_in_the_ledger(systems, home, monkeypatch):
    monkeypatch.setenv("INTERLINK_BILLING__URL", f"sqlite:///{home / 'billing.db'}")
    monkeypatch.setenv("INTERLINK_CRM__BREAKER_THRESHOLD", "2")
    monkeypatch.setenv("INTERLINK_CRM__BREAKER_COOLDOWN_S", "3600")  # a breaker of its own for this test
    monkeypatch.setenv("INTERLINK_CRM__MAX_ATTEMPTS", "2")
    monkeypatch.setattr(fetch_chunk, "retry_delay_seconds", [0, 0])  # the task's retries as declared, without waiting
    with systems(fault_rate=1.0, retry_after=0) as app:
        state = crm_to_billing.sync(return_state=True)
    assert state.is_failed()
    # a failed request (2 attempts) is one failure: the task's first retry makes the 2nd, which opens the circuit,
    # so the task does not retry again only to fail fast, and the run's error is the real one
    assert app.state.hits["/customers"] == 4
    run = last_run()
    assert run["state"] == "FAILED"
    assert re.fullmatch(r"RetriableError: crm: GET /customers answered (429|503) after 2 attempts; circuit now open for 3600s", run["error"])
    assert run["circuits"] == "crm opened 1x, now open"
