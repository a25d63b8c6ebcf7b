"""The adapter interface: all the outbox needs of a broker.

Three operations, each mapped to what the broker does natively:

- ``topology_declare``: create what must exist before anything is published or consumed
  (RabbitMQ: exchanges, the service's queue and bindings; NATS: the streams and the durable
  consumer). Idempotent; called by publishers before their first publish and by consumers
  when they start.
- ``publish_batch``: send many messages and wait until the broker has taken responsibility for
  each (RabbitMQ publisher confirms, JetStream publish acks): one round trip for the batch, not
  one per message. Returns, per message, ``None`` (confirmed) or the error.
- ``service_types``: of the given event types, those one consuming service's queue or durable
  consumer takes, as the service itself declared them (None: nothing declared under that
  name). A replay to one service (``OutgoingMessage.service``) is published to it alone.
- ``consume``: hand the messages it already holds (up to ``prefetch``, never waiting for more:
  one message alone is handed over at once) to a callback as a batch, in the broker's order,
  and settle each, after the callback returned, as its verdict says: ``ACK`` (stored, or a
  duplicate), ``DEAD`` (malformed: to the dead-letter exchange or subject, never back into the
  queue) or ``RETRY`` (this side failed, e.g. its database: redeliver later); then, once the
  batch is settled, calls ``on_settled`` (the consumer runs what it stored: the broker's
  connection must stay alive meanwhile). Reconnects by itself; returns when ``stop`` is set.

Kafka fits the same shape: a topic per namespace (or per app), the message key = the
``partition_key`` (the aggregate key, so one aggregate's events share a partition and keep their
order), ``publish_batch`` = produce with ``acks=all`` and flush, ``consume`` = a consumer group
named after the service, each ``poll``'s messages a batch, committing offsets after the
callback, ``DEAD`` = produce to a dead-letter topic then commit.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


class Verdict(enum.Enum):
    ACK = "ack"
    DEAD = "dead"
    RETRY = "retry"


@dataclass(frozen=True)
class OutgoingMessage:
    event_id: str
    event_type: str
    # The aggregate key: ordering (and a Kafka partition) is per this key.
    partition_key: str
    # The CloudEvent, already bound to this adapter's protocol by outbox.bus.wire.
    headers: dict
    content_type: str
    body: bytes
    # A replay addressed to this one consuming service alone (None: the topic every service
    # that handles the type listens to).
    service: str | None = None


@dataclass(frozen=True)
class ReceivedMessage:
    headers: dict
    content_type: str | None
    body: bytes
    # How many times the broker says it delivered this message before (0: first time), when it
    # knows; for logs only.
    redelivered: bool = False


@dataclass(frozen=True)
class ConsumerStats:
    # Messages waiting for this service's consumer (queue depth / JetStream num_pending).
    lag: int | None = None
    # Messages kept by the alternate exchange because nothing was bound for them.
    unroutable: int | None = None


class BusAdapter(Protocol):
    def topology_declare(self, *, service: str | None, event_types: Sequence[str]) -> None: ...

    def publish_batch(
        self, messages: Sequence[OutgoingMessage], *, timeout: float
    ) -> list[Exception | None]: ...

    def consume(
        self,
        *,
        service: str,
        event_types: Sequence[str],
        on_batch: Callable[[Sequence[ReceivedMessage]], Sequence[Verdict]],
        stop: threading.Event,
        prefetch: int,
        on_idle: Callable[[], None] | None = None,
        on_settled: Callable[[], None] | None = None,
    ) -> None: ...

    def service_types(self, *, service: str, event_types: Sequence[str]) -> list[str] | None: ...

    def stats(self, *, service: str) -> ConsumerStats: ...

    def encode(self, attributes: dict, payload: dict) -> tuple[dict, str, bytes]: ...

    def decode(self, message: ReceivedMessage): ...

    def close(self) -> None: ...
