"""Quarantine: failing rows go to the dead-letter store with their reason and source records."""

import hashlib
import json

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from interlink.deadletter import DeadLetters, Reject


@task(name="quarantine", cache_policy=NO_CACHE)
def quarantine(
    state_url: str,
    integration: str,
    raw: pd.DataFrame,
    rows: pd.DataFrame,
    failures: pd.DataFrame,
    keys: tuple[str, str],
    stage: str,
    settled: str,
    flow_run_id: str | None,
) -> int:
    """Dead-letter the rows that failed at `stage`; entries of records that now pass are closed as `settled`.

    Each row's index points at a raw record it came from; its dead letter keeps every raw
    record with the same source key (`keys[0]`), so a replay sees all of them again.
    """
    source_key, key = keys
    store = DeadLetters(state_url)
    failing = raw.loc[failures.index, source_key]
    related = raw[raw[source_key].isin(failing.dropna())]
    by_key: dict = {}
    for record_key, record in zip(related[source_key], _records(related), strict=True):
        by_key.setdefault(record_key, []).append(record)
    own = _records(raw.loc[failures.index])  # for a record without a source key: itself
    values = json.loads(failures["values"].to_json(date_format="iso")) if len(failures) else {}
    rejects = [
        Reject(
            record_key=_record_key(target_key, payload := by_key.get(source, [record])),
            stage=stage,
            reason=reason,
            values=values[str(index)],
            payload=payload,
        )
        for index, source, target_key, reason, record in zip(
            failures.index, failing, rows.loc[failures.index, key], failures["reason"], own, strict=True
        )
    ]
    store.put(integration, rejects, flow_run_id)
    passing = rows.loc[rows.index.difference(failures.index), key].dropna()
    closed = store.settle(integration, passing.astype(str), settled)
    get_run_logger().info("quarantined %d rows; %d earlier dead letters now %s", len(rejects), closed, settled)
    return len(rejects)


def _records(frame: pd.DataFrame) -> list[dict]:
    """`frame`'s rows as JSON-able dicts, times in ISO 8601."""
    return json.loads(frame.to_json(orient="records", date_format="iso"))


def _record_key(key: object, payload: list[dict]) -> str:
    """The record's key, or for a record without one a stable digest of its content."""
    if pd.notna(key):
        return str(key)
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    return f"no-key:{digest}"
