"""`interlink status`: one row per declared integration, and whether it keeps its SLA.

For each integration of the declaration (`deployments.yaml`, `integrations:`): its owner, its last run and that run's
state, its last success (a sync that ended COMPLETED or QUARANTINED), its freshness, its next scheduled sync and its
open dead letters, from the declaration and the state database alone (no Prefect, no integration is imported).

Freshness is `OK`, or `LATE by 3h12m` when the integration breaches its SLA:
- `fresh_within`: the last success ended longer ago than that (by how much longer), or there is none;
- `done_by`: once today's deadline (that wall-clock time in the declaration's timezone) has passed, today's last
  scheduled sync before it (from the sync deployment's cron) has no success that ended between its scheduled time and
  the deadline: late by how long after the deadline it ended, or by now if it has not. A slot before the
  integration's first sync (the day it went live) promises nothing.
The next run is computed from the sync deployment's cron in the declaration's timezone (`cronsim`, as Prefect's
scheduler computes it), not asked of a Prefect server: none may be running, and its client costs 2 s to import.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from cronsim import CronSim

from interlink.deadletter import OPEN
from interlink.deployments.declaration import Declarations, Integration, duration_text, sla_text
from interlink.ledger import SUCCEEDED, Ledger
from interlink.state import DEAD_LETTERS, RUNS, state_engine

SYNCS = ("sync", "stream")  # the runs that deliver on schedule (a replay or a reconcile does not make data fresh)


@dataclass(frozen=True)
class Breach:
    late: timedelta | None  # None: there has never been a successful sync
    why: str  # which promise: `fresh within 26h`, `done by 06:00 Europe/Berlin`


def status(declared: Declarations, state_url: str, now: datetime | None = None) -> list[dict[str, Any]]:
    """One entry per declared integration (see the module's docstring); `now` is an aware datetime (default: now)."""
    now = now or datetime.now(UTC)
    tz = ZoneInfo(declared.timezone)
    Ledger(state_url).reap()  # a run whose process died is CRASHED, not RUNNING
    engine = state_engine(state_url)
    with engine.connect() as conn:
        open_letters = dict(
            conn.execute(
                sa.select(DEAD_LETTERS.c.integration, sa.func.count()).where(DEAD_LETTERS.c.status == OPEN).group_by(DEAD_LETTERS.c.integration)
            ).all()
        )
        entries = []
        for name, integration in declared.integrations.items():
            sync = declared.sync_of(name)
            last = _first(conn, sa.select(RUNS).where(RUNS.c.integration == name).order_by(RUNS.c.id.desc()))
            success = _first(conn, _successes(name).order_by(RUNS.c.finished_at.desc()))
            breaches = _breaches(conn, name, integration, sync.cron if sync else None, success, now, tz)
            entries.append({
                "integration": name,
                "owner": integration.owner.team,
                "contact": integration.owner.contact,
                "last_run_state": last["state"] if last else None,
                "last_run_at": _aware(last["started_at"]) if last else None,
                "last_success_at": _aware(success["finished_at"]) if success else None,
                "freshness": _late(breaches),
                "breaches": [f"{_late([b])}: {b.why}" for b in breaches],
                "in_breach": bool(breaches),
                "sla": _sla(integration, declared.timezone),
                "next_run": next(CronSim(sync.cron, now.astimezone(tz))) if sync else None,
                "timezone": declared.timezone,
                "dead_letters": open_letters.get(name, 0),
            })
    return entries


def shown(entry: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """`entry` as a table shows it: ages instead of times, the next run in its timezone, the breach with its promise."""
    now = now or datetime.now(UTC)
    last = f"{entry['last_run_state']} {_span(now - entry['last_run_at'])} ago" if entry["last_run_at"] else "never"
    return entry | {
        "last_run": last,
        "last_success": f"{_span(now - entry['last_success_at'])} ago" if entry["last_success_at"] else "never",
        "why": "; ".join(entry["breaches"]) or entry["sla"] or "no SLA declared",
        "next_run": f"{entry['next_run']:%m-%d %H:%M %Z}" if entry["next_run"] else "not scheduled",  # CET: Europe/Berlin
    }


def _successes(integration: str) -> sa.Select:
    return sa.select(RUNS).where(RUNS.c.integration == integration, RUNS.c.kind.in_(SYNCS), RUNS.c.state.in_(SUCCEEDED))


def _first(conn: sa.Connection, query: sa.Select) -> dict[str, Any] | None:
    row = conn.execute(query.limit(1)).first()
    return dict(row._mapping) if row else None


def _breaches(conn: sa.Connection, name: str, integration: Integration, cron: str | None, success: dict[str, Any] | None,
              now: datetime, tz: ZoneInfo) -> list[Breach]:
    sla, found = integration.sla, []
    if sla is None:
        return found
    if sla.fresh_within is not None:
        why = f"no successful sync within {duration_text(sla.fresh_within)}"
        if success is None:
            found.append(Breach(None, why + " (there has been none)"))
        elif (age := now - _aware(success["finished_at"])) > sla.fresh_within:
            found.append(Breach(age - sla.fresh_within, why))
    if sla.done_by is not None and cron is not None:
        local = now.astimezone(tz)
        deadline = datetime.combine(local.date(), sla.done_by, tz)
        day = datetime.combine(local.date(), datetime.min.time(), tz)
        due = None
        for fire in CronSim(cron, day - timedelta(seconds=1)):
            if fire >= deadline:
                break
            due = fire
        live = conn.execute(sa.select(sa.func.min(RUNS.c.started_at)).where(RUNS.c.integration == name, RUNS.c.kind.in_(SYNCS))).scalar()
        if due is not None and local >= deadline and live is not None and _aware(live) < due:  # a slot before it went live is no promise
            first = _successes(name).with_only_columns(sa.func.min(RUNS.c.finished_at)).where(RUNS.c.finished_at >= _naive(due))
            done = conn.execute(first).scalar()
            done_at = _aware(done) if done is not None else None
            if done_at is None or done_at > deadline:
                found.append(Breach((done_at or now) - deadline, f"today's {due:%H:%M} sync not done by {sla.done_by:%H:%M} {tz.key}"))
    return found


def _late(breaches: list[Breach]) -> str:
    """`OK`, `LATE by 3h12m` (the longest), or `LATE: never synced`."""
    if not breaches:
        return "OK"
    known = [b.late for b in breaches if b.late is not None]
    return f"LATE by {_span(max(known))}" if known else "LATE: never synced"


def _sla(integration: Integration, timezone: str) -> str | None:
    return sla_text(integration.sla, timezone) if integration.sla else None


def _aware(moment: datetime) -> datetime:
    """A ledger time (naive UTC) as an aware one."""
    return moment.replace(tzinfo=UTC)


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def _span(value: timedelta) -> str:
    """`3h12m` (whole minutes), or `42s` under a minute, as durations are declared."""
    seconds = max(0, int(value.total_seconds()))
    return duration_text(timedelta(seconds=seconds if seconds < 60 else seconds // 60 * 60))
