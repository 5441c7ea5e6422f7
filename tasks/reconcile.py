"""Reconcile: what a target holds against what the source says it should hold.

A SQL target is read by its update-time window and by key; a REST target is read back item by item
(a GET of its `path` per key: a status in its `absent` is "not there").
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from interlink.connectors.errors import FatalError
from interlink.connectors.rest import RestClient
from interlink.connectors.sql import create_engine, read_chunks, rows_frame, select_in
from interlink.connectors.threads import mapped
from interlink.tasks.admit import frame_records
from interlink.tasks.deliver import ChildTable, SqlTarget, row_hashes
from interlink.tasks.quarantine import key_text
from interlink.tasks.send import RestTarget
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from interlink.delivered import Delivered
from interlink.settings import RestConnection

HASHES = ["row_hash", "held_hash"]
SHOWN_KEYS = 50  # keys listed per kind of difference in the artifact
KINDS = ("dead_lettered", "missing", "extra", "changed", "not_written", "unrepaired")  # the lists of keys a result holds


@task(name="read-target", cache_policy=NO_CACHE)
def read_target(url: str, target: SqlTarget, since: datetime | None, keys: pd.Series, window: bool = True) -> pd.DataFrame:
    """The target's rows with `keys`, plus with `window` every row updated at or after `since` (all if None).

    One row per key: the `row_hash` delivery stored, and `held_hash`, the same hash of the values
    the row holds now (children included), which differs when the row was edited behind delivery's back.
    A target without an update-time column has a window only when `since` is None (every row, read in
    chunks): with `since`, its rows outside the source's window could not be told from extra rows.
    """
    table = target.table
    engine = create_engine(url)
    try:
        if not sa.inspect(engine).has_table(table.name):
            return pd.DataFrame(columns=[target.key, *HASHES])
        with engine.connect() as conn:
            windowed = window and (since is None or target.updated is not None)
            chunks = read_chunks(engine, table, watermark_column=target.updated, since=since) if windowed else []
            parts = [_hashed(conn, target, rows) for rows in chunks]
            seen = set().union(*(part[target.key] for part in parts))
            others = select_in(conn, list(table.c), table.c[target.key], [k for k in keys.tolist() if k not in seen])
            parts.append(_hashed(conn, target, rows_frame(others, table.c.keys())))
    finally:
        engine.dispose()
    return pd.concat(parts, ignore_index=True)


def _hashed(conn: sa.Connection, target: SqlTarget, rows: pd.DataFrame) -> pd.DataFrame:
    for child in target.children:
        rows[child.column] = _children(conn, child, rows[target.key])
    return rows.assign(held_hash=row_hashes(rows, target))[[target.key, *HASHES]]


def _children(conn: sa.Connection, child: ChildTable, keys: pd.Series) -> pd.Series:
    """Each parent's child rows as delivery was given them: a list of dicts without the parent key, in key order."""
    table, parent = child.table, child.table.c[child.parent_key]
    columns = [c for c in table.c if c is not parent]
    order = [columns.index(c) for c in table.primary_key if c is not parent]
    found: dict[object, list[tuple]] = {}
    for row in select_in(conn, [parent, *columns], parent, keys):
        found.setdefault(row[0], []).append(tuple(row[1:]))
    names = [c.name for c in columns]
    return keys.map(lambda k: [dict(zip(names, r)) for r in sorted(found.get(k, []), key=lambda r: [r[i] for i in order])])


@task(name="read-back", cache_policy=NO_CACHE)
def read_back(connection: RestConnection, target: RestTarget, keys: pd.Series) -> pd.DataFrame:
    """GET each key's item (`target.path`, its key filled in): the keys the API holds, with `row_hash`, the
    `field_hash` of the declared `fields` as the API answers them (the answer, or its `data`); a status in the
    target's `absent` (404 by default) is not there."""

    def get(client: RestClient, key: str) -> str | None:
        item = target.item(key)
        try:
            body = client.get_json(item)
        except FatalError as exc:
            if exc.status in target.absent:
                return None
            raise
        if (record := target.record(body)) is None:
            raise FatalError(f"GET {item} answered no object, so its fields cannot be compared: check `path` on the RestTarget")
        return field_hash({name: record.get(name) for name in target.fields})

    with RestClient.connect(target.connection, connection) as client, ThreadPoolExecutor(connection.max_concurrency or 4) as pool:
        held = mapped(pool, lambda key: get(client, key), [key_text(k) for k in keys])
    found = [h is not None for h in held]
    get_run_logger().info("read back %d of %d items from %s", sum(found), len(keys), target.path)
    return pd.DataFrame({target.key: keys[found].reset_index(drop=True), "row_hash": [h for h in held if h is not None]})


def field_hashes(rows: pd.DataFrame, fields: tuple[str, ...]) -> list[str]:
    """Each row's `field_hash` of `fields`, their values as JSON gives them (times in ISO 8601, missing as null)."""
    return [field_hash(record) for record in frame_records(rows[list(fields)])]


def field_hash(values: dict[str, Any]) -> str:
    """A digest of JSON values, a whole number the same whether written `5` or `5.0`."""
    return hashlib.sha256(json.dumps(_plain(values), sort_keys=True).encode()).hexdigest()[:16]


def _plain(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return [_plain(v) for v in value] if isinstance(value, list) else value


@task(name="forget-delivered", cache_policy=NO_CACHE)
def forget_delivered(state_url: str, integration: str, keys: pd.Series) -> None:
    """Blank what Interlink remembers delivering for `keys`, so delivery sends them again."""
    Delivered(state_url).record(integration, dict.fromkeys((key_text(k) for k in keys), ""))


@task(name="compare", cache_policy=NO_CACHE)
def compare(source_rows: pd.DataFrame, target_rows: pd.DataFrame, key: str) -> dict:
    """Keys only in the source (`missing`), only in the target (`extra`), and in both but different (`changed`).

    Both frames hold `key` and `row_hash`; a target row differs when any of its other columns
    (its hashes) differs from the source row's `row_hash`. Keys are reported as Python values, sorted.
    """
    source = source_rows.set_index(key)["row_hash"]
    target = target_rows.set_index(key)
    both = source.index.intersection(target.index)
    # both sides taken in the order of `both`, compared by position: pandas may not realign them
    differs = (target.loc[both].to_numpy() != source.loc[both].to_numpy()[:, None]).any(axis=1)
    found = {
        "source_rows": len(source),
        "target_rows": len(target),
        "missing": sorted(source.index.difference(target.index).tolist()),
        "extra": sorted(target.index.difference(source.index).tolist()),
        "changed": sorted(both[differs].tolist()),
    }
    get_run_logger().info(
        "source %d rows, target %d: %d missing, %d extra, %d changed",
        found["source_rows"], found["target_rows"], len(found["missing"]), len(found["extra"]), len(found["changed"]),
    )
    return found


@task(name="forget-hashes", cache_policy=NO_CACHE)
def forget_hashes(url: str, target: SqlTarget, keys: pd.Series) -> None:
    """Blank the stored hash of `keys`, so delivery rewrites them even if their hash never changed."""
    keys, table = keys.tolist(), target.table  # Python values: a driver may not take numpy integers
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for start in range(0, len(keys), 1000):
                conn.execute(table.update().where(table.c[target.key].in_(keys[start : start + 1000])).values(row_hash=""))
    finally:
        engine.dispose()


@task(name="reconcile-report", cache_policy=NO_CACHE)
def publish_reconcile(result: dict, target: str, since: str | None) -> None:
    """Publish the result as a markdown artifact, keyed `<integration>-reconcile`."""
    name = result["integration"]
    lines = [
        f"# {name} reconcile",
        f"Target: `{target}`  ",
        f"Window: {f'updated at or after `{since}`' if since else 'every row'}",
        "",
        "| rows | count |",
        "|---|---|",
        f"| source_rows | {result['source_rows']} |",
        f"| dead_lettered | {len(result['dead_lettered'])} |",
        f"| target_rows | {result['target_rows']} |",
        *[f"| {k} | {len(result[k])} |" for k in ("missing", "extra", "changed")],
        f"| repaired | {result['repaired']} |",
        f"| not_written | {len(result['not_written'])} |",
        f"| unrepaired | {len(result['unrepaired'])} |",
    ]
    for kind in KINDS:
        if keys := result[kind]:
            more = f" … and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""
            lines += ["", f"## {kind}", ", ".join(f"`{k}`" for k in keys[:SHOWN_KEYS]) + more]
    create_markdown_artifact(
        key=f"{name}-reconcile".replace("_", "-"), markdown="\n".join(lines), description=f"{name} reconciliation"
    )
