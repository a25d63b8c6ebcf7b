"""RabbitMQ through kombu / py-amqp.

Topology (``<ns>`` is EVENT_BUS's NAMESPACE):

- ``<ns>.events``: one durable topic exchange; the routing key is the event type
  (``orders.OrderPlaced``). Its alternate exchange ``<ns>.unroutable`` (fanout) keeps, in the
  quorum queue ``<ns>.unroutable``, whatever no queue was bound for.
- ``<ns>.<service>``: each consuming service's durable quorum queue, bound to exactly the types
  its subscribers handle. Messages it rejects go to ``<ns>.dead`` (topic) with the service's
  name as routing key, into the quorum queue ``<ns>.<service>.dead``.
- ``<ns>.replay.<service>.<type>``: per consuming service and type it handles, a durable fanout
  exchange bound to that service's queue alone. A replay addressed to one service
  (``outbox_replay --to-service``) is published there (mandatory: a message nothing takes comes
  back and counts as failed), so no other service receives it; that the exchange exists is how
  the publishing side learns which types the service takes.

Publishing uses publisher confirms on one channel: every message of a batch is written, then
the confirms are read until each delivery tag is acked (or nacked), so a batch costs one round
trip. Messages are persistent (delivery mode 2) and carry the event id as ``message_id``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence

import amqp
import kombu.exceptions
from kombu import Connection, Consumer, Exchange, Queue, binding

from outbox.bus import wire
from outbox.bus.adapters.base import (
    ConsumerStats,
    OutgoingMessage,
    ReceivedMessage,
    Verdict,
)

logger = logging.getLogger(__name__)

QUORUM = {"x-queue-type": "quorum"}
RECONNECT_CAP_SECONDS = 10.0
# The consumer's connection heartbeat: the broker drops a connection that sent nothing for
# about two of these (a consumer's run of what it stored answers none: ``consume``).
HEARTBEAT_SECONDS = 10


# A batch's frames are sent in socket writes of about this size, not one write per message.
WRITE_CHUNK_BYTES = 256 * 1024


class Nacked(Exception):
    pass


class Unroutable(Exception):
    pass


@contextlib.contextmanager
def _coalesced_writes(connection):
    """Gather the frames py-amqp writes into few large ``sendall`` calls.

    py-amqp writes every message's frames with a ``sendall`` of its own (TCP_NODELAY on): for a
    batch of hundreds that is hundreds of system calls and packets, the largest single cost of
    publishing it. Its transport writes through ``transport._write``; within this block that
    appends to a buffer (a copy: py-amqp reuses its frame buffer) sent every
    ``WRITE_CHUNK_BYTES`` and at the end. Nothing changes on the wire but the packet
    boundaries; a transport without ``_write`` writes as before.
    """
    transport = getattr(connection, "transport", None)
    real = getattr(transport, "_write", None)
    if real is None:
        yield
        return
    buffer = bytearray()

    def write(data) -> None:
        buffer.extend(data)
        if len(buffer) >= WRITE_CHUNK_BYTES:
            real(bytes(buffer))
            buffer.clear()

    transport._write = write
    try:
        yield
    finally:
        transport._write = real
    if buffer:
        real(bytes(buffer))


def _take_waiting(conn, held: list, limit: int) -> None:
    """Read whatever the broker has already pushed, up to ``limit`` messages held, without
    waiting for more: a read with a timeout of 0 ends at the first frame not yet arrived (a
    message half read is completed by the next read)."""
    while len(held) < limit:
        try:
            conn.drain_events(timeout=0)
        except TimeoutError:
            return


def _received(message) -> ReceivedMessage:
    return ReceivedMessage(
        headers=dict(message.headers or {}),
        content_type=message.content_type,
        body=message.body,
        redelivered=bool(message.delivery_info.get("redelivered")),
    )


class RabbitMQAdapter:
    def __init__(self, url: str, *, namespace: str) -> None:
        self.url = url
        self.namespace = namespace
        self.events = Exchange(
            f"{namespace}.events",
            type="topic",
            durable=True,
            arguments={"alternate-exchange": f"{namespace}.unroutable"},
        )
        self.unroutable = Exchange(f"{namespace}.unroutable", type="fanout", durable=True)
        self.dead = Exchange(f"{namespace}.dead", type="topic", durable=True)
        self._publisher: Connection | None = None
        self._channel = None
        self._declared = False
        self._lock = threading.Lock()
        self._connection_errors = tuple(Connection(url).connection_errors)

    # --- names --------------------------------------------------------------------------

    def queue_name(self, service: str) -> str:
        return f"{self.namespace}.{service}"

    def _unroutable_queue(self) -> Queue:
        return Queue(
            f"{self.namespace}.unroutable",
            exchange=self.unroutable,
            durable=True,
            queue_arguments=QUORUM,
        )

    def _dead_queue(self, service: str) -> Queue:
        return Queue(
            f"{self.queue_name(service)}.dead",
            exchange=self.dead,
            routing_key=service,
            durable=True,
            queue_arguments=QUORUM,
        )

    def replay_exchange(self, service: str, event_type: str) -> Exchange:
        return Exchange(
            f"{self.namespace}.replay.{service}.{event_type}", type="fanout", durable=True
        )

    def _service_queue(self, service: str, event_types: Sequence[str]) -> Queue:
        types = sorted(set(event_types))
        return Queue(
            self.queue_name(service),
            bindings=[binding(self.events, routing_key=t) for t in types]
            + [binding(self.replay_exchange(service, t), routing_key="") for t in types],
            durable=True,
            queue_arguments={
                **QUORUM,
                "x-dead-letter-exchange": self.dead.name,
                "x-dead-letter-routing-key": service,
            },
        )

    # --- topology -----------------------------------------------------------------------

    def topology_declare(self, *, service: str | None, event_types: Sequence[str]) -> None:
        with Connection(self.url, connect_timeout=5) as conn:
            self._declare(conn.default_channel, service, event_types)

    def _declare(self, channel, service: str | None, event_types: Sequence[str]) -> None:
        for exchange in (self.unroutable, self.dead, self.events):
            exchange(channel).declare()
        self._unroutable_queue()(channel).declare()
        if service is not None:
            self._dead_queue(service)(channel).declare()
            if event_types:
                self._service_queue(service, event_types)(channel).declare()

    def service_types(self, *, service: str, event_types: Sequence[str]) -> list[str] | None:
        """Of ``event_types``, those whose replay exchange for ``service`` exists (declared with
        the service's queue, from its own subscribers); None when it has no queue."""
        with Connection(self.url, connect_timeout=5) as conn:
            conn.ensure_connection(max_retries=1)
            if not self._exists(conn, "queue", self.queue_name(service)):
                return None
            return [
                t
                for t in event_types
                if self._exists(conn, "exchange", self.replay_exchange(service, t).name)
            ]

    @staticmethod
    def _exists(conn, kind: str, name: str) -> bool:
        # A passive declare of what does not exist closes the channel: one channel per probe.
        channel = conn.channel()
        try:
            if kind == "queue":
                channel.queue_declare(name, passive=True)
            else:
                channel.exchange_declare(name, "fanout", passive=True)
        except amqp.exceptions.NotFound:
            return False
        with contextlib.suppress(Exception):
            channel.close()
        return True

    def topology_delete(self, *, services: Sequence[str], event_types: Sequence[str] = ()) -> None:
        """Remove everything this namespace declared (tests, decommissioning); the replay
        exchanges of ``event_types`` (default: every registered type)."""
        from outbox.events import event_types_all

        types = event_types or [cls.event_type for cls in event_types_all()]
        with Connection(self.url, connect_timeout=5) as conn:
            channel = conn.default_channel
            for service in services:
                for name in (self.queue_name(service), f"{self.queue_name(service)}.dead"):
                    channel.queue_delete(name)
                for event_type in types:
                    channel.exchange_delete(self.replay_exchange(service, event_type).name)
            channel.queue_delete(f"{self.namespace}.unroutable")
            for exchange in (self.events, self.dead, self.unroutable):
                channel.exchange_delete(exchange.name)

    # --- publishing ---------------------------------------------------------------------

    def encode(self, attributes: dict, payload: dict) -> tuple[dict, str, bytes]:
        return wire.amqp_encode(attributes, payload)

    def decode(self, message: ReceivedMessage):
        return wire.amqp_decode(message.headers, message.content_type, message.body)

    def _publishing_channel(self):
        if self._channel is None:
            self._publisher = Connection(self.url, connect_timeout=5)
            self._publisher.ensure_connection(max_retries=1)
            channel = self._publisher.channel()
            if not self._declared:
                # Before the first publish: the exchange and its alternate exist, so nothing
                # is dropped for want of a listener.
                self._declare(channel, None, ())
                self._declared = True
            channel.confirm_select()
            channel._shop_seq = 0
            channel._shop_pending = {}
            channel._shop_returned = set()
            # A mandatory replay message no queue took comes back before its confirm.
            channel.events["basic_return"].add(
                lambda exc, exchange, routing_key, message: channel._shop_returned.add(
                    message.properties.get("message_id")
                )
            )
            channel.events["basic_ack"].add(lambda tag, multiple: self._settle(tag, multiple))
            channel.events["basic_nack"].add(
                lambda tag, multiple: self._settle(tag, multiple, Nacked("nacked by RabbitMQ"))
            )
            self._channel = channel
        return self._channel

    def _settle(self, tag: int, multiple: bool, error: Exception | None = None) -> None:
        pending = self._channel._shop_pending
        # Tags are inserted in increasing order: a "multiple" confirm settles a prefix.
        tags = list(itertools.takewhile(lambda t: t <= tag, pending)) if multiple else [tag]
        for t in tags:
            slot = pending.pop(t, None)
            if slot is not None:
                slot[1] = error
                slot[2] = True

    def publish_batch(
        self, messages: Sequence[OutgoingMessage], *, timeout: float
    ) -> list[Exception | None]:
        results: list[Exception | None] = [TimeoutError("not confirmed")] * len(messages)
        if not messages:
            return []
        with self._lock:
            try:
                channel = self._publishing_channel()
                channel._shop_returned.clear()
                slots = []
                with _coalesced_writes(channel.connection):
                    self._write_batch(channel, messages, slots)
                deadline = time.monotonic() + timeout
                while channel._shop_pending and time.monotonic() < deadline:
                    try:
                        self._publisher.drain_events(timeout=max(0.01, deadline - time.monotonic()))
                    except TimeoutError:
                        break
                results = [
                    (
                        Unroutable(f"no queue of service {slot[0].service} took it")
                        if slot[0].service and slot[0].event_id in channel._shop_returned
                        else slot[1]
                    )
                    if slot[2]
                    else TimeoutError(f"no confirm within {timeout}s")
                    for slot in slots
                ]
                if channel._shop_pending:
                    # A late confirm must not be matched to a later batch's tags: start over.
                    self._reset()
            except Exception as exc:
                logger.warning("publishing to RabbitMQ failed: %s", exc)
                self._reset()
                results = [exc] * len(messages)
        return results

    def _write_batch(self, channel, messages: Sequence[OutgoingMessage], slots: list) -> None:
        for message in messages:
            channel._shop_seq += 1
            slot = [message, None, False]
            channel._shop_pending[channel._shop_seq] = slot
            slots.append(slot)
            if message.service:
                # A replay: that service's queue alone, through its replay exchange.
                exchange = self.replay_exchange(message.service, message.event_type).name
            else:
                exchange = self.events.name
            channel.basic_publish(
                amqp.Message(
                    message.body,
                    content_type=message.content_type,
                    application_headers=message.headers,
                    delivery_mode=2,
                    message_id=message.event_id,
                ),
                exchange=exchange,
                routing_key=message.event_type,
                mandatory=bool(message.service),
            )

    def _reset(self) -> None:
        conn, self._publisher, self._channel = self._publisher, None, None
        if conn is not None:
            try:
                conn.release()
            except Exception:
                logger.debug("closing a broken publisher connection failed", exc_info=True)

    def close(self) -> None:
        with self._lock:
            self._reset()

    # --- consuming ----------------------------------------------------------------------

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
    ) -> None:
        delay = 0.5
        while not stop.is_set():
            try:
                with Connection(self.url, connect_timeout=5, heartbeat=HEARTBEAT_SECONDS) as conn:
                    conn.ensure_connection(max_retries=1)
                    channel = conn.channel()
                    self._declare(channel, service, event_types)
                    channel.basic_qos(0, prefetch, False)
                    held: list = []  # pushed by the broker, not yet settled

                    queue = self._service_queue(service, event_types)(channel)
                    with Consumer(channel, queues=[queue], on_message=held.append, no_ack=False):
                        logger.info("consuming %s for %s", queue.name, ", ".join(event_types))
                        delay = 0.5
                        while not stop.is_set():
                            try:
                                conn.drain_events(timeout=1)
                            except TimeoutError:
                                conn.heartbeat_check()
                                if on_idle:
                                    on_idle()
                                continue
                            _take_waiting(conn, held, prefetch)
                            if held:
                                batch, held[:] = held[:], []
                                self._batch_settle(batch, on_batch([_received(m) for m in batch]))
                                if on_settled:
                                    # Heartbeats are not answered meanwhile: a run longer than
                                    # two of them (HEARTBEAT_SECONDS) costs a reconnection, and
                                    # the messages held unsettled come again (nothing stored).
                                    on_settled()
            # kombu's ensure_connection wraps a refused or dropped connection in its own
            # OperationalError: a broker that is away when the consumer starts.
            except (
                OSError,
                amqp.exceptions.AMQPError,
                kombu.exceptions.OperationalError,
                *self._connection_errors,
            ) as exc:
                if stop.is_set():
                    return
                logger.warning("RabbitMQ connection lost (%s); reconnecting in %.1fs", exc, delay)
                stop.wait(delay)
                delay = min(RECONNECT_CAP_SECONDS, delay * 2)

    @staticmethod
    def _batch_settle(batch: list, verdicts: Sequence[Verdict]) -> None:
        """Settle a batch after its verdicts (so after the commit that stored it): one
        ``basic.ack`` with ``multiple`` for the leading run of acknowledged messages (their
        delivery tags are the lowest this channel has unsettled: every earlier batch was
        settled), then the rest one by one; those to retry after one pause for the batch."""
        lead = 0
        while lead < len(batch) and verdicts[lead] is Verdict.ACK:
            lead += 1
        if lead:
            batch[lead - 1].ack(multiple=lead > 1)
        retry = []
        for message, verdict in zip(batch[lead:], verdicts[lead:], strict=True):
            if verdict is Verdict.ACK:
                message.ack()
            elif verdict is Verdict.DEAD:
                message.reject(requeue=False)  # to <ns>.dead
            else:
                retry.append(message)
        if retry:
            time.sleep(1.0)  # this side is failing: do not spin on it
            for message in retry:
                message.requeue()

    def stats(self, *, service: str) -> ConsumerStats:
        with Connection(self.url, connect_timeout=5) as conn:
            channel = conn.default_channel
            _, lag, _ = channel.queue_declare(self.queue_name(service), passive=True)
            _, unroutable, _ = channel.queue_declare(f"{self.namespace}.unroutable", passive=True)
        return ConsumerStats(lag=lag, unroutable=unroutable)
