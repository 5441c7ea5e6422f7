"""`interlink status` on a real state database, and the read-only commands' imports and table width."""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from interlink.connectors.sql import utcnow
from interlink.deployments.declaration import read

from interlink import integration_facts
from interlink.cli import main
from interlink.deadletter import DeadLetters, Reject
from interlink.settings import Settings
from interlink.state import RUNS, state_engine
from interlink.status import status
from interlink.tables import WIDTH

ROOT = Path(__file__).resolve().parents[1]
DECLARATION = """
timezone: {timezone}
integrations:
  fresh_one:
    owner: {{team: Billing, contact: "#billing-oncall"}}
    sla: {{fresh_within: 26h}}
  stale_one:
    owner: {{team: Storefront, contact: "#storefront-oncall"}}
    sla: {{fresh_within: 2h}}
  nightly:
    owner: {{team: Finance, contact: "#finance"}}
    sla: {{done_by: "06:00"}}
deployments:
  - {{integration: fresh_one, cron: "0 2 * * *"}}
  - {{integration: stale_one, cron: "0 * * * *"}}
  - {{integration: nightly, cron: "0 2 * * *"}}
"""


@pytest.fixture
def declared(home: Path, tmp_path: Path, monkeypatch) -> Path:
    path = tmp_path / "deployments.yaml"
    path.write_text(DECLARATION.format(timezone="Europe/Berlin"))
    monkeypatch.setenv("INTERLINK_DEPLOYMENTS_FILE", str(path))
    return path


def ledger_row(integration: str, state: str, finished: datetime, kind: str = "sync") -> None:
    """A run as the ledger keeps it (naive UTC), by a process long gone (no pid: never reaped)."""
    with state_engine(Settings.load().state_db).begin() as conn:
        conn.execute(RUNS.insert().values(integration=integration, kind=kind, state=state, started_at=finished - timedelta(minutes=5),
                                          finished_at=finished, target="test", attempts=1))


def test_a_met_and_a_breached_sla_exit_1_with_how_late(declared, capsys):
    now = utcnow()
    ledger_row("fresh_one", "QUARANTINED", now - timedelta(hours=1))  # quarantined counts as a success
    ledger_row("stale_one", "COMPLETED", now - timedelta(hours=5, minutes=12, seconds=30))
    ledger_row("stale_one", "FAILED", now - timedelta(minutes=10))  # the last run failed: not a success
    DeadLetters(Settings.load().state_db).put("stale_one", [Reject("k1", "check", "bad", {}, [])], None)
    capsys.readouterr()
    assert main(["status", "--json"]) == 1
    entries = {e["integration"]: e for e in json.loads(capsys.readouterr().out)}
    fresh, stale = entries["fresh_one"], entries["stale_one"]
    assert fresh["freshness"] == "OK" and not fresh["in_breach"] and fresh["owner"] == "Billing" and fresh["dead_letters"] == 0
    assert stale["freshness"] == "LATE by 3h12m" and stale["in_breach"] and stale["last_run_state"] == "FAILED"
    assert stale["breaches"] == ["LATE by 3h12m: no successful sync within 2h"] and stale["dead_letters"] == 1
    assert stale["timezone"] == "Europe/Berlin" and datetime.fromisoformat(stale["next_run"]) > datetime.now(UTC)
    assert datetime.fromisoformat(stale["next_run"]) - datetime.now(UTC) <= timedelta(hours=1)  # hourly
    assert main(["status"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["integration", "owner"] and all(len(line) <= WIDTH for line in lines)
    assert any("stale_one" in line and "LATE by 3h12m" in line for line in lines)


def test_every_sla_met_exits_0(declared, capsys):
    declared.write_text(
        "timezone: UTC\nintegrations:\n"
        "  fresh_one: {owner: {team: Billing, contact: '#billing'}, sla: {fresh_within: 26h}}\n"
        "  nightly: {owner: {team: Finance, contact: '#finance'}}\n"
        "deployments:\n  - {integration: fresh_one, cron: '0 2 * * *'}\n  - {integration: nightly, cron: '0 2 * * *'}\n"
    )
    ledger_row("fresh_one", "COMPLETED", utcnow() - timedelta(hours=25))
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    entries = {e["integration"]: e for e in json.loads(capsys.readouterr().out)}
    assert entries["fresh_one"]["freshness"] == "OK" and entries["nightly"]["freshness"] == "OK" and entries["nightly"]["sla"] is None


@pytest.mark.parametrize(("finished", "freshness"), [
    ("05:10", "OK"),  # done before 06:00 Berlin
    ("06:45", "LATE by 45m"),  # done, after the deadline
    (None, "LATE by 1h30m"),  # not done at 07:30
    ("01:30", "LATE by 1h30m"),  # a success before today's 02:00 run is not today's
])
def test_done_by_is_todays_scheduled_sync_by_the_deadline_in_the_declarations_timezone(declared, finished, freshness):
    now = datetime(2026, 12, 7, 7, 30, tzinfo=ZoneInfo("Europe/Berlin"))  # 06:30 UTC
    ledger_row("nightly", "COMPLETED", _naive_utc(now - timedelta(days=1, hours=3)))  # live since yesterday's sync
    if finished:
        hour, minute = map(int, finished.split(":"))
        ledger_row("nightly", "COMPLETED", now.replace(hour=hour, minute=minute).astimezone(UTC).replace(tzinfo=None))
    entry = next(e for e in status(read(), Settings.load().state_db, now) if e["integration"] == "nightly")
    assert entry["freshness"] == freshness
    assert entry["next_run"] == now.replace(day=8, hour=2, minute=0)


def test_dead_letters_are_masked_by_the_fields_their_integration_recorded_or_else_by_its_module(home, capsys):
    url = Settings.load().state_db
    letters = DeadLetters(url)
    letters.put("recorded_one", [Reject("alice@example.com", "check", "bad email alice@example.com", {"email": "alice@example.com"},
                                        [{"Email": "alice@example.com"}])], None)
    letters.put("crm_to_billing", [Reject("c1", "check", "bad", {"email": "bob@example.com", "id": 1}, [])], None)  # no facts recorded
    integration_facts.record(url, "recorded_one", ["crm"], ["email"])
    capsys.readouterr()
    assert main(["dlq", "list", "--json"]) == 0
    out = capsys.readouterr().out
    assert "alice@example.com" not in out and "bob@example.com" not in out
    shown = {e["integration"]: e for e in json.loads(out)}
    assert shown["recorded_one"]["payload"] == [{"Email": "a***@example.com"}]
    assert shown["crm_to_billing"]["values"] == {"email": "b***@example.com", "id": 1}


def test_dlq_list_limit_shows_the_newest_oldest_first(home, capsys):
    letters = DeadLetters(Settings.load().state_db)
    for key in ("k1", "k2", "k3"):
        letters.put("alpha", [Reject(key, "check", "bad", {"id": key}, [])], None)
    capsys.readouterr()
    assert main(["dlq", "list", "--json", "--limit", "2"]) == 0
    assert [e["record_key"] for e in json.loads(capsys.readouterr().out)] == ["k2", "k3"]


READ_ONLY = [["runs"], ["dlq", "list"], ["connectors"], ["status"]]
HEAVY = ("prefect", "great_expectations", "pandas", "interlink.flows.pipeline", "interlink.flows.crm_to_billing", "interlink.flows.orders_to_erp")


@pytest.mark.parametrize("argv", READ_ONLY, ids=" ".join)
def test_read_only_commands_import_neither_prefect_nor_gx_nor_integrations(home, argv):
    url = Settings.load().state_db
    for name in read().integrations:  # as each one's latest run recorded them
        integration_facts.record(url, name, ["crm", "billing"], ["email"])
    DeadLetters(url).put("crm_to_billing", [Reject("c1", "check", "bad", {"email": "bob@example.com"}, [])], None)
    ledger_row("crm_to_billing", "COMPLETED", utcnow())
    code = (
        "import json, sys\nfrom interlink.cli import main\ncode = main(sys.argv[1:])\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {('prefect', 'great_expectations', 'pandas')!r} "
        f"or m in {HEAVY!r})), file=sys.stderr)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_URL", "PREFECT_UI_URL"))}
    done = subprocess.run([sys.executable, "-c", code, *argv, "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1), done.stderr  # `connectors`: the connections are not set here
    assert json.loads(done.stderr.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("argv", [["runs"], ["dlq", "list"], ["connectors"]], ids=" ".join)
def test_tables_fit_100_columns_unless_wide(home, capsys, argv):
    url = Settings.load().state_db
    ledger_row("crm_to_billing", "FAILED", utcnow())
    with state_engine(url).begin() as conn:
        conn.execute(RUNS.update().values(error="ConnectorError: " + "a long explanation of what went wrong " * 8))
    DeadLetters(url).put("crm_to_billing", [Reject("c1", "check", "why " * 60, {"id": 1}, [])], None)
    capsys.readouterr()
    main(argv)
    narrow = capsys.readouterr().out.splitlines()
    assert narrow and all(len(line) <= WIDTH for line in narrow)
    main([*argv, "--wide"])
    wide = capsys.readouterr().out.splitlines()
    assert len(wide[0].split()) > len(narrow[0].split())  # more columns


def test_done_by_holds_no_slot_before_the_integration_went_live(declared):
    """Its first sync ran today at 07:00, after the 02:00 slot and the 06:00 deadline: that slot promised nothing."""
    now = datetime(2026, 12, 7, 7, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    ledger_row("nightly", "COMPLETED", _naive_utc(now - timedelta(minutes=25)))
    entry = next(e for e in status(read(), Settings.load().state_db, now) if e["integration"] == "nightly")
    assert entry["freshness"] == "OK" and not entry["in_breach"], entry


def test_ages_under_a_minute_are_seconds():
    from interlink.status import _span

    assert [_span(timedelta(seconds=s)) for s in (0, 17, 59, 60, 77, 11520)] == ["0s", "17s", "59s", "1m", "1m", "3h12m"]


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)
