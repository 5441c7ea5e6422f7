"""The crash drill: a real `interlink run crm_to_billing` subprocess killed with SIGKILL at several points,
then resumed by a new run, ends exactly where a clean run ends: 0 rows lost, 0 duplicated, every key with
the same values and row hash, the same open dead letters. No ledger row is left RUNNING: each killed run
is CRASHED (in the ledger and in Prefect), with the counts and watermark of the batches it committed.

The killed runs are found dead by the run after them (`Ledger.record` reaps at start), not by this test.
Synchronisation is by polling the target and the state database with a deadline, never by sleeping.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import pandas as pd
import sqlalchemy as sa
from interlink.demo_systems.cli import DEMO_PROJECT
from interlink.flows.crm_to_billing import PIPELINE as crm_to_billing
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL

from interlink.deadletter import DeadLetters
from interlink.ledger import Ledger
from tests.conftest import API_KEY

REPO = Path(__file__).resolve().parents[1]
CHUNK = 500  # rows per batch, one page of the demo CRM: its 5,100 records make 11 batches, room to kill between them
DEADLINE_S = 60
T = TypeVar("T")


class Drill:
    """Runs `interlink run crm_to_billing` in a subprocess with every connection set explicitly, and watches
    what it has committed: target rows and watermark in the billing database, its row in the ledger."""

    def __init__(self, home: Path, billing: str, crm: str, logs: Path):
        self.home, self.billing, self.logs = home, billing, logs
        self.state = f"sqlite:///{home / 'interlink.db'}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("INTERLINK_", "PREFECT_"))} | DEMO_PROJECT | {
            "INTERLINK_HOME": str(home),
            "INTERLINK_CRM__BASE_URL": crm,
            "INTERLINK_CRM__AUTH__KIND": "api_key",
            "INTERLINK_CRM__AUTH__KEY": API_KEY,
            "INTERLINK_FINANCE__BASE_URL": crm,
            "INTERLINK_BILLING__URL": billing,
            "PREFECT_API_URL": PREFECT_API_URL.value(),  # the test session's Prefect server
            "PREFECT_HOME": str(logs / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        self.runs = 0

    def start(self) -> subprocess.Popen:
        self.runs += 1
        log = open(self.logs / f"run-{self.runs}.log", "w")  # noqa: SIM115 - closed by the process's end
        return subprocess.Popen(
            [sys.executable, "-m", "interlink.cli", "run", "crm_to_billing", "--chunk-size", str(CHUNK)],
            cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )

    def log(self, run: int | None = None) -> str:
        return (self.logs / f"run-{run or self.runs}.log").read_text()[-3000:]

    def poll(self, process: subprocess.Popen, what: str, found: Callable[[], T | None]) -> T:
        """What `found` returns once it is not None; fails if the process ends first or the deadline passes."""
        deadline = time.monotonic() + DEADLINE_S
        while (value := found()) is None:
            assert process.poll() is None, f"run {self.runs} ended ({process.returncode}) before {what}:\n{self.log()}"
            assert time.monotonic() < deadline, f"no {what} within {DEADLINE_S}s:\n{self.log()}"
            time.sleep(0.02)
        return value

    def committed(self, wait_s: float = 5.0) -> tuple[int, str | None, str | None]:
        """Rows in the target, and the committed watermark with the flow run that committed it (waiting up to
        `wait_s` for a writer's lock)."""
        engine = sa.create_engine(self.billing, connect_args={"timeout": wait_s})
        try:
            with engine.connect() as conn:
                tables = sa.inspect(conn).get_table_names()
                rows = conn.scalar(sa.text("SELECT count(*) FROM customers")) if "customers" in tables else 0
                mark = None
                if "interlink_watermarks" in tables:
                    mark = conn.execute(sa.text("SELECT value, flow_run_id FROM interlink_watermarks WHERE integration = 'crm_to_billing'")).first()
        finally:
            engine.dispose()
        return rows, *(mark or (None, None))

    def ledgered(self, pid: int | None = None, wait_s: float = 5.0) -> list[dict[str, Any]]:
        """Ledger rows as they are (read directly: `Ledger.runs` would mark dead runs crashed itself)."""
        engine = sa.create_engine(self.state, connect_args={"timeout": wait_s})
        query = "SELECT * FROM runs" + (f" WHERE pid = {int(pid)}" if pid else "") + " ORDER BY id"
        try:
            with engine.connect() as conn:
                return [dict(row._mapping) for row in conn.execute(sa.text(query))]
        except sa.exc.OperationalError:  # the first run is still making the state database, or holds its lock
            return []
        finally:
            engine.dispose()

    def running_row(self, process: subprocess.Popen) -> dict[str, Any]:
        return self.poll(process, "its RUNNING ledger row", lambda: next(iter(self.ledgered(process.pid)), None))

    def kill(self, process: subprocess.Popen) -> None:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        assert process.returncode == -signal.SIGKILL


def stop_where_the_ledger_caught_up(drill: Drill, process: subprocess.Popen, flow_run_id: str, give_up_s: float = 3.0) -> None:
    """Stop the process (SIGSTOP) at a moment when its ledger row shows the watermark it committed last, i.e. between
    a batch's checkpoint and the next batch's commit. A process that never checkpoints is stopped after `give_up_s`."""
    deadline = time.monotonic() + give_up_s
    while True:
        process.send_signal(signal.SIGSTOP)
        try:  # a process stopped inside a transaction holds its database's lock: not a moment to stop at
            _, mark, committer = drill.committed(wait_s=0)
            rows = drill.ledgered(process.pid, wait_s=0)
        except sa.exc.OperationalError:
            rows = []
        if (rows and committer == flow_run_id and rows[0]["watermark"] == mark) or time.monotonic() > deadline:
            return
        process.send_signal(signal.SIGCONT)
        time.sleep(0.01)


def table(url: str) -> pd.DataFrame:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = pd.read_sql(sa.text("SELECT * FROM customers ORDER BY crm_id"), conn)
    engine.dispose()
    return rows.drop(columns="synced_at").set_index("crm_id")


def open_letters(home: Path) -> set[str]:
    return {e["record_key"] for e in DeadLetters(f"sqlite:///{home / 'interlink.db'}").entries("crm_to_billing", "open")}


def test_a_sync_killed_at_several_points_resumes_to_exactly_what_a_clean_run_delivers(systems, home, tmp_path, monkeypatch):
    drilled, clean = home, tmp_path / "clean"
    clean_billing = f"sqlite:///{tmp_path / 'clean_billing.db'}"
    with systems() as _:
        crm = os.environ["INTERLINK_CRM__BASE_URL"]
        # The clean run, in this process: its own home (ledger, dead letters) and billing database.
        monkeypatch.setenv("INTERLINK_HOME", str(clean))
        monkeypatch.setenv("INTERLINK_BILLING__URL", clean_billing)
        crm_to_billing.sync(chunk_size=CHUNK)

        (tmp_path / "logs").mkdir()
        drill = Drill(drilled, f"sqlite:///{tmp_path / 'billing.db'}", crm, tmp_path / "logs")
        kills: list[dict[str, Any]] = []  # per killed run: its flow run, and what it had committed when it died

        def killed(process: subprocess.Popen, row: dict[str, Any], before: int) -> None:
            drill.kill(process)
            rows, mark, committer = drill.committed()
            kills.append({"point": len(kills) + 1, "flow_run_id": row["flow_run_id"], "inserted": rows - before, "watermark": mark,
                          "by_it": committer == row["flow_run_id"]})

        # 1. as soon as the run is ledgered, before or while its first batch is delivered
        before = drill.committed()[0]
        run = drill.start()
        killed(run, drill.running_row(run), before)

        # 2. after its first watermark commit, stopped between batches, where its ledger row had caught up
        before = drill.committed()[0]
        run = drill.start()
        row = drill.running_row(run)
        drill.poll(run, "a watermark committed by run 2", lambda: True if drill.committed()[2] == row["flow_run_id"] else None)
        stop_where_the_ledger_caught_up(drill, run, row["flow_run_id"])
        killed(run, row, before)

        # 3. as soon as two more batches are in the target: right after a commit, before what follows it
        before = drill.committed()[0]
        run = drill.start()
        row = drill.running_row(run)
        drill.poll(run, "two more batches in the target", lambda: True if drill.committed()[0] > before + CHUNK else None)
        killed(run, row, before)

        # 4. the resume: a new run (in this process), to the end
        before = drill.committed()[0]
        monkeypatch.setenv("INTERLINK_HOME", str(drilled))
        monkeypatch.setenv("INTERLINK_BILLING__URL", drill.billing)
        crm_to_billing.sync(chunk_size=CHUNK)

    # 0 lost, 0 duplicated: every key, with the same values and row hash, as after the clean run
    expected, got = table(clean_billing), table(drill.billing)
    assert len(expected) > 4000 and got.index.is_unique
    assert sorted(set(expected.index) - set(got.index)) == [], "lost"
    assert sorted(set(got.index) - set(expected.index)) == [], "extra"
    pd.testing.assert_frame_equal(got, expected)
    assert drill.committed()[1] == Ledger(f"sqlite:///{clean / 'interlink.db'}").runs(limit=1)[0]["watermark"]

    # no ledger row left RUNNING: each killed run was found CRASHED by the run after it
    runs = drill.ledgered()
    assert [r["state"] for r in runs] in (["CRASHED"] * 3 + [ended] for ended in ("COMPLETED", "QUARANTINED")), [(r["state"], r["error"]) for r in runs]
    with get_client(sync_client=True) as client:
        for kill in kills:
            state = client.read_flow_run(UUID(kill["flow_run_id"])).state
            assert state.is_crashed(), f"kill {kill['point']}: Prefect shows {state.type}"
        assert client.read_flow_run(UUID(runs[-1]["flow_run_id"])).state.is_completed()

    # What the ledger and the dead-letter store say, all of it checked before failing.
    problems = []
    resumed = runs[-1]
    if (resumed["rows_inserted"], resumed["watermark"]) != (len(got) - before, drill.committed()[1]):
        problems.append(f"the resumed run ledgered {resumed['rows_inserted']} inserted, watermark {resumed['watermark']}; "
                        f"it committed {len(got) - before}, watermark {drill.committed()[1]}")
    # A crashed run's counts are those of its committed batches: never more, at most the batch in flight fewer;
    # stopped between batches (kill 2), exactly them, with the watermark it committed.
    for kill, crashed in zip(kills, runs[:3], strict=True):
        if crashed["flow_run_id"] != kill["flow_run_id"] or "ended without finishing" not in (crashed["error"] or ""):
            problems.append(f"kill {kill['point']}: ledger row {crashed['flow_run_id']}, error {crashed['error']!r}")
        if not kill["inserted"] - CHUNK <= crashed["rows_inserted"] <= kill["inserted"]:
            problems.append(f"kill {kill['point']}: ledgered {crashed['rows_inserted']} inserted; it committed {kill['inserted']}")
    stopped, crashed = kills[1], runs[1]
    if not stopped["by_it"] or (crashed["rows_inserted"], crashed["watermark"]) != (stopped["inserted"], stopped["watermark"]):
        problems.append(f"kill 2, stopped between batches: ledgered {crashed['rows_inserted']} inserted, watermark "
                        f"{crashed['watermark']}; it committed {stopped['inserted']}, watermark {stopped['watermark']}")
    # A record delivered is not an open dead letter, and every record that is one after a clean run is one here.
    if (drill_open := open_letters(drilled)) != (clean_open := open_letters(clean)):
        problems.append(f"open dead letters only after the drill: {sorted(drill_open - clean_open)}, "
                        f"only after the clean run: {sorted(clean_open - drill_open)}")
    assert not problems, "\n".join(problems)
