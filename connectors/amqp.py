"""AMQP queues (RabbitMQ): publish messages, fetch them in batches, acknowledge each batch once handled.

`AmqpQueue` is a context manager over one pika `BlockingConnection` and channel,
with a durable queue declared on entry. Fetched messages stay unacknowledged until
`ack` or `nack`; any still open when the connection closes go back on the queue, so a
crash between fetch and ack loses nothing (delivery is at least once).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pika

POLL_S = 0.05  # pause between polls of an empty queue


@dataclass(frozen=True)
class Message:
    """A fetched message: its tag on the channel (to ack or nack it) and its body."""

    delivery_tag: int
    body: bytes
    redelivered: bool = False


class AmqpQueue:
    """One queue on a broker, for the duration of a `with` block."""

    def __init__(self, url: str, queue: str):
        self.url = url
        self.queue = queue
        self._connection: pika.BlockingConnection | None = None
        self._channel = None

    def __enter__(self) -> AmqpQueue:
        self._connection = pika.BlockingConnection(pika.URLParameters(self.url))
        self._channel = self._connection.channel()
        self._channel.confirm_delivery()  # publish returns only once the broker has the messages
        self._channel.queue_declare(self.queue, durable=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._connection and self._connection.is_open:
            self._connection.close()  # unacknowledged messages are requeued by the broker

    def publish(self, bodies: list[bytes]) -> None:
        """Put `bodies` on the queue as persistent messages, each confirmed by the broker."""
        properties = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
        for body in bodies:
            self._channel.basic_publish("", self.queue, body, properties, mandatory=True)

    def fetch(self, max_messages: int, wait_s: float) -> list[Message]:
        """Up to `max_messages` messages, unacknowledged; waits up to `wait_s` for the first one.

        Returns as soon as the queue runs dry after at least one message; empty if none came.
        """
        messages: list[Message] = []
        deadline = time.monotonic() + wait_s
        while len(messages) < max_messages:
            method, _, body = self._channel.basic_get(self.queue, auto_ack=False)
            if method is not None:
                messages.append(Message(method.delivery_tag, body, method.redelivered))
            elif messages or time.monotonic() >= deadline:
                break
            else:
                self._connection.sleep(POLL_S)  # keeps heartbeats flowing while waiting
        return messages

    def ack(self, tags: list[int]) -> None:
        """Acknowledge the messages: the broker forgets them."""
        for tag in tags:
            self._channel.basic_ack(tag)

    def nack(self, tags: list[int], requeue: bool = True) -> None:
        """Refuse the messages: back on the queue (`requeue`) or dropped / dead-lettered by the broker."""
        for tag in tags:
            self._channel.basic_nack(tag, requeue=requeue)

    def depth(self) -> int:
        """Messages ready on the queue (not counting fetched ones awaiting ack)."""
        return self._channel.queue_declare(self.queue, passive=True).method.message_count

    def delete(self) -> None:
        """Delete the queue and every message on it."""
        self._channel.queue_delete(self.queue)


def ping(url: str) -> None:
    """Open and close a connection to the broker at `url`; raises if it cannot be reached or refuses the login."""
    pika.BlockingConnection(pika.URLParameters(url)).close()
