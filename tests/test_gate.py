"""Gate policies and guards on real flow runs: fail, quarantine, approve (through Prefect's API), volume, schema."""

import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from interlink.connectors.sql import create_engine, read_watermark
from interlink.data_checks.policy import Gate, SchemaContract
from interlink.deployments.runner import declarations
from interlink.flows.crm_to_billing import PIPELINE as crm_to_billing
from interlink.flows.orders_to_erp import PIPELINE as orders_to_erp
from interlink.flows.pipeline import sync_flow
from interlink.tasks.gate import SAMPLE_PER_CHECK, SAMPLE_ROWS
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import StateType
from prefect.exceptions import ObjectNotFound
from prefect.flow_runs import resume_flow_run
from prefect.input.actions import read_flow_run_input
from prefect.settings import PREFECT_API_URL

from interlink.deadletter import DeadLetters
from interlink.ledger import Ledger
from interlink.settings import Settings

CRM = crm_to_billing
CRM_COLUMNS = ["crm_id", "name", "email", "phone", "country", "crm_updated_at", "currency", "tax_rate"]  # a row as billing gets it


def billing(home):
    """Rows delivered to billing (0 if nothing ever was) and the committed watermark."""
    engine = create_engine(f"sqlite:///{home / 'billing.db'}")
    with engine.connect() as conn:
        count = conn.scalar(sa.text("SELECT count(*) FROM customers")) if sa.inspect(conn).has_table("customers") else 0
    watermark = read_watermark(engine, "crm_to_billing")
    engine.dispose()
    return count, watermark


def last_run(name="crm_to_billing") -> dict:
    return Ledger(Settings().state_db).runs(name, limit=1)[0]


@pytest.fixture
def sqlite_billing(home, monkeypatch):
    monkeypatch.setenv("INTERLINK_BILLING__URL", f"sqlite:///{home / 'billing.db'}")


def test_fail_policy_delivers_nothing_and_keeps_the_watermark(systems, sqlite_billing, home):
    with systems():
        state = sync_flow(replace(CRM, gate=Gate(policy="fail")))(return_state=True)
    assert state.is_failed()
    assert billing(home) == (0, None)
    assert DeadLetters(Settings().state_db).entries("crm_to_billing") == []
    assert last_run()["state"] == "FAILED" and "505 of 5000 rows fail" in last_run()["error"]


def test_quarantine_policy_delivers_exactly_the_passing_rows_with_a_warning_state(storefront, home, monkeypatch):
    monkeypatch.setenv("INTERLINK_ERP__URL", f"sqlite:///{home / 'erp.db'}")
    with storefront():
        state = orders_to_erp.sync(return_state=True)
    summary = state.result()
    letters = DeadLetters(Settings().state_db).entries("orders_to_erp", "open")
    assert state.is_completed() and state.name == "Quarantined"
    assert summary["rows_inserted"] + summary["rows_quarantined"] == summary["rows_read"] == 2000
    assert len(letters) == summary["rows_quarantined"] > 0


def start_in_thread(flow_fn) -> tuple[threading.Thread, dict]:
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(state=flow_fn(return_state=True)))
    thread.start()
    return thread, outcome


def paused_run(flow_name: str, thread: threading.Thread, timeout_s: float = 90, not_key: str | None = None):
    """The flow run of `flow_name` once the API shows it paused (with a pause key other than `not_key`: paused again)
    (polled, bounded; gives up if the run ended)."""
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline and thread.is_alive():
            paused = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))),
            )
            if paused and paused[0].state.state_details.pause_key != not_key:
                return paused[0]
            time.sleep(0.2)
    raise AssertionError(f"no paused run of {flow_name} within {timeout_s}s (run alive: {thread.is_alive()})")


APPROVE = Gate(policy="approve", approve_above=0.05, approval_poll_s=0.2, approval_timeout_s=120, sensitive=("name", "email", "phone"))


def flow_run_logs(run_id, needle: str, timeout_s: float = 30) -> list[str]:
    """The run's log messages once one contains `needle` (logs reach the API in batches: polled, bounded)."""
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            messages = [log.message for log in client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))]
            if any(needle in m for m in messages) or time.monotonic() > deadline:
                return messages
            time.sleep(0.2)


def artifacts(run_id) -> dict[str, str]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    return {a.key: a.data for a in found}


REFUSED = [
    {},  # an empty Submit
    {"decision": "maybe", "approver": "alice", "comment": "ok"},
    {"approver": "alice", "comment": "ok"},
]
BLANK = {"decision": "reject", "approver": "   ", "comment": "ok"}  # the schema lets it through; the flow asks again


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_approve_policy_pauses_and_a_person_decides_through_the_api(systems, sqlite_billing, home, decision):
    with systems():
        thread, outcome = start_in_thread(sync_flow(replace(CRM, gate=APPROVE)))
        run = paused_run("crm_to_billing", thread)
        keyset = run.state.state_details.run_input_keyset
        form = read_flow_run_input(keyset["description"], run.id)
        schema = read_flow_run_input(keyset["schema"], run.id)
        refusals = []
        for run_input in REFUSED:  # the server validates the input against the form's schema and keeps the run paused
            with pytest.raises(RuntimeError, match="Cannot resume this run") as refused:
                resume_flow_run(run.id, run_input=run_input)
            refusals.append(str(refused.value))
        with get_client(sync_client=True) as client:
            assert client.read_flow_run(run.id).state.is_paused()
        resume_flow_run(run.id, run_input=BLANK)
        again = paused_run("crm_to_billing", thread, not_key=run.state.state_details.pause_key)
        asked_again = read_flow_run_input(again.state.state_details.run_input_keyset["description"], again.id)
        resume_flow_run(run.id, run_input={"decision": decision, "approver": "alice", "comment": "known CRM clean-up"})
        thread.join(120)

    assert sorted(schema["required"]) == ["approver", "comment", "decision"]  # the UI marks none "(Optional)"
    assert "'decision' is a required property" in refusals[0] and "'maybe' is not one of ['approve', 'reject']" in refusals[1]
    assert asked_again.startswith("**Your answer was refused: Your name is blank: write who decides, it is kept with the decision.**")
    assert asked_again.endswith(form) and "an answer was refused: Your name is blank" in " ".join(flow_run_logs(run.id, "refused"))
    assert "505 of 5000 rows fail" in form and "| expect_column_values_to_match_regex(email) |" in form
    deadline = re.search(r"\*\*Decide by (\d{4}-\d\d-\d\d \d\d:\d\d) UTC\*\* \(within 2 min 0 s\)", form)
    assert deadline and abs((datetime.strptime(deadline[1], "%Y-%m-%d %H:%M").replace(tzinfo=UTC) - run.state.timestamp).total_seconds() - 120) < 61
    failing = dict(re.findall(r"^\| (expect_\S+) \| (\d+) \|$", form, re.M))
    head, _, listed = form.partition("each whole (name, email, phone masked):")
    rows = [row.splitlines() for row in listed.strip().split("\n\n")]
    assert len(failing) >= 2 and len(rows) <= SAMPLE_ROWS and not re.search(r"^\s*\d+\.", listed, re.M)  # no numbered list to clip
    for n, (fails, row) in enumerate(rows, 1):  # each row's own failed checks, then all of it
        assert re.fullmatch(rf"\*\*Row {n}\*\* fails expect_\w+\(\w+\)(, expect_\w+\(\w+\))*:  ", fails), fails
        assert [part.split(": ")[0] for part in row.split(" · ")] == CRM_COLUMNS, row
        assert re.search(r"name: \w\\\*\\\*\\\*", row) or "name: ∅" in row, row  # names are masked too
    for check, count in failing.items():  # every failing expectation has its rows in the sample
        assert sum(check in fails.replace("\\", "") for fails, _ in rows) >= min(SAMPLE_PER_CHECK, int(count)), check
    assert not re.search(r"(?<!\\\*)@", listed)  # masked, and shown as masked
    verdict = "approved" if decision == "approve" else "rejected"
    run_row = last_run()
    assert re.fullmatch(rf"{verdict} by alice at \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(505 of 5000 rows fail\): known CRM clean-up",
                        run_row["decision"]), run_row["decision"]
    assert f"approval: {run_row['decision']}" in flow_run_logs(run.id, "approval: ")
    published = artifacts(run.id)
    assert run_row["decision"] in published["crm-to-billing-approval"]
    if decision == "approve":
        assert outcome["state"].is_completed()
        assert billing(home)[0] == 4495 and len(DeadLetters(Settings().state_db).entries("crm_to_billing")) == 505
        assert f"**Approval**: {run_row['decision']}" in published["crm-to-billing"]
    else:
        assert outcome["state"].is_failed()
        assert billing(home) == (0, None)
        assert run_row["state"] == "FAILED"


def test_an_unanswered_approval_rejects_the_batch_when_it_times_out(systems, sqlite_billing, home):
    with systems():
        state = sync_flow(replace(CRM, gate=replace(APPROVE, approval_timeout_s=1)))(return_state=True)
    assert state.is_failed() and billing(home) == (0, None)
    decision = last_run()["decision"]
    assert decision.startswith("rejected: no decision within 1s")
    assert f"approval: {decision}" in flow_run_logs(last_run()["flow_run_id"], "approval: ")


@pytest.mark.parametrize("how", ["a person", "the timeout"])
def test_a_rejection_ends_the_run_at_once_despite_declared_flow_retries(systems, sqlite_billing, home, monkeypatch, how):
    """A rejected batch is a decision: the run fails once, with the decision as its message, and its declared flow
    retries do not run it again (Prefect's server would turn its Failed into AwaitingRetry and pause it again)."""
    from interlink.demo_systems.server import serve

    from tests.test_alerts import sink

    gate = APPROVE if how == "a person" else replace(APPROVE, approval_timeout_s=1)
    app, received = sink()
    with serve(app) as url, systems():
        monkeypatch.setenv("INTERLINK_ALERT_URL", f"{url}/alerts")
        retried = sync_flow(replace(CRM, gate=gate)).with_options(retries=2, retry_delay_seconds=1)  # as `deployed()` makes it
        thread, outcome = start_in_thread(retried)
        run = paused_run("crm_to_billing", thread)
        if how == "a person":
            resume_flow_run(run.id, run_input={"decision": "reject", "approver": "alice", "comment": "wrong CRM export"})
        with get_client(sync_client=True) as client:  # ended, or (retried) waiting or paused again: polled, bounded
            deadline = time.monotonic() + 60
            while not (states := [s.name for s in sorted(client.read_flow_run_states(run.id), key=lambda s: s.timestamp)])[-1:] or not (
                    states[-1] in ("Failed", "AwaitingRetry") or states.count("Paused") > 1):
                assert time.monotonic() < deadline, states
                time.sleep(0.2)
            final = client.read_flow_run(run.id)
        thread.join(60 if final.state.is_final() else 0)  # a run paused again would wait for a person: not waited for

    assert final.state.is_failed() and states[-1] == "Failed", (final.state, states)
    assert "AwaitingRetry" not in states and states.count("Paused") == 1, states  # one attempt (a resume counts as a run)
    row = last_run()
    assert row["flow_run_id"] == str(run.id) and row["state"] == "FAILED" and row["decision"].startswith("rejected"), row
    assert row["decision"] in final.state.message and row["decision"] in row["error"], (final.state.message, row["error"])
    assert len(Ledger(Settings().state_db).runs("crm_to_billing")) == 1
    assert outcome["state"].is_failed() and billing(home) == (0, None)
    alerts = [(p["state"], p["message"]) for p in received if p["flow_run_id"] == str(run.id)]
    assert [state for state, _ in alerts] == ["PAUSED", "FAILED"] and row["decision"] in alerts[1][1], alerts


def test_volume_guard_fails_a_run_that_reads_a_tenth_of_the_usual_rows(systems, sqlite_billing, crm_db, home):
    guarded = sync_flow(replace(CRM, gate=Gate(volume_drop=0.5, volume_min_runs=3)))
    with systems():
        first = guarded(full_refresh=True, return_state=True)
        assert first.is_completed() and "volume not judged: 0 earlier successful runs" in last_run()["notes"]
        for _ in range(2):
            guarded(full_refresh=True)
        with closing(sqlite3.connect(crm_db)) as conn, conn:
            conn.execute("DELETE FROM customers WHERE row_id % 10 != 0")
        dropped = guarded(full_refresh=True, return_state=True)
    assert dropped.is_failed()
    assert "volume dropped: 510 rows read, expected at least 50% of the median 5100" in last_run()["error"]


def test_schema_contract_catches_a_renamed_field_under_freeze_and_records_it_under_evolve(systems, sqlite_billing, home):
    fields = {**CRM.contract.fields, "phone_number": "string"}
    del fields["phone"]  # the contract knows the field by its old name
    renamed = SchemaContract(version="2", fields=fields, on_change="freeze")
    with systems():
        frozen = sync_flow(replace(CRM, contract=renamed))(return_state=True)
        assert frozen.is_failed() and billing(home) == (0, None)
        assert "new field 'phone' (string); missing field 'phone_number'" in last_run()["error"]

        evolved = sync_flow(replace(CRM, contract=replace(renamed, on_change="evolve")))(return_state=True)
    assert evolved.is_completed() and billing(home)[0] == 4495
    assert "schema evolved from contract 2: new field 'phone' (string); missing field 'phone_number'" in last_run()["notes"]


def test_a_deployments_policy_parameter_changes_the_gate(systems, sqlite_billing, home, tmp_path):
    """crm_to_billing declares `quarantine`; its deployment, declared with `policy: fail` in deployments.yaml,
    served by a runner and triggered through the Prefect API, fails the run and delivers nothing."""
    declared = declarations()
    [sync] = [d.model_copy(update={"parameters": {**d.parameters, "policy": "fail"}}) for d in declared.deployments
              if (d.integration, d.flow) == ("crm_to_billing", "sync")]
    path = tmp_path / "deployments.yaml"
    path.write_text(yaml.safe_dump(declared.model_copy(update={"deployments": [sync], "retries": 0}).model_dump(mode="json")))
    assert CRM.gate.policy == "quarantine"
    with systems():
        env = {
            **{name: value for name, value in os.environ.items() if not name.startswith("PREFECT_")},
            "PREFECT_API_URL": PREFECT_API_URL.value(),  # the session's test server
            "PREFECT_HOME": str(tmp_path / "runner"),
            "PREFECT_RUNNER_POLL_FREQUENCY": "1",
            "INTERLINK_DEPLOYMENTS_FILE": str(path),
        }
        served = "from prefect import serve; from interlink.deployments.runner import runner_deployments; serve(*runner_deployments())"
        with (tmp_path / "serve.log").open("w") as out:
            runner = subprocess.Popen([sys.executable, "-c", served], env=env, stdout=out, stderr=subprocess.STDOUT,
                                      cwd=Path(__file__).parents[1])
        try:
            with get_client(sync_client=True) as client:
                deployment = poll(lambda: _deployment(client, "crm_to_billing/crm_to_billing"), 90, "the deployment registered", runner)
                assert deployment.parameters["policy"] == "fail"
                assert deployment.parameter_openapi_schema["properties"]["policy"]["enum"] == ["fail", "quarantine", "approve"]
                flow_run = client.create_flow_run_from_deployment(deployment.id)
                final = poll(lambda: (r := client.read_flow_run(flow_run.id)).state.is_final() and r, 180, "the run finishing", runner)
        finally:
            runner.terminate()
            runner.wait(30)
    assert final.state.is_failed() and "505 of 5000 rows fail" in final.state.message, final.state
    row = last_run()
    assert row["flow_run_id"] == str(flow_run.id) and row["state"] == "FAILED" and "GateFailed: crm_to_billing: 505 of 5000 rows fail" in row["error"]
    assert billing(home) == (0, None)


def poll(condition, timeout_s: float, what: str, process: subprocess.Popen):
    """`condition()` once truthy, polled within a bound; fails at once if `process` (the runner) exited."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the runner exited with {process.returncode} before {what}")
        if found := condition():
            return found
        time.sleep(0.5)
    raise AssertionError(f"{what} did not happen within {timeout_s}s")


def _deployment(client, name: str):
    try:
        return client.read_deployment_by_name(name)
    except ObjectNotFound:
        return None
