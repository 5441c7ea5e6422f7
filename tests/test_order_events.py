"""The order-events consumer against a real RabbitMQ: micro-batches, ack after delivery, poison dead-lettered,
a failing message bounded in its deliveries, an unavailable target never held against a message, heartbeats
kept through a long batch."""

import json
import os
import sqlite3
import threading
import time
import uuid
from contextlib import closing
from dataclasses import replace

import interlink.flows.order_events as consumer
import pika
import pytest
import sqlalchemy as sa
from interlink.connectors.amqp import DELIVERIES, AmqpQueue
from interlink.connectors.errors import RetriableError
from interlink.connectors.sql import create_engine, ensure_tables
from interlink.demo_systems.storefront_data import STATUSES
from interlink.flows.order_events import consume_order_events
from interlink.flows.orders_to_erp import PIPELINE as ORDERS
from interlink.flows.orders_to_erp import to_erp_orders

from interlink.deadletter import DeadLetters
from interlink.settings import Settings

AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
MALFORMED = [b"not json", b'{"id": "ORD-000001", "lines": [', b"[1, 2, 3]", b'{"status": "paid", "lines": []}', b'"ORD-000002"']


@pytest.fixture
def queue(home, monkeypatch):
    """A fresh durable queue on the real broker, deleted afterwards, and the `order_events` connection
    pointing at the broker; skips (or fails under REQUIRE_SERVICES=1) when RabbitMQ is not reachable."""
    name = f"interlink-test-{uuid.uuid4().hex[:12]}"
    try:
        conn = AmqpQueue(AMQP_URL, name).__enter__()
    except pika.exceptions.AMQPConnectionError as exc:
        message = f"RabbitMQ is not reachable at {AMQP_URL}: {exc!r}"
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    monkeypatch.setenv("INTERLINK_ORDER_EVENTS__URL", AMQP_URL)
    yield conn
    conn.delete()
    conn.__exit__(None, None, None)


def publish(queue: str, bodies: list[bytes]) -> None:
    """Put `bodies` on `queue` with the broker's own client (pika), as persistent messages the broker confirmed."""
    with pika.BlockingConnection(pika.URLParameters(AMQP_URL)) as conn:
        channel = conn.channel()
        channel.confirm_delivery()
        for body in bodies:
            channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2), mandatory=True)


def peek(queue: str) -> dict:
    """The headers of the message at the head of `queue`, which stays there."""
    with pika.BlockingConnection(pika.URLParameters(AMQP_URL)) as conn:
        channel = conn.channel()
        method, properties, _ = channel.basic_get(queue)
        channel.basic_nack(method.delivery_tag, requeue=True)
        return properties.headers or {}


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


def clean_orders(db, count: int) -> list[dict]:
    """`count` orders that pass every check."""
    orders = [o for o in order_events(db, 4 * count) if not dirty(o)][:count]
    assert len(orders) == count
    return orders


def erp_ids(url: str) -> tuple[int, int]:
    engine = create_engine(url)
    with engine.connect() as conn:
        total, distinct = conn.execute(sa.text("SELECT count(*), count(DISTINCT order_id) FROM erp_orders")).one()
    engine.dispose()
    return total, distinct


def delivered(url: str) -> set[str]:
    engine = create_engine(url)
    with engine.connect() as conn:
        ids = set(conn.scalars(sa.text("SELECT order_id FROM erp_orders")))
    engine.dispose()
    return ids


def hold(url: str, order_id: str) -> None:
    """Make the ERP refuse `order_id` (a trigger aborts its insert), as a target-side rule would."""
    engine = create_engine(url)
    ensure_tables(engine, ORDERS.target.table, *(child.table for child in ORDERS.target.children))
    with engine.begin() as conn:
        conn.execute(sa.text(
            f"CREATE TRIGGER hold BEFORE INSERT ON erp_orders WHEN NEW.order_id = '{order_id}' "
            f"BEGIN SELECT RAISE(ABORT, 'order {order_id} is on hold'); END"
        ))
    engine.dispose()


def release(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TRIGGER hold"))
    engine.dispose()


def letters(status: str = "open") -> dict[str, dict]:
    return {e["record_key"]: e for e in DeadLetters(Settings().state_db).entries("orders_to_erp", status)}


def consume(queue: AmqpQueue, **options) -> dict:
    return consume_order_events(queue=queue.queue, idle_s=0.5, **options)


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

    open_letters = letters().values()
    assert {e["record_key"] for e in open_letters if e["stage"] == "check"} == {o["id"] for o in orders} - valid
    ingest = [e for e in open_letters if e["stage"] == "ingest"]
    assert len(ingest) == len(MALFORMED) and all(e["record_key"].startswith("message:") for e in ingest)
    expected = [json.loads(b) if b.startswith(b'{"status') else {"body": b.decode()} for b in MALFORMED]
    assert sorted(json.dumps(e["payload"][0]) for e in ingest) == sorted(map(json.dumps, expected))

    assert again["rows_inserted"] == again["rows_updated"] == 0 and again["rows_read"] == 20
    assert erp_ids(erp_url) == (len(valid), len(valid))
    assert queue.depth() == 0


def test_poison_among_good_messages_is_dead_lettered_and_the_good_ones_delivered(
    storefront, storefront_db, home, queue, monkeypatch
):
    """The reported case: an order whose `sku` is an object failed every run and was requeued
    forever, holding up the good orders behind it."""
    erp_url = f"sqlite:///{home / 'erp.db'}"
    monkeypatch.setenv("INTERLINK_ERP__URL", erp_url)
    *good, poison = clean_orders(storefront_db, 7)
    poison["lines"][0]["sku"] = {"code": poison["lines"][0]["sku"]}
    publish(queue.queue, [
        *(json.dumps(order).encode() for order in good[:3]),
        json.dumps(poison).encode(),
        b'{"id": "ORD-000001", "lines": [',  # not JSON
        json.dumps([good[0]]).encode(),  # an array, not an order
        *(json.dumps(order).encode() for order in good[3:]),
    ])

    with storefront():
        first = consume(queue)
        second = consume(queue)

    assert delivered(erp_url) == {order["id"] for order in good}
    assert (first["rows_read"], first["rows_inserted"], first["rows_quarantined"]) == (9, 6, 3)
    assert queue.depth() == 0 and second["rows_read"] == 0  # nothing requeued
    dead = letters()
    assert len(dead) == 3
    assert dead[poison["id"]]["stage"] == "ingest"
    assert dead[poison["id"]]["reason"] == "lines[0].sku is a JSON object, not a value"
    assert dead[poison["id"]]["payload"] == [poison]  # the order as it came, replayable like any record
    reasons = sorted(e["reason"] for e in dead.values() if e["record_key"] != poison["id"])
    assert reasons[0] == "the message is a JSON array, not an order object"
    assert reasons[1].startswith("the message is not JSON: ")


def test_an_order_the_target_refuses_is_dead_lettered_alone_and_replayed_once_the_cause_is_gone(
    storefront, storefront_db, home, queue, monkeypatch
):
    erp_url = f"sqlite:///{home / 'erp.db'}"
    monkeypatch.setenv("INTERLINK_ERP__URL", erp_url)
    orders = clean_orders(storefront_db, 12)
    held = orders[5]
    hold(erp_url, held["id"])
    publish(queue.queue, [json.dumps(order).encode() for order in orders])

    with storefront():
        summary = consume(queue)
    assert delivered(erp_url) == {order["id"] for order in orders} - {held["id"]}
    assert (summary["rows_read"], summary["rows_inserted"], summary["rows_quarantined"]) == (12, 11, 1)
    assert queue.depth() == 0
    letter = letters()[held["id"]]
    assert letter["stage"] == "deliver" and f"order {held['id']} is on hold" in letter["reason"]
    assert letter["payload"] == [held]

    release(erp_url)
    with storefront():
        replayed = ORDERS.replay()
    assert replayed["rows_inserted"] == 1 and held["id"] in delivered(erp_url)
    assert letters() == {} and list(letters("replayed")) == [held["id"]]


def crashing_on(order_id: str):
    """The orders transform, crashing (not a data error: nothing the pipeline isolates) on a batch holding `order_id`."""

    def transform(raw):
        if (raw["id"] == order_id).any():
            raise RuntimeError(f"the pricing engine crashed on {order_id}")
        return to_erp_orders.fn(raw)

    return transform


def test_an_order_that_crashes_the_transform_is_dead_lettered_and_its_batch_delivered(
    storefront, storefront_db, home, queue, monkeypatch
):
    erp_url = f"sqlite:///{home / 'erp.db'}"
    monkeypatch.setenv("INTERLINK_ERP__URL", erp_url)
    orders = clean_orders(storefront_db, 12)
    crasher = orders[7]
    monkeypatch.setattr(consumer, "ORDERS", replace(ORDERS, transform=crashing_on(crasher["id"])))
    publish(queue.queue, [json.dumps(order).encode() for order in orders])

    with storefront():
        summary = consume(queue)

    assert delivered(erp_url) == {order["id"] for order in orders} - {crasher["id"]}
    assert (summary["rows_read"], summary["rows_inserted"], summary["rows_quarantined"]) == (12, 11, 1)
    assert queue.depth() == 0
    letter = letters()[crasher["id"]]
    assert letter["stage"] == "transform" and letter["payload"] == [crasher]
    assert letter["reason"] == f"RuntimeError: the pricing engine crashed on {crasher['id']}"


def test_a_message_that_fails_alone_is_dead_lettered_after_max_deliveries(storefront, storefront_db, home, queue, monkeypatch):
    erp_url = f"sqlite:///{home / 'erp.db'}"
    monkeypatch.setenv("INTERLINK_ERP__URL", erp_url)
    crasher = clean_orders(storefront_db, 1)[0]
    monkeypatch.setattr(consumer, "ORDERS", replace(ORDERS, transform=crashing_on(crasher["id"])))
    publish(queue.queue, [json.dumps(crasher).encode()])

    with storefront():
        for attempt in (1, 2):  # alone, its fault cannot be told from a system's: the run fails, the message waits
            with pytest.raises(RuntimeError, match="pricing engine"):
                consume(queue, max_deliveries=3)
            assert queue.depth() == 1 and peek(queue.queue)[DELIVERIES] == attempt
            assert letters() == {}
        last = consume(queue, max_deliveries=3)

    assert (last["rows_read"], last["rows_quarantined"]) == (1, 1)
    assert queue.depth() == 0
    letter = letters()[crasher["id"]]
    assert letter["stage"] == "transform" and letter["payload"] == [crasher]
    assert letter["reason"] == f"failed 3 deliveries; the last: RuntimeError: the pricing engine crashed on {crasher['id']}"


def test_a_batch_that_cannot_be_delivered_stays_on_the_queue(storefront, storefront_db, home, queue, monkeypatch):
    """An unavailable target is no message's fault: however often it happens, nothing is dead-lettered for it."""
    monkeypatch.setenv("INTERLINK_ERP__URL", "postgresql+psycopg://u@127.0.0.1:1/x")
    orders = order_events(storefront_db, 30)
    queue.publish([json.dumps(order).encode() for order in orders] + [b"not json"])

    with storefront():
        for _ in range(3):
            with pytest.raises(sa.exc.OperationalError):
                consume(queue, batch_size=50, max_deliveries=2)
            assert queue.depth() == 30  # requeued; only the poison message was acknowledged

    assert DELIVERIES not in peek(queue.queue)
    open_letters = letters().values()
    assert [e["stage"] for e in open_letters if e["stage"] != "check"] == ["ingest"]  # checks ran before delivery
    assert {e["record_key"] for e in open_letters if e["stage"] == "check"} == {o["id"] for o in orders if dirty(o)}


def slow_transform(raw):
    """The orders transform behind 7 s of pure-Python work, longer than three 2 s heartbeat intervals."""
    deadline = time.monotonic() + 7
    while time.monotonic() < deadline:
        sum(range(10_000))
    return to_erp_orders.fn(raw)


def test_a_batch_longer_than_the_heartbeat_keeps_its_connection(storefront, storefront_db, home, queue, monkeypatch):
    erp_url = f"sqlite:///{home / 'erp.db'}"
    monkeypatch.setenv("INTERLINK_ERP__URL", erp_url)
    monkeypatch.setenv("INTERLINK_ORDER_EVENTS__URL", f"{AMQP_URL}?heartbeat=2")
    monkeypatch.setattr(consumer, "ORDERS", replace(ORDERS, transform=slow_transform))
    orders = clean_orders(storefront_db, 10)
    publish(queue.queue, [json.dumps(order).encode() for order in orders])

    with storefront():
        summary = consume(queue, batch_size=5)

    assert (summary["rows_read"], summary["rows_inserted"]) == (10, 10)
    assert delivered(erp_url) == {order["id"] for order in orders}
    assert queue.depth() == 0


def test_a_connection_lost_while_work_runs_is_retriable_once_the_work_is_done():
    lost = threading.Event()

    class Lost:  # a connection the broker drops while the work runs
        def process_data_events(self, time_limit):
            lost.set()
            raise pika.exceptions.StreamLostError("Stream connection lost: ConnectionResetError(104)")

    queue = AmqpQueue(AMQP_URL, "unused")
    queue._connection = Lost()
    finished = []
    with pytest.raises(RetriableError, match="queue unused: the connection to the broker was lost"):
        queue.call(lambda: finished.append(lost.wait(10)))
    assert finished == [True]  # the work was not abandoned halfway
