"""Reads over the outbox: status, gauges and heartbeats for operators (``outbox.ops``), event
counts for the host's metrics, and a saga's timeline (``outbox.timeline_for_correlation``)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Min, Prefetch
from django.utils import timezone

from outbox.events import payload_redact
from outbox.models import Delivery, Event, Heartbeat


@dataclass(frozen=True)
class OutboxStatus:
    counts: dict[str, dict[str, int]]  # subscriber -> status -> count
    totals: dict[str, int]  # status -> count
    oldest_pending_age_seconds: float | None
    dead_letters: int
    events: int
    heartbeats: dict[str, float]  # name -> seconds since last beat


def outbox_status() -> OutboxStatus:
    counts: dict[str, dict[str, int]] = {}
    totals = {s.value: 0 for s in Delivery.Status}
    rows = Delivery.objects.values("subscriber", "status").annotate(n=Count("id"))
    for row in rows:
        counts.setdefault(row["subscriber"], {s.value: 0 for s in Delivery.Status})
        counts[row["subscriber"]][row["status"]] = row["n"]
        totals[row["status"]] += row["n"]
    now = timezone.now()
    oldest = Delivery.objects.filter(status=Delivery.Status.PENDING).aggregate(
        oldest=Min("event__occurred_at")
    )["oldest"]
    return OutboxStatus(
        counts=counts,
        totals=totals,
        oldest_pending_age_seconds=(now - oldest).total_seconds() if oldest else None,
        dead_letters=totals[Delivery.Status.DEAD],
        events=Event.objects.count(),
        heartbeats=heartbeat_ages(now=now),
    )


@dataclass(frozen=True)
class OutboxGauges:
    pending: dict[str, int]  # subscriber -> pending deliveries
    dead: dict[str, int]  # subscriber -> dead letters
    lag_seconds: float  # how long the oldest due delivery has waited for dispatch (0: none)
    heartbeats: dict[str, float]  # name -> seconds since last beat


def outbox_gauges() -> OutboxGauges:
    """What a metrics scrape reads: three small queries, each served by an index.

    Counts of pending and dead deliveries read the (status, subscriber) index, never the done
    rows; the lag reads the minimum of the partial index on due deliveries.
    """
    now = timezone.now()
    pending: dict[str, int] = {}
    dead: dict[str, int] = {}
    rows = (
        Delivery.objects.filter(status__in=[Delivery.Status.PENDING, Delivery.Status.DEAD])
        .values_list("subscriber", "status")
        .annotate(n=Count("*"))
        .order_by()
    )
    for subscriber, status, n in rows:
        (pending if status == Delivery.Status.PENDING else dead)[subscriber] = n
    oldest_due = Delivery.objects.filter(
        status=Delivery.Status.PENDING, next_attempt_at__lte=now
    ).aggregate(oldest=Min("next_attempt_at"))["oldest"]
    return OutboxGauges(
        pending=pending,
        dead=dead,
        lag_seconds=max(0.0, (now - oldest_due).total_seconds()) if oldest_due else 0.0,
        heartbeats=heartbeat_ages(now=now),
    )


# The roles whose heartbeats an operator expects, and what a stale one usually means.
HEARTBEAT_ROLES = {
    "relay": "no relay run finished lately: is the relay worker (queue 'outbox') running?",
    "beat": "beat's ticks do not reach the relay: are celery beat and the relay running?",
}


def heartbeat_ages(*, now=None) -> dict[str, float]:
    """Seconds since each role (relay, beat) last showed it was alive."""
    now = now or timezone.now()
    return {
        name: (now - beat_at).total_seconds()
        for name, beat_at in Heartbeat.objects.values_list("name", "beat_at")
    }


def heartbeat_problems(
    ages: dict[str, float], *, stale_after: float, roles=tuple(HEARTBEAT_ROLES)
) -> dict[str, str | None]:
    """For each expected role: None when its heartbeat is fresh, else what is wrong."""
    problems: dict[str, str | None] = {}
    for name in roles:
        meaning = HEARTBEAT_ROLES.get(name, "is the process that writes it running?")
        age = ages.get(name)
        if age is None:
            problems[name] = f"heartbeat never seen: {meaning}"
        elif age > stale_after:
            problems[name] = f"heartbeat {age:.0f}s old (stale after {stale_after:g}s): {meaning}"
        else:
            problems[name] = None
    return problems


def event_counts_by_type(*, types: list[str]) -> dict[str, int]:
    """How many stored events of each of these types (the index on ``type``)."""
    return dict(
        Event.objects.filter(type__in=types).values_list("type").annotate(n=Count("*")).order_by()
    )


def event_counts_by_payload_field(*, type: str, field: str) -> dict[Any, int]:
    """Stored events of one type, counted by the value of one payload field."""
    rows = (
        Event.objects.filter(type=type)
        .values_list(f"payload__{field}")
        .annotate(n=Count("*"))
        .order_by()
    )
    return dict(rows)


@dataclass(frozen=True)
class TimelineDelivery:
    subscriber: str
    status: str
    attempts: int
    last_error: str | None  # the error's first line


@dataclass(frozen=True)
class TimelineEvent:
    id: uuid.UUID
    type: str
    version: int
    occurred_at: dt.datetime
    aggregate_type: str
    aggregate_id: str
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None
    payload: dict[str, Any]
    deliveries: tuple[TimelineDelivery, ...]


def timeline_for_correlation(correlation_id: uuid.UUID) -> list[TimelineEvent]:
    """Every event of one saga, causes before effects, with each delivery's state, as plain
    values (no model rows leave the outbox)."""
    return [
        TimelineEvent(
            id=event.event_id,
            type=event.type,
            version=event.version,
            occurred_at=event.occurred_at,
            aggregate_type=event.aggregate_type,
            aggregate_id=event.aggregate_id,
            correlation_id=event.correlation_id,
            causation_id=event.causation_id,
            payload=payload_redact(event.type, event.payload),
            deliveries=tuple(
                TimelineDelivery(
                    subscriber=delivery.subscriber,
                    status=delivery.status,
                    attempts=delivery.attempts,
                    last_error=delivery.last_error.split("\n", 1)[0] or None,
                )
                for delivery in event.deliveries.all()
            ),
        )
        for event in events_for_correlation(correlation_id)
    ]


def events_for_correlation(correlation_id: uuid.UUID) -> list[Event]:
    """Every event of one saga with its deliveries, causes before effects.

    Position order is causal order: an effect is published by a handler that runs only after
    its cause committed, so the effect's row is always inserted after the cause's.
    """
    return list(
        Event.objects.filter(correlation_id=correlation_id)
        .prefetch_related(Prefetch("deliveries", queryset=Delivery.objects.order_by("subscriber")))
        .order_by("position")
    )


# --- sagas, for the operator's console -------------------------------------------------------


@dataclass(frozen=True)
class OpenDelivery:
    """A delivery of a saga that is not done: what the saga waits on."""

    correlation_id: uuid.UUID
    event_type: str
    event_id: uuid.UUID
    occurred_at: object  # datetime
    subscriber: str
    status: str  # pending or dead
    attempts: int
    last_error: str  # the error's first line, "" when none
    next_attempt_at: object  # datetime


def deliveries_open_for_correlations(
    correlation_ids: list[uuid.UUID],
) -> dict[uuid.UUID, list[OpenDelivery]]:
    """The not-done deliveries of each saga, oldest event first (one query)."""
    rows = (
        Delivery.objects.filter(event__correlation_id__in=correlation_ids)
        .exclude(status=Delivery.Status.DONE)
        .order_by("event__position", "subscriber")
        .values_list(
            "event__correlation_id",
            "event__type",
            "event__event_id",
            "event__occurred_at",
            "subscriber",
            "status",
            "attempts",
            "last_error",
            "next_attempt_at",
        )
    )
    found: dict[uuid.UUID, list[OpenDelivery]] = {}
    for row in rows:
        delivery = OpenDelivery(*row[:7], row[7].split("\n", 1)[0], row[8])
        found.setdefault(delivery.correlation_id, []).append(delivery)
    return found


def correlations_with_dead_deliveries() -> set[uuid.UUID]:
    """Sagas with at least one dead-lettered delivery (reads the status index)."""
    return set(
        Delivery.objects.filter(status=Delivery.Status.DEAD)
        .values_list("event__correlation_id", flat=True)
        .distinct()
    )


def correlations_active_since(correlation_ids: list[uuid.UUID], since) -> set[uuid.UUID]:
    """Those of the sagas whose events or deliveries changed at or after ``since``."""
    return set(
        Delivery.objects.filter(event__correlation_id__in=correlation_ids, updated_at__gte=since)
        .values_list("event__correlation_id", flat=True)
        .distinct()
    )
