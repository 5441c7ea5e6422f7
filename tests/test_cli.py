"""The `interlink` command line, as operators use it."""

import json
from pathlib import Path

import pytest

from interlink.cli import main

RUN_KEYS = {"integration", "flow_run_id", "state", "started_at", "finished_at", "rows_read", "rows_inserted",
            "rows_updated", "rows_quarantined", "watermark", "target"}
DLQ_KEYS = {"integration", "record_key", "stage", "reason", "status"}


def json_out(capsys, *argv: str):
    capsys.readouterr()
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_run_starts_the_demo_systems_when_none_is_configured(home: Path, monkeypatch, capsys):
    monkeypatch.setenv("INTERLINK_DEMO_FAULT_RATE", "0")
    assert main(["run", "crm_to_billing"]) == 0
    out = capsys.readouterr().out
    report = Path(out.split("data-quality report: ")[1].split()[0])
    assert report.is_file() and report.is_relative_to(home / "reports")

    runs = json_out(capsys, "runs", "--json")
    assert len(runs) == 1 and RUN_KEYS <= runs[0].keys()
    assert runs[0]["state"] == "COMPLETED" and runs[0]["target"].startswith("sqlite:///")
    letters = json_out(capsys, "dlq", "list", "--json")
    assert len(letters) == runs[0]["rows_quarantined"] and all(DLQ_KEYS <= e.keys() for e in letters)
    assert {e["stage"] for e in letters} == {"check"} and {e["status"] for e in letters} == {"open"}

    assert main(["demo", "mutate", "--count", "7"]) == 0
    assert main(["run", "crm_to_billing"]) == 0
    assert json_out(capsys, "runs", "--json")[0]["rows_updated"] == 7

    assert main(["dlq", "replay", "crm_to_billing"]) == 0
    replay = json_out(capsys, "runs", "--json")[0]
    assert replay["state"] == "COMPLETED" and replay["rows_read"] == sum(len(e["payload"]) for e in letters)


def test_plain_listings_are_tables(home: Path, capsys):
    assert main(["runs"]) == 0 and main(["dlq", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["integration", "kind", "state"]
    assert lines[1].split()[:2] == ["integration", "record_key"]


def test_an_unknown_integration_is_named_with_the_choices(home: Path, capsys):
    assert main(["dlq", "replay", "crm_to_erp"]) == 2
    assert "unknown integration 'crm_to_erp'; choose one of: crm_to_billing" in capsys.readouterr().err


def test_a_bad_setting_names_the_variable_and_the_problem(home: Path, monkeypatch, capsys):
    monkeypatch.setenv("INTERLINK_DEMO_FAULT_RATE", "often")
    assert main(["runs"]) == 2
    err = capsys.readouterr().err
    assert "INTERLINK_DEMO_FAULT_RATE" in err and "number" in err


def test_a_missing_system_url_names_the_setting_to_set(home: Path, monkeypatch):
    monkeypatch.setenv("INTERLINK_FINANCE__BASE_URL", "http://127.0.0.1:9")
    from flows.crm_to_billing import PIPELINE as crm_to_billing

    with pytest.raises(Exception, match="INTERLINK_CRM__BASE_URL is not set"):
        crm_to_billing.sync()


def test_connectors_lists_every_connection_with_its_health(home: Path, capsys):
    rows = json_out(capsys, "connectors", "--json")
    assert {r["name"] for r in rows} == {"crm", "finance", "billing", "storefront", "rates", "erp", "erp_stock"}
    assert all(r["healthy"] and r["latency_ms"] is not None for r in rows)
    assert next(r for r in rows if r["name"] == "storefront")["used_by"] == ["inventory_to_storefront", "orders_to_erp"]


def test_reconcile_command_reports_and_repairs(home: Path, monkeypatch, capsys):
    import sqlalchemy as sa

    monkeypatch.setenv("INTERLINK_DEMO_FAULT_RATE", "0")
    assert main(["run", "crm_to_billing"]) == 0
    assert main(["reconcile", "crm_to_billing"]) == 0
    engine = sa.create_engine(f"sqlite:///{home / 'billing.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM customers WHERE crm_id = (SELECT min(crm_id) FROM customers)"))
    engine.dispose()
    capsys.readouterr()
    assert main(["reconcile", "crm_to_billing"]) == 1
    assert "missing 1, extra 0, changed 0, repaired 0" in capsys.readouterr().out
    assert main(["reconcile", "crm_to_billing", "--repair"]) == 0
    assert main(["reconcile", "crm_to_billing"]) == 0
    assert main(["reconcile", "inventory_to_storefront"]) == 2


def test_report_writes_the_quality_page(home: Path, capsys):
    assert main(["report"]) == 0
    page = Path(capsys.readouterr().out.split("quality report: ")[1].strip())
    assert page == home / "reports" / "quality.html" and "No runs recorded yet." in page.read_text()
