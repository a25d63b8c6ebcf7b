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

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from outbox.bus import metrics
from outbox.bus.adapters import adapter_for
from outbox.bus.adapters.base import BusAdapter, OutgoingMessage
from outbox.bus.conf import bus_settings
from outbox.bus.target import BUS_SUBSCRIBER
from outbox.bus.wire import cloudevent_from_row
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
        deliveries = list(
            Delivery.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("event")
            .filter(
                pk__in=delivery_ids,
                subscriber=BUS_SUBSCRIBER,
                status=Delivery.Status.PENDING,
            )
            .order_by("event_id")
        )
        outcomes["skipped"] = len(set(delivery_ids)) - len(deliveries)
        if not deliveries:
            return outcomes
        messages = []
        for delivery in deliveries:
            headers, content_type, body = adapter.encode(
                cloudevent_from_row(delivery.event, service=conf.SERVICE)
            )
            messages.append(
                OutgoingMessage(
                    event_id=str(delivery.event.event_id),
                    event_type=delivery.event.type,
                    partition_key=delivery.aggregate_key,
                    headers=headers,
                    content_type=content_type,
                    body=body,
                )
            )
        started = time.perf_counter()
        results = adapter.publish_batch(messages, timeout=conf.CONFIRM_TIMEOUT)
        seconds = time.perf_counter() - started
        now = timezone.now()
        confirmed = [d.pk for d, error in zip(deliveries, results, strict=True) if error is None]
        if confirmed:
            outcomes["done"] = Delivery.objects.filter(
                pk__in=confirmed, status=Delivery.Status.PENDING
            ).update(
                status=Delivery.Status.DONE,
                attempts=F("attempts") + 1,
                completed_at=now,
                updated_at=now,
            )
        for delivery, error in zip(deliveries, results, strict=True):
            if error is None:
                continue
            outcome = _attempt_failed(
                delivery, error, now=now, conf=oconf, max_attempts=conf.MAX_ATTEMPTS
            )
            outcomes[outcome] += 1
        if metrics.enabled:
            transaction.on_commit(
                lambda: metrics.bus_published(
                    target=_target_name(conf), outcomes=outcomes, seconds=seconds
                )
            )
    if outcomes["retry"] or outcomes["dead"]:
        logger.warning("bus batch of %s: %s", len(deliveries), outcomes)
    return outcomes


def _target_name(conf) -> str:
    return f"{conf.url.split(':', 1)[0]}:{conf.NAMESPACE}"


def _attempt_failed(delivery: Delivery, error: Exception, *, now, conf, max_attempts: int) -> str:
    attempt = delivery.attempts + 1
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
            delivery.pk,
            delivery.event.event_id,
            attempt,
            error,
        )
    else:
        delay = backoff_delay(
            attempt=attempt, base=conf.BACKOFF_BASE_SECONDS, cap=conf.BACKOFF_CAP_SECONDS
        )
        fields["next_attempt_at"] = now + dt.timedelta(seconds=delay)
        outcome = "retry"
    Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.PENDING).update(**fields)
    return outcome
