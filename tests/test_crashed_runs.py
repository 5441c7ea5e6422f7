"""Crashed runs the Prefect way, and a clean shutdown of `interlink serve`, on a real Prefect server.

A served run whose process dies with its runner (SIGKILL to the whole `interlink serve`) stops sending
heartbeats; the automation declared with the deployments sets it Crashed, which frees the deployment's
concurrency slot, and the next run starts at once. SIGTERM to `interlink serve` cancels its runs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from uuid import UUID

import pytest
from interlink.demo_systems.app import create_app
from interlink.demo_systems.server import serve
from interlink.deployments.automations import crash_zombies
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Pending

from interlink.alerts import AUTOMATIONS
from interlink.ledger import Counts, Ledger, success_state
from tests.test_alerts import sink
from tests.test_deployments import _deployment, prefect_server, wait_until

BIN = Path(sys.executable).parent
ROOT = Path(__file__).parents[1]
CRASH_AFTER_S = 40  # heartbeats come every 30 s (Prefect's shortest), so a live run is never taken for dead

DECLARATION = f"""\
timezone: Europe/Berlin
crash_after_s: {CRASH_AFTER_S}
integrations:
  crm_to_billing:
    owner: {{team: Billing, contact: "#billing-oncall"}}
deployments:
  - integration: crm_to_billing
    flow: sync
    cron: "0 2 * * *"
"""


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory) -> Iterator[str]:
    with prefect_server(tmp_path_factory.mktemp("prefect"), "sqlite") as (url, _):
        yield url


@contextmanager
def silent_crm() -> Iterator[str]:
    """A CRM that accepts connections and never answers, so a run waits on it until it is stopped."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def environment(prefect_api: str, crm_url: str, home: Path, tmp_path: Path) -> dict[str, str]:
    declaration = tmp_path / "deployments.yaml"
    declaration.write_text(DECLARATION)
    return {
        **os.environ,  # INTERLINK_HOME from `home`
        "PREFECT_API_URL": prefect_api,
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "INTERLINK_DEPLOYMENTS_FILE": str(declaration),
        "INTERLINK_CRM__BASE_URL": crm_url,
        "INTERLINK_CRM__AUTH__KIND": "api_key",
        "INTERLINK_CRM__AUTH__KEY": "k-crash",
        "INTERLINK_CRM__TIMEOUT_S": "600",
        "INTERLINK_FINANCE__BASE_URL": crm_url,
        "INTERLINK_BILLING__URL": f"sqlite:///{home / 'billing.db'}",
    }


def interlink_serve(env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("a") as out:  # a session of its own, so the test can kill the runner with its runs
        return subprocess.Popen([BIN / "interlink", "serve"], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)


def running_run(client: SyncPrefectClient):
    """A run of the crm_to_billing deployment, triggered and seen Running."""
    deployment = wait_until(lambda: _deployment(client, "crm_to_billing/crm_to_billing"), 90, "the deployment registered")
    flow_run = client.create_flow_run_from_deployment(deployment.id)
    wait_until(lambda: client.read_flow_run(flow_run.id).state.is_running(), 90, "the run running")
    return deployment, flow_run


def heartbeats(client: SyncPrefectClient, flow_run_id) -> list:
    found = EventFilter(event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
                        resource=EventResourceFilter(id=[f"prefect.flow-run.{flow_run_id}"]))
    return client.read_events(found, limit=1).events  # the default, 100, is over the server's maximum, 50


def ledger_rows(home: Path, flow_run_id) -> list[dict]:
    return [r for r in Ledger(f"sqlite:///{home / 'interlink.db'}").runs("crm_to_billing") if r["flow_run_id"] == str(flow_run_id)]


def test_a_run_killed_with_its_runner_is_crashed_alerted_and_the_next_run_starts_at_once(prefect_api, crm_db, home, tmp_path):
    log = tmp_path / "serve.log"
    app, received = sink()
    with silent_crm() as crm_url, SyncPrefectClient(api=prefect_api) as client, serve(app) as sink_url:
        env = environment(prefect_api, crm_url, home, tmp_path) | {"INTERLINK_ALERT_URL": f"{sink_url}/alerts"}
        runner = interlink_serve(env, log)  # it applies the automations, the alerts' too
        try:
            deployment, killed = running_run(client)
            # The automation watches runs that sent a heartbeat (one that dies before its first reaches the server is
            # left to the ledger's reaper, the next run on its machine).
            wait_until(lambda: heartbeats(client, killed.id), 60, "the run's first heartbeat at the server")
            wait_until(lambda: ledger_rows(home, killed.id), 30, "the run's ledger row")
        finally:
            os.killpg(runner.pid, signal.SIGKILL)  # the runner and the run's process, with no chance to say anything
            runner.wait(30)
        crashed = wait_until(lambda: (r := client.read_flow_run(killed.id)).state.is_crashed() and r, CRASH_AFTER_S + 60,
                             "the server crashing the run whose heartbeats stopped")
        [alert] = wait_until(lambda: [p for p in received if p["flow_run_id"] == str(killed.id)], 30, "the crash alert")
    assert "no heartbeat for 40s" in crashed.state.message, crashed.state.message
    assert (alert["state"], alert["integration"], alert["message"]) == ("CRASHED", "crm_to_billing", crashed.state.message)

    with serve(create_app(crm_db, api_key="k-crash")) as crm_url, SyncPrefectClient(api=prefect_api) as client:
        runner = interlink_serve(environment(prefect_api, crm_url, home, tmp_path), log)
        try:
            wait_until(lambda: _deployment(client, "crm_to_billing/crm_to_billing"), 90, "the deployment registered again")
            next_run = client.create_flow_run_from_deployment(deployment.id)
            final = wait_until(lambda: (r := client.read_flow_run(next_run.id)).state.is_final() and r, 120, "the next run finishing")
            states = [s.name for s in client.read_flow_run_states(next_run.id)]
        finally:
            runner.terminate()
            runner.wait(60)
    assert final.state.is_completed(), (final.state, log.read_text()[-3000:])
    assert "AwaitingConcurrencySlot" not in states, states  # the crashed run's slot was released
    [dead] = ledger_rows(home, killed.id)  # the next run's ledger reaps the row of the run that died
    assert dead["state"] == "CRASHED" and "ended without finishing" in dead["error"], dead
    [done] = ledger_rows(home, next_run.id)
    assert done["state"] in ("COMPLETED", "QUARANTINED") and done["rows_inserted"] > 4000


def test_a_run_whose_process_is_killed_under_interlink_serve_is_crashed_by_the_runner_and_its_hook_alerts(prefect_api, home, tmp_path):
    """kill -9 of a served run's process while its runner lives: the runner sets the run Crashed and calls the flow's
    crash hook with keyword arguments (`flow=`, `flow_run=`, `state=`). The server's CRASHED alert automation is
    removed first, so the alert can only come from the hook."""
    log = tmp_path / "serve.log"
    app, received = sink()
    with silent_crm() as crm_url, SyncPrefectClient(api=prefect_api) as client, serve(app) as sink_url:
        env = environment(prefect_api, crm_url, home, tmp_path) | {"INTERLINK_ALERT_URL": f"{sink_url}/alerts"}
        runner = interlink_serve(env, log)  # it applies the automations before it runs anything
        try:
            _, killed = running_run(client)
            [automation] = client.read_automations_by_name(AUTOMATIONS["CRASHED"])
            client.delete_automation(automation.id)
            [row] = wait_until(lambda: ledger_rows(home, killed.id), 30, "the run's ledger row")
            os.kill(row["pid"], signal.SIGKILL)  # the run's process only
            crashed = wait_until(lambda: (r := client.read_flow_run(killed.id)).state.is_crashed() and r, 60, "the runner crashing the run")
            [alert] = wait_until(lambda: [p for p in received if p["flow_run_id"] == str(killed.id)], 30, "the crash hook's alert")
            ended = ("Hook 'crashed' finished running successfully", "An error was encountered while running hook 'crashed'")
            wait_until(lambda: any(m.startswith(ended) for m in run_logs(client, killed.id)), 30, "the crash hook's end in the run's log")
            logs = run_logs(client, killed.id)
        finally:
            runner.terminate()
            runner.wait(60)
    assert "exited with status code: -9" in crashed.state.message, crashed.state.message  # the runner saw it die
    assert (alert["state"], alert["integration"], alert["message"]) == ("CRASHED", "crm_to_billing", crashed.state.message)
    assert ended[0] in logs and not [m for m in logs if "TypeError" in m or ended[1] in m], logs
    assert "TypeError" not in log.read_text(), log.read_text()[-3000:]


# `interlink run crm_to_billing`, held (its main thread blocked; its heartbeats go on) at one moment of its ledger row:
# before the row exists ("before-row"), or once the row has ended, before Prefect is told ("after-end"). The flow run's
# id in the file named by argv[1] says it is there.
HELD_RUN = """
import sys, threading
from pathlib import Path
from prefect.runtime import flow_run
from interlink.cli import main
from interlink.ledger import RUNNING, Ledger

marker, moment = Path(sys.argv[1]), sys.argv[2]
record, write = Ledger.record, Ledger._write

def hold():
    marker.write_text(flow_run.id)
    threading.Event().wait()  # until killed

def held_record(self, *args, **kwargs):
    hold()

def held_write(self, run_id, entry, state=RUNNING, error=None):
    write(self, run_id, entry, state, error)
    if state != RUNNING:
        hold()

setattr(Ledger, *{"before-row": ("record", held_record), "after-end": ("_write", held_write)}[moment])
sys.exit(main(["run", "crm_to_billing"]))
"""


def killed_when_held(env: dict[str, str], moment: str, tmp_path: Path, ready=lambda flow_run_id: True) -> str:
    """The flow run of `interlink run crm_to_billing` killed (SIGKILL) while held at `moment`, once `ready` says so."""
    marker, log = tmp_path / f"{moment}.id", tmp_path / f"{moment}.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-c", HELD_RUN, str(marker), moment], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        flow_run_id = wait_until(lambda: marker.exists() and marker.read_text(), 120, f"the run held {moment}")
        wait_until(lambda: ready(flow_run_id), 60, f"the run held {moment} ready to be killed")
    finally:
        process.kill()
        process.wait(30)
    assert process.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    return flow_run_id


def test_interlink_run_killed_before_its_ledger_row_or_after_its_end_ends_crashed(prefect_api, crm_db, home, tmp_path):
    """Killed before its ledger row exists: the server's automation crashes the run (its heartbeats stopped).
    Killed after its ledger row ended and before Prefect was told: the next look at the ledger crashes it, in both."""
    with serve(create_app(crm_db, api_key="k-crash")) as crm_url, SyncPrefectClient(api=prefect_api) as client:
        env = environment(prefect_api, crm_url, home, tmp_path)
        subprocess.run([sys.executable, "-m", "interlink.deployments.automations"], env=env, cwd=ROOT, check=True, capture_output=True)
        early = killed_when_held(env, "before-row", tmp_path, ready=lambda flow_run_id: heartbeats(client, flow_run_id))
        assert ledger_rows(home, early) == []  # (it asks the session's Prefect server: nothing to change)

        # while the server waits for the first one's heartbeat, the second moment
        late = killed_when_held(env, "after-end", tmp_path)
        assert client.read_flow_run(UUID(late)).state.is_running()
        [ended] = ledger_rows(home, late)  # still ended: the session's Prefect server knows nothing of the run
        assert ended["state"] in ("COMPLETED", "QUARANTINED") and ended["rows_inserted"] > 4000, ended
        with temporary_settings({PREFECT_API_URL: prefect_api}):
            [crashed] = ledger_rows(home, late)  # `interlink runs` and every run's start look the same way
        state = client.read_flow_run(UUID(late)).state
        assert state.is_crashed() and f"after the ledger recorded it {ended['state']} and before Prefect did" in state.message, state
        assert crashed["state"] == "CRASHED" and crashed["error"] == state.message
        assert crashed["rows_inserted"] == ended["rows_inserted"]

        early_run = wait_until(lambda: (r := client.read_flow_run(UUID(early))).state.is_crashed() and r, CRASH_AFTER_S + 60,
                               "the server crashing the run killed before its ledger row existed")
    assert f"no heartbeat for {CRASH_AFTER_S}s" in early_run.state.message, early_run.state.message


def test_the_crash_automations_take_a_quarantined_run_as_ended():
    """A state's event is named after its name: a run that dead-lettered rows ends Completed named Quarantined."""
    assert success_state(Counts(rows_quarantined=1)).title() == "Quarantined"
    for automation in crash_zombies(CRASH_AFTER_S, 10):
        assert "prefect.flow-run.Quarantined" in automation.trigger.expect, automation.name


def run_logs(client: SyncPrefectClient, flow_run_id) -> list[str]:
    return [entry.message for entry in client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))]


def test_sigterm_to_interlink_serve_cancels_its_run_and_frees_the_slot(prefect_api, home, tmp_path):
    log = tmp_path / "serve.log"
    with silent_crm() as crm_url, SyncPrefectClient(api=prefect_api) as client:
        runner = interlink_serve(environment(prefect_api, crm_url, home, tmp_path), log)
        try:
            deployment, stopped = running_run(client)
            wait_until(lambda: ledger_rows(home, stopped.id), 30, "the run's ledger row")
            runner.send_signal(signal.SIGTERM)
            assert runner.wait(60) == 0, log.read_text()[-3000:]
        finally:
            if runner.poll() is None:
                os.killpg(runner.pid, signal.SIGKILL)
        final = client.read_flow_run(stopped.id)
        after = client.create_flow_run_from_deployment(deployment.id)
        accepted = client.set_flow_run_state(after.id, Pending()).status.value
    output = log.read_text()
    assert final.state.is_cancelled(), (final.state, output[-3000:])
    assert accepted == "ACCEPT", "the stopped run still holds the deployment's concurrency slot"
    assert "never awaited" not in output and "Traceback" not in output, output[-3000:]
    with temporary_settings({PREFECT_API_URL: prefect_api}):  # the ledger asks this server how the run ended
        [row] = ledger_rows(home, stopped.id)
    # CANCELLED by the run itself as it stops, or, if its process was gone first, by the next look at the ledger
    assert row["state"] == "CANCELLED", row
    assert "stopped by SIGTERM" in row["error"] or "cancelled in Prefect (Runner is shutting down.)" in row["error"], row
