"""Reconcile an integration's SQL target with its source, written once for every `Pipeline`.

The source's records in a window go through the sync's own transform and enrichers and are
hashed as delivery hashes them; the target's rows in the same window are compared by key.
Records with an open dead letter are set aside on both sides: they are not expected to match.
A repair delivers the missing and changed rows again, then reads them back to find those it could not mend.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd
from prefect import Flow, flow
from prefect.runtime import flow_run

from data_checks.gate import GateFailed
from flows import CHUNK_ROWS
from flows.pipeline import Pipeline, run_name, shape
from interlink.deadletter import OPEN, DeadLetters
from interlink.ledger import Counts, Ledger
from interlink.settings import ConfigError, Settings
from tasks.check import check
from tasks.deliver import SqlTarget, deliver, row_hashes
from tasks.reconcile import compare, forget_hashes, publish_reconcile, read_target
from tasks.transform import latest_per_key


def reconcile_flow(pipeline: Pipeline) -> Flow:
    """The integration's reconcile: missing, extra and changed target rows, repaired on request."""
    target = pipeline.target
    if not isinstance(target, SqlTarget):
        raise ConfigError(f"{pipeline.name}: reconcile needs a SQL target, not {type(target).__name__}")

    @flow(name=f"{pipeline.name}_reconcile", description=f"Reconcile {target.connection} with {pipeline.source.connection}")
    def reconcile(since: str | None = None, repair: bool = False, chunk_size: int = CHUNK_ROWS) -> dict:
        """Compare the rows updated at or after `since` (every row if None); with `repair`, deliver the
        missing and changed ones again, then read them back: `unrepaired` lists those still missing or
        changed (without `repair`, all of them). Extra rows are only reported; the watermark never moves."""
        settings = Settings.load()
        connection = settings.connection(target.connection)
        set_aside = {e["record_key"] for e in DeadLetters(settings.state_db).entries(pipeline.name, OPEN)}
        key, ledger = pipeline.key, Ledger(settings.state_db)
        with ledger.record(pipeline.name, kind="reconcile", flow_run_id=flow_run.id, target=connection.display, watermark=None) as entry:
            source = _without(_source_rows(pipeline, settings, since, chunk_size), key, set_aside)
            held = _without(read_target(connection.url, target, _window(since), source[key]), key, set_aside)
            found = compare(source[[key, "row_hash"]], held, key)
            written, unrepaired = Counts(), sorted(found["missing"] + found["changed"])
            if repair and unrepaired:
                written = _repair(pipeline, settings, connection.url, source, found)
                repaired = source.loc[source[key].isin(unrepaired), [key, "row_hash"]]
                again = compare(repaired, read_target(connection.url, target, None, repaired[key], window=False), key)
                unrepaired = sorted(again["missing"] + again["changed"])
            entry.counts = Counts(rows_read=len(source), rows_inserted=written.rows_inserted, rows_updated=written.rows_updated)
        result = {
            "integration": pipeline.name, **found, "repaired": written.rows_inserted + written.rows_updated, "unrepaired": unrepaired,
        }
        publish_reconcile(result, connection.display, since)
        return result

    return reconcile


def _source_rows(pipeline: Pipeline, settings: Settings, since: str | None, chunk_rows: int) -> pd.DataFrame:
    """The window's records as the sync would deliver them: transformed, enriched, latest per key, hashed.

    Without an update-time column in the target, the last record of each key counts.
    """
    caches: list[dict] = [{} for _ in pipeline.enrichers]
    parts = []
    for chunk in pipeline.source.chunks(settings, since, chunk_rows):
        if not chunk.records.empty:
            parts.append(shape(pipeline, settings, chunk.records, caches)[0])  # what fails to shape is a sync's dead letter
    if not parts:
        return pd.DataFrame(columns=[pipeline.key, "row_hash"])
    rows = latest_per_key(pd.concat(parts, ignore_index=True), pipeline.key, pipeline.target.updated)
    rows = rows[rows[pipeline.key].notna()]
    return rows.assign(row_hash=row_hashes(rows, pipeline.target))


def _without(rows: pd.DataFrame, key: str, set_aside: set[str]) -> pd.DataFrame:
    """`rows` but those whose key, as text (as the dead-letter store keeps it), is in `set_aside`."""
    return rows[~rows[key].astype(str).isin(set_aside)]


def _repair(pipeline: Pipeline, settings: Settings, url: str, source: pd.DataFrame, found: dict) -> Counts:
    """Deliver the missing and changed rows again, through the data checks, without moving the watermark.

    A changed row's stored hash is blanked first, so delivery rewrites it even when it was edited behind
    delivery's back (its stored hash then still matches); a crash in between leaves a blank hash, found next time.
    """
    rows = source[source[pipeline.key].isin(found["missing"] + found["changed"])].drop(columns="row_hash")
    if rows.empty:
        return Counts()
    validation = check(rows, pipeline.suite, settings.home, run_name())
    if validation.batch_failures:
        raise GateFailed(f"{validation.suite}: batch failed {', '.join(validation.batch_failures)}")
    passed = rows.drop(validation.row_failures.index)
    forget_hashes(url, pipeline.target, passed[pipeline.key][passed[pipeline.key].isin(found["changed"])])
    return deliver(url, pipeline.target, passed, pipeline.name, None, flow_run.id, pipeline.gate.sensitive).counts


def _window(since: str | None) -> datetime | None:
    """`since` as the naive UTC time the target stores (a time without a zone is taken as UTC)."""
    if since is None:
        return None
    moment = pd.Timestamp(since)
    return (moment.tz_convert("UTC").tz_localize(None) if moment.tzinfo else moment).to_pydatetime()
