"""Quarantine: failing rows go to the dead-letter store with their reason and source record."""

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
    key: str,
    settled: str,
    flow_run_id: str | None,
) -> int:
    """Dead-letter the failing rows; entries of records that now pass are closed as `settled`.

    `rows` and `failures` share the index of `raw`, so each failure is stored with the
    source record it came from, ready to be replayed.
    """
    store = DeadLetters(state_url)
    payloads = json.loads(raw.loc[failures.index].to_json(orient="records", date_format="iso"))
    rejects = [
        Reject(
            record_key=_record_key(rows.at[index, key], payload),
            stage="check",
            reason=failure["reason"],
            values=json.loads(pd.Series(failure["values"], dtype=object).to_json(date_format="iso")),
            payload=payload,
        )
        for (index, failure), payload in zip(failures.iterrows(), payloads)
    ]
    store.put(integration, rejects, flow_run_id)
    passing = rows.loc[rows.index.difference(failures.index), key].dropna()
    closed = store.settle(integration, passing.astype(str), settled)
    get_run_logger().info("quarantined %d rows; %d earlier dead letters now %s", len(rejects), closed, settled)
    return len(rejects)


def _record_key(key: object, payload: dict) -> str:
    """The record's key, or for a record without one a stable digest of its content."""
    if pd.notna(key):
        return str(key)
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    return f"no-key:{digest}"
