"""The order-events consumer against a real RabbitMQ: micro-batches, ack after delivery, poison dead-lettered."""

import json
import os
import sqlite3
import uuid
from contextlib import closing

import pika
import pytest
import sqlalchemy as sa

from connectors.amqp import AmqpQueue
from connectors.sql import create_engine
from demo_systems.storefront_data import STATUSES
from flows.order_events import consume_order_events
from interlink.deadletter import DeadLetters
from interlink.settings import Settings

AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
MALFORMED = [b"not json", b'{"id": "ORD-000001", "lines": [', b"[1, 2, 3]", b'{"status": "paid", "lines": []}', b'"ORD-000002"']


@pytest.fixture
def queue():
    """A fresh durable queue on the real broker, deleted afterwards; skips (or fails under
    REQUIRE_SERVICES=1) when RabbitMQ is not reachable."""
    name = f"interlink-test-{uuid.uuid4().hex[:12]}"
    try:
        conn = AmqpQueue(AMQP_URL, name).__enter__()
    except pika.exceptions.AMQPConnectionError as exc:
        message = f"RabbitMQ is not reachable at {AMQP_URL}: {exc!r}"
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    yield conn
    conn.delete()
    conn.__exit__(None, None, None)


def order_events(db, count: int) -> list[dict]:
    """The first `count` orders as `GET /orders` returns them, with their lines."""
    with closing(sqlite3.connect(db)) as conn:
        fields = "id, customer_email, currency, status, placed_at, updated_at"
        orders = [
            dict(zip(fields.split(", "), row))
            for row in conn.execute(f"SELECT {fields} FROM orders ORDER BY updated_at, row_id LIMIT ?", (count,))
        ]
        for order in orders:
            order["lines"] = [
                dict(zip(("line_no", "sku", "quantity", "unit_price"), row))
                for row in conn.execute(
                    "SELECT line_no, sku, quantity, unit_price FROM order_lines WHERE order_id = ? ORDER BY line_no",
                    (order["id"],),
                )
            ]
    return orders


def dirty(order: dict) -> bool:
    """Whether the demo storefront's dirt fails the order's checks."""
    return (
        order["customer_email"] is None
        or order["currency"] == "XYZ"
        or order["status"] not in STATUSES
        or any(line["quantity"] < 1 for line in order["lines"])
    )


def erp_ids(url: str) -> tuple[int, int]:
    engine = create_engine(url)
    with engine.connect() as conn:
        total, distinct = conn.execute(sa.text("SELECT count(*), count(DISTINCT order_id) FROM erp_orders")).one()
    engine.dispose()
    return total, distinct


def consume(queue: AmqpQueue, **options) -> dict:
    return consume_order_events(queue_url=AMQP_URL, queue=queue.queue, idle_s=0.5, **options)


def test_events_are_delivered_once_acked_after_delivery_and_poison_is_dead_lettered(
    storefront, storefront_db, home, queue, monkeypatch
):
    erp_url = f"sqlite:///{home / 'erp.db'}"
    monkeypatch.setenv("INTERLINK_ERP__URL", erp_url)
    orders = order_events(storefront_db, 300)
    bodies = [json.dumps(order).encode() for order in orders]
    for n, bad in enumerate(MALFORMED):  # spread among the orders
        bodies.insert(60 * n + 7, bad)
    queue.publish(bodies)

    with storefront():
        stopped = consume(queue, batch_size=50, max_batches=2)
        assert queue.depth() == len(bodies) - 100  # the rest waits, untouched
        rest = consume(queue, batch_size=50)
        assert queue.depth() == 0
        queue.publish(bodies[10:30])  # redelivered events
        again = consume(queue, batch_size=50)

    assert stopped["rows_read"] + rest["rows_read"] == len(bodies)
    valid = {o["id"] for o in orders if not dirty(o)}
    assert valid and len(valid) < len(orders)
    assert erp_ids(erp_url) == (len(valid), len(valid))
    assert stopped["rows_inserted"] + rest["rows_inserted"] == len(valid)

    letters = DeadLetters(Settings().state_db).entries("orders_to_erp", "open")
    assert {e["record_key"] for e in letters if e["stage"] == "check"} == {o["id"] for o in orders} - valid
    ingest = [e for e in letters if e["stage"] == "ingest"]
    assert len(ingest) == len(MALFORMED) and all(e["record_key"].startswith("message:") for e in ingest)
    assert {e["payload"][0]["body"] for e in ingest} == {b.decode() for b in MALFORMED}

    assert again["rows_inserted"] == again["rows_updated"] == 0 and again["rows_read"] == 20
    assert erp_ids(erp_url) == (len(valid), len(valid))
    assert queue.depth() == 0


def test_a_batch_that_cannot_be_delivered_stays_on_the_queue(storefront, storefront_db, home, queue, monkeypatch):
    monkeypatch.setenv("INTERLINK_ERP__URL", "postgresql+psycopg://u@127.0.0.1:1/x")
    orders = order_events(storefront_db, 30)
    queue.publish([json.dumps(order).encode() for order in orders] + [b"not json"])

    with storefront(), pytest.raises(sa.exc.OperationalError):
        consume(queue, batch_size=50)

    assert queue.depth() == 30  # requeued; only the poison message was acknowledged
    letters = DeadLetters(Settings().state_db).entries("orders_to_erp", "open")
    assert [e["stage"] for e in letters if e["stage"] != "check"] == ["ingest"]  # checks ran before delivery
    assert {e["record_key"] for e in letters if e["stage"] == "check"} == {o["id"] for o in orders if dirty(o)}
