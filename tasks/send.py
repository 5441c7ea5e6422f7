"""Deliver to an API: send each new or changed record once, with an idempotency key."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import quote

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from connectors.errors import FatalError
from connectors.rest import RestClient
from interlink.delivered import Delivered
from interlink.ledger import Counts
from interlink.settings import RestConnection, Settings
from tasks.admit import NO_FAILURES
from tasks.deliver import Delivery


@dataclass(frozen=True)
class RestTarget:
    """Records sent one by one (e.g. `PATCH /products/{sku}` with `{"stock": …}`).

    A record is sent only when its `fields` changed since it was last delivered; each
    request carries an `Idempotency-Key` derived from the run and the record, so a retry
    is applied once by a receiver that honours it. A record the API refuses (4xx) is
    dead-lettered with the API's answer; the others still go.
    """

    connection: str
    path: str
    key: str
    fields: tuple[str, ...]
    method: str = "PATCH"

    def watermark(self, settings: Settings, integration: str) -> str | None:
        return None  # the source keeps its own position (e.g. archived files)

    def refusals(self, rows: pd.DataFrame) -> pd.DataFrame:
        return NO_FAILURES  # the API says what it refuses, record by record

    def commit(self, settings: Settings, integration: str, watermark: str) -> None:
        """Nothing to commit: the source keeps its own position."""

    def unchanged(self, settings: Settings, rows: pd.DataFrame) -> pd.Index:
        """None: this target has no watermark, so no rows are re-read at one (see `flows.pipeline.unchanged_at`)."""
        return rows.index[:0]

    def deliver(
        self, settings: Settings, rows: pd.DataFrame, integration: str, watermark: str | None, sensitive: tuple[str, ...] = ()
    ) -> Delivery:
        """Send the changed rows; a record the API refuses keeps the API's answer, shown masked where it is listed."""
        return send_changed(settings.connection(self.connection), settings.state_db, self, rows, integration, flow_run.id)


@task(name="deliver", cache_policy=NO_CACHE)
def send_changed(
    connection: RestConnection, state_url: str, target: RestTarget, rows: pd.DataFrame, integration: str, run_id: str | None
) -> Delivery:
    bodies = {index: _body(row, target.fields) for index, row in rows.iterrows()}
    hashes = {index: hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16] for index, body in bodies.items()}
    keys = rows[target.key].astype(str)
    delivered = Delivered(state_url)
    before = delivered.hashes(integration, keys)
    changed = [index for index in rows.index if before.get(keys[index]) != hashes[index]]
    sent: dict[str, str] = {}
    failures: dict = {}

    def send(client: RestClient, index: object) -> None:
        key = keys[index]
        idempotency_key = hashlib.sha256(f"{integration}:{run_id}:{key}:{hashes[index]}".encode()).hexdigest()[:32]
        try:
            client.send(target.method, target.path.format(**{target.key: quote(key, safe="")}), bodies[index], idempotency_key)
        except FatalError as exc:
            failures[index] = {"reason": str(exc), "values": bodies[index]}
        else:
            sent[key] = hashes[index]

    try:
        with RestClient.connect(target.connection, connection) as client, ThreadPoolExecutor(connection.max_concurrency or 4) as pool:
            list(pool.map(lambda index: send(client, index), changed))  # within the connection's rate budget
    finally:
        delivered.record(integration, sent)  # what went out stays known, even if the run stops half way
    counts = Counts(
        rows_inserted=sum(1 for k in sent if k not in before),
        rows_updated=sum(1 for k in sent if k in before),
        rows_unchanged=len(rows) - len(changed),
    )
    get_run_logger().info("%s %s: sent %d, unchanged %d, refused %d", target.method, target.path, len(sent), counts.rows_unchanged, len(failures))
    return Delivery(counts, pd.DataFrame.from_dict(failures, orient="index", columns=["reason", "values"]))


def _body(row: pd.Series, fields: tuple[str, ...]) -> dict:
    return {field: (row[field].item() if hasattr(row[field], "item") else row[field]) for field in fields}
