"""One run, one row, one state (issue 28, item 10): a Prefect flow run with flow retries is one ledger row, its
attempts in it, with the state name Prefect shows, in the ledger, `interlink runs` and the quality report; and
the state database's migration to that shape."""

from __future__ import annotations

import json
import re
from datetime import datetime

import sqlalchemy as sa
from interlink.flows.orders_to_erp import PIPELINE as orders_to_erp
from interlink.flows.pipeline import sync_flow
from interlink.tasks.deliver import SqlTarget
from prefect.client.orchestration import get_client

from interlink import migrations
from interlink.cli import main
from interlink.ledger import Ledger
from interlink.quality_report import build_report
from interlink.settings import Settings
from tests.test_state_migrations import schema_diff, state_url  # noqa: F401 (state_url is a fixture)


def test_a_flow_run_with_two_flow_retries_is_one_ledger_row_with_prefects_state_name(storefront, home, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("INTERLINK_ERP__URL", f"sqlite:///{home / 'erp.db'}")
    attempts, deliver = [], SqlTarget.deliver

    def erp_down_twice(self, *args, **kwargs):  # the ERP refuses the first two attempts' delivery, then takes it
        attempts.append(1)
        if len(attempts) <= 2:
            raise ConnectionError(f"erp down (attempt {len(attempts)})")
        return deliver(self, *args, **kwargs)

    monkeypatch.setattr(SqlTarget, "deliver", erp_down_twice)
    with storefront():
        state = sync_flow(orders_to_erp).with_options(retries=2, retry_delay_seconds=0)(return_state=True)
    summary = state.result()
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(state.state_details.flow_run_id).run_count == 3  # Prefect's count of attempts
    assert state.name == "Quarantined"

    [run] = Ledger(Settings().state_db).runs("orders_to_erp")
    assert run["flow_run_id"] == str(state.state_details.flow_run_id)
    assert (run["state"], run["attempts"], run["error"]) == ("QUARANTINED", 3, None)
    assert run["state"] == state.name.upper()  # the UI's name
    assert [run[k] for k in ("rows_read", "rows_inserted", "rows_quarantined")] == [2000, 1879, 121]
    assert [run[k] for k in ("rows_read", "rows_inserted", "rows_quarantined")] == [summary[k] for k in ("rows_read", "rows_inserted", "rows_quarantined")]
    assert (run["watermark_before"], run["watermark"]) == (None, summary["watermark"])
    assert run["notes"].splitlines() == [
        "attempt 1 ended FAILED: ConnectionError: erp down (attempt 1)",
        "attempt 2 ended FAILED: ConnectionError: erp down (attempt 2)",
    ]

    capsys.readouterr()
    assert main(["runs", "--json"]) == 0
    [shown] = json.loads(capsys.readouterr().out)
    assert (shown["state"], shown["attempts"], shown["rows_quarantined"]) == ("QUARANTINED", 3, 121)

    text = re.sub(r"<[^>]+>", " ", build_report(Settings().state_db, tmp_path / "quality.html").read_text())
    section = text.split("orders_to_erp")[1]
    assert re.search(r"1 runs shown; the last, run \d+, is\s+QUARANTINED\s+\(started [\d :-]+ UTC, 3 attempts\): read 2,000, "
                     r"delivered 1,879, dead-lettered 121 rows \(6\.0% of its rows read\)", section), section[:600]


def test_a_retry_continues_the_row_an_earlier_attempt_left_and_local_runs_keep_a_row_each(home):
    ledger = Ledger(f"sqlite:///{home / 'interlink.db'}")
    home.mkdir(parents=True, exist_ok=True)
    run_id = "5f0c6a59-8e0e-4c43-9d1e-6a3a8f0a1b2c"
    try:
        with ledger.record("crm_to_billing", kind="sync", flow_run_id=run_id, target="t", watermark="w0") as entry:
            entry.counts.rows_read, entry.counts.rows_inserted, entry.watermark = 100, 100, "w1"
            entry.checkpoint()  # one batch committed, then the run fails
            raise RuntimeError("billing down")
    except RuntimeError:
        pass
    with ledger.record("crm_to_billing", kind="sync", flow_run_id=run_id, target="t", watermark="w1") as entry:
        assert (entry.attempt, entry.counts.rows_read, entry.since) == (2, 100, "w1")
        entry.counts.rows_read += 50
        entry.counts.rows_updated += 50
        entry.watermark = "w2"
    for _ in range(2):
        with ledger.record("crm_to_billing", kind="sync", flow_run_id=None, target="t", watermark="w2"):
            pass
    local_1, local_2, retried = ledger.runs("crm_to_billing")
    assert (retried["attempts"], retried["state"], retried["rows_read"], retried["rows_inserted"], retried["rows_updated"]) == (
        2, "COMPLETED", 150, 100, 50,
    )
    assert (retried["watermark_before"], retried["watermark"], retried["error"]) == ("w0", "w2", None)
    assert retried["notes"] == "attempt 1 ended FAILED: RuntimeError: billing down"
    assert (local_1["attempts"], local_2["attempts"], local_1["id"] != local_2["id"]) == (1, 1, True)
    assert Ledger(f"sqlite:///{home / 'interlink.db'}").volumes("crm_to_billing", 5) == [0, 0, 150]


def test_the_migration_adds_attempts_and_names_completed_runs_that_dead_lettered_quarantined(state_url):  # noqa: F811
    engine = sa.create_engine(state_url)
    migrations.upgrade(engine, "0006_run_process")
    row = dict(integration="crm_to_billing", kind="sync", started_at=datetime(2026, 11, 1), target="t", rows_read=10,
               rows_inserted=9, rows_updated=0, rows_unchanged=0, rows_superseded=0)
    runs = sa.table("runs", *(sa.column(c) for c in [*row, "state", "rows_quarantined", "flow_run_id"]))
    with engine.begin() as conn:
        for state, quarantined in [("COMPLETED", 1), ("COMPLETED", 0), ("FAILED", 1)]:
            conn.execute(runs.insert().values(**row, state=state, rows_quarantined=quarantined, flow_run_id="old"))
    migrations.upgrade(engine)
    states = "SELECT state, attempts FROM runs ORDER BY id"
    with engine.connect() as conn:
        assert [tuple(r) for r in conn.execute(sa.text(states))] == [("QUARANTINED", 1), ("COMPLETED", 1), ("FAILED", 1)]
    assert schema_diff(state_url) == []
    migrations.downgrade(engine, "0006_run_process")
    with engine.connect() as conn:
        assert [r[0] for r in conn.execute(sa.text("SELECT state FROM runs ORDER BY id"))] == ["COMPLETED", "COMPLETED", "FAILED"]
    engine.dispose()
