"""Deliver: write a batch to a SQL target idempotently, with the watermark in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import sqlalchemy as sa
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from connectors.sql import (
    WATERMARKS,
    WRITE_BATCH,
    Timestamp,
    WriteMode,
    create_engine,
    ensure_tables,
    select_in,
    utcnow,
    write,
    write_watermark,
)
from interlink.ledger import Counts
from interlink.settings import Settings
from tasks.watermark import committed_watermark


@dataclass(frozen=True)
class Delivery:
    """What became of a delivered batch; `failures` (indexed like the batch) are rows the target refused."""

    counts: Counts
    failures: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["reason", "values"]))


def tracked_table(name: str, *columns: sa.Column) -> sa.Table:
    """A target table: the declared columns, plus the row hash and sync time that delivery keeps."""
    return sa.Table(
        name, sa.MetaData(), *columns,
        sa.Column("row_hash", sa.String(16), nullable=False),
        sa.Column("synced_at", Timestamp, nullable=False),
    )


@dataclass(frozen=True)
class ChildTable:
    """Rows owned by a parent row, held as a list of dicts in the parent's `column` (e.g. order lines).

    When a parent changes, its children are replaced: a line removed at the source disappears.
    """

    table: sa.Table
    column: str
    parent_key: str


@dataclass(frozen=True)
class SqlTarget:
    """Where a batch goes: a table on a SQL connection, its key, and the source update-time column, if any.

    A row counts as changed when the hash of its declared columns (and children) changes.
    Where both versions' update times are known, an older version of a record never overwrites
    a newer one, and a newer version with the same data is still written (its update time moves)
    but counts as unchanged. Without `updated`, or where a time is missing, the hash alone decides.
    """

    connection: str
    table: sa.Table
    key: str
    updated: str | None = None
    children: tuple[ChildTable, ...] = ()

    @property
    def compared(self) -> list[str]:
        own = [c.name for c in self.table.columns if c.name not in (self.updated, "row_hash", "synced_at")]
        return own + [child.column for child in self.children]

    def watermark(self, settings: Settings, integration: str) -> str | None:
        return committed_watermark(settings.connection(self.connection).url, integration)

    def deliver(self, settings: Settings, rows: pd.DataFrame, integration: str, watermark: str | None) -> Delivery:
        return Delivery(deliver(settings.connection(self.connection).url, self, rows, integration, watermark, flow_run.id))


@task(name="deliver", cache_policy=NO_CACHE)
def deliver(
    url: str, target: SqlTarget, rows: pd.DataFrame, integration: str, watermark: str | None, flow_run_id: str | None
) -> Counts:
    """Insert the new rows, upsert the changed ones (replacing their children) and move the watermark, in one transaction.

    New rows are plain inserts (COPY on PostgreSQL): should another writer add one of their keys
    meanwhile, the transaction fails and rolls back, and a retry sees the row as existing.
    """
    engine = create_engine(url)
    try:
        ensure_tables(engine, target.table, *(child.table for child in target.children), WATERMARKS)
        prepared = _prepared(rows, target)
        columns = [c for c in prepared.columns if c in target.table.columns]
        with engine.begin() as conn:
            plan = _plan(conn, target, prepared)
            write(conn, target.table, prepared.loc[plan == "insert", columns], WriteMode.APPEND)
            write(conn, target.table, prepared.loc[plan.isin(["update", "touch"]), columns], WriteMode.UPSERT, [target.key])
            if target.children:
                changed = prepared[plan != "unchanged"]
                for child in target.children:
                    _replace_children(conn, child, changed, target.key)
            if watermark is not None:
                write_watermark(conn, integration, watermark, flow_run_id)
    finally:
        engine.dispose()
    counts = Counts(
        rows_inserted=int((plan == "insert").sum()),
        rows_updated=int((plan == "update").sum()),
        rows_unchanged=int(plan.isin(["touch", "unchanged"]).sum()),
    )
    get_run_logger().info(
        "%s: inserted %d, updated %d, unchanged %d; watermark %s",
        target.table.name, counts.rows_inserted, counts.rows_updated, counts.rows_unchanged, watermark,
    )
    return counts


def _replace_children(conn: sa.Connection, child: ChildTable, parents: pd.DataFrame, key: str) -> None:
    keys = parents[key].tolist()
    for start in range(0, len(keys), WRITE_BATCH):
        conn.execute(child.table.delete().where(child.table.c[child.parent_key].in_(keys[start : start + WRITE_BATCH])))
    rows = pd.DataFrame.from_records(
        [
            {**line, child.parent_key: parent}
            for parent, lines in zip(parents[key], parents[child.column], strict=True)
            for line in lines or []
        ]
    )
    write(conn, child.table, rows, WriteMode.APPEND)


def row_hashes(rows: pd.DataFrame, target: SqlTarget) -> pd.Series:
    """The `row_hash` delivery stores for each row: a hash of its compared columns, times as naive UTC.

    Times are written out to the microsecond, so a row's hash does not depend on its batch.
    """
    compared = _naive_utc(rows[target.compared])
    for column in compared.select_dtypes(include=["datetime"]).columns:
        compared[column] = compared[column].dt.strftime("%Y-%m-%dT%H:%M:%S.%f")
    return pd.util.hash_pandas_object(compared.astype("string"), index=False).map("{:016x}".format)


def _naive_utc(rows: pd.DataFrame) -> pd.DataFrame:
    out = rows.copy()
    for column in out.select_dtypes(include=["datetimetz"]).columns:
        out[column] = out[column].dt.tz_convert("UTC").dt.tz_localize(None)
    return out


def _prepared(rows: pd.DataFrame, target: SqlTarget) -> pd.DataFrame:
    """The table's columns and children, naive-UTC times, a hash of the compared columns."""
    declared = [c for c in rows.columns if c in target.table.columns or c in {ch.column for ch in target.children}]
    out = _naive_utc(rows[declared])
    out["row_hash"] = row_hashes(out, target)
    out["synced_at"] = pd.Timestamp(utcnow())
    return out


def _plan(conn: sa.Connection, target: SqlTarget, rows: pd.DataFrame) -> pd.Series:
    """'insert', 'update', 'touch' (same data, newer time) or 'unchanged' for each row."""
    table = target.table
    key = table.c[target.key]
    times = [table.c[target.updated]] if target.updated else []
    existing = pd.DataFrame(
        select_in(conn, [key, table.c.row_hash, *times], key, rows[target.key].tolist()),
        columns=[target.key, "old_hash", *(["old_updated"] if times else [])],
    ).set_index(target.key)
    old = existing.reindex(rows[target.key])
    old.index = rows.index
    held = old["old_hash"].notna()
    same = old["old_hash"] == rows["row_hash"]
    plan = pd.Series("unchanged", index=rows.index)
    plan[~held] = "insert"
    if not target.updated:
        plan[held & ~same] = "update"
        return plan
    incoming, stored = rows[target.updated].astype("datetime64[us]"), old["old_updated"].astype("datetime64[us]")
    older = incoming < stored  # False where either time is missing: the hash decides
    plan[held & ~same & ~older] = "update"
    plan[same & incoming.notna() & (stored.isna() | (incoming > stored))] = "touch"
    return plan
