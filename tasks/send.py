"""Deliver to an API: send each new or changed record once, with an idempotency key, and count only what the API confirms."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import pandas as pd
from interlink.connectors.errors import FatalError
from interlink.connectors.rest import RestClient
from interlink.connectors.threads import mapped
from interlink.tasks.admit import NO_FAILURES
from interlink.tasks.deliver import Delivery
from interlink.tasks.watermark import commit_watermark, committed_watermark
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from interlink.delivered import Delivered
from interlink.ledger import Counts
from interlink.settings import RestConnection, Settings


@dataclass(frozen=True)
class RestTarget:
    """Records sent one by one (e.g. `PATCH /products/{sku}` with `{"stock": …}`).

    How a record is written: with `method` to the item `path` (its `{key}` filled in), unless `create` is
    declared, e.g. `create=("POST", "/items/customers")`: then a key the target does not hold is created that
    way, the key in the body. Which keys the target holds: the ones Interlink delivered before, and, for a
    key it never delivered, a GET of `path`. A key delivered before that the target answers "nothing there"
    for (a status in `absent`) is created again. An API that creates on `PUT` to the item is an upsert:
    `method="PUT"`, no `create`.

    A record counts only when the target confirms it: an answer holding the record (its `key` field, at the
    top or under `data`), or else a GET of `path` that finds it (a 204 proves nothing). It counts as
    inserted when created (a `create` write, or a 201), else as updated. A record refused (4xx), or not
    found after its write, is dead-lettered with the reason; the others still go. A record is sent only
    when its `fields` changed since it was last delivered; each request carries an `Idempotency-Key`
    derived from the run, the record and the write, so a retry is applied once by a receiver that honours it.

    The watermark is kept in Interlink's state database, committed once the batch's deliveries and
    dead letters are recorded.
    """

    connection: str
    path: str
    key: str
    fields: tuple[str, ...]
    method: str = "PATCH"
    create: tuple[str, str] | None = None  # (method, path) for keys the target does not hold
    absent: tuple[int, ...] = (404,)  # statuses that mean "nothing there" (Directus answers 403)

    @property
    def dataset(self) -> str:
        """What lineage names the target, on its connection; `schema` the fields it sends (types unknown)."""
        return self.path

    @property
    def schema(self) -> tuple[tuple[str, str], ...]:
        return tuple((name, "") for name in (self.key, *self.fields))

    def watermark(self, settings: Settings, integration: str) -> str | None:
        return committed_watermark(settings.state_db, integration)

    def refusals(self, rows: pd.DataFrame) -> pd.DataFrame:
        return NO_FAILURES  # the API says what it refuses, record by record

    def commit(self, settings: Settings, integration: str, watermark: str) -> None:
        commit_watermark(settings.state_db, integration, watermark, flow_run.id)

    def unchanged(self, settings: Settings, rows: pd.DataFrame, integration: str) -> pd.Index:
        """The rows delivered before exactly as they are now: delivering them changes nothing."""
        keys, hashes = rows[self.key].astype(str), _hashes(_bodies(rows, self.fields))
        before = Delivered(settings.state_db).hashes(integration, keys)
        return rows.index[[before.get(keys[index]) == hashes[index] for index in rows.index]]

    def deliver(
        self, settings: Settings, rows: pd.DataFrame, integration: str, watermark: str | None, sensitive: tuple[str, ...] = ()
    ) -> Delivery:
        """Send the changed rows; a record the API refuses keeps the API's answer, shown masked where it is listed.
        The watermark is left to `commit`, after the dead letters."""
        delivery = send_changed(settings.connection(self.connection), settings.state_db, self, rows, integration, flow_run.id)
        return Delivery(delivery.counts, delivery.failures, committed=watermark is None)

    def item(self, key: str, path: str | None = None) -> str:
        """`path` (by default the item's) with the record's `key` filled in."""
        return (path or self.path).format(**{self.key: quote(key, safe="")})

    @staticmethod
    def record(body: object) -> dict | None:
        """The record an answer holds: the object itself, or its `data` (as Directus answers); None if none."""
        record = body.get("data", body) if isinstance(body, dict) else None
        return record if isinstance(record, dict) else None


class Absent(FatalError):
    """The target says it holds no such item."""


@task(name="deliver", cache_policy=NO_CACHE)
def send_changed(
    connection: RestConnection, state_url: str, target: RestTarget, rows: pd.DataFrame, integration: str, run_id: str | None
) -> Delivery:
    bodies = _bodies(rows, target.fields)
    hashes = _hashes(bodies)
    keys = rows[target.key].astype(str)
    delivered = Delivered(state_url)
    before = delivered.hashes(integration, keys)
    changed = [index for index in rows.index if before.get(keys[index]) != hashes[index]]
    created: dict[str, str] = {}
    updated: dict[str, str] = {}
    failures: dict = {}

    def send(client: RestClient, index: object) -> None:
        key = keys[index]
        value = _plain(rows.at[index, target.key])
        write = Write(client, target, key, value, bodies[index], f"{integration}:{run_id}:{key}:{hashes[index]}")
        try:
            new = write.deliver(known=key in before)
        except FatalError as exc:
            failures[index] = {"reason": str(exc), "values": bodies[index]}
        else:
            (created if new else updated)[key] = hashes[index]

    try:
        with RestClient.connect(target.connection, connection) as client, ThreadPoolExecutor(connection.max_concurrency or 4) as pool:
            mapped(pool, lambda index: send(client, index), changed)  # within the connection's rate budget
    finally:
        delivered.record(integration, created | updated)  # what the target confirmed stays known, even if the run stops half way
    counts = Counts(rows_inserted=len(created), rows_updated=len(updated), rows_unchanged=len(rows) - len(changed))
    get_run_logger().info(
        "%s: created %d, changed %d, unchanged %d, refused or unconfirmed %d",
        target.path, len(created), len(updated), counts.rows_unchanged, len(failures),
    )
    return Delivery(counts, pd.DataFrame.from_dict(failures, orient="index", columns=["reason", "values"]))


@dataclass(frozen=True)
class Write:
    """One record's write, confirmed by the target."""

    client: RestClient
    target: RestTarget
    key: str  # as text, for paths and comparisons
    value: object  # as the row holds it, for a create's body
    body: dict
    origin: str  # the run and record, for idempotency keys

    def deliver(self, known: bool) -> bool:
        """Write the record; True when the target created it, False when it changed it. `FatalError` when it
        refuses the record, or cannot be shown to hold it."""
        target = self.target
        if target.create is None or known or self.found():
            try:
                return self.confirmed(target.method, target.item(self.key), self.body) == 201
            except Absent as exc:
                if target.create is None:
                    raise Absent(f"{exc}; to create keys the target does not hold, declare create=(method, path) on the RestTarget") from None
        method, path = target.create
        self.confirmed(method, target.item(self.key, path), {target.key: self.value, **self.body}, creating=True)
        return True

    def confirmed(self, method: str, path: str, body: dict, creating: bool = False) -> int:
        """Send `body` and confirm the target holds the record; the answer's status. `Absent` when an update
        answers a status in `absent`, or a write's answer proves nothing and a GET finds nothing."""
        idempotency_key = hashlib.sha256(f"{self.origin}:{method} {path}".encode()).hexdigest()[:32]
        try:
            response = self.client.send(method, path, body, idempotency_key)
        except FatalError as exc:
            if not creating and exc.status in self.target.absent:
                raise Absent(str(exc)) from None
            raise
        if not self.holds(response) and not self.found():
            where = f"{self.target.connection}: {method} {path} answered {response.status_code}"
            raise Absent(f"{where}, but GET {self.target.item(self.key)} finds nothing there")
        return response.status_code

    def found(self) -> bool:
        """Whether the target holds the item: a GET of its path holding the record, or else answering a status in `absent`."""
        item = self.target.item(self.key)
        try:
            response = self.client.request("GET", item)
        except FatalError as exc:
            if (status := exc.status) in self.target.absent:
                return False
            if status == 403:
                raise FatalError(f"{exc}; if this API answers 403 for an item it does not hold (Directus does), "
                                 "declare absent=(403, 404) on the RestTarget") from None
            raise
        if not self.holds(response):
            where = f"{self.target.connection}: GET {item} answered {response.status_code}"
            raise FatalError(f"{where} without the record's {self.target.key!r}: cannot tell whether it holds the record")
        return True

    def holds(self, response: httpx.Response) -> bool:
        """Whether an answer holds this record: an object (or its `data`) whose key field is the record's key."""
        try:
            body = response.json()
        except ValueError:
            return False
        record = self.target.record(body)
        return record is not None and self.target.key in record and str(record[self.target.key]) == self.key


def _bodies(rows: pd.DataFrame, fields: tuple[str, ...]) -> dict:
    """What is sent of each row: its `fields`, by the row's index."""
    return {index: {field: _plain(row[field]) for field in fields} for index, row in rows.iterrows()}


def _hashes(bodies: dict) -> dict:
    """Each body's hash, as `Delivered` keeps them."""
    return {index: hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16] for index, body in bodies.items()}


def _plain(value: object) -> object:
    """A value as JSON takes it (numpy scalars as Python's)."""
    return value.item() if hasattr(value, "item") else value
