"""Order events from a queue → ERP, in micro-batches, through the same steps as an `orders_to_erp` sync.

Each message is one storefront order as JSON (the shape `GET /orders` returns), delivered at
least once (a redelivered order changes nothing). What becomes of a message:

- not such an order (not JSON, not an object, no id, an object or list where a value belongs):
  dead-lettered at stage `ingest` and acknowledged, never requeued;
- processed with its batch as one sync batch would be (failing rows dead-lettered by the
  pipeline, the rest upserted, no watermark moved): acknowledged;
- its batch fails because a system failed (unreachable, timed out, refused our login, or
  misconfigured): the batch is requeued and the run fails. This is never held against a message;
- its batch fails for any other reason: the batch is split in halves, and halves of halves,
  until the failing orders stand alone and the rest are delivered. An order that fails alone
  while others of its batch got through is dead-lettered at once (stage `transform` if shaping
  it raises, else `deliver`) with the error, and acknowledged. If nothing of the batch got through,
  the fault cannot be pinned on the orders: each goes back at the end of the queue with one more
  failed delivery counted (`AmqpQueue.retry`) and the run fails; an order whose delivery fails for
  the `max_deliveries`-th time is dead-lettered instead.

The pipeline's work runs through `AmqpQueue.call`, so the broker connection keeps its heartbeats
however long a batch takes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated

import pandas as pd
import sqlalchemy as sa
import typer
from interlink.connectors.amqp import AmqpQueue, Message
from interlink.connectors.connections import QueueConnection
from interlink.connectors.errors import ConfigError, ConnectorError
from interlink.flows.orders_to_erp import PIPELINE as ORDERS
from interlink.flows.pipeline import final_state, guard_batch, ledgered, process_batch, run_report, shape
from interlink.tasks.ingest import Chunk
from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import State

from interlink.deadletter import RESOLVED, DeadLetters, Reject
from interlink.ledger import Counts, Entry
from interlink.run_facts import Dataset
from interlink.settings import Settings

FIELDS = list(ORDERS.contract.fields)
LINE_FIELDS = ("line_no", "sku", "quantity", "unit_price")
QUEUE = "order_events"  # the connection of the broker the events come from
MAX_DELIVERIES = 3  # failed deliveries of an order, for no system's fault, before it is dead-lettered
# Failures of a system, not of the records: a connector's (unreachable, timed out, login refused, circuit open),
# a setting's, and the database's operational errors (connection lost, locked, no such table).
SYSTEM_ERRORS = (ConnectorError, ConfigError, OSError, sa.exc.OperationalError, sa.exc.InterfaceError)


@flow(name="consume_order_events", description="Order events from a queue → ERP, in micro-batches")
def consume_order_events(
    queue_url: str | None = None,
    queue: str = "orders",
    batch_size: int = 200,
    max_batches: int | None = None,
    idle_s: float = 1.0,
    max_deliveries: int = MAX_DELIVERIES,
) -> State:
    """Consume batches until `max_batches` are done or the queue stays empty for `idle_s` seconds."""
    settings = Settings.load()
    url = queue_url or settings.connection(QUEUE).url
    source = Dataset(*QueueConnection(url=url).dataset(queue))
    with ledgered(ORDERS, settings, "stream", None, source) as entry, AmqpQueue(url, queue, name=QUEUE) as conn:
        caches: list[dict] = [{} for _ in ORDERS.enrichers]
        batches = 0
        while max_batches is None or batches < max_batches:
            if not (messages := conn.fetch(batch_size, idle_s)):
                break
            _consume(conn, settings, messages, caches, entry, max_deliveries)
            entry.checkpoint()
            batches += 1
        get_run_logger().info("%d batches from queue %s: %s", batches, queue, entry.counts)
        entry.report = run_report(ORDERS, settings, entry, None)
    return final_state(ORDERS, entry)


def _consume(conn: AmqpQueue, settings: Settings, messages: list[Message], caches: list[dict], entry: Entry, max_deliveries: int) -> None:
    """One batch: poison dead-lettered and acked at once, the orders processed and acked, failures isolated."""
    orders, poison = [], []
    for message in messages:
        order, problem = _parse(message.body)
        if problem:
            poison.append((message, _reject(message, order, "ingest", problem)))
        else:
            orders.append((message, order))
    _dead_letter(conn, settings, poison, entry)
    if not orders:
        return
    delivered: list[Message] = []
    failed: list[tuple[Message, dict, Exception]] = []

    def isolate(part: list[tuple[Message, dict]]) -> None:
        try:
            conn.call(_process, settings, [order for _, order in part], caches, entry)
        except Exception as exc:
            if _system_error(exc):
                raise
            if len(part) == 1:
                failed.append((*part[0], exc))
                return
            for half in (part[: len(part) // 2], part[len(part) // 2 :]):
                isolate(half)
        else:
            delivered.extend(message for message, _ in part)

    try:
        guard_batch(ORDERS, settings, Chunk(_frame([order for _, order in orders]), last=False), entry)
        isolate(orders)
    except BaseException:
        if conn.is_open:  # else the broker has requeued them already
            done = {message.delivery_tag for message in delivered}
            conn.ack(sorted(done))
            conn.nack([message.delivery_tag for message, _ in orders if message.delivery_tag not in done], requeue=True)
        raise
    conn.ack([message.delivery_tag for message in delivered])
    letters, retried = [], []
    for message, order, exc in failed:
        if delivered:  # the systems work, so the order is at fault
            reason = _reason(exc)
        elif message.failed + 1 >= max_deliveries:
            reason = f"failed {message.failed + 1} deliveries; the last: {_reason(exc)}"
        else:
            retried.append(message)
            continue
        letters.append((message, _reject(message, order, conn.call(_stage, settings, order, caches), reason)))
    _dead_letter(conn, settings, letters, entry)
    if retried:
        get_run_logger().warning("%d orders failed, none delivered; back on the queue: %s", len(retried), _reason(failed[0][2]))
        conn.retry(retried)
        raise failed[0][2]


def _process(settings: Settings, orders: list[dict], caches: list[dict], entry: Entry) -> None:
    process_batch(ORDERS, settings, _frame(orders), caches, None, RESOLVED, entry)


def _stage(settings: Settings, order: dict, caches: list[dict]) -> str:
    """The step a lone order fails at: `transform` if shaping it (transform, enrich) raises, else `deliver`."""
    try:
        shape(ORDERS, settings, _frame([order]), caches)
    except Exception:  # noqa: BLE001 - whatever it raises, it raises while being shaped
        return "transform"
    return "deliver"


def _frame(orders: list[dict]) -> pd.DataFrame:
    raw = pd.DataFrame.from_records(orders)
    return raw.reindex(columns=[*FIELDS, *(c for c in raw.columns if c not in FIELDS)])


def _system_error(exc: BaseException) -> bool:
    return isinstance(exc, SYSTEM_ERRORS) or getattr(exc, "connection_invalidated", False)


def _reason(exc: BaseException) -> str:
    """The error's type and first line (a database's own error, not SQLAlchemy's dump of the statement)."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"[:300]


def _reject(message: Message, order: dict | None, stage: str, reason: str) -> Reject:
    """A dead letter for a message: keyed by its order's id where it has one, holding the order as it came
    (replayable like any source record), or else the body."""
    key = order.get("id") if order else None
    if not isinstance(key, str) or not key.strip():
        key = f"message:{hashlib.sha256(message.body).hexdigest()[:16]}"
    payload = order if order is not None else {"body": message.body.decode("utf-8", errors="replace")}
    return Reject(key, stage, reason, {}, [payload])


def _dead_letter(conn: AmqpQueue, settings: Settings, letters: list[tuple[Message, Reject]], entry: Entry) -> None:
    """Store the dead letters, then acknowledge their messages."""
    if not letters:
        return
    by_key = {reject.record_key: reject for _, reject in letters}  # the same order twice: its last message
    DeadLetters(settings.state_db).put(ORDERS.name, by_key.values(), flow_run.id)
    conn.ack([message.delivery_tag for message, _ in letters])
    entry.counts += Counts(rows_read=len(letters), rows_quarantined=len(letters))


def _parse(body: bytes) -> tuple[dict | None, str | None]:
    """The order in a message body, or why the body is not one (with the order, if it is an object)."""
    try:
        order = json.loads(body)
    except ValueError as exc:
        return None, f"the message is not JSON: {exc}"
    if not isinstance(order, dict):
        return None, f"the message is a JSON {_json_type(order)}, not an order object"
    if not isinstance(order.get("id"), str) or not order["id"].strip():
        return order, "the order has no id (a non-empty string)"
    if not isinstance(order.get("lines", []), list | None) or not all(isinstance(ln, dict) for ln in order.get("lines") or []):
        return order, "the order's lines are not a list of objects"
    if wrong := [f for f in FIELDS if f != "lines" and not isinstance(order.get(f), str | None)]:
        return order, f"not text: {', '.join(wrong)}"
    for n, line in enumerate(order.get("lines") or []):
        if wrong := [f for f in LINE_FIELDS if isinstance(line.get(f), dict | list)]:
            return order, "; ".join(f"lines[{n}].{f} is a JSON {_json_type(line[f])}, not a value" for f in wrong)
    return order, None


def _json_type(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def add_commands(app: typer.Typer) -> None:
    """Add `interlink consume` (registered through the `interlink.commands` entry point)."""
    app.command(help="Feed order events from RabbitMQ to orders_to_erp until the queue is idle.")(consume)


def consume(
    queue: Annotated[str, typer.Option(help="the RabbitMQ queue to read")] = "orders",
    batch_size: Annotated[int, typer.Option(min=1, help="orders per micro-batch")] = 200,
    idle_s: Annotated[float, typer.Option(min=0, help="stop after the queue has been empty this long")] = 5.0,
    max_deliveries: Annotated[int, typer.Option(min=1, help="failed deliveries of an order before it is dead-lettered")] = MAX_DELIVERIES,
) -> None:
    """Feed order events to orders_to_erp in micro-batches until the queue is idle."""
    from interlink import metrics
    from interlink.inventory import check_connections

    settings = Settings.load()
    check_connections(settings, [QUEUE, *ORDERS.connections])  # set and answering, before a run starts
    metrics.serve(settings.state_db, settings.metrics_port, settings.metrics_addr)  # the ledger's figures while it consumes
    summary = consume_order_events(queue=queue, batch_size=batch_size, idle_s=idle_s, max_deliveries=max_deliveries)
    print(f"order events: read {summary['rows_read']}, inserted {summary['rows_inserted']}, "
          f"updated {summary['rows_updated']}, quarantined {summary['rows_quarantined']}")
