"""Order events from a queue → ERP, in micro-batches, through the same steps as an `orders_to_erp` sync.

Each message is one storefront order as JSON (the shape `GET /orders` returns). A
message that is not such an order is poison: it is dead-lettered at stage `ingest` and
acknowledged, never requeued. The valid ones of a batch are checked and delivered as
one sync batch would be (failing rows dead-lettered, the rest upserted idempotently,
no watermark moved), and acknowledged only once delivered; if that fails, they go back
on the queue and the run fails. Delivery is at least once: a redelivered order changes nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json

import pandas as pd
from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import State

from connectors.amqp import AmqpQueue, Message
from flows.orders_to_erp import PIPELINE as ORDERS
from flows.pipeline import final_state, guard_batch, ledgered, process_batch, run_report
from interlink.cli import positive
from interlink.deadletter import RESOLVED, DeadLetters, Reject
from interlink.ledger import Counts, Entry
from interlink.settings import Settings
from tasks.ingest import Chunk

FIELDS = list(ORDERS.contract.fields)
QUEUE = "order_events"  # the connection of the broker the events come from


@flow(name="consume_order_events", description="Order events from a queue → ERP, in micro-batches")
def consume_order_events(
    queue_url: str | None = None,
    queue: str = "orders",
    batch_size: int = 200,
    max_batches: int | None = None,
    idle_s: float = 1.0,
) -> State:
    """Consume batches until `max_batches` are done or the queue stays empty for `idle_s` seconds."""
    settings = Settings.load()
    url = queue_url or settings.connection(QUEUE).url
    with ledgered(ORDERS, settings, "stream", None) as entry, AmqpQueue(url, queue) as conn:
        caches: list[dict] = [{} for _ in ORDERS.enrichers]
        batches = 0
        while max_batches is None or batches < max_batches:
            if not (messages := conn.fetch(batch_size, idle_s)):
                break
            _consume(conn, settings, messages, caches, entry)
            batches += 1
        get_run_logger().info("%d batches from queue %s: %s", batches, queue, entry.counts)
        entry.report = run_report(ORDERS, settings, entry, None)
    return final_state(ORDERS, entry)


def _consume(conn: AmqpQueue, settings: Settings, messages: list[Message], caches: list[dict], entry: Entry) -> None:
    """One batch: poison dead-lettered and acked at once, the orders processed, then acked (or requeued)."""
    orders, tags, poison = [], [], []
    for message in messages:
        text = message.body.decode("utf-8", errors="replace")
        order, problem = _parse(text)
        if problem:
            digest = hashlib.sha256(message.body).hexdigest()[:16]
            poison.append((message.delivery_tag, Reject(f"message:{digest}", "ingest", problem, {}, [{"body": text}])))
        else:
            orders.append(order)
            tags.append(message.delivery_tag)
    if poison:
        DeadLetters(settings.state_db).put(ORDERS.name, [reject for _, reject in poison], flow_run.id)
        conn.ack([tag for tag, _ in poison])
        entry.counts += Counts(rows_read=len(poison), rows_quarantined=len(poison))
    if not orders:
        return
    raw = pd.DataFrame.from_records(orders)
    raw = raw.reindex(columns=[*FIELDS, *(c for c in raw.columns if c not in FIELDS)])
    try:
        guard_batch(ORDERS, settings, Chunk(raw, last=False), entry)
        process_batch(ORDERS, settings, raw, caches, None, RESOLVED, entry)
    except BaseException:
        conn.nack(tags, requeue=True)
        raise
    conn.ack(tags)


def _parse(text: str) -> tuple[dict | None, str | None]:
    """The order in a message body, or why the body is not one."""
    try:
        order = json.loads(text)
    except ValueError as exc:
        return None, f"the message is not JSON: {exc}"
    if not isinstance(order, dict):
        return None, f"the message is a JSON {type(order).__name__}, not an order object"
    if not isinstance(order.get("id"), str) or not order["id"].strip():
        return None, "the order has no id (a non-empty string)"
    if not isinstance(order.get("lines", []), list | None) or not all(isinstance(ln, dict) for ln in order.get("lines") or []):
        return None, "the order's lines are not a list of objects"
    if wrong := [f for f in FIELDS if f != "lines" and not isinstance(order.get(f), str | None)]:
        return None, f"not text: {', '.join(wrong)}"
    return order, None


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add `interlink consume` (registered through the `interlink.commands` entry point)."""
    p = commands.add_parser("consume", help="feed order events from RabbitMQ to orders_to_erp until the queue is idle")
    p.add_argument("--queue", default="orders")
    p.add_argument("--batch-size", type=positive, default=200)
    p.add_argument("--idle-s", type=float, default=5.0)
    p.set_defaults(command=consume)


def consume(args: argparse.Namespace, settings: Settings) -> None:
    """Feed order events to orders_to_erp in micro-batches until the queue is idle."""
    settings.require([QUEUE, *ORDERS.connections])
    summary = consume_order_events(queue=args.queue, batch_size=args.batch_size, idle_s=args.idle_s)
    print(f"order events: read {summary['rows_read']}, inserted {summary['rows_inserted']}, "
          f"updated {summary['rows_updated']}, quarantined {summary['rows_quarantined']}")
