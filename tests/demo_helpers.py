"""Helpers shared by the demo-system tests: reading a demo database directly."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any


def query(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql, params).fetchall()


def db_rows(db: Path, table: str, fields: Sequence[str], since: str = "") -> list[dict[str, Any]]:
    """The rows of `table` updated at or after `since`, in API order (updated_at, row_id)."""
    rows = query(
        db,
        f"SELECT {', '.join(fields)} FROM {table} WHERE updated_at >= ? ORDER BY updated_at, row_id",
        (since,),
    )
    return [dict(zip(fields, row)) for row in rows]
