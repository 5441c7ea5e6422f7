"""AMQP queues (RabbitMQ): publish messages, fetch them in batches, acknowledge each batch once handled.

`AmqpQueue` is a context manager over one pika `BlockingConnection` and channel,
with a durable queue declared on entry. Fetched messages stay unacknowledged until
`ack`, `nack` or `retry`; any still open when the connection closes go back on the
queue, so a crash between fetch and ack loses nothing (delivery is at least once).

Failed deliveries are counted in the message itself: `retry` puts a copy back at the end
of the queue with the `x-interlink-deliveries` header raised by one, then acks the
original (RabbitMQ's own `x-delivery-count` exists only on quorum queues).

pika's blocking connection answers the broker's heartbeats only while it is called, so
long work on fetched messages goes through `call`, which runs it in a thread while this
one keeps the connection alive.

The messages ready on the queue are kept in `interlink_queue_messages{connection, queue}` (`interlink.connectors.telemetry`),
updated at no extra cost on entry (the queue's declaration) and by every `fetch` (each `basic_get` answer says how many
remain), and by `depth`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pika
from interlink.connectors.errors import RetriableError
from interlink.connectors.telemetry import queue_messages

POLL_S = 0.05  # pause between polls of an empty queue
DELIVERIES = "x-interlink-deliveries"  # header: how many deliveries of the message failed before
Result = TypeVar("Result")


@dataclass(frozen=True)
class Message:
    """A fetched message: its tag on the channel (to ack or nack it), its body, and its headers."""

    delivery_tag: int
    body: bytes
    redelivered: bool = False
    headers: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        """How many earlier deliveries of this message failed (as counted by `retry`)."""
        return int(self.headers.get(DELIVERIES, 0))


class AmqpQueue:
    """One queue on a broker, for the duration of a `with` block; `name` is its connection's declared name (for metrics)."""

    def __init__(self, url: str, queue: str, name: str = "amqp"):
        self.url = url
        self.queue = queue
        self.name = name
        self._ready = queue_messages(name, queue)
        self._connection: pika.BlockingConnection | None = None
        self._channel = None

    def __enter__(self) -> AmqpQueue:
        self._connection = pika.BlockingConnection(pika.URLParameters(self.url))
        self._channel = self._connection.channel()
        self._channel.confirm_delivery()  # publish returns only once the broker has the messages
        self._ready.set(self._channel.queue_declare(self.queue, durable=True).method.message_count)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._connection and self._connection.is_open:
            self._connection.close()  # unacknowledged messages are requeued by the broker

    def publish(self, bodies: list[bytes], headers: dict[str, Any] | None = None) -> None:
        """Put `bodies` on the queue as persistent messages, each confirmed by the broker."""
        properties = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent, headers=headers)
        for body in bodies:
            self._channel.basic_publish("", self.queue, body, properties, mandatory=True)

    def fetch(self, max_messages: int, wait_s: float) -> list[Message]:
        """Up to `max_messages` messages, unacknowledged; waits up to `wait_s` for the first one.

        Returns as soon as the queue runs dry after at least one message; empty if none came.
        """
        messages: list[Message] = []
        deadline = time.monotonic() + wait_s
        ready = None
        while len(messages) < max_messages:
            method, properties, body = self._channel.basic_get(self.queue, auto_ack=False)
            if method is not None:
                messages.append(Message(method.delivery_tag, body, method.redelivered, dict(properties.headers or {})))
                ready = method.message_count  # the messages still ready after this one
            elif messages or time.monotonic() >= deadline:
                ready = 0
                break
            else:
                self._connection.sleep(POLL_S)  # keeps heartbeats flowing while waiting
        if ready is not None:
            self._ready.set(ready)
        return messages

    def ack(self, tags: list[int]) -> None:
        """Acknowledge the messages: the broker forgets them."""
        for tag in tags:
            self._channel.basic_ack(tag)

    def nack(self, tags: list[int], requeue: bool = True) -> None:
        """Refuse the messages: back on the queue (`requeue`) or dropped / dead-lettered by the broker."""
        for tag in tags:
            self._channel.basic_nack(tag, requeue=requeue)

    def retry(self, messages: list[Message]) -> None:
        """Put each message back at the end of the queue with one more failed delivery counted, then ack it.

        The copy is confirmed by the broker before the original is acked: a crash in between
        leaves both, never neither.
        """
        for message in messages:
            self.publish([message.body], {**message.headers, DELIVERIES: message.failed + 1})
        self.ack([message.delivery_tag for message in messages])

    def call(self, work: Callable[..., Result], *args: Any) -> Result:
        """`work(*args)` in a worker thread (in a copy of this thread's context), while this thread keeps the
        connection's heartbeats going; returns what it returns, or raises what it raises.

        Should the connection be lost meanwhile, the work still finishes, then `RetriableError` is raised
        (the broker has requeued every unacknowledged message by then).
        """
        with ThreadPoolExecutor(1, thread_name_prefix=f"amqp-{self.queue}") as worker:
            done = worker.submit(copy_context().run, work, *args)
            try:
                while not done.done():
                    self._connection.process_data_events(time_limit=0.1)
            except pika.exceptions.AMQPError as exc:
                raise RetriableError(f"queue {self.queue}: the connection to the broker was lost ({exc!r})") from exc
            return done.result()

    @property
    def is_open(self) -> bool:
        """Whether the channel can still ack or nack the messages fetched on it."""
        return bool(self._channel and self._channel.is_open)

    def depth(self) -> int:
        """Messages ready on the queue (not counting fetched ones awaiting ack)."""
        ready = self._channel.queue_declare(self.queue, passive=True).method.message_count
        self._ready.set(ready)
        return ready

    def delete(self) -> None:
        """Delete the queue and every message on it."""
        self._channel.queue_delete(self.queue)


def ping(url: str) -> None:
    """Open and close a connection to the broker at `url`; raises if it cannot be reached or refuses the login."""
    pika.BlockingConnection(pika.URLParameters(url)).close()
