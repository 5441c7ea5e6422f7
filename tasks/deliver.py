"""Deliver: write a batch to a SQL target idempotently, with the watermark in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from connectors.sql import WATERMARKS, Timestamp, create_engine, ensure_tables, select_in, upsert, utcnow, write_watermark
from interlink.ledger import Counts

WRITE_BATCH = 1000


def tracked_table(name: str, *columns: sa.Column) -> sa.Table:
    """A target table: the declared columns, plus the row hash and sync time that delivery keeps."""
    return sa.Table(
        name, sa.MetaData(), *columns,
        sa.Column("row_hash", sa.String(16), nullable=False),
        sa.Column("synced_at", Timestamp, nullable=False),
    )


@dataclass(frozen=True)
class SqlTarget:
    """Where a batch goes: a table, its key, and the source update-time column.

    A row counts as changed when the hash of its declared columns changes; an older
    version of a record never overwrites a newer one. A newer version with the same
    data is still written (its update time moves) but counts as unchanged.
    """

    table: sa.Table
    key: str
    updated: str

    @property
    def compared(self) -> list[str]:
        return [c.name for c in self.table.columns if c.name not in (self.updated, "row_hash", "synced_at")]


@task(name="deliver", cache_policy=NO_CACHE)
def deliver(
    url: str, target: SqlTarget, rows: pd.DataFrame, integration: str, watermark: str | None, flow_run_id: str | None
) -> Counts:
    """Upsert the new and changed rows and move the watermark, all in one transaction."""
    engine = create_engine(url)
    try:
        ensure_tables(engine, target.table, WATERMARKS)
        rows = _prepared(rows, target)
        with engine.begin() as conn:
            plan = _plan(conn, target, rows)
            changed = rows[plan != "unchanged"].to_dict("records")
            for start in range(0, len(changed), WRITE_BATCH):
                upsert(conn, target.table, changed[start : start + WRITE_BATCH], [target.key])
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


def _prepared(rows: pd.DataFrame, target: SqlTarget) -> pd.DataFrame:
    """Only the table's columns, naive-UTC times, None for missing, a hash of the compared columns."""
    declared = [c for c in rows.columns if c in target.table.columns]
    out = rows[declared].copy()
    for column in out.select_dtypes(include=["datetimetz"]).columns:
        out[column] = out[column].dt.tz_convert("UTC").dt.tz_localize(None)
    hashes = pd.util.hash_pandas_object(out[target.compared].astype("string"), index=False)
    out["row_hash"] = hashes.map("{:016x}".format)
    out["synced_at"] = utcnow()
    return out.astype(object).where(out.notna(), None)


def _plan(conn: sa.Connection, target: SqlTarget, rows: pd.DataFrame) -> pd.Series:
    """'insert', 'update', 'touch' (same data, newer time) or 'unchanged' for each row."""
    table = target.table
    key, updated = table.c[target.key], table.c[target.updated]
    existing = pd.DataFrame(
        select_in(conn, [key, table.c.row_hash, updated], key, rows[target.key]),
        columns=[target.key, "old_hash", "old_updated"],
    ).set_index(target.key)
    old = existing.reindex(rows[target.key])
    old.index = rows.index
    incoming, held = rows[target.updated].astype("datetime64[us]"), old["old_updated"].astype("datetime64[us]")
    same = old["old_hash"] == rows["row_hash"]
    plan = pd.Series("unchanged", index=rows.index)
    plan[old["old_hash"].isna()] = "insert"
    plan[old["old_hash"].notna() & ~same & (incoming >= held)] = "update"
    plan[same & (incoming > held)] = "touch"
    return plan
