"""Deliver: write a batch to a SQL target idempotently, with the watermark in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from interlink.connectors.masking import mask_exception, mask_values, sensitive_values
from interlink.connectors.refusals import refusals
from interlink.connectors.sql import (
    WATERMARKS,
    WRITE_BATCH,
    Timestamp,
    WriteMode,
    create_engine,
    ensure_tables,
    refused_data,
    rows_frame,
    select_in,
    utcnow,
    write,
    write_watermark,
)
from interlink.tasks.admit import missing
from interlink.tasks.isolate import bisected, failures_frame, reason
from interlink.tasks.watermark import commit_watermark, committed_watermark
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from interlink.ledger import Counts
from interlink.settings import Settings


@dataclass(frozen=True)
class Delivery:
    """What became of a delivered batch; `failures` (indexed like the batch) are rows the target refused.

    `committed` is False when the batch's watermark is still to be committed: its rows were
    written part by part to find the ones refused, and the watermark moves only once those are
    dead-lettered (`SqlTarget.commit`).
    """

    counts: Counts
    failures: pd.DataFrame = field(default_factory=lambda: failures_frame({}))
    committed: bool = True


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
    def dataset(self) -> str:
        """What lineage names the target, on its connection; `schema` its columns and types."""
        return self.table.fullname

    @property
    def schema(self) -> tuple[tuple[str, str], ...]:
        return tuple((c.name, str(c.type)) for c in self.table.columns)

    @property
    def compared(self) -> list[str]:
        own = [c.name for c in self.table.columns if c.name not in (self.updated, "row_hash", "synced_at")]
        return own + [child.column for child in self.children]

    def watermark(self, settings: Settings, integration: str) -> str | None:
        return committed_watermark(settings.connection(self.connection).url, integration)

    def refusals(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The rows the table or a child table would refuse: `reason` naming each column and why, `values`."""
        found = refusals(self.table, rows)
        for child in self.children:
            for index, problems in _child_refusals(child, rows[child.column]).items():
                found.setdefault(index, {}).update(problems)
        return pd.DataFrame(
            {
                "reason": {i: "; ".join(f"{c}: {why}" for c, why in p.items()) for i, p in found.items()},
                "values": {i: {c: _shown(rows, i, c) for c in p} for i, p in found.items()},
            },
            columns=["reason", "values"],
        )

    def unchanged(self, settings: Settings, rows: pd.DataFrame, integration: str) -> pd.Index:
        """The rows the table already holds exactly (same key, same hash, no newer update time): delivering them changes nothing."""
        engine = create_engine(settings.connection(self.connection).url)
        try:
            ensure_tables(engine, self.table, *(child.table for child in self.children), WATERMARKS)
            with engine.connect() as conn:
                plan = _plan(conn, self, _prepared(rows, self))
        finally:
            engine.dispose()
        return plan.index[plan == "unchanged"]

    def deliver(
        self, settings: Settings, rows: pd.DataFrame, integration: str, watermark: str | None, sensitive: tuple[str, ...] = ()
    ) -> Delivery:
        return deliver(settings.connection(self.connection).url, self, rows, integration, watermark, flow_run.id, sensitive)

    def commit(self, settings: Settings, integration: str, watermark: str) -> None:
        commit_watermark(settings.connection(self.connection).url, integration, watermark, flow_run.id)


def _child_refusals(child: ChildTable, lists: pd.Series) -> dict:
    """Problems of each parent's child rows, by the parent's index: `lines[2].sku: …`."""
    found: dict = {}
    lines, owners = [], []
    for index, value in lists.items():
        if isinstance(value, list):
            for number, line in enumerate(value):
                if isinstance(line, dict):
                    lines.append(line)
                    owners.append((index, number))
                else:
                    found.setdefault(index, {})[f"{child.column}[{number}]"] = "not an object"
        elif not missing(value):
            found.setdefault(index, {})[child.column] = "not a list"
    frame = pd.DataFrame.from_records(lines, index=range(len(lines))).drop(columns=[child.parent_key], errors="ignore")
    for position, problems in refusals(child.table, frame).items():
        index, number = owners[position]
        for column, why in problems.items():
            found.setdefault(index, {})[f"{child.column}[{number}].{column}"] = why
    return found


def _shown(rows: pd.DataFrame, index: object, column: str) -> object:
    """The offending value of `column` (a child column's path shows the parent's whole list)."""
    return rows.at[index, column.split("[", 1)[0].split(".", 1)[0]]


@task(name="deliver", cache_policy=NO_CACHE)
def deliver(
    url: str, target: SqlTarget, rows: pd.DataFrame, integration: str, watermark: str | None, flow_run_id: str | None,
    sensitive: tuple[str, ...] = (),
) -> Delivery:
    """Insert the new rows, upsert the changed ones (replacing their children) and move the watermark, in one transaction.

    New rows are plain inserts (COPY on PostgreSQL): should another writer add one of their keys
    meanwhile, the transaction fails and rolls back, and a retry sees the row as existing.
    When the database refuses the batch for its data (a value, a constraint), the rows are
    written part by part, halving the parts that fail, and the ones refused alone come back as
    failures; the watermark is then left for the caller to commit once they are dead-lettered.
    An error that stops the delivery shows the values of the `sensitive` columns masked, as does the log.
    """

    def masked(text: str) -> str:  # only on an error: the batch's sensitive values are many
        return mask_values(text, sensitive_values(rows, sensitive))

    engine = create_engine(url)
    try:
        ensure_tables(engine, target.table, *(child.table for child in target.children), WATERMARKS)
        prepared = _prepared(rows, target)
        try:
            counts = _write(engine, target, prepared, integration, watermark, flow_run_id)
            delivery = Delivery(counts)
        except sa.exc.DBAPIError as exc:
            if not refused_data(exc):
                raise
            get_run_logger().warning(
                "%s refused the batch (%s); writing it in parts to find the rows it refuses", target.table.name, masked(reason(exc))
            )
            parts, failures = bisected(lambda part: _write(engine, target, part, integration, None, flow_run_id), prepared, refused=refused_data)
            delivery = Delivery(sum(parts, Counts()), failures, committed=watermark is None)
    except Exception as exc:
        mask_exception(exc, masked)
        raise
    finally:
        engine.dispose()
    get_run_logger().info(
        "%s: inserted %d, updated %d, unchanged %d, refused %d; watermark %s",
        target.table.name, delivery.counts.rows_inserted, delivery.counts.rows_updated, delivery.counts.rows_unchanged,
        len(delivery.failures), watermark if delivery.committed else "not yet moved",
    )
    return delivery


def _write(engine: sa.Engine, target: SqlTarget, prepared: pd.DataFrame, integration: str, watermark: str | None, flow_run_id: str | None) -> Counts:
    """Write prepared rows (and the watermark, if any) in one transaction; what became of them."""
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
    return Counts(
        rows_inserted=int((plan == "insert").sum()),
        rows_updated=int((plan == "update").sum()),
        rows_unchanged=int(plan.isin(["touch", "unchanged"]).sum()),
    )


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

    Times are written out to the microsecond, so a row's hash does not depend on its batch. Each column
    becomes text on its own (times through numpy, not row by row), and the hashes are written as hex at once.
    """
    compared = _naive_utc(rows[target.compared])
    try:
        text = pd.DataFrame({column: _text(compared[column]) for column in compared.columns}, index=compared.index)
        hashes = pd.util.hash_pandas_object(text, index=False).to_numpy().astype(">u8")
    except UnicodeEncodeError:  # text holding a lone surrogate (the target refuses it): hashed as UTF-8 bytes that keep it
        text = pd.DataFrame({column: _utf8(_text(compared[column], PYTHON_TEXT)) for column in compared.columns}, index=compared.index)
        hashes = pd.util.hash_pandas_object(text, index=False).to_numpy().astype(">u8")
    hexes = np.frombuffer(hashes.tobytes().hex().encode("ascii"), dtype="S16").astype(str).astype(object)
    return pd.Series(hexes, index=compared.index)


def _text(values: pd.Series, dtype: pd.StringDtype | str = "string") -> pd.Series:
    """A column as the text its rows are hashed by: a time as `%Y-%m-%dT%H:%M:%S.%f`, a float as Python's `str`
    (numpy writes both for a whole column at once, a float once per distinct value), anything else as pandas writes
    it; a missing value missing. Arrow text, except `PYTHON_TEXT` for text Arrow cannot hold (a lone surrogate).
    Both hash the same."""
    if pd.api.types.is_datetime64_dtype(values):
        written = np.datetime_as_string(values.to_numpy(), unit="us", casting="unsafe")
    elif values.dtype == "float64":
        codes, distinct = pd.factorize(values.to_numpy().view("u8"))  # by bits: -0.0 is not 0.0
        written = distinct.view("float64").astype(str)[codes]
    else:
        return values.astype(dtype)
    return pd.Series(pd.arrays.ArrowStringArray(pa.array(written, pa.string(), mask=values.isna().to_numpy())), index=values.index)


PYTHON_TEXT = pd.StringDtype("python")


def _utf8(values: pd.Series) -> pd.Series:
    """Text as its UTF-8 bytes, a lone surrogate kept: hashed the same as the text, where the text can be encoded."""
    return values.astype(object).map(lambda v: v.encode("utf-8", "surrogatepass") if isinstance(v, str) else v)


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
    existing = rows_frame(
        select_in(conn, [key, table.c.row_hash, *times], key, rows[target.key].tolist()),
        [target.key, "old_hash", *(["old_updated"] if times else [])],
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
