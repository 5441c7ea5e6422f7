"""SQLite access shared by the demo databases: connections, transactions, fresh timestamps."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path


def read_only(db_path: Path) -> closing[sqlite3.Connection]:
    """A fresh read-only connection, closed on exit."""
    return closing(sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True))


@contextmanager
def write_transaction(db_path: Path) -> Iterator[sqlite3.Connection]:
    """Open db_path inside one write-locked transaction, committed on success."""
    with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def create_tables(conn: sqlite3.Connection, schema: list[str]) -> bool:
    """Run the `schema` statements unless the database already has tables; True if they ran."""
    if conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]:
        return False
    for statement in schema:
        conn.execute(statement)
    return True


def newer_than(latest: str | None) -> datetime:
    """The current time, or 1 µs after the stored timestamp `latest` if the clock is not past it."""
    now = datetime.now(UTC)
    return max(now, datetime.fromisoformat(latest) + timedelta(microseconds=1)) if latest else now
