"""Reads over the outbox: status for operators, timelines for a saga."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.db.models import Count, Min, Prefetch
from django.utils import timezone

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
        heartbeats={hb.name: (now - hb.beat_at).total_seconds() for hb in Heartbeat.objects.all()},
    )


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
