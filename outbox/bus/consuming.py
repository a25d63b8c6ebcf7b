"""Taking an event in from the bus: store it with its local deliveries, then acknowledge.

``bus_event_store`` writes the event into this service's event store (``event_id`` is unique)
and its deliveries to the local subscribers, in one transaction; the adapter acknowledges the
broker only after that transaction committed (guarantee 7). A redelivered or republished event
hits the unique event id: nothing is written and the message is acknowledged as a duplicate.
From there the ordinary relay and workers run the handlers, upcasters included.
"""

from __future__ import annotations

import logging

from django.db import IntegrityError, close_old_connections, transaction
from django.utils import timezone

from outbox.bus import metrics
from outbox.bus.adapters.base import BusAdapter, ReceivedMessage, Verdict
from outbox.bus.conf import bus_settings
from outbox.bus.target import event_externalised
from outbox.bus.wire import IncomingEvent, MalformedMessage
from outbox.models import Delivery, Event
from outbox.publisher import delivery_new, relay_wake
from outbox.registry import subscribers_all, subscribers_for

logger = logging.getLogger(__name__)


def bus_types_consumed() -> list[str]:
    """The event types this service takes from the bus: those its subscribers handle, less
    those its own apps publish (already in the local event store: never bound at all)."""
    local = bus_settings().local_apps()
    return sorted(
        {sub.event_type for sub in subscribers_all() if sub.event_type.split(".")[0] not in local}
    )


def bus_types_unpublished(types: list[str]) -> list[str]:
    """Of ``types`` (this service's, from the bus), those no publisher sends to the bus: not
    declared ``externalised`` (and EXTERNALISE_ALL off). Their subscribers here would wait for
    ever, so the consumer refuses to start (the split deployment's release step with it)."""
    return [t for t in types if not event_externalised(t)]


def bus_event_store(*, event: IncomingEvent) -> str:
    """Store ``event`` and its local deliveries; returns ``stored`` or ``duplicate``."""
    if Event.objects.filter(event_id=event.event_id).exists():
        return "duplicate"
    try:
        with transaction.atomic():
            row = Event.objects.create(
                event_id=event.event_id,
                type=event.type,
                version=event.version,
                aggregate_type=event.aggregate_type,
                aggregate_id=event.aggregate_id,
                payload=event.payload,
                correlation_id=event.correlation_id,
                causation_id=event.causation_id,
                headers=event.headers,
                occurred_at=event.occurred_at,
            )
            now = timezone.now()
            Delivery.objects.bulk_create(
                [delivery_new(row, sub, now=now) for sub in subscribers_for(event.type)]
            )
            transaction.on_commit(relay_wake)
    except IntegrityError:
        # Another consumer stored it between the check and the insert.
        if Event.objects.filter(event_id=event.event_id).exists():
            return "duplicate"
        raise
    return "stored"


def bus_message_receive(*, message: ReceivedMessage, adapter: BusAdapter) -> Verdict:
    """What the consumer does with one message; never raises."""
    service = bus_settings().SERVICE
    try:
        event = adapter.decode(message)
    except MalformedMessage as exc:
        logger.error(
            "bus message dead-lettered: %s (headers %s, %s bytes)",
            exc,
            _short(message.headers),
            len(message.body or b""),
        )
        _count(service, "dead")
        return Verdict.DEAD
    if event.type not in bus_types_consumed():
        _count(service, "ignored")
        return Verdict.ACK
    try:
        outcome = bus_event_store(event=event)
    except Exception:
        logger.exception("could not store %s %s; redelivering", event.type, event.event_id)
        _count(service, "retry")
        close_old_connections()  # a broken connection is replaced before the redelivery
        return Verdict.RETRY
    logger.debug("bus event %s %s %s", event.type, event.event_id, outcome)
    _count(service, outcome)
    return Verdict.ACK


def _count(service: str, outcome: str) -> None:
    if metrics.enabled:
        metrics.bus_received(service=service, outcome=outcome)


def _short(headers: dict | None) -> str:
    text = repr(headers or {})
    return text if len(text) < 500 else text[:500] + "..."
