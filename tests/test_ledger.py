"""The ledger tells the truth: counts and watermark per committed batch, and runs whose process died marked
CRASHED (in the ledger and in Prefect, which frees their concurrency slot) with an alert."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime

import psutil
import pytest
import sqlalchemy as sa
from interlink.connectors.sql import utcnow
from interlink.demo_systems.server import serve
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Completed, Pending, Running
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from interlink.cli import main
from interlink.ledger import Counts, Entry, Ledger
from interlink.state import RUNS, state_engine


@pytest.fixture
def state_url(home) -> str:
    return f"sqlite:///{home / 'interlink.db'}"


def start(ledger: Ledger, integration: str = "crm_to_billing", **options):
    settings = {"kind": "sync", "flow_run_id": None, "target": "sqlite:///billing.db", "watermark": "w0"} | options
    return ledger.record(integration, **settings)


def dead_process() -> tuple[int, datetime]:
    """The pid and start time of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    started = datetime.fromtimestamp(psutil.Process(child.pid).create_time(), UTC).replace(tzinfo=None)
    child.communicate(b"")
    return child.pid, started


def running_row(state_url: str, integration: str = "crm_to_billing", **values) -> int:
    """A RUNNING ledger row as a run of another process left it."""
    row = dict(
        integration=integration, kind="sync", state="RUNNING", started_at=utcnow(), target="sqlite:///billing.db",
        rows_read=300, rows_inserted=250, rows_updated=0, rows_unchanged=0, rows_quarantined=50, watermark_before="w0",
        watermark="w3", host=socket.gethostname(),
    ) | values
    with state_engine(state_url).begin() as conn:
        return conn.execute(RUNS.insert().values(**row)).inserted_primary_key[0]


def by_id(ledger: Ledger) -> dict[int, dict]:
    return {run["id"]: run for run in ledger.runs(limit=100)}


def test_a_checkpoint_writes_what_the_run_has_committed_so_far_and_the_run_stays_running(state_url):
    ledger = Ledger(state_url)
    with start(ledger) as entry:
        entry.counts += Counts(rows_read=100, rows_inserted=80, rows_quarantined=15, rows_superseded=5)
        entry.watermark = "w1"
        entry.notes.append("schema evolved from contract 1: new field vip")
        entry.circuits = "crm opened 1x, now closed"
        entry.checkpoint()
        [run] = ledger.runs()
        assert (run["state"], run["finished_at"], run["watermark_before"], run["watermark"]) == ("RUNNING", None, "w0", "w1")
        assert (run["rows_read"], run["rows_inserted"], run["rows_quarantined"], run["rows_superseded"]) == (100, 80, 15, 5)
        assert (run["notes"], run["circuits"]) == ("schema evolved from contract 1: new field vip", "crm opened 1x, now closed")
        entry.counts += Counts(rows_read=100, rows_updated=100)
        entry.watermark = "w2"
        entry.checkpoint()
        [run] = ledger.runs()
        assert (run["state"], run["rows_read"], run["rows_updated"], run["watermark"]) == ("RUNNING", 200, 100, "w2")
    [run] = ledger.runs()
    assert (run["state"], run["rows_read"], run["watermark"]) == ("QUARANTINED", 200, "w2")


def test_an_entry_no_ledger_row_backs_has_nothing_to_checkpoint():
    entry = Entry(counts=Counts(rows_read=3))
    entry.checkpoint()
    assert entry.counts + Counts(rows_read=1, rows_superseded=2) == Counts(rows_read=4, rows_superseded=2)


def test_a_run_records_the_process_running_it(state_url):
    ledger = Ledger(state_url)
    with start(ledger):
        [run] = ledger.runs()
    me = psutil.Process()
    assert (run["host"], run["pid"]) == (socket.gethostname(), os.getpid())
    assert abs(run["process_started_at"] - datetime.fromtimestamp(me.create_time(), UTC).replace(tzinfo=None)).total_seconds() < 1


def test_the_next_run_of_any_integration_marks_runs_whose_process_died_crashed(state_url):
    pid, started = dead_process()
    dead = running_row(state_url, pid=pid, process_started_at=started)
    reused = running_row(state_url, pid=os.getpid(), process_started_at=datetime(2001, 1, 1))  # the pid is another process's now
    alive = running_row(state_url, pid=os.getpid(), process_started_at=datetime.fromtimestamp(psutil.Process().create_time(), UTC).replace(tzinfo=None))
    elsewhere = running_row(state_url, host="another-host", pid=pid, process_started_at=started)
    legacy = running_row(state_url)  # ledgered before the ledger knew the process: nothing to judge it by
    ledger = Ledger(state_url)
    with start(ledger, "orders_to_erp"):
        pass

    runs = by_id(ledger)
    assert runs[dead]["state"] == runs[reused]["state"] == "CRASHED"
    assert f"pid {pid} on {socket.gethostname()}" in runs[dead]["error"] and "ended without finishing" in runs[dead]["error"]
    assert runs[dead]["finished_at"] is not None
    # a crashed run keeps the counts and watermark of its committed batches
    assert (runs[dead]["rows_read"], runs[dead]["rows_inserted"], runs[dead]["watermark"]) == (300, 250, "w3")
    assert runs[alive]["state"] == runs[elsewhere]["state"] == runs[legacy]["state"] == "RUNNING"


def test_interlink_runs_marks_runs_whose_process_died_crashed(state_url, capsys):
    pid, started = dead_process()
    dead = running_row(state_url, pid=pid, process_started_at=started)
    assert main(["runs", "--json"]) == 0
    [run] = json.loads(capsys.readouterr().out)
    assert (run["id"], run["state"]) == (dead, "CRASHED")
    assert main(["runs"]) == 0
    assert "CRASHED" in capsys.readouterr().out


def alert_sink() -> tuple[Starlette, list[dict]]:
    received: list[dict] = []

    async def collect(request: Request) -> JSONResponse:
        received.append(await request.json())
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/alerts", collect, methods=["POST"])]), received


def test_a_crashed_run_is_crashed_in_prefect_its_slot_freed_and_alerted(state_url, monkeypatch):
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("crm_to_billing")
        deployment_id = client.create_deployment(flow_id, "nightly-crash-test", concurrency_limit=1)
        killed = client.create_flow_run_from_deployment(deployment_id)
        assert client.set_flow_run_state(killed.id, Pending()).status.value == "ACCEPT"  # takes the deployment's one slot
        client.set_flow_run_state(killed.id, Running())
        waiting = client.create_flow_run_from_deployment(deployment_id)
        assert client.set_flow_run_state(waiting.id, Pending()).status.value != "ACCEPT"  # the dead run still holds it
        finished = client.create_flow_run(flow(name="crm_to_billing")(lambda: None), state=Running())
        client.set_flow_run_state(finished.id, Completed())
    pid, started = dead_process()
    crashed = running_row(state_url, flow_run_id=str(killed.id), pid=pid, process_started_at=started)
    late = running_row(state_url, flow_run_id=str(finished.id), pid=pid, process_started_at=started)
    app, received = alert_sink()
    with serve(app) as url:
        monkeypatch.setenv("INTERLINK_ALERT_URL", f"{url}/alerts")
        reaped = Ledger(state_url).reap()

    assert sorted(run["id"] for run in reaped) == [crashed, late]
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(killed.id).state
        assert state.is_crashed() and "ended without finishing" in state.message
        assert client.read_flow_run(finished.id).state.is_completed()  # a final state is left as it is
        assert client.set_flow_run_state(waiting.id, Pending()).status.value == "ACCEPT"  # the slot is free
    [alert] = [a for a in received if a["flow_run_id"] == str(killed.id)]
    assert (alert["integration"], alert["state"]) == ("crm_to_billing", "CRASHED")
    assert "ended without finishing" in alert["message"]
    assert alert["counts"]["rows_inserted"] == 250 and alert["counts"]["rows_quarantined"] == 50


def test_a_prefect_api_out_of_reach_does_not_stop_the_run_that_reaps(state_url, caplog):
    pid, started = dead_process()
    crashed = running_row(state_url, flow_run_id="8c7a3a1e-6a0e-4a43-9a0b-6f9f0d2b7c11", pid=pid, process_started_at=started)
    ledger = Ledger(state_url)
    with caplog.at_level(logging.WARNING, logger="interlink.ledger"), temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        with start(ledger, "invoices_to_billing"):
            pass
    runs = by_id(ledger)
    assert runs[crashed]["state"] == "CRASHED"
    assert [r["state"] for r in runs.values() if r["integration"] == "invoices_to_billing"] == ["COMPLETED"]
    assert any("could not read Prefect flow run 8c7a3a1e" in m and "ConnectError" in m for m in caplog.messages)


def test_two_reapers_mark_a_run_crashed_once(state_url):
    pid, started = dead_process()
    running_row(state_url, pid=pid, process_started_at=started)
    first, second = Ledger(state_url), Ledger(state_url)
    assert len(first.reap()) == 1
    assert second.reap() == []


def test_runs_lists_crashed_runs_with_the_rest(state_url):
    ledger = Ledger(state_url)
    with start(ledger):
        pass
    pid, started = dead_process()
    running_row(state_url, pid=pid, process_started_at=started)
    assert [run["state"] for run in ledger.runs()] == ["CRASHED", "COMPLETED"]
    with state_engine(state_url).connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).where(RUNS.c.state == "RUNNING")) == 0


def test_a_run_killed_after_its_ledger_row_ended_and_before_prefect_did_is_crashed_in_both(state_url, monkeypatch):
    with get_client(sync_client=True) as client:
        killed, recorded, alive = (client.create_flow_run(flow(name="crm_to_billing")(lambda: None), state=Running()) for _ in range(3))
        client.set_flow_run_state(recorded.id, Completed())
    pid, started = dead_process()
    me = datetime.fromtimestamp(psutil.Process().create_time(), UTC).replace(tzinfo=None)
    ended = dict(state="COMPLETED", finished_at=utcnow())
    crashed = running_row(state_url, flow_run_id=str(killed.id), pid=pid, process_started_at=started, **ended)
    done = running_row(state_url, flow_run_id=str(recorded.id), pid=pid, process_started_at=started, **ended)
    finishing = running_row(state_url, flow_run_id=str(alive.id), pid=os.getpid(), process_started_at=me, **ended)  # telling Prefect now
    app, received = alert_sink()
    with serve(app) as url:
        monkeypatch.setenv("INTERLINK_ALERT_URL", f"{url}/alerts")
        ledger = Ledger(state_url)
        assert [run["id"] for run in ledger.reap()] == [crashed]
        assert ledger.reap() == []  # found once

    runs = by_id(ledger)
    assert runs[crashed]["state"] == "CRASHED" and "after the ledger recorded it COMPLETED and before Prefect did" in runs[crashed]["error"]
    assert (runs[crashed]["rows_inserted"], runs[crashed]["watermark"]) == (250, "w3")  # what it committed
    assert runs[done]["state"] == runs[finishing]["state"] == "COMPLETED"
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(killed.id).state
        assert state.is_crashed() and "before Prefect did" in state.message
        assert client.read_flow_run(recorded.id).state.is_completed()
        assert client.read_flow_run(alive.id).state.is_running()
    [alert] = received
    assert (alert["flow_run_id"], alert["state"]) == (str(killed.id), "CRASHED")


def test_a_run_has_its_ledger_row_before_it_reaps(state_url, monkeypatch):
    """Reaping makes API calls: a run killed meanwhile must already have its row."""
    seen = []
    reap = Ledger.reap

    def reap_and_look(ledger: Ledger) -> list[dict]:
        with state_engine(state_url).connect() as conn:
            seen.append(conn.execute(sa.select(RUNS.c.integration, RUNS.c.state)).all())
        return reap(ledger)

    monkeypatch.setattr(Ledger, "reap", reap_and_look)
    with start(Ledger(state_url), "orders_to_erp"):
        pass
    assert seen == [[("orders_to_erp", "RUNNING")]]
