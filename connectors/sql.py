"""SQL databases through SQLAlchemy 2: engines, dialect-native upserts, watermarks.

Works on SQLite, PostgreSQL and MariaDB/MySQL. Each upsert uses the dialect's own
statement (`ON CONFLICT … DO UPDATE`, `ON DUPLICATE KEY UPDATE`), so a retried write
converges on the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url

# Microsecond timestamps everywhere (MySQL/MariaDB's DATETIME drops them by default).
Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

WATERMARKS = sa.Table(
    "interlink_watermarks",
    sa.MetaData(),
    sa.Column("integration", sa.String(100), primary_key=True),
    sa.Column("value", sa.String(64), nullable=False),
    sa.Column("flow_run_id", sa.String(36)),
    sa.Column("committed_at", Timestamp, nullable=False),
)


def utcnow() -> datetime:
    """Now, as the naive UTC timestamp that every dialect stores alike."""
    return datetime.now(UTC).replace(tzinfo=None)


def create_engine(url: str) -> Engine:
    """An engine for `url`; a SQLite file gets its folder created."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    return sa.create_engine(url, pool_pre_ping=True)


def ensure_tables(engine: Engine, *tables: sa.Table) -> None:
    """Create the tables that do not exist yet."""
    for table in tables:
        table.create(engine, checkfirst=True)


def upsert(
    conn: Connection,
    table: sa.Table,
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    keep: Sequence[str] = (),
) -> None:
    """Insert `rows`, updating the ones whose `keys` already exist (all but the `keep` columns)."""
    if not rows:
        return
    update = [c for c in rows[0] if c not in keys and c not in keep]
    dialect = conn.dialect.name
    if dialect in ("mysql", "mariadb"):
        stmt = mysql.insert(table)
        stmt = stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in update})
    elif dialect in ("postgresql", "sqlite"):
        stmt = (postgresql if dialect == "postgresql" else sqlite).insert(table)
        stmt = stmt.on_conflict_do_update(index_elements=list(keys), set_={c: stmt.excluded[c] for c in update})
    else:
        raise NotImplementedError(f"upsert is not supported on {dialect!r}; use SQLite, PostgreSQL or MariaDB/MySQL")
    conn.execute(stmt, list(rows))


def select_in(conn: Connection, columns: Sequence[sa.Column], key: sa.Column, values: Iterable[Any], batch: int = 1000) -> list[sa.Row]:
    """Rows whose `key` is among `values`, queried in batches that every dialect accepts."""
    values = list(values)
    rows: list[sa.Row] = []
    for start in range(0, len(values), batch):
        rows.extend(conn.execute(sa.select(*columns).where(key.in_(values[start : start + batch]))))
    return rows


def read_watermark(engine: Engine, integration: str) -> str | None:
    """The committed watermark of `integration`, or None before its first delivery."""
    ensure_tables(engine, WATERMARKS)
    with engine.connect() as conn:
        return conn.scalar(sa.select(WATERMARKS.c.value).where(WATERMARKS.c.integration == integration))


def write_watermark(conn: Connection, integration: str, value: str, flow_run_id: str | None) -> None:
    """Set the watermark inside the caller's transaction, so it commits with the data."""
    row = {"integration": integration, "value": value, "flow_run_id": flow_run_id, "committed_at": utcnow()}
    upsert(conn, WATERMARKS, [row], ["integration"])
