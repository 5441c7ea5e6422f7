"""The dead-letter store: records that could not be delivered, with the reason, kept for replay.

One entry per integration and record key. An entry is `open` until the record is
delivered: by a later sync (`resolved`) or by a replay (`replayed`).

Entries are kept whole, to be replayed; listed, they show the values of each integration's sensitive
fields masked (in `values`, in the source records, and wherever they turn up in `reason`), unless an
operator asks to see them (`reveal=True`). A field is sensitive by name as `interlink.connectors.masking` matches it
(`Email` in a source record for a sensitive `email`), or as declared (`Gate.sensitive_source`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from interlink.connectors.masking import mask_record, mask_values, sensitive_fields
from interlink.connectors.sql import upsert, utcnow
from interlink.state import DEAD_LETTERS, state_engine

OPEN, RESOLVED, REPLAYED = "open", "resolved", "replayed"


@dataclass(frozen=True)
class Reject:
    """A record refused at `stage`: why, the offending values, and its source records."""

    record_key: str
    stage: str
    reason: str
    values: dict[str, Any]
    payload: list[dict[str, Any]]


class DeadLetters:
    """The store at `url`; `sensitive` names each integration's sensitive columns, masked in what `entries` lists."""

    def __init__(self, url: str, sensitive: Mapping[str, Sequence[str]] | None = None):
        self._engine = state_engine(url)
        self._sensitive = sensitive or {}

    def put(self, integration: str, rejects: Iterable[Reject], flow_run_id: str | None) -> None:
        """Store rejects as open entries, replacing any earlier entry for the same record (`vars`, not `asdict`,
        which copies each payload deeply)."""
        now = utcnow()
        rows = [
            {**vars(r), "integration": integration, "status": OPEN, "flow_run_id": flow_run_id, "created_at": now, "updated_at": now}
            for r in rejects
        ]
        with self._engine.begin() as conn:
            upsert(conn, DEAD_LETTERS, rows, keys=["integration", "record_key"], keep=["created_at"])

    def settle(self, integration: str, record_keys: Iterable[str], status: str) -> int:
        """Close the open entries of records now delivered; returns how many were closed."""
        open_entries = DEAD_LETTERS.c.integration == integration, DEAD_LETTERS.c.status == OPEN
        with self._engine.begin() as conn:
            held = set(conn.scalars(sa.select(DEAD_LETTERS.c.record_key).where(*open_entries)))
            keys = sorted(held.intersection(record_keys))
            for start in range(0, len(keys), 1000):
                conn.execute(
                    DEAD_LETTERS.update()
                    .where(*open_entries, DEAD_LETTERS.c.record_key.in_(keys[start : start + 1000]))
                    .values(status=status, updated_at=utcnow())
                )
        return len(keys)

    def entries(self, integration: str | None = None, status: str | None = None, *, reveal: bool = False,
                limit: int | None = None) -> list[dict[str, Any]]:
        """Entries, oldest first (the newest `limit` of them, if given), optionally of one integration and status;
        sensitive values masked unless `reveal`."""
        query = sa.select(DEAD_LETTERS).order_by(DEAD_LETTERS.c.id.desc()).limit(limit)
        if integration:
            query = query.where(DEAD_LETTERS.c.integration == integration)
        if status:
            query = query.where(DEAD_LETTERS.c.status == status)
        with self._engine.connect() as conn:
            entries = [dict(row._mapping) for row in conn.execute(query)][::-1]
        return entries if reveal else [masked(e, self._sensitive.get(e["integration"], ())) for e in entries]


def masked(entry: dict[str, Any], columns: Sequence[str]) -> dict[str, Any]:
    """A dead letter as it may be shown: the values of `columns` masked wherever they are in it."""
    if not columns:
        return entry
    records = [entry["values"], *(r for r in entry["payload"] if isinstance(r, dict))]
    found = [r[k] for r in records for k in sensitive_fields(r, columns)]
    return entry | {
        "record_key": mask_values(entry["record_key"], found),
        "reason": mask_values(entry["reason"], found),
        "values": mask_record(entry["values"], columns),
        "payload": [mask_record(r, columns) if isinstance(r, dict) else r for r in entry["payload"]],
    }

