"""Interlink's own state: the run ledger and the dead-letter store."""

from datetime import datetime

import pytest

from interlink import deadletter
from interlink.deadletter import OPEN, REPLAYED, RESOLVED, DeadLetters, Reject
from interlink.ledger import Counts, Ledger


@pytest.fixture
def state_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/state.db"


def start(ledger: Ledger, integration: str = "crm_to_billing", **options):
    settings = {"kind": "sync", "flow_run_id": "run-1", "target": "sqlite:///billing.db", "watermark": "w0"} | options
    return ledger.record(integration, **settings)


def test_a_run_is_running_until_its_block_ends(state_url):
    ledger = Ledger(state_url)
    with start(ledger) as entry:
        [run] = ledger.runs()
        assert run["state"] == "RUNNING"
        assert run["finished_at"] is None
        assert (run["watermark_before"], run["watermark"]) == ("w0", "w0")
        assert entry.watermark == "w0"
        entry.counts = Counts(rows_read=10, rows_inserted=4, rows_updated=3, rows_unchanged=1, rows_quarantined=2)
        entry.watermark = "w1"
        entry.report = "/reports/run-1.html"
    [run] = ledger.runs()
    assert run["state"] == "QUARANTINED"  # completed, 2 rows dead-lettered
    assert run["error"] is None
    assert run["finished_at"] is not None and run["finished_at"] >= run["started_at"]
    assert (run["rows_read"], run["rows_inserted"], run["rows_updated"], run["rows_unchanged"], run["rows_quarantined"]) == (
        10, 4, 3, 1, 2,
    )
    assert (run["watermark_before"], run["watermark"]) == ("w0", "w1")
    assert run["report"] == "/reports/run-1.html"
    assert (run["integration"], run["kind"], run["flow_run_id"], run["target"]) == (
        "crm_to_billing", "sync", "run-1", "sqlite:///billing.db",
    )


def test_a_failing_block_reraises_and_is_ledgered_failed(state_url):
    ledger = Ledger(state_url)
    with pytest.raises(RuntimeError, match="finance API down"):
        with start(ledger) as entry:
            entry.counts = Counts(rows_read=5)
            raise RuntimeError("finance API down")
    [run] = ledger.runs()
    assert run["state"] == "FAILED"
    assert run["error"] == "RuntimeError: finance API down"
    assert run["finished_at"] is not None
    assert run["rows_read"] == 5
    assert run["watermark"] == "w0"


def test_a_long_error_is_cut_to_fit(state_url):
    ledger = Ledger(state_url)
    with pytest.raises(ValueError):
        with start(ledger):
            raise ValueError("x" * 5000)
    assert len(ledger.runs()[0]["error"]) == 2000


def test_runs_are_newest_first_and_filtered_by_integration(state_url):
    ledger = Ledger(state_url)
    for integration, run_id in [("crm_to_billing", "a"), ("erp_to_crm", "b"), ("crm_to_billing", "c")]:
        with start(ledger, integration, flow_run_id=run_id):
            pass
    assert [r["flow_run_id"] for r in ledger.runs()] == ["c", "b", "a"]
    assert [r["flow_run_id"] for r in ledger.runs("crm_to_billing")] == ["c", "a"]
    assert [r["flow_run_id"] for r in ledger.runs("erp_to_crm")] == ["b"]
    assert ledger.runs("nothing") == []
    assert [r["flow_run_id"] for r in ledger.runs(limit=2)] == ["c", "b"]


def test_the_ledger_persists_across_instances(state_url):
    with start(Ledger(state_url)):
        pass
    assert [r["state"] for r in Ledger(state_url).runs()] == ["COMPLETED"]


# dead letters


def reject(key: str, reason: str = "expect_column_values_to_match_regex(email)", **values) -> Reject:
    return Reject(
        record_key=key, stage="check", reason=reason, values=values or {"email": "bad"},
        payload={"id": key, "email": values.get("email", "bad"), "updated_at": "2026-09-01T00:00:00Z"},
    )


def test_put_stores_open_entries_with_payload(state_url):
    store = DeadLetters(state_url)
    store.put("crm_to_billing", [reject("C1"), reject("C2", email="x@")], "run-1")
    entries = store.entries()
    assert [e["record_key"] for e in entries] == ["C1", "C2"]
    second = entries[1]
    assert (second["status"], second["stage"], second["flow_run_id"]) == (OPEN, "check", "run-1")
    assert second["values"] == {"email": "x@"}
    assert second["payload"] == {"id": "C2", "email": "x@", "updated_at": "2026-09-01T00:00:00Z"}
    assert second["created_at"] == second["updated_at"]


def test_put_again_keeps_one_entry_with_the_latest_reason_and_first_created_at(state_url, monkeypatch):
    store = DeadLetters(state_url)
    monkeypatch.setattr(deadletter, "utcnow", lambda: datetime(2026, 9, 1, 8, 0))
    store.put("crm_to_billing", [reject("C1", "first reason")], "run-1")
    [first] = store.entries()
    monkeypatch.setattr(deadletter, "utcnow", lambda: datetime(2026, 9, 2, 8, 0))
    store.put("crm_to_billing", [reject("C1", "second reason", phone="12")], "run-2")
    [entry] = store.entries()
    assert entry["id"] == first["id"]
    assert entry["reason"] == "second reason"
    assert entry["values"] == {"phone": "12"}
    assert entry["flow_run_id"] == "run-2"
    assert entry["created_at"] == datetime(2026, 9, 1, 8, 0)
    assert entry["updated_at"] == datetime(2026, 9, 2, 8, 0)


def test_put_again_reopens_a_settled_entry(state_url):
    store = DeadLetters(state_url)
    store.put("crm_to_billing", [reject("C1")], "run-1")
    store.settle("crm_to_billing", ["C1"], RESOLVED)
    store.put("crm_to_billing", [reject("C1", "failed again")], "run-2")
    [entry] = store.entries()
    assert (entry["status"], entry["reason"]) == (OPEN, "failed again")


def test_the_same_key_in_two_integrations_is_two_entries(state_url):
    store = DeadLetters(state_url)
    store.put("crm_to_billing", [reject("C1")], None)
    store.put("erp_to_crm", [reject("C1")], None)
    assert [(e["integration"], e["record_key"]) for e in store.entries()] == [("crm_to_billing", "C1"), ("erp_to_crm", "C1")]


def test_put_nothing_is_a_no_op(state_url):
    store = DeadLetters(state_url)
    store.put("crm_to_billing", [], None)
    assert store.entries() == []


def test_settle_closes_only_the_open_entries_of_the_given_keys(state_url):
    store = DeadLetters(state_url)
    store.put("crm_to_billing", [reject("C1"), reject("C2"), reject("C3")], None)
    store.put("erp_to_crm", [reject("C1")], None)
    assert store.settle("crm_to_billing", ["C1", "C3", "C9"], RESOLVED) == 2
    status = {(e["integration"], e["record_key"]): e["status"] for e in store.entries()}
    assert status == {
        ("crm_to_billing", "C1"): RESOLVED,
        ("crm_to_billing", "C2"): OPEN,
        ("crm_to_billing", "C3"): RESOLVED,
        ("erp_to_crm", "C1"): OPEN,
    }


def test_settle_does_not_reclose_settled_entries(state_url):
    store = DeadLetters(state_url)
    store.put("crm_to_billing", [reject("C1"), reject("C2")], None)
    assert store.settle("crm_to_billing", ["C1"], RESOLVED) == 1
    assert store.settle("crm_to_billing", ["C1", "C2"], REPLAYED) == 1
    status = {e["record_key"]: e["status"] for e in store.entries()}
    assert status == {"C1": RESOLVED, "C2": REPLAYED}
    assert store.settle("crm_to_billing", [], RESOLVED) == 0


def test_settle_handles_more_keys_than_one_query_batch(state_url):
    store = DeadLetters(state_url)
    keys = [f"C{i:05d}" for i in range(2300)]
    store.put("crm_to_billing", [reject(k) for k in keys], None)
    assert store.settle("crm_to_billing", keys[:2100], RESOLVED) == 2100
    assert len(store.entries("crm_to_billing", OPEN)) == 200


def test_entries_filter_by_integration_and_status(state_url):
    store = DeadLetters(state_url)
    store.put("crm_to_billing", [reject("C1"), reject("C2")], None)
    store.put("erp_to_crm", [reject("E1")], None)
    store.settle("crm_to_billing", ["C1"], RESOLVED)
    keys = lambda **f: [e["record_key"] for e in store.entries(**f)]  # noqa: E731
    assert keys() == ["C1", "C2", "E1"]
    assert keys(integration="crm_to_billing") == ["C1", "C2"]
    assert keys(status=OPEN) == ["C2", "E1"]
    assert keys(integration="crm_to_billing", status=OPEN) == ["C2"]
    assert keys(integration="crm_to_billing", status=RESOLVED) == ["C1"]
    assert keys(integration="erp_to_crm", status=RESOLVED) == []
