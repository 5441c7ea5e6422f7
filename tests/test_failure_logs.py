"""A failed run leads with its cause in one line: in the run's logs in Prefect (read back through its API) and on
the stderr of `interlink run`, with no traceback unless debugging."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

from interlink.demo_systems.app import create_app
from interlink.demo_systems.cli import DEMO_PROJECT
from interlink.demo_systems.server import serve
from interlink.flows.crm_to_billing import PIPELINE as crm_to_billing
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.sorting import LogSort

from interlink.failure_logs import OneLineCause
from tests.test_deployments import _deployment, prefect_api, wait_until  # noqa: F401 (prefect_api is a fixture)
from tests.test_flow_retries import DECLARATION, ROOT

from .conftest import API_KEY

CAUSE = "OperationalError: (sqlite3.OperationalError) no such column: customers.row_hash"
INTERLINK = str(Path(sys.executable).with_name("interlink"))


def wrong_billing(home: Path) -> str:
    """A billing database whose `customers` is not the table the integration writes: every delivery fails."""
    with closing(sqlite3.connect(home / "billing.db")) as conn, conn:
        conn.execute("CREATE TABLE customers (crm_id TEXT PRIMARY KEY, other TEXT NOT NULL)")
    return f"sqlite:///{home / 'billing.db'}"


def run_logs(run_id, timeout_s: float = 30) -> list:
    """The run's logs, oldest first, once its last one (`Finished in state`) has reached the API (polled, bounded)."""
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])), sort=LogSort.TIMESTAMP_ASC)
            if any(log.message.startswith("Finished in state Failed") and log.task_run_id is None for log in logs) or time.monotonic() > deadline:
                return logs
            time.sleep(0.2)


def test_a_failed_runs_first_error_log_is_its_one_line_cause(systems, home, monkeypatch):
    monkeypatch.setenv("INTERLINK_BILLING__URL", wrong_billing(home))
    with systems():
        state = crm_to_billing.sync(return_state=True)
    assert state.is_failed()
    logs = run_logs(state.state_details.flow_run_id)
    errors = [log.message for log in logs if log.level >= logging.ERROR]
    assert errors and "\n" not in errors[0] and CAUSE in errors[0], errors[:1]
    assert all("\n" not in m and "Traceback" not in m for m in errors), errors  # each error one line
    assert sum(len(log.message.splitlines()) for log in logs) == len(logs)


def test_the_traceback_stays_with_a_debug_setting():
    try:
        raise ValueError("bad value\nsecond line")
    except ValueError as exc:
        error = exc
    record = logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1, "Encountered exception: %r", (error,),
                               (ValueError, error, error.__traceback__))
    debug = logging.LogRecord(*(getattr(record, a) for a in ("name", "levelno", "pathname", "lineno", "msg", "args", "exc_info")))
    assert OneLineCause().filter(record) and record.getMessage() == "Encountered exception: ValueError: bad value"
    assert record.exc_info is None
    prefect, level = logging.getLogger("prefect"), logging.getLogger("prefect").level
    prefect.setLevel(logging.DEBUG)  # what PREFECT_LOGGING_LEVEL=DEBUG sets
    try:
        assert OneLineCause().filter(debug) and debug.exc_info is not None  # the traceback is kept
    finally:
        prefect.setLevel(level)


def test_the_stderr_of_a_failed_interlink_run_shows_the_cause_in_one_line(crm_db: Path, home: Path, tmp_path: Path):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "INTERLINK_"))} | DEMO_PROJECT
    with serve(create_app(crm_db, api_key=API_KEY)) as crm:
        env = base | {
            "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "INTERLINK_HOME": str(home), "INTERLINK_BILLING__URL": wrong_billing(home),
            "INTERLINK_CRM__BASE_URL": crm, "INTERLINK_CRM__AUTH__KIND": "api_key", "INTERLINK_CRM__AUTH__KEY": API_KEY,
            "INTERLINK_FINANCE__BASE_URL": crm,
        }
        done = subprocess.run([INTERLINK, "run", "crm_to_billing"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if "| ERROR" in line]
    assert errors and CAUSE in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "Error logging to API" not in done.stderr, done.stderr[-3000:]
    assert not [line for line in done.stderr.splitlines() if line.startswith("  File ")]



def test_a_run_on_a_temporary_api_sends_its_last_logs_before_the_api_stops(home: Path, tmp_path: Path):
    """Its logs are drained while the temporary API still answers: no `--- Error logging to API ---` after it stopped
    (plain lines that broke JSON log output, and said nothing true: the run was fine)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "INTERLINK_"))} | DEMO_PROJECT | {
        "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "INTERLINK_HOME": str(home),
    }
    for _ in range(2):  # the second one quick, with nothing new: its last logs are still queued as the run ends
        done = subprocess.run([INTERLINK, "demo", "run", "invoices_to_billing"], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    assert "Stopping temporary server" in done.stderr  # it ran on a temporary API
    assert "Error logging to API" not in done.stderr and "All connection attempts failed" not in done.stderr, done.stderr[-1500:]

def test_a_failed_deployed_runs_first_error_log_is_its_one_line_cause(prefect_api, crm_db, home, tmp_path):  # noqa: F811
    """Under a deployment Prefect's engine logs the exception once more ("Engine execution exited with unexpected
    exception", with its traceback): one line too, after the cause."""
    declaration = tmp_path / "deployments.yaml"
    declaration.write_text(DECLARATION.replace("retries: 2", "retries: 0"))
    with serve(create_app(crm_db, api_key=API_KEY)) as crm:
        env = {
            **os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_RUNNER_POLL_FREQUENCY": "1", "INTERLINK_DEPLOYMENTS_FILE": str(declaration),
            "INTERLINK_BILLING__URL": wrong_billing(home), "INTERLINK_CRM__BASE_URL": crm, "INTERLINK_CRM__AUTH__KIND": "api_key",
            "INTERLINK_CRM__AUTH__KEY": API_KEY, "INTERLINK_FINANCE__BASE_URL": crm,
        }
        with (tmp_path / "serve.log").open("w") as log:
            runner = subprocess.Popen([INTERLINK, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            with SyncPrefectClient(api=prefect_api) as client:
                deployment = wait_until(lambda: _deployment(client, "crm_to_billing/crm_to_billing"), 60, "the deployment registered")
                run = client.create_flow_run_from_deployment(deployment.id)
                final = wait_until(lambda: (r := client.read_flow_run(run.id)).state.is_final() and r, 150, "the run ending")
                found = wait_until(lambda: [m for m in logs(client, run.id) if "Engine execution exited" in m.message] and logs(client, run.id),
                                   30, "the engine's log")  # logs reach the API in batches
        finally:
            runner.terminate()
            runner.wait(30)
    assert final.state.is_failed(), (tmp_path / "serve.log").read_text()[-3000:]
    errors = [m.message for m in found if m.level >= logging.ERROR]
    assert "\n" not in errors[0] and CAUSE in errors[0], errors[:1]
    assert all("\n" not in m and "Traceback" not in m for m in errors), errors
    assert [m for m in errors if m.startswith("Engine execution exited") and CAUSE in m], errors


def logs(client, run_id) -> list:
    return client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])), sort=LogSort.TIMESTAMP_ASC)


def test_a_cause_is_masked_before_it_is_cut():
    """A password straddling the cut would otherwise be left half shown."""
    from interlink.failure_logs import MAX_CAUSE, cause

    secret = "canary-cut-pw-5d1e"
    line = cause(ValueError("x" * (MAX_CAUSE - 30) + f" postgresql://billing:{secret}@db:5432/billing"))
    assert secret[:6] not in line and "postgresql://billing:***@" in line
