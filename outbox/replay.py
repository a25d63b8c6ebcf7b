"""Sending events to a subscriber again: dead letters after a fix, or old events to a new
subscriber (backfill)."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.db.models import QuerySet
from django.db.models.functions import Now
from django.utils import timezone

from outbox.bus.target import bus_delivery, bus_replay_target
from outbox.errors import UnknownSubscriber
from outbox.models import Delivery, Event
from outbox.publisher import delivery_new
from outbox.registry import Subscriber, subscriber_get, subscribers_all
from outbox.wake import relay_wake


@dataclass(frozen=True)
class ReplayResult:
    created: int
    reset: int
    skipped: int


def deliveries_replay(deliveries: QuerySet[Delivery]) -> int:
    """Make dead (or waiting) deliveries due now with a fresh set of attempts."""
    ids = list(deliveries.exclude(status=Delivery.Status.DONE).values_list("pk", flat=True))
    with transaction.atomic():
        count = deliveries_make_due(ids=ids)
        if count:
            transaction.on_commit(relay_wake)
    return count


def deliveries_make_due(*, ids: list[int], include_done: bool = False) -> int:
    """Give the deliveries ``ids`` a fresh set of attempts, due now; returns how many changed.

    The one way anything (admin action, command, replay) makes a delivery due again. The ids
    are chosen first, by whatever filter the caller has (joins included); the UPDATE itself
    names them and the status it changes, nothing else, so that PostgreSQL re-checks that status
    on each row it has waited for: a delivery a worker marked done meanwhile stays done.
    """
    statuses = [Delivery.Status.PENDING, Delivery.Status.DEAD]
    if include_done:
        statuses.append(Delivery.Status.DONE)
    count = 0
    for start in range(0, len(ids), 1000):
        count += Delivery.objects.filter(
            id__in=ids[start : start + 1000], status__in=statuses
        ).update(
            status=Delivery.Status.PENDING,
            attempts=0,
            dispatches=0,
            next_attempt_at=Now(),
            backoff_until=None,
            completed_at=None,
            updated_at=timezone.now(),
        )
    return count


def events_replay(
    *, subscriber: str, events: QuerySet[Event], include_done: bool = False
) -> ReplayResult:
    """Deliver ``events`` to ``subscriber`` again (the bus too: ``bus``, its externalised
    events, when ``EVENT_BUS_URL`` is set).

    Events it never received get a new delivery (backfill); dead or waiting deliveries are
    made due now. Done deliveries are left alone unless ``include_done``, which runs the
    handler again: only for handlers that rebuild state idempotently.
    """
    if bus_delivery(subscriber):
        sub, types = bus_replay_target()
        if types is not None:
            events = events.filter(type__in=types)
    else:
        sub = subscriber_get(subscriber)
        events = events.filter(type=sub.event_type)
    now = timezone.now()
    with transaction.atomic():
        existing = Delivery.objects.filter(subscriber=sub.name, event__in=events)
        reset = deliveries_make_due(
            ids=list(existing.values_list("pk", flat=True)), include_done=include_done
        )
        skipped = 0 if include_done else existing.filter(status=Delivery.Status.DONE).count()
        missing = events.exclude(deliveries__subscriber=sub.name).only(
            "position", "aggregate_type", "aggregate_id", "sequence"
        )
        new = [delivery_new(event, sub, now=now) for event in missing.iterator()]
        Delivery.objects.bulk_create(new, batch_size=1000)
        if reset or new:
            transaction.on_commit(relay_wake)
    return ReplayResult(created=len(new), reset=reset, skipped=skipped)


def subscribers_of_app(app: str) -> list[Subscriber]:
    """The subscribers whose handlers an app declares (its ``handlers`` module), by name;
    raises UnknownSubscriber when it declares none."""
    found = [s for s in subscribers_all() if s.handler.__module__.split(".")[0] == app]
    if not found:
        apps = sorted({s.handler.__module__.split(".")[0] for s in subscribers_all()})
        raise UnknownSubscriber(f"app {app!r} has no subscribers; apps that do: {', '.join(apps)}")
    return found


def app_backfill(
    *, app: str, events: QuerySet[Event], include_done: bool = False
) -> dict[str, ReplayResult]:
    """Deliver ``events`` to every subscriber of ``app`` (each gets the events of its own type),
    and to no other subscriber: an app deployed after the events were published catches up.
    Running it again creates nothing new (done deliveries are left alone unless
    ``include_done``). Returns each subscriber's result, by name."""
    return {
        sub.name: events_replay(subscriber=sub.name, events=events, include_done=include_done)
        for sub in subscribers_of_app(app)
    }


def correlation_dead_replay(*, correlation_id) -> int:
    """Make the dead-lettered deliveries of one saga due now with fresh attempts; returns how
    many (the operator's "retry" on a saga)."""
    return deliveries_replay(
        Delivery.objects.filter(event__correlation_id=correlation_id, status=Delivery.Status.DEAD)
    )
