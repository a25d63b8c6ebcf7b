"""publish(): write an event and its deliveries in the caller's transaction."""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Iterable
from functools import partial

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.utils import timezone

from outbox import metrics, sql
from outbox.bus.target import bus_targets_for
from outbox.conf import outbox_settings
from outbox.context import Continuing, continuing_current, handling_current
from outbox.crypto import payload_seal
from outbox.errors import NotInTransaction, UnknownEventType
from outbox.events import DomainEvent
from outbox.models import Delivery, Event
from outbox.queues import BUS_QUEUE, RELAY_QUEUE
from outbox.registry import subscribers_for
from outbox.tracing import publish_span, publish_span_describe, trace_headers
from outbox.wake import relay_wake, wake_by_notify

logger = logging.getLogger(__name__)


def publish(
    event: DomainEvent,
    *,
    correlation_id: uuid.UUID | str | None = None,
    headers: dict | None = None,
    using: str = DEFAULT_DB_ALIAS,
) -> Event:
    """Store ``event`` for delivery to every subscriber, in the current transaction.

    Must be called inside ``transaction.atomic()``: the event then exists if and only if the
    caller's transaction commits. Inside a handler the event inherits the handled event's
    correlation id and names it as its cause; elsewhere ``correlation_id`` starts a new saga
    (default: the event's own id).
    """
    return publish_many([event], correlation_id=correlation_id, headers=headers, using=using)[0]


def publish_many(
    events: Iterable[DomainEvent],
    *,
    correlation_id: uuid.UUID | str | None = None,
    headers: dict | None = None,
    using: str = DEFAULT_DB_ALIAS,
) -> list[Event]:
    events = list(events)
    for event in events:
        if not isinstance(event, DomainEvent):
            raise UnknownEventType(
                f"publish() takes a DomainEvent instance, got {type(event).__name__}: {event!r}"
            )
    connection = connections[using]
    if not connection.in_atomic_block:
        raise NotInTransaction(
            "publish() must be called inside transaction.atomic(): the event has to commit "
            "or roll back together with the change it describes"
        )
    if not events:
        return []
    current = handling_current()
    causation_id = current.event_id if current else None
    if correlation_id is None and current is not None:
        correlation_id = current.correlation_id
    if correlation_id is not None and not isinstance(correlation_id, uuid.UUID):
        try:
            correlation_id = uuid.UUID(str(correlation_id))
        except ValueError:
            raise ValueError(f"correlation_id must be a UUID, got {correlation_id!r}") from None
    type_names = [event.event_type for event in events]
    with publish_span(type_names) as span:
        extra_headers = {**trace_headers(), **(headers or {})}

        now = timezone.now()
        rows = []
        for event in events:
            event_id = uuid.uuid4()
            rows.append(
                Event(
                    event_id=event_id,
                    type=event.event_type,
                    version=event.version,
                    aggregate_type=event.aggregate_type,
                    aggregate_id=event.aggregate_id,
                    payload=payload_seal(type(event), event.to_payload()),
                    correlation_id=correlation_id or event_id,
                    causation_id=causation_id,
                    headers=extra_headers,
                    occurred_at=now,
                )
            )
        targets = [
            (row, sub)
            for row in rows
            for sub in (*subscribers_for(row.type), *bus_targets_for(row.type))
        ]
        continuing, served = _served_by_continuation(targets, using)
        wake = len(served) < len(targets)
        born = _born_of(continuing, served)
        lease = outbox_settings().LEASE_SECONDS if born else None
        leased = [(id(row), sub.name) in born for row, sub in targets]
        # By NOTIFY the wake-up is part of the publish statement: delivered on commit, and
        # once per transaction however many statements notify (outbox/wake.py).
        notify = wake and connection.vendor == "postgresql" and wake_by_notify(using)
        if connection.vendor == "postgresql":
            # Sequence numbers, events and deliveries (and the wake-up): one statement.
            born_ids = sql.events_insert(
                connection, rows, targets, now=now, notify=notify, leased=leased, lease=lease
            )
        else:
            sql.sequences_assign(connection, rows)
            # One INSERT per table for the whole call; bulk_create sets ``position`` (and
            # each delivery's id: SQLite 3.35+ returns them).
            Event.objects.using(using).bulk_create(rows)
            deliveries = [
                delivery_new(row, sub, now=now, lease=lease if born_one else None)
                for (row, sub), born_one in zip(targets, leased, strict=True)
            ]
            Delivery.objects.using(using).bulk_create(deliveries)
            born_ids = {
                (d.event.position, d.subscriber): d.pk
                for d, born_one in zip(deliveries, leased, strict=True)
                if born_one
            }
        if continuing is not None:
            continuing.born += [
                born_ids[row.position, sub.name]
                for row, sub in served
                if (id(row), sub.name) in born
            ]
            continuing.deliveries += [
                (row.position, sub.name) for row, sub in served if (id(row), sub.name) not in born
            ]
            if targets and not wake:
                continuing.wake_owed = True
        if wake and not notify:
            _wake_relay_on_commit(connection, using)
        publish_span_describe(span, rows)
    if metrics.enabled:
        # Counted when the transaction commits; a rollback (or a rolled-back savepoint)
        # drops the callback with the events.
        transaction.on_commit(partial(metrics.events_published, type_names), using=using)
    return rows


def delivery_new(event: Event, subscriber, *, now, lease: float | None = None) -> Delivery:
    """An unsaved, due delivery of ``event`` to ``subscriber`` (a registry Subscriber); with
    ``lease`` (seconds), born leased as a first claim leases it (dispatched once, due again
    when the lease runs out)."""
    if lease is None:
        return Delivery(
            event=event,
            subscriber=subscriber.name,
            next_attempt_at=now,
            ordered=subscriber.ordered,
            aggregate_key=event.aggregate_key,
            sequence=event.sequence,
        )
    return Delivery(
        event=event,
        subscriber=subscriber.name,
        next_attempt_at=now + dt.timedelta(seconds=lease),
        dispatched_at=now,
        dispatches=1,
        ordered=subscriber.ordered,
        aggregate_key=event.aggregate_key,
        sequence=event.sequence,
    )


def _born_of(continuing: Continuing | None, served: list) -> set[tuple[int, str]]:
    """Of the served targets, those to insert already leased to this worker (``id(row)`` and
    subscriber name): within the chain's time (its depth is why ``continuing`` is set at all),
    and never for an ordered subscriber, whose delivery may wait for an undone predecessor (the
    worker's claim checks that after the commit)."""
    if continuing is None or not served or time.monotonic() >= continuing.born_until:
        return set()
    return {(id(row), sub.name) for row, sub in served if not sub.ordered}


def _served_by_continuation(targets: list, using: str) -> tuple[Continuing | None, list]:
    """Inside a delivery's run on a worker that continues (outbox/continuation.py): the run's
    context and the targets whose subscribers the worker serves, which the publisher notes in
    it. When that is all of them the relay's wake-up is left to the worker, which claims and
    runs them once the run commits (and wakes the relay itself for any it did not claim)."""
    current = continuing_current()
    if current is None or using != DEFAULT_DB_ALIAS or handling_current() is None:
        return None, []
    served = [
        (row, sub)
        for row, sub in targets
        if sub.queue in current.queues and sub.queue not in (BUS_QUEUE, RELAY_QUEUE)
    ]
    return current, served


def _wake_relay_on_commit(connection, using: str) -> None:
    # One wake-up per transaction, however many events it publishes.
    if any(func is relay_wake for _, func, _ in connection.run_on_commit):
        return
    transaction.on_commit(relay_wake, using=using)
