"""The run ledger: one row per run — what moved where, when, and how much."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa

from connectors.sql import utcnow
from interlink.state import RUNS, state_engine


@dataclass
class Counts:
    """Rows through one batch or run: read from the source, and what became of them."""

    rows_read: int = 0
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_unchanged: int = 0
    rows_quarantined: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(**{k: v + getattr(other, k) for k, v in asdict(self).items()})


@dataclass
class Entry:
    """A run in progress; the flow fills it in, the ledger saves it when the run ends."""

    counts: Counts = field(default_factory=Counts)
    watermark: str | None = None
    report: str | None = None
    circuits: str | None = None  # circuit breakers that opened during the run
    decision: str | None = None  # a person's approval or rejection, with who, when and why
    notes: list[str] = field(default_factory=list)  # warnings the run raised (schema changes, stale data, …)


class Ledger:
    def __init__(self, url: str):
        self._engine = state_engine(url)

    @contextmanager
    def record(self, integration: str, *, kind: str, flow_run_id: str | None, target: str, watermark: str | None) -> Iterator[Entry]:
        """Ledger a run: RUNNING now, then COMPLETED, or FAILED with the error if the block raises."""
        entry = Entry(watermark=watermark)
        with self._engine.begin() as conn:
            run_id = conn.execute(
                RUNS.insert().values(
                    integration=integration, kind=kind, flow_run_id=flow_run_id, state="RUNNING",
                    started_at=utcnow(), target=target, watermark_before=watermark, watermark=watermark,
                )
            ).inserted_primary_key[0]
        try:
            yield entry
        except BaseException as exc:
            self._finish(run_id, entry, "FAILED", f"{type(exc).__name__}: {exc}"[:2000])
            raise
        self._finish(run_id, entry, "COMPLETED", None)

    def runs(self, integration: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The latest runs, newest first."""
        query = sa.select(RUNS).order_by(RUNS.c.id.desc()).limit(limit)
        if integration:
            query = query.where(RUNS.c.integration == integration)
        with self._engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def volumes(self, integration: str, limit: int) -> list[int]:
        """Rows read by the latest successful syncs of `integration`, newest first."""
        query = (
            sa.select(RUNS.c.rows_read)
            .where(RUNS.c.integration == integration, RUNS.c.kind == "sync", RUNS.c.state == "COMPLETED")
            .order_by(RUNS.c.id.desc())
            .limit(limit)
        )
        with self._engine.connect() as conn:
            return list(conn.scalars(query))

    def _finish(self, run_id: int, entry: Entry, state: str, error: str | None) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                RUNS.update().where(RUNS.c.id == run_id).values(
                    state=state, finished_at=utcnow(), watermark=entry.watermark, report=entry.report, circuits=entry.circuits,
                    decision=entry.decision, notes="\n".join(entry.notes) or None,
                    error=error, **asdict(entry.counts),
                )
            )

