"""The `interlink` command line, as operators use it."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from interlink.demo_systems.cli import DEMO_PROJECT
from prefect.settings import get_current_settings

from interlink.cli import main
from tests.conftest import reset_tables, service_url

RUN_KEYS = {"integration", "flow_run_id", "state", "started_at", "finished_at", "rows_read", "rows_inserted",
            "rows_updated", "rows_quarantined", "watermark", "target"}
DLQ_KEYS = {"integration", "record_key", "stage", "reason", "status"}


def json_out(capsys, *argv: str):
    capsys.readouterr()
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_demo_run_starts_the_demo_systems_for_what_is_not_configured(home: Path, capsys):
    assert main(["demo", "run", "crm_to_billing", "--fault-rate", "0"]) == 0
    out = capsys.readouterr().out
    report = Path(out.split("data-quality report: ")[1].split()[0])
    assert report.is_file() and report.is_relative_to(home / "reports")

    runs = json_out(capsys, "runs", "--json")
    assert len(runs) == 1 and RUN_KEYS <= runs[0].keys()
    assert runs[0]["state"] == "QUARANTINED" and runs[0]["target"] == f"sqlite:///{home / 'billing.db'}"
    letters = json_out(capsys, "dlq", "list", "--json")
    assert len(letters) == runs[0]["rows_quarantined"] and all(DLQ_KEYS <= e.keys() for e in letters)
    assert {e["stage"] for e in letters} == {"check"} and {e["status"] for e in letters} == {"open"}

    assert main(["demo", "mutate", "--count", "7"]) == 0
    assert main(["demo", "run", "crm_to_billing", "--fault-rate", "0"]) == 0
    assert json_out(capsys, "runs", "--json")[0]["rows_updated"] == 7


def test_replay_uses_the_configured_systems(home: Path, systems, monkeypatch, capsys):
    monkeypatch.setenv("INTERLINK_BILLING__URL", f"sqlite:///{home / 'billing.db'}")
    with systems():
        assert main(["run", "crm_to_billing"]) == 0
        letters = json_out(capsys, "dlq", "list", "--json")
        assert main(["dlq", "replay", "crm_to_billing"]) == 0
    replay = json_out(capsys, "runs", "--json")[0]
    assert replay["state"] == "QUARANTINED" and replay["rows_read"] == sum(len(e["payload"]) for e in letters) > 0


BATCH_LINE = re.compile(r"crm_to_billing sync batch (\d+): read (\d+), inserted (\d+), updated (\d+), unchanged (\d+), quarantined (\d+) \(\d+\.\d s\)")
COUNTED = ("rows_read", "rows_inserted", "rows_updated", "rows_unchanged", "rows_quarantined")


def test_run_prints_each_batch_with_the_run_totals_the_ledger_ends_with(home: Path, systems, monkeypatch, capsys):
    """Not a terminal: one plain line per batch with the totals so far; `--json`: nothing but the JSON result."""
    monkeypatch.setenv("INTERLINK_BILLING__URL", f"sqlite:///{home / 'billing.db'}")
    chunk = 1000
    with systems():
        capsys.readouterr()
        assert main(["run", "crm_to_billing", "--chunk-size", str(chunk)]) == 0
        out = capsys.readouterr().out
        again = json_out(capsys, "run", "crm_to_billing", "--chunk-size", str(chunk), "--full-refresh", "--json")
    batches = [[int(n) for n in m.groups()] for m in BATCH_LINE.finditer(out)]
    assert len(batches) == len([ln for ln in out.splitlines() if " batch " in ln]) >= 3  # every batch line well formed
    assert [b[0] for b in batches] == list(range(1, len(batches) + 1))
    reads = [b[1] for b in batches]
    assert all(0 < later - before <= chunk for before, later in zip([0, *reads], reads, strict=False))
    full_refresh, first = json_out(capsys, "runs", "--json")  # newest first
    assert batches[-1][1:] == [first[k] for k in COUNTED] and first["rows_inserted"] > 0 and first["rows_quarantined"] > 0
    assert f"quarantined {first['rows_quarantined']} ({len(batches)} batches in " in out

    [result] = again
    assert result["state"] == "QUARANTINED" == first["state"] and result["batches"] == len(batches)  # as the ledger says
    assert [result[k] for k in COUNTED] == [full_refresh[k] for k in COUNTED] and result["rows_unchanged"] > 0
    assert result["watermark"] == full_refresh["watermark"] and Path(result["report"]).is_file()


def test_plain_listings_are_tables_with_the_error_the_decision_and_a_link_to_the_run(home: Path, systems, monkeypatch, capsys):
    monkeypatch.setenv("INTERLINK_BILLING__URL", f"sqlite:///{home / 'billing.db'}")
    with systems():
        assert main(["run", "crm_to_billing"]) == 0
    [run] = json_out(capsys, "runs", "--json")
    ui = get_current_settings().ui_url  # the test harness's server
    assert ui.startswith("http://127.0.0.1:")
    link = f"{ui}/runs/flow-run/{run['flow_run_id']}"
    assert run["url"] == link
    assert main(["runs"]) == 0  # the important columns, within 100 characters
    narrow = capsys.readouterr().out.splitlines()
    assert narrow[0].split()[:4] == ["integration", "kind", "state", "started"] and all(len(line) <= 100 for line in narrow)
    assert main(["runs", "--wide"]) == 0
    header, rule, row = capsys.readouterr().out.splitlines()[:3]
    assert header.split() == ["integration", "kind", "state", "attempts", "started", "read", "inserted", "updated", "unchanged",
                              "quarantined", "superseded", "watermark", "decision", "error", "trace", "flow", "run"]
    # the state Prefect's UI names the run: Completed, named Quarantined, as 505 rows were dead-lettered
    assert set(rule.strip()) == {"─"} and row.split()[:4] == ["crm_to_billing", "sync", "QUARANTINED", "1"] and row.endswith(link)
    assert main(["dlq", "list", "--wide"]) == 0
    header, _, row = capsys.readouterr().out.splitlines()[:3]
    assert header.split()[:6] == ["id", "integration", "record", "stage", "status", "reason"] and row.endswith(link)


def test_a_failed_run_is_one_line_with_its_cause_and_exit_1(home: Path, systems, monkeypatch, capsys):
    """A run that fails once the checks passed: the CRM's health path here needs no key, its customers do."""
    monkeypatch.setenv("INTERLINK_BILLING__URL", f"sqlite:///{home / 'billing.db'}")
    monkeypatch.setenv("INTERLINK_CRM__HEALTH_PATH", "/countries/DE")
    with systems(api_key="sk-wrong"):
        capsys.readouterr()
        assert main(["run", "crm_to_billing"]) == 1
        [line] = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("interlink:")]
        assert line.startswith("interlink: crm_to_billing sync failed: ") and "GET /customers answered 401" in line
        assert main(["run", "crm_to_billing", "--json"]) == 1
    [run] = json.loads(capsys.readouterr().out)
    assert run["state"] == "FAILED" and run["error"].startswith("crm_to_billing sync failed: ") and "answered 401" in run["error"]


def test_an_unknown_integration_is_named_with_the_choices(home: Path, capsys):
    assert main(["dlq", "replay", "crm_to_erp"]) == 2
    assert "unknown integration 'crm_to_erp'; choose one of: crm_to_billing" in capsys.readouterr().err


def test_a_bad_setting_names_the_variable_and_the_problem(home: Path, monkeypatch, capsys):
    monkeypatch.setenv("INTERLINK_CRM__TIMEOUT_S", "often")
    assert main(["runs"]) == 2
    err = capsys.readouterr().err
    assert "INTERLINK_CRM__TIMEOUT_S" in err and "number" in err


@pytest.mark.parametrize("variable", ["INTERLINK_CRM__BASE_URL", "INTERLINK_CRM__BASEURL"])
def test_an_unset_or_misspelt_system_url_stops_before_anything_moves(home: Path, variable):
    """The demo never stands in: a blank or misspelt CRM URL with a real PostgreSQL target is one line, exit 2, 0 rows."""
    target = service_url("postgresql")
    reset_tables(target, "customers", "interlink_watermarks")
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERLINK_")} | DEMO_PROJECT
    env |= {"INTERLINK_HOME": str(home), "INTERLINK_BILLING__URL": target, "INTERLINK_FINANCE__BASE_URL": "http://127.0.0.1:9",
            "INTERLINK_CRM__AUTH__KIND": "api_key", "INTERLINK_CRM__AUTH__KEY": "sk-configured", variable: ""}
    if variable != "INTERLINK_CRM__BASE_URL":
        env[variable] = "http://127.0.0.1:9"
    done = subprocess.run([sys.executable, "-m", "interlink.cli", "run", "crm_to_billing"], env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stdout == "" and len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    assert "INTERLINK_CRM__BASE_URL" in done.stderr
    engine = sa.create_engine(target)
    assert not sa.inspect(engine).has_table("customers")  # nothing read, nothing delivered
    engine.dispose()
    assert not list(home.rglob("*.db"))  # no ledger row, no SQLite file made up


def test_a_blank_database_url_is_named_instead_of_making_a_sqlite_file(home: Path, monkeypatch, capsys):
    monkeypatch.setenv("INTERLINK_CRM__BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("INTERLINK_FINANCE__BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("INTERLINK_BILLING__URL", " ")
    assert main(["run", "crm_to_billing"]) == 2
    assert "INTERLINK_BILLING__URL is not set" in capsys.readouterr().err
    assert not list(home.rglob("*.db"))


@pytest.mark.parametrize("argv", [["run", "--chunk-size", "0"], ["run", "--chunk-size", "-5"], ["run", "--partitions", "0"]])
def test_counts_below_one_are_refused(home: Path, argv, capsys):
    assert main(argv) == 2
    assert f"Invalid value for '{argv[1]}': Input should be greater than or equal to 1" in capsys.readouterr().err


def test_connectors_shows_what_the_declared_integrations_use_and_its_health(home: Path, systems, monkeypatch, capsys):
    monkeypatch.setenv("INTERLINK_BILLING__URL", f"sqlite:///{home / 'billing.db'}")
    with systems():
        assert main(["connectors", "--json"]) == 1  # the storefront, rates, ERP and drop folder are not configured
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    # not `order_events`: no declared integration (deployments.yaml) uses it
    assert set(rows) == {"crm", "finance", "billing", "storefront", "rates", "erp", "erp_stock"}
    assert all(rows[n]["healthy"] and rows[n]["latency_ms"] is not None for n in ("crm", "finance", "billing"))
    assert rows["storefront"]["reason"].startswith("INTERLINK_STOREFRONT__BASE_URL is not set")
    assert rows["storefront"]["used_by"] == ["orders_to_erp", "inventory_to_storefront"]  # in the declaration's order
    assert rows["storefront"]["owners"] == ["Fulfilment", "Storefront"] and rows["crm"]["owners"] == ["Billing"]
    with systems():
        assert main(["connectors", "--wide"]) == 1
    assert "crm_to_billing (Billing)" in capsys.readouterr().out


def test_reconcile_command_reports_and_repairs(home: Path, systems, monkeypatch, capsys):
    monkeypatch.setenv("INTERLINK_BILLING__URL", f"sqlite:///{home / 'billing.db'}")
    with systems():
        assert main(["run", "crm_to_billing"]) == 0
        assert main(["reconcile", "crm_to_billing"]) == 0
        engine = sa.create_engine(f"sqlite:///{home / 'billing.db'}")
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM customers WHERE crm_id = (SELECT min(crm_id) FROM customers)"))
        engine.dispose()
        capsys.readouterr()
        assert main(["reconcile", "crm_to_billing"]) == 1
        out = capsys.readouterr().out
        assert "missing 1, extra 0, changed 0, repaired 0" in out and "still differing 1" in out
        assert "\n  missing: " in out and "\n  still differing: " in out  # each list under the name the line gives it
        assert main(["reconcile", "crm_to_billing", "--repair"]) == 0
        assert main(["reconcile", "crm_to_billing"]) == 0
    assert main(["reconcile", "inventory_to_storefront"]) == 2


def test_report_writes_the_quality_page(home: Path, capsys):
    assert main(["report"]) == 0
    page = Path(capsys.readouterr().out.split("quality report: ")[1].strip())
    assert page == home / "reports" / "quality.html" and "No runs recorded yet." in page.read_text()


def test_serve_checks_every_deployed_connection_first(home: Path, capsys):
    assert main(["serve", "--wait-s", "0"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "is not set" in err and err.startswith("interlink: INTERLINK_")
