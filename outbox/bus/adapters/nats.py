"""NATS JetStream through nats-py.

Topology (``<ns>`` is EVENT_BUS's NAMESPACE; stream names are upper-cased, dots and dashes
turned into underscores):

- stream ``<NS>_EVENTS`` over the subjects ``<ns>.events.>``; an event is published to
  ``<ns>.events.<type>`` (``shop.events.orders.OrderPlaced``) with ``Nats-Msg-Id`` = the event
  id, so the stream's duplicate window (2 minutes) drops a republished event outright.
- a durable pull consumer per consuming service (named after the service) with explicit acks,
  filtered to the subjects of the types its subscribers handle (one filter subject, or several
  on NATS 2.10+; an older server gets ``<ns>.events.>`` and the consumer acks the other types
  without storing them).
- a replay addressed to one service (``outbox_replay --to-service``) is published to
  ``<ns>.events.replay.<service>.<type>``, a subject only that service's durable consumer
  filters on, with ``Nats-Msg-Id`` = ``<event id>:replay:<service>``: a replay of an event
  published minutes ago is not dropped as a duplicate of it (the consumer's inbox still
  deduplicates on the event id). The consumer's description names the types it takes
  (``takes <type> <type> ...``): how the publishing side learns them. On a pre-2.10 server, whose
  wide filter shows every consumer every subject, a consumer acks another service's replay
  subjects without storing them, as it does other types.
- stream ``<NS>_DEAD`` over ``<ns>.dead.>``: a message a consumer cannot take is copied to
  ``<ns>.dead.<service>`` (with a ``Shop-Dead-Reason`` header) and then acknowledged.

nats-py is asyncio; this adapter runs one event loop in a daemon thread per process and the
synchronous outbox code submits coroutines to it. A batch is published with ``publish_async``
(every message written, then every ack future awaited): one round trip per batch.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Callable, Sequence

from outbox.bus import wire
from outbox.bus.adapters.base import (
    ConsumerStats,
    OutgoingMessage,
    ReceivedMessage,
    Verdict,
)

logger = logging.getLogger(__name__)

DUPLICATE_WINDOW_SECONDS = 120.0
DESCRIPTION_PREFIX = "takes "
ACK_WAIT_SECONDS = 30.0
# How long the consumer's pull waits for messages before it counts as an idle poll.
FETCH_SECONDS = 1.0


def _received(msg) -> ReceivedMessage:
    return ReceivedMessage(
        headers=dict(msg.headers or {}),
        content_type=(msg.headers or {}).get("content-type"),
        body=msg.data,
        redelivered=msg.metadata.num_delivered > 1,
    )


def _stream_name(namespace: str, suffix: str) -> str:
    return f"{re.sub(r'[^A-Za-z0-9]', '_', namespace).upper()}_{suffix}"


class NatsAdapter:
    def __init__(self, url: str, *, namespace: str, ack_wait: float = ACK_WAIT_SECONDS) -> None:
        self.url = url
        self.ack_wait = ack_wait
        self.namespace = namespace
        self.stream = _stream_name(namespace, "EVENTS")
        self.dead_stream = _stream_name(namespace, "DEAD")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._nc = None
        self._js = None
        self._declared = False
        self._lock = threading.Lock()

    def subject(self, event_type: str) -> str:
        return f"{self.namespace}.events.{event_type}"

    def replay_subject(self, service: str, event_type: str) -> str:
        return f"{self.namespace}.events.replay.{service}.{event_type}"

    def replay_msg_id(self, event_id: str, service: str) -> str:
        return f"{event_id}:replay:{service}"

    def dead_subject(self, service: str) -> str:
        return f"{self.namespace}.dead.{service}"

    def durable(self, service: str) -> str:
        return re.sub(r"[^A-Za-z0-9_-]", "_", service)

    # --- the event loop thread ----------------------------------------------------------

    def _run(self, coro, timeout: float | None = 30.0):
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="nats-bus", daemon=True
                )
                self._thread.start()
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _connect(self):
        import nats

        if self._nc is None or self._nc.is_closed:
            self._nc = await nats.connect(
                self.url,
                connect_timeout=5,
                max_reconnect_attempts=-1,  # for ever: a restarted server is found again
                reconnect_time_wait=0.5,
                allow_reconnect=True,
                error_cb=self._error,
                disconnected_cb=self._disconnected,
                reconnected_cb=self._reconnected,
            )
            self._js = self._nc.jetstream(timeout=10)
        return self._js

    async def _error(self, exc) -> None:
        logger.debug("NATS: %s", exc)

    async def _disconnected(self) -> None:
        logger.warning("NATS connection lost; reconnecting")

    async def _reconnected(self) -> None:
        logger.info("NATS reconnected")

    # --- topology -----------------------------------------------------------------------

    def topology_declare(self, *, service: str | None, event_types: Sequence[str]) -> None:
        self._run(self._declare(service, event_types))

    async def _declare(self, service: str | None, event_types: Sequence[str]) -> None:
        from nats.js.api import (
            AckPolicy,
            ConsumerConfig,
            DeliverPolicy,
            StorageType,
            StreamConfig,
        )

        js = await self._connect()
        for name, subjects in (
            (self.stream, [f"{self.namespace}.events.>"]),
            (self.dead_stream, [f"{self.namespace}.dead.>"]),
        ):
            await js.add_stream(
                StreamConfig(
                    name=name,
                    subjects=subjects,
                    storage=StorageType.FILE,
                    duplicate_window=DUPLICATE_WINDOW_SECONDS,
                )
            )
        self._declared = True
        if service is None or not event_types:
            return
        types = sorted(set(event_types))
        config = ConsumerConfig(
            durable_name=self.durable(service),
            description=f"{DESCRIPTION_PREFIX}{' '.join(types)}",
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            max_ack_pending=1000,
            **self._filter(self._subjects(service, types)),
        )
        await js.add_consumer(self.stream, config)

    def _subjects(self, service: str, event_types: Sequence[str]) -> list[str]:
        """What ``service``'s consumer takes: its types, and its replay subject of each."""
        types = sorted(set(event_types))
        return [self.subject(t) for t in types] + [self.replay_subject(service, t) for t in types]

    def _filter(self, subjects: list[str]) -> dict:
        if len(subjects) == 1:
            return {"filter_subject": subjects[0]}
        version = tuple(
            int(p) for p in re.findall(r"\d+", str(self._nc._server_info.get("version", "0")))[:2]
        )
        if version >= (2, 10):
            return {"filter_subjects": subjects}
        return {"filter_subject": f"{self.namespace}.events.>"}

    def topology_delete(self, *, services: Sequence[str]) -> None:
        """Remove this namespace's streams (and so their consumers): tests, decommissioning."""

        async def delete():
            js = await self._connect()
            for name in (self.stream, self.dead_stream):
                try:
                    await js.delete_stream(name)
                except Exception as exc:
                    logger.debug("deleting stream %s: %s", name, exc)

        self._run(delete())

    # --- publishing ---------------------------------------------------------------------

    def encode(self, attributes: dict, payload: dict) -> tuple[dict, str, bytes]:
        headers, body = wire.nats_encode(attributes, payload)
        return headers, headers.get("content-type", wire.CONTENT_TYPE), body

    def decode(self, message: ReceivedMessage):
        return wire.nats_decode(message.headers, message.body)

    def publish_batch(
        self, messages: Sequence[OutgoingMessage], *, timeout: float
    ) -> list[Exception | None]:
        if not messages:
            return []
        try:
            return self._run(self._publish(messages, timeout), timeout=timeout + 10)
        except Exception as exc:
            logger.warning("publishing to NATS failed: %s", exc)
            return [exc] * len(messages)

    async def _publish(self, messages, timeout: float) -> list[Exception | None]:
        js = await self._connect()
        if not self._declared:
            await self._declare(None, ())
        futures = []
        for message in messages:
            if message.service:  # a replay: that service's consumer alone
                subject = self.replay_subject(message.service, message.event_type)
                msg_id = self.replay_msg_id(message.event_id, message.service)
            else:
                subject, msg_id = self.subject(message.event_type), message.event_id
            futures.append(
                await js.publish_async(
                    subject,
                    message.body,
                    headers={**message.headers, "Nats-Msg-Id": msg_id},
                    # No stall timeout: nats-py would wrap every message's wait for a slot
                    # in a task of its own. A batch within the client's 4,000 unacknowledged
                    # messages never waits; a larger one waits for acks, bounded by the
                    # caller's timeout on the whole batch.
                    wait_stall=None,
                )
            )
        # No ``flush()``: each publish already kicks the client's flusher, which writes the
        # batch at once, and no ack can come before it; a flush is one more round trip (a PING,
        # a wait for its PONG) per batch (docs/bus.md, "The relay publishes small claims
        # itself"). A lost connection still fails the batch: its acks time out.
        done, _ = await asyncio.wait(futures, timeout=timeout)
        results: list[Exception | None] = []
        for future in futures:
            if future not in done:
                future.cancel()
                results.append(TimeoutError(f"no publish ack within {timeout}s"))
            elif future.exception() is not None:
                results.append(future.exception())
            else:
                results.append(None)
        return results

    def close(self) -> None:
        if self._loop is None:
            return
        if self._nc is not None and not self._nc.is_closed:
            try:
                self._run(self._nc.close(), timeout=10)
            except Exception:
                logger.debug("closing the NATS connection failed", exc_info=True)
        self._nc = self._js = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop = self._thread = None

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
        wanted = set(self._subjects(service, event_types))
        subscription = None
        delay = 0.5
        while not stop.is_set():
            try:
                if subscription is None:
                    self._run(self._declare(service, event_types))
                    subscription = self._run(self._bind(service))
                    logger.info("consuming %s for %s", self.stream, ", ".join(event_types))
                messages = self._run(self._fetch(subscription, prefetch), timeout=30)
                delay = 0.5
            except Exception as exc:
                if stop.is_set():
                    return
                reason = str(exc) or type(exc).__name__
                logger.warning("NATS consumer: %s; again in %.1fs", reason, delay)
                subscription = None
                stop.wait(delay)
                delay = min(10.0, delay * 2)
                continue
            if not messages:
                if on_idle:
                    on_idle()
                continue
            # The pull's messages are the batch: what the server had, never waited for.
            # Another service's types (a pre-2.10 wide filter) are acknowledged unread.
            taken = [msg for msg in messages if msg.subject in wanted]
            verdicts = on_batch([_received(msg) for msg in taken]) if taken else []
            settle = dict(zip(map(id, taken), verdicts, strict=True))
            self._run(
                self._batch_settle(
                    [(msg, settle.get(id(msg), Verdict.ACK)) for msg in messages],
                    service,
                    flush=on_settled is not None,
                )
            )
            if on_settled:
                # The client's event loop runs in its own thread: pings are answered meanwhile.
                on_settled()

    async def _bind(self, service: str):
        js = await self._connect()
        return await js.pull_subscribe_bind(durable=self.durable(service), stream=self.stream)

    async def _fetch(self, subscription, batch: int):
        """Up to ``batch`` messages; ``[]`` when none came within the pull's second.

        nats-py ends a pull that found nothing with ``nats.errors.TimeoutError``, or, when the
        server's answer to its no-wait request is late (a loaded machine), with asyncio's own
        ``TimeoutError``; both are an idle poll. Taken for a failure, the second made the
        consumer drop its subscription, bind again and back off 0.5-2 s, again and again under
        load (seen in the cross-database latency benchmark: 12 times in two minutes).
        """
        try:
            return await subscription.fetch(batch, timeout=FETCH_SECONDS)
        except TimeoutError:  # asyncio's (3.11+), and nats.errors.TimeoutError is one too
            return []

    async def _batch_settle(self, settled: list[tuple], service: str, flush: bool = False) -> None:
        """Settle a batch after its verdicts (so after the commit that stored it), every
        message at once; one that fails to settle (a lost connection) is redelivered after
        ``ack_wait`` and found a duplicate. ``flush``: the acks have reached the server when
        this returns (the consumer then runs what it stored, ``on_settled``)."""
        results = await asyncio.gather(
            *(self._settle(msg, verdict, service) for msg, verdict in settled),
            return_exceptions=True,
        )
        if flush:
            try:
                await self._nc.flush(timeout=5)
            except Exception as exc:  # not settled for sure: redelivered, found a duplicate
                logger.warning("NATS: flushing a batch's acks failed: %s", exc)
        for (msg, verdict), result in zip(settled, results, strict=True):
            if isinstance(result, BaseException):
                logger.warning(
                    "NATS: settling message %s (%s) failed: %s",
                    msg.metadata.sequence.stream,
                    verdict.value,
                    result,
                )

    async def _settle(self, msg, verdict: Verdict, service: str) -> None:
        if verdict is Verdict.ACK:
            await msg.ack()
        elif verdict is Verdict.DEAD:
            js = await self._connect()
            headers = dict(msg.headers or {})
            headers.pop("Nats-Msg-Id", None)
            headers["Shop-Dead-Service"] = service
            await js.publish(self.dead_subject(service), msg.data, headers=headers)
            await msg.ack()
        else:
            await msg.nak(delay=1.0)

    def service_types(self, *, service: str, event_types: Sequence[str]) -> list[str] | None:
        """Of ``event_types``, those ``service``'s durable consumer takes (its description,
        written when it was declared); None when it has none."""

        async def info():
            import nats.js.errors

            js = await self._connect()
            try:
                return await js.consumer_info(self.stream, self.durable(service))
            except nats.js.errors.NotFoundError:
                return None

        consumer = self._run(info())
        if consumer is None:
            return None
        description = consumer.config.description or ""
        taken = set(description.removeprefix(DESCRIPTION_PREFIX).split())
        return [t for t in event_types if t in taken]

    def stats(self, *, service: str) -> ConsumerStats:
        async def info():
            js = await self._connect()
            consumer = await js.consumer_info(self.stream, self.durable(service))
            return consumer.num_pending

        return ConsumerStats(lag=self._run(info()), unroutable=None)
