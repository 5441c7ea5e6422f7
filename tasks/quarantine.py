"""Quarantine: records that fail a step go to the dead-letter store with the stage, the reason and their source records."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
from interlink.tasks.admit import as_json, frame_records, missing
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from interlink.deadletter import DeadLetters, Reject

MAX_KEY = 200  # characters of a record key the store keeps; a longer one keeps a digest of the rest


@task(name="quarantine", cache_policy=NO_CACHE)
def quarantine(
    state_url: str,
    integration: str,
    raw: pd.DataFrame,
    failures: pd.DataFrame,
    record_keys: pd.Series,
    source_key: str,
    stage: str,
    flow_run_id: str | None,
) -> int:
    """Dead-letter the records that failed at `stage`; returns how many.

    `failures` (`reason`, `values`) is indexed like the raw records each failing row came from,
    `record_keys` names each failing row (the target key, or the source key before there is
    one). A dead letter keeps every raw record with the same source key, so a replay sees all
    of them again; one entry per record key, replacing an earlier one.
    """
    sources = key_texts(raw[source_key] if source_key in raw.columns else pd.Series(None, index=raw.index, dtype=object))
    failing = sources.loc[failures.index]
    related = raw[sources.isin(set(failing.dropna()))]
    by_key: dict = {}
    for source, record in zip(sources.loc[related.index], frame_records(related), strict=True):
        by_key.setdefault(source, []).append(record)
    own = frame_records(raw.loc[failures.index])  # for a record without a source key: itself
    values = as_json(failures["values"])
    rejects: dict[str, Reject] = {}
    for index, source, key, why, record in zip(
        failures.index, failing, record_keys.loc[failures.index], failures["reason"], own, strict=True
    ):
        payload = by_key[source] if source is not None else [record]
        record_key = _record_key(key, payload)
        rejects[record_key] = Reject(record_key=record_key, stage=stage, reason=why, values=values[str(index)], payload=payload)
    DeadLetters(state_url).put(integration, rejects.values(), flow_run_id)
    get_run_logger().warning("%d records dead-lettered at %s", len(failures), stage)
    return len(failures)


@task(name="quarantine", cache_policy=NO_CACHE)
def quarantine_records(
    state_url: str, integration: str, refused: Iterable[tuple[Any, str]], source_key: str, flow_run_id: str | None
) -> int:
    """Dead-letter records refused before they became rows (not objects, rows without a readable cursor), each as it came."""
    rejects = {}
    for record, why in refused:
        key = _record_key(record.get(source_key) if isinstance(record, dict) else None, [record])
        rejects[key] = Reject(record_key=key, stage="ingest", reason=why, values={}, payload=[record])
    DeadLetters(state_url).put(integration, rejects.values(), flow_run_id)
    get_run_logger().warning("%d records dead-lettered at ingest", len(rejects))
    return len(rejects)


@task(name="settle", cache_policy=NO_CACHE)
def settle(state_url: str, integration: str, keys: pd.Series, status: str) -> int:
    """Close the open dead letters of records now delivered (as `status`); returns how many."""
    record_keys = [_stored(token) for token in key_texts(keys.dropna())]
    closed = DeadLetters(state_url).settle(integration, record_keys, status)
    if closed:
        get_run_logger().info("%d earlier dead letters now %s", closed, status)
    return closed


def key_texts(values: pd.Series) -> pd.Series:
    """`key_text` of each value, as objects (a missing one as None): a text column's values are their own tokens,
    other columns go value by value."""
    if pd.api.types.is_string_dtype(values) and values.dtype != object:
        return values.astype(object).where(values.notna(), None)
    return pd.Series([key_text(v) for v in values], index=values.index, dtype=object)  # `map` would make None NaN


def key_text(value: object) -> str | None:
    """A key as a dead letter keeps it, whatever type a source sends; None when missing (None, NaN, NaT, NA).

    Text as it is; a whole number as an integer, however held (a column of integers with a gap holds `12.0`);
    a boolean as `true`/`false`; an object or a list as JSON with sorted keys; anything else as `str` writes it.
    """
    if missing(value):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return json.dumps(value, sort_keys=True, default=str) if isinstance(value, dict | list) else str(value)


def _record_key(key: object, payload: list) -> str:
    """The record's key, or for a record without one a stable digest of its content."""
    if (text := key_text(key)) is not None:
        return _stored(text)
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"no-key:{digest}"


def _stored(text: str) -> str:
    """A key as the store keeps it: as it is, or when longer than `MAX_KEY`, cut with a digest of the whole."""
    return text if len(text) <= MAX_KEY else f"{text[:183]}~{hashlib.sha256(text.encode()).hexdigest()[:16]}"
