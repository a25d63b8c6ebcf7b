"""Publishing bus deliveries to the broker, a batch per confirm round trip.

``bus_deliveries_publish`` is what the ``bus`` queue's worker runs for the ids the relay sends
it. In one transaction it locks the still-pending deliveries among them (``SKIP LOCKED``: a
duplicate message or a second worker steps aside), publishes their events, waits for the
broker's confirms, then marks the confirmed deliveries done in one ``UPDATE`` guarded by
``status = 'pending'`` and records a failed attempt (backoff, or dead letter after the last) for
the others. Guarantee 6 follows: a delivery is done only once the broker holds the message.

A crash after the confirms but before the commit leaves the deliveries pending: the lease runs
out and they are published again. The consumer's unique event id (and JetStream's duplicate
window, keyed by ``Nats-Msg-Id``) makes that second copy change nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from functools import cache

from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from outbox import sql
from outbox.bus import metrics
from outbox.bus.adapters import adapter_for
from outbox.bus.adapters.base import BusAdapter, OutgoingMessage
from outbox.bus.conf import bus_settings
from outbox.bus.target import BUS_SUBSCRIBER, REPLAY_PREFIX, replay_service
from outbox.bus.wire import event_attributes
from outbox.conf import outbox_settings
from outbox.handling import backoff_delay
from outbox.models import Delivery

logger = logging.getLogger(__name__)


@cache
def _adapter(url: str, namespace: str) -> BusAdapter:
    # One connection per process, kept across batches.
    return adapter_for(url, namespace=namespace)


def bus_adapter() -> BusAdapter:
    conf = bus_settings()
    return _adapter(conf.url, conf.NAMESPACE)


def bus_deliveries_publish(*, delivery_ids: list[int]) -> dict[str, int]:
    """Publish the pending bus deliveries among ``delivery_ids``; returns counts by outcome."""
    conf, oconf = bus_settings(), outbox_settings()
    outcomes = {"done": 0, "retry": 0, "dead": 0, "skipped": 0}
    if not conf.enabled:
        logger.warning("bus deliveries %s claimed but EVENT_BUS_URL is not set", delivery_ids)
        return outcomes
    adapter = bus_adapter()
    with transaction.atomic():
        rows = _batch_lock(delivery_ids)
        outcomes["skipped"] = len(set(delivery_ids)) - len(rows)
        if not rows:
            return outcomes
        messages = []
        for (
            _pk,
            _attempts,
            key,
            event_id,
            type_,
            version,
            at,
            payload,
            corr,
            cause,
            hdrs,
            to,
        ) in rows:
            headers, content_type, body = adapter.encode(
                event_attributes(
                    service=conf.SERVICE,
                    event_id=event_id,
                    type=type_,
                    version=version,
                    occurred_at=at,
                    subject=key,
                    correlation_id=corr,
                    causation_id=cause,
                    headers=hdrs,
                ),
                payload,
            )
            messages.append(
                OutgoingMessage(
                    event_id=str(event_id),
                    event_type=type_,
                    partition_key=key,
                    headers=headers,
                    content_type=content_type,
                    body=body,
                    service=replay_service(to),
                )
            )
        started = time.perf_counter()
        results = _publish_by_target(adapter, messages, timeout=conf.CONFIRM_TIMEOUT)
        seconds = time.perf_counter() - started
        now = timezone.now()
        confirmed = [row[0] for row, error in zip(rows, results, strict=True) if error is None]
        if confirmed:
            outcomes["done"] = _batch_done(confirmed, now=now)
        for row, message, error in zip(rows, messages, results, strict=True):
            if error is None:
                continue
            outcome = _attempt_failed(
                delivery_id=row[0],
                attempts=row[1],
                event_id=message.event_id,
                error=error,
                now=now,
                conf=oconf,
                max_attempts=conf.MAX_ATTEMPTS,
            )
            outcomes[outcome] += 1
        if metrics.enabled:
            transaction.on_commit(
                lambda: metrics.bus_published(
                    target=_target_name(conf), outcomes=outcomes, seconds=seconds
                )
            )
    if outcomes["retry"] or outcomes["dead"]:
        logger.warning("bus batch of %s: %s", len(rows), outcomes)
    return outcomes


def _publish_by_target(
    adapter: BusAdapter, messages: list[OutgoingMessage], *, timeout: float
) -> list[Exception | None]:
    """Publish ``messages``, one confirmed batch per target: the bus's topic, and each service
    a replay is addressed to. A target the broker refuses (a replay to a service whose queue
    is gone) fails its own messages only, never the ordinary events beside them."""
    groups: dict[str | None, list[int]] = {}
    for index, message in enumerate(messages):
        groups.setdefault(message.service, []).append(index)
    results: list[Exception | None] = [None] * len(messages)
    for indexes in groups.values():
        outcome = adapter.publish_batch([messages[i] for i in indexes], timeout=timeout)
        for index, result in zip(indexes, outcome, strict=True):
            results[index] = result
    return results


def _batch_lock(delivery_ids: list[int]) -> list[tuple]:
    """Lock the still-pending bus deliveries among ``delivery_ids`` (``SKIP LOCKED``: a
    duplicate message or a second worker steps aside; on PostgreSQL a skipped one is asked for
    again, waiting ``LOCK_WAIT_SECONDS`` for its lock, see ``sql.locked_waiting``) and read,
    in event order, what their messages need: plain tuples (``sql.BUS_BATCH_COLUMNS``), no
    model instances."""
    if connection.vendor == "postgresql":
        return sql.bus_batch_lock(
            connection,
            delivery_ids,
            subscriber=BUS_SUBSCRIBER,
            replay_prefix=REPLAY_PREFIX,
            wait_seconds=outbox_settings().LOCK_WAIT_SECONDS,
        )
    return list(
        Delivery.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(pk__in=delivery_ids, status=Delivery.Status.PENDING)
        .filter(Q(subscriber=BUS_SUBSCRIBER) | Q(subscriber__startswith=REPLAY_PREFIX))
        .order_by("event_id")
        .values_list(
            *(name if alias == "d" else f"event__{name}" for alias, name in sql.BUS_BATCH_COLUMNS)
        )
    )


def _batch_done(ids: list[int], *, now) -> int:
    """The confirmed deliveries done, in one statement, each only if still pending."""
    if connection.vendor == "postgresql":
        return sql.bus_batch_done(connection, ids, now=now)
    return Delivery.objects.filter(pk__in=ids, status=Delivery.Status.PENDING).update(
        status=Delivery.Status.DONE,
        attempts=F("attempts") + 1,
        completed_at=now,
        updated_at=now,
    )


def _target_name(conf) -> str:
    return f"{conf.url.split(':', 1)[0]}:{conf.NAMESPACE}"


def _attempt_failed(
    *, delivery_id: int, attempts: int, event_id: str, error: Exception, now, conf, max_attempts
) -> str:
    attempt = attempts + 1
    fields = {
        "attempts": attempt,
        "dispatches": 0,
        "last_error": f"{type(error).__name__}: {error}",
        "updated_at": now,
    }
    if max_attempts and attempt >= max_attempts:
        fields["status"] = Delivery.Status.DEAD
        outcome = "dead"
        logger.error(
            "bus delivery %s of %s dead-lettered after %s attempts: %s",
            delivery_id,
            event_id,
            attempt,
            error,
        )
    else:
        delay = backoff_delay(
            attempt=attempt, base=conf.BACKOFF_BASE_SECONDS, cap=conf.BACKOFF_CAP_SECONDS
        )
        fields["next_attempt_at"] = now + dt.timedelta(seconds=delay)
        outcome = "retry"
    Delivery.objects.filter(pk=delivery_id, status=Delivery.Status.PENDING).update(**fields)
    return outcome
