"""Reconcile an integration's target with its source, written once for every `Pipeline`.

The source's records in a window go through the sync's own transform and enrichers and are
hashed as delivery hashes them; the target's rows in the same window are compared by key (a SQL
target read by its update times and by key, a REST target read back item by item). Nothing is
hidden: a key held back as a dead letter (open in the store, or a record the transform or an
enricher refuses now) counts in the source and in its own column, `dead_lettered`, and is not
compared. A repair delivers the missing and changed rows again through the data checks, counts
those it could not write (`not_written`), then reads them back to find those it could not mend.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd
from interlink.data_checks.gate import GateFailed
from interlink.flows import CHUNK_ROWS
from interlink.flows.pipeline import Pipeline, ledgered, run_name, shape
from interlink.tasks.check import check
from interlink.tasks.deliver import SqlTarget, row_hashes
from interlink.tasks.gate import target_limits
from interlink.tasks.quarantine import key_text, key_texts
from interlink.tasks.reconcile import (
    compare,
    field_hashes,
    forget_delivered,
    forget_hashes,
    publish_reconcile,
    read_back,
    read_target,
)
from interlink.tasks.send import RestTarget
from interlink.tasks.transform import latest_per_key
from prefect import Flow, flow

from interlink.deadletter import OPEN, DeadLetters
from interlink.ledger import Counts
from interlink.settings import ConfigError, Settings


def reconcile_flow(pipeline: Pipeline) -> Flow:
    """The integration's reconcile: dead-lettered, missing, extra and changed keys, repaired on request."""
    target = pipeline.target
    if not isinstance(target, SqlTarget | RestTarget):
        raise ConfigError(f"{pipeline.name}: reconcile needs a SqlTarget or a RestTarget, not {type(target).__name__}")

    @flow(name=f"{pipeline.name}_reconcile", description=f"Reconcile {target.connection} with {pipeline.source.connection}")
    def reconcile(since: str | None = None, repair: bool = False, chunk_size: int = CHUNK_ROWS) -> dict:
        """Compare the rows updated at or after `since` (every row if None); with `repair`, deliver the
        missing and changed ones again, then read them back: `unrepaired` lists those still missing or
        changed (without `repair`, all of them). Extra rows are only reported; the watermark never moves."""
        settings = Settings.load()
        side = Side(pipeline, settings)
        letters = {e["record_key"] for e in DeadLetters(settings.state_db).entries(pipeline.name, OPEN)}
        key = pipeline.key
        with ledgered(pipeline, settings, "reconcile", None) as entry:
            rows, refused = _source_rows(pipeline, settings, since, chunk_size)
            source = rows.assign(row_hash=side.hashes(rows))
            dead = set(key_texts(source[key])[lambda t: t.isin(letters)]) | refused
            held = side.held(since, source[key])
            found = compare(_without(source, key, dead)[[key, "row_hash"]], _without(held, key, dead), key)
            found |= {"source_rows": len(source) + len(refused - set(key_texts(source[key]))), "target_rows": len(held)}
            written, not_written, unrepaired = Counts(), [], sorted(found["missing"] + found["changed"])
            if repair and unrepaired:
                written, not_written = _repair(pipeline, settings, side, source, found)
                repaired = source.loc[source[key].isin(unrepaired), [key, "row_hash"]]
                again = compare(repaired, side.held(None, repaired[key], window=False), key)
                unrepaired = sorted(again["missing"] + again["changed"])
            entry.counts = Counts(rows_read=found["source_rows"], rows_inserted=written.rows_inserted, rows_updated=written.rows_updated)
            entry.notes += [f"{len(dead)} dead-lettered keys not compared"] * bool(dead)
            entry.notes += [f"{len(not_written)} rows the repair could not write"] * bool(not_written)
        result = {
            "integration": pipeline.name, **found, "dead_lettered": sorted(dead),
            "repaired": written.rows_inserted + written.rows_updated, "not_written": not_written, "unrepaired": unrepaired,
        }
        publish_reconcile(result, side.display, since)
        return result

    return reconcile


@dataclass
class Side:
    """The target's side of a reconcile: how its rows are hashed, read, forgotten and written again."""

    pipeline: Pipeline
    settings: Settings

    @property
    def display(self) -> str:
        return self.settings.connection(self.pipeline.target.connection).display

    def hashes(self, rows: pd.DataFrame) -> list[str] | pd.Series:
        """The hash each source row's delivery would leave, as `held` reads it back."""
        target = self.pipeline.target
        if isinstance(target, RestTarget):
            return field_hashes(rows, target.fields)
        return row_hashes(rows, target) if not rows.empty else []

    def held(self, since: str | None, keys: pd.Series, window: bool = True) -> pd.DataFrame:
        """What the target holds: a SQL target's rows of `keys` and (with `window`) every row updated since `since`;
        a REST target's items of `keys`, read back one by one."""
        target, connection = self.pipeline.target, self.settings.connection(self.pipeline.target.connection)
        if isinstance(target, RestTarget):
            return read_back(connection, target, keys)
        return read_target(connection.url, target, _window(since), keys, window)

    def forget(self, keys: pd.Series) -> None:
        """Forget what was delivered for `keys`, so delivery writes them again even when their hash never changed."""
        target = self.pipeline.target
        if isinstance(target, RestTarget):
            forget_delivered(self.settings.state_db, self.pipeline.name, keys)
        else:
            forget_hashes(self.settings.connection(target.connection).url, target, keys)


def _source_rows(pipeline: Pipeline, settings: Settings, since: str | None, chunk_rows: int) -> tuple[pd.DataFrame, set[str]]:
    """The window's records as the sync would deliver them: transformed, enriched, latest per key; and the keys, as
    text, of the records that cannot become rows (refused as read, or by the transform or an enricher: a sync's dead
    letters). Without an update-time column in the target, the last record of each key counts; a record without a key
    is not counted (nothing can be compared by its key)."""
    caches: list[dict] = [{} for _ in pipeline.enrichers]
    parts, refused = [], set()
    for chunk in pipeline.source.chunks(settings, since, chunk_rows):
        refused |= {key_text(r.get(pipeline.source_key)) for r, _ in chunk.refused if isinstance(r, dict)}
        if not chunk.records.empty:
            rows, failures = shape(pipeline, settings, chunk.records, caches)
            parts.append(rows)
            if pipeline.source_key in chunk.records.columns:
                refused |= set(key_texts(chunk.records.loc[failures["transform"].index, pipeline.source_key]))
            if not failures["enrich"].empty:
                refused |= set(key_texts(failures["enrich"]["key"]))
    refused.discard(None)
    if not parts:
        return pd.DataFrame(columns=[pipeline.key]), refused
    rows = latest_per_key(pd.concat(parts, ignore_index=True), pipeline.key, getattr(pipeline.target, "updated", None))
    return rows[rows[pipeline.key].notna()], refused


def _without(rows: pd.DataFrame, key: str, set_aside: set[str]) -> pd.DataFrame:
    """`rows` but those whose key, as text (as the dead-letter store keeps it), is in `set_aside`."""
    return rows[~key_texts(rows[key]).isin(set_aside).to_numpy()]


def _repair(pipeline: Pipeline, settings: Settings, side: Side, source: pd.DataFrame, found: dict) -> tuple[Counts, list]:
    """Deliver the missing and changed rows again, through the data checks and the target's limits, without moving
    the watermark; what was written, and the keys of the rows that could not be (failing a check, or refused).

    What delivery remembers of these rows is forgotten first, so delivery rewrites them even when one was edited or
    removed behind delivery's back (its remembered hash then still matches); a crash in between leaves it forgotten.
    """
    key = pipeline.key
    rows = source[source[key].isin(found["missing"] + found["changed"])].drop(columns="row_hash")
    validation = check(rows, pipeline.suite, settings.home, run_name())
    if validation.batch_failures:
        raise GateFailed(f"{validation.suite}: batch failed {', '.join(validation.batch_failures)}")
    passed = rows.drop(validation.row_failures.index)
    passed = passed.drop(target_limits(pipeline.target, passed).index) if not passed.empty else passed
    side.forget(passed[key])
    delivery = pipeline.target.deliver(settings, passed, pipeline.name, None, pipeline.gate.sensitive) if not passed.empty else None
    written = passed.drop(delivery.failures.index) if delivery is not None else passed
    return (delivery.counts if delivery else Counts()), sorted(rows[key][~rows.index.isin(written.index)].tolist())


def _window(since: str | None) -> datetime | None:
    """`since` as the naive UTC time the target stores (a time without a zone is taken as UTC)."""
    if since is None:
        return None
    moment = pd.Timestamp(since)
    return (moment.tz_convert("UTC").tz_localize(None) if moment.tzinfo else moment).to_pydatetime()
