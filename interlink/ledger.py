"""The run ledger: one row per run — what moved where, when, and how much.

A run's row is RUNNING while it runs. `Entry.checkpoint()` writes its counts and watermark after
each committed batch, so the row is true even if the process dies; the row ends COMPLETED, QUARANTINED
(completed, some rows dead-lettered: Prefect's Completed state named Quarantined) or FAILED.

One Prefect flow run is one row, however many attempts its flow retries make: a later attempt continues
the row (`attempts` counts them). Its counts are the sum of what every attempt committed, as each
attempt starts from the watermark the one before committed; `watermark_before` is the first attempt's,
and an earlier attempt's end (state and error) is kept in the row's notes. A run with no Prefect flow run
id has a row of its own. A RUNNING row whose process is gone is marked CRASHED (CANCELLED, if Prefect has its flow run Cancelled,
e.g. by a stopped `interlink serve`) by the next run of any integration
(`Ledger.record`) and by `Ledger.runs` (`interlink runs`): its Prefect flow run is set Crashed too,
which frees its concurrency slot, and an alert is sent (by the server's automation for a run of a deployment;
that automation also crashes a deployed run whose heartbeats stopped, before any process looks). An ended row whose
process died before Prefect recorded the end (its flow run still Running there) is marked CRASHED, in both, the same way.
Only rows of this host are judged; a run on another machine is left to that machine.
"""

from __future__ import annotations

import logging
import signal
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psutil
import sqlalchemy as sa

from interlink.connectors.masking import cut
from interlink.connectors.sql import utcnow
from interlink.prefect_urls import api_at_hand
from interlink.state import RUNS, state_engine

if TYPE_CHECKING:  # Prefect loads where a run is ledgered or a Prefect flow run is looked at, not for `interlink runs`
    from prefect.client.schemas.objects import FlowRun

log = logging.getLogger(__name__)

RUNNING, COMPLETED, QUARANTINED, FAILED, CRASHED, CANCELLED = "RUNNING", "COMPLETED", "QUARANTINED", "FAILED", "CRASHED", "CANCELLED"
SUCCEEDED = (COMPLETED, QUARANTINED)  # a run that ended well (QUARANTINED is a warning, not a failure)
ENDED = (*SUCCEEDED, FAILED, CANCELLED)  # the ends a run's own process records
RECHECKED = 20  # the latest ended runs whose Prefect flow run each reaping checks (one API call)
PROCESS_START_TOLERANCE_S = 1.0  # a pid whose process started further from the recorded time is another process


@dataclass
class Counts:
    """Rows through one batch or run: read from the source, and what became of them.

    read = inserted + updated + unchanged + quarantined + superseded, where superseded rows are
    those dropped because a newer record of the same key was in the same batch.
    """

    rows_read: int = 0
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_unchanged: int = 0
    rows_quarantined: int = 0
    rows_superseded: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(**{k: v + getattr(other, k) for k, v in asdict(self).items()})


def success_state(counts: Counts) -> str:
    """The state of a run that ended well with `counts`: QUARANTINED when it dead-lettered any row, else COMPLETED.
    The ledger, `interlink runs`, the quality report and the flow run's state name in Prefect all say this."""
    return QUARANTINED if counts.rows_quarantined else COMPLETED


@dataclass
class Entry:
    """A run in progress; the flow fills it in, `checkpoint()` saves it after each committed batch,
    and the ledger saves it when the run ends."""

    counts: Counts = field(default_factory=Counts)
    watermark: str | None = None
    since: str | None = None  # the watermark the run started from
    report: str | None = None
    circuits: str | None = None  # circuit breakers that opened during the run
    decision: str | None = None  # a person's approval or rejection, with who, when and why
    notes: list[str] = field(default_factory=list)  # warnings the run raised (schema changes, stale data, …)
    attempt: int = 1  # which attempt of its Prefect flow run this is (flow retries make more)
    _row: tuple[Ledger, int] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def row_id(self) -> int | None:
        """The id of the run's ledger row (None for an entry no row backs)."""
        return self._row[1] if self._row is not None else None

    def checkpoint(self) -> None:
        """Write the counts, watermark, notes, decision and circuits so far to the run's ledger row, which stays
        RUNNING. Call it after each batch whose data and watermark are committed. An entry that no ledger row
        backs (e.g. a partition's, summed into its parent's) has nothing to write."""
        if self._row is not None:
            ledger, run_id = self._row
            ledger._write(run_id, self)


class Ledger:
    def __init__(self, url: str):
        self._engine = state_engine(url)

    @contextmanager
    def record(
        self, integration: str, *, kind: str, flow_run_id: str | None, target: str, watermark: str | None, trace_id: str | None = None
    ) -> Iterator[Entry]:
        """Ledger a run: RUNNING now, then COMPLETED or QUARANTINED (see `success_state`), or FAILED with the error if
        the block raises (CANCELLED if it was stopped by a signal).

        A later attempt of Prefect flow run `flow_run_id` (a flow retry) continues that run's row: its entry starts
        with the counts, decision and notes the earlier attempts left. Once this run's row is in, runs of this host whose
        process died are marked CRASHED (see `reap`): reaping makes API calls, and a run killed meanwhile has its row."""
        from prefect.exceptions import TerminationSignal

        process = psutil.Process()
        attempt = dict(state=RUNNING, finished_at=None, error=None, host=socket.gethostname(), pid=process.pid,
                       process_started_at=_utc(process.create_time()), trace_id=trace_id)
        with self._engine.begin() as conn:
            earlier = _earlier_attempt(conn, integration, kind, flow_run_id) if flow_run_id else None
            if earlier is None:
                entry = Entry(watermark=watermark, since=watermark)
                run_id = conn.execute(
                    RUNS.insert().values(
                        integration=integration, kind=kind, flow_run_id=flow_run_id, started_at=utcnow(), target=target,
                        watermark_before=watermark, watermark=watermark, attempts=1, **attempt,
                    )
                ).inserted_primary_key[0]
            else:
                entry, run_id = _next_attempt(earlier, watermark), earlier["id"]
                conn.execute(RUNS.update().where(RUNS.c.id == run_id).values(target=target, attempts=entry.attempt, **attempt))
        self.reap()
        entry._row = (self, run_id)
        try:
            yield entry
        except TerminationSignal as exc:  # stopped on purpose, e.g. `interlink serve` cancelling its runs as it stops
            self._write(run_id, entry, CANCELLED, f"stopped by {signal.Signals(exc.signal).name}: the process running it was asked to stop")
            raise
        except BaseException as exc:
            self._write(run_id, entry, FAILED, cut(f"{type(exc).__name__}: {exc}", 2000))
            raise
        self._write(run_id, entry, success_state(entry.counts))

    def runs(self, integration: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The latest runs, newest first (runs whose process died are marked CRASHED first)."""
        self.reap()
        query = sa.select(RUNS).order_by(RUNS.c.id.desc()).limit(limit)
        if integration:
            query = query.where(RUNS.c.integration == integration)
        with self._engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def row(self, run_id: int) -> dict[str, Any]:
        """Ledger row `run_id`, as it is now."""
        with self._engine.connect() as conn:
            return dict(conn.execute(sa.select(RUNS).where(RUNS.c.id == run_id)).one()._mapping)

    def volumes(self, integration: str, limit: int) -> list[int]:
        """Rows read by the latest successful syncs of `integration`, newest first."""
        query = (
            sa.select(RUNS.c.rows_read)
            .where(RUNS.c.integration == integration, RUNS.c.kind == "sync", RUNS.c.state.in_(SUCCEEDED))
            .order_by(RUNS.c.id.desc())
            .limit(limit)
        )
        with self._engine.connect() as conn:
            return list(conn.scalars(query))

    def reap(self) -> list[dict[str, Any]]:
        """Mark CRASHED every RUNNING run of this host whose process is gone, or whose pid another process now
        has; returns those runs. Each one's Prefect flow run is set Crashed if it is not final yet (freeing its
        concurrency slot), and an alert is sent (not when Prefect has it final already: whatever ended it there, the
        runner's crash hook or the server's automation, alerted); a run Prefect has Cancelled is marked CANCELLED instead. Runs of other hosts, and runs ledgered before the ledger knew
        their process, are left alone."""
        host = socket.gethostname()
        query = sa.select(RUNS).where(RUNS.c.state == RUNNING, RUNS.c.host == host, RUNS.c.pid.is_not(None))
        with self._engine.connect() as conn:
            dead = [dict(row._mapping) for row in conn.execute(query) if not _alive(row.pid, row.process_started_at)]
        reaped = []
        for run in dead:
            # a run stopped on purpose (e.g. `interlink serve` was stopped) is CANCELLED, as Prefect has it
            flow_run = _flow_run(run["flow_run_id"]) if run["flow_run_id"] else None
            cancelled = flow_run.state if flow_run and flow_run.state and flow_run.state.is_cancelled() else None
            why = (
                f"cancelled in Prefect ({cancelled.message or 'no reason given'}), and its process (pid {run['pid']} on {host}) ended"
                if cancelled else
                f"the process running this run (pid {run['pid']} on {host}) ended without finishing it "
                "(killed, out of memory, or the machine stopped)"
            )
            message = (
                f"{why}; found at {utcnow():%Y-%m-%d %H:%M:%S} UTC. "
                "Its counts and watermark are those of its last committed batch; the next sync resumes from there."
            )
            with self._engine.begin() as conn:
                won = conn.execute(
                    RUNS.update()
                    .where(RUNS.c.id == run["id"], RUNS.c.state == RUNNING)  # another reaper may have been first
                    .values(state=CANCELLED if cancelled else CRASHED, finished_at=utcnow(), error=message)
                ).rowcount
            if not won:
                continue
            run |= {"state": CANCELLED if cancelled else CRASHED, "error": message}
            log.warning("run %s of %s marked %s: %s", run["id"], run["integration"], run["state"], message)
            # alerted by whoever ends the run in Prefect: here, or the runner's crash hook, or the server's automation
            if not cancelled and (flow_run is None or _crash_flow_run(flow_run, message)):
                _alert(run, message, str(flow_run.deployment_id) if flow_run and flow_run.deployment_id else None)
            reaped.append(run)
        return reaped + self._reap_ended(host)

    def _reap_ended(self, host: str) -> list[dict[str, Any]]:
        """Mark CRASHED, in the ledger and in Prefect, each of the latest `RECHECKED` ended runs of this host whose process
        died after the ledger recorded its end and before Prefect did (its flow run still Running there); returns them."""
        query = (
            sa.select(RUNS)
            .where(RUNS.c.state.in_(ENDED), RUNS.c.host == host, RUNS.c.pid.is_not(None), RUNS.c.flow_run_id.is_not(None))
            .order_by(RUNS.c.id.desc())
            .limit(RECHECKED)
        )
        with self._engine.connect() as conn:
            ended = {row.flow_run_id: dict(row._mapping) for row in conn.execute(query) if not _alive(row.pid, row.process_started_at)}
        reaped = []
        for flow_run in _running_flow_runs(list(ended)):
            run = ended[str(flow_run.id)]
            ledgered = run["state"] + (f" ({run['error']})" if run["error"] else "")
            message = cut(
                f"the process running this run (pid {run['pid']} on {host}) ended after the ledger recorded it {ledgered} "
                f"and before Prefect did; found at {utcnow():%Y-%m-%d %H:%M:%S} UTC. Its counts and watermark are what it "
                "committed; the next sync resumes from there.", 2000,
            )
            with self._engine.begin() as conn:
                won = conn.execute(
                    RUNS.update().where(RUNS.c.id == run["id"], RUNS.c.state == run["state"]).values(state=CRASHED, error=message)
                ).rowcount
            if not won:  # another reaper was first
                continue
            run |= {"state": CRASHED, "error": message}
            log.warning("run %s of %s marked %s: %s", run["id"], run["integration"], CRASHED, message)
            _crash_flow_run(flow_run, message)
            _alert(run, message, str(flow_run.deployment_id) if flow_run.deployment_id else None)
            reaped.append(run)
        return reaped

    def _write(self, run_id: int, entry: Entry, state: str = RUNNING, error: str | None = None) -> None:
        """Save `entry` to row `run_id`; a final `state` also ends the run. The watermark the run started from is
        its first attempt's."""
        values = dict(
            watermark=entry.watermark, report=entry.report, circuits=entry.circuits, decision=entry.decision,
            notes="\n".join(entry.notes) or None, **asdict(entry.counts),
        )
        if entry.attempt == 1:
            values["watermark_before"] = entry.since
        if state != RUNNING:
            values |= {"state": state, "finished_at": utcnow(), "error": error}
        with self._engine.begin() as conn:
            conn.execute(RUNS.update().where(RUNS.c.id == run_id).values(**values))


def _earlier_attempt(conn: sa.Connection, integration: str, kind: str, flow_run_id: str) -> dict[str, Any] | None:
    """The row an earlier attempt of flow run `flow_run_id` left, if any."""
    query = (
        sa.select(RUNS)
        .where(RUNS.c.flow_run_id == flow_run_id, RUNS.c.integration == integration, RUNS.c.kind == kind)
        .order_by(RUNS.c.id.desc())
        .limit(1)
    )
    row = conn.execute(query).first()
    return dict(row._mapping) if row else None


def _next_attempt(earlier: dict[str, Any], watermark: str | None) -> Entry:
    """The entry of the attempt after `earlier`: what the earlier attempts committed, and how the last one ended."""
    attempt = earlier["attempts"] + 1
    ended = f"attempt {attempt - 1} ended {earlier['state']}" + (f": {earlier['error']}" if earlier["error"] else "")
    return Entry(
        counts=Counts(**{name: earlier[name] for name in asdict(Counts())}), watermark=watermark, since=watermark,
        decision=earlier["decision"], notes=[*filter(None, (earlier["notes"] or "").split("\n")), cut(ended, 1000)], attempt=attempt,
    )


def _utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC).replace(tzinfo=None)


def _alive(pid: int, started: datetime | None) -> bool:
    """Whether process `pid` of this host is still the one that started at `started`."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:  # dead, waiting for its parent to collect it
            return False
        created = _utc(process.create_time())
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # e.g. access denied: it exists, and cannot be told apart; leave it
        return True
    return started is None or abs((created - started).total_seconds()) <= PROCESS_START_TOLERANCE_S


def _flow_run(flow_run_id: str) -> FlowRun | None:
    """Prefect's flow run `flow_run_id`; None when it is not a Prefect id, or the API cannot tell (logged)."""
    try:
        run_uuid = uuid.UUID(flow_run_id)
    except ValueError:
        return None
    try:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            return client.read_flow_run(run_uuid)
    except Exception as exc:  # the API down or the run unknown: judged crashed, in the ledger only
        log.warning("could not read Prefect flow run %s to mark it Crashed: %s: %s", flow_run_id, type(exc).__name__, exc)
        return None


def _running_flow_runs(flow_run_ids: list[str]) -> list[FlowRun]:
    """Those of Prefect flow runs `flow_run_ids` that are Running, in one API call; none when no Prefect API is at hand
    (no PREFECT_API_URL and not inside a flow run: no temporary API is started just to look) or it cannot tell (logged)."""
    ids = []
    for flow_run_id in flow_run_ids:
        try:
            ids.append(uuid.UUID(flow_run_id))
        except ValueError:
            continue
    if not ids or not api_at_hand():
        return []
    try:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterState, FlowRunFilterStateType
        from prefect.client.schemas.objects import StateType

        running = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
        with get_client(sync_client=True) as client:
            return client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids), state=running), limit=len(ids))
    except Exception as exc:  # the API down: checked again by the next reaping
        log.warning("could not ask Prefect whether ended runs are still Running there: %s: %s", type(exc).__name__, exc)
        return []


def _crash_flow_run(flow_run: FlowRun, message: str) -> bool:
    """Set `flow_run` Crashed unless it is final already (the runner or the server's automation may have been first);
    whether it was not final (a failure to set it is only logged)."""
    if flow_run.state is not None and flow_run.state.is_final():
        return False
    try:
        from prefect.client.orchestration import get_client
        from prefect.states import Crashed

        with get_client(sync_client=True) as client:
            client.set_flow_run_state(flow_run.id, Crashed(message=message), force=True)
    except Exception as exc:  # the API down: the ledger row is CRASHED all the same
        log.warning("could not mark Prefect flow run %s Crashed: %s: %s", flow_run.id, type(exc).__name__, exc)
    return True


def _alert(run: dict[str, Any], message: str, deployment_id: str | None) -> None:
    """Alert the crash; for a run of a deployment, the server's automation does, on the run's Crashed state."""
    from interlink.alerts import alert  # it reads the ledger itself

    counts = {k: v for k, v in run.items() if k.startswith("rows_")}
    try:
        alert(run["integration"], CRASHED, run["flow_run_id"], message, counts, deployment_id)
    except Exception as exc:  # e.g. settings that do not load: the run that reaps goes on
        log.warning("crash alert for run %s not sent: %s: %s", run["id"], type(exc).__name__, exc)
