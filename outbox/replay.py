"""Sending events to a subscriber again: dead letters after a fix, or old events to a new
subscriber (backfill)."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.db.models import QuerySet
from django.db.models.functions import Now
from django.utils import timezone

from outbox.bus.conf import bus_settings
from outbox.bus.target import bus_delivery, bus_replay_target, replay_subscriber
from outbox.errors import OutboxError, UnknownSubscriber
from outbox.events import event_types_all
from outbox.models import Delivery, Event
from outbox.publisher import delivery_new
from outbox.registry import Subscriber, subscriber_get, subscribers_all
from outbox.wake import relay_wake


@dataclass(frozen=True)
class ReplayResult:
    created: int
    reset: int
    skipped: int


class ReplayRefused(OutboxError):
    """A replay that cannot be addressed as asked (an unknown service, none of the chosen types
    taken); nothing was changed."""


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
    return _deliver_again(sub, events, include_done=include_done)


def _deliver_again(sub: Subscriber, events: QuerySet[Event], *, include_done: bool) -> ReplayResult:
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


def _app(sub: Subscriber) -> str:
    return sub.handler.__module__.split(".")[0]


def subscribers_of_app(app: str) -> list[Subscriber]:
    """The subscribers whose handlers an app declares (its ``handlers`` module), by name;
    raises UnknownSubscriber when it declares none."""
    found = [s for s in subscribers_all() if _app(s) == app]
    if not found:
        apps = sorted({_app(s) for s in subscribers_all()})
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


@dataclass(frozen=True)
class ServiceReplay:
    # "local": the service's apps are installed here (the monolith), their subscribers are
    # delivered to directly; "bus": published to that service alone through the bus.
    route: str
    # The chosen types the service takes, and those it does not (left out).
    types: list[str]
    left_out: list[str]
    results: dict[str, ReplayResult]


def service_replay_plan(*, service: str, types: list[str] | None) -> tuple[str, list, list, list]:
    """Where a replay to ``service`` of ``types`` (None: every type it takes) goes, checked
    before anything is written: (route, targets, types taken, types left out); targets are
    local subscribers, or the one bus replay subscriber. Raises ReplayRefused."""
    conf = bus_settings()
    services = dict(conf.SERVICES or {})
    apps = services.get(service)
    if apps is None and service == conf.SERVICE:
        apps = sorted(conf.local_apps())
    if apps is not None:
        local = [sub for sub in subscribers_all() if _app(sub) in apps]
        if local:  # its apps are installed here: the monolith, or this very service
            offered = sorted({sub.event_type for sub in local})
            chosen = offered if types is None else types
            targets = [sub for sub in local if sub.event_type in chosen]
            if not targets:
                raise ReplayRefused(
                    f"service {service!r} takes none of {', '.join(chosen)}; "
                    f"it takes {', '.join(offered)}"
                )
            taken = sorted({sub.event_type for sub in targets})
            return "local", targets, taken, [t for t in chosen if t not in taken]
    known = sorted({*services, conf.SERVICE})
    if not conf.enabled:
        raise ReplayRefused(
            f"service {service!r}: its apps are not installed here and there is no bus "
            f"(EVENT_BUS_URL) to reach it; services of this deployment: {', '.join(known)}"
        )
    from outbox.bus.publishing import bus_adapter

    chosen = types if types is not None else [cls.event_type for cls in event_types_all()]
    taken = bus_adapter().service_types(service=service, event_types=chosen)
    if taken is None:
        raise ReplayRefused(
            f"no service {service!r} on the bus: nothing is declared under that name (its "
            f"release step, `manage.py release --service {service}`, declares it); services "
            f"of this deployment: {', '.join(known)}"
        )
    if not taken:
        raise ReplayRefused(
            f"service {service!r} takes none of {', '.join(chosen)} from the bus (its queue or "
            "durable consumer is declared for other types; declared by an older release, it "
            f"needs its release step again: `manage.py release --service {service}`)"
        )
    return "bus", [replay_subscriber(service)], taken, [t for t in chosen if t not in taken]


def service_replay(
    *, service: str, events: QuerySet[Event], types: list[str] | None, include_done: bool = False
) -> ServiceReplay:
    """Deliver ``events`` of ``types`` (None: every type it takes) to one service and no other.

    In the monolith (the service's apps installed here) its subscribers get the events as by
    :func:`app_backfill`. Otherwise they are published to that service alone through the bus
    (its replay exchange or subject), each as a delivery record to ``bus:<service>``: retries,
    backoff and dead letters as for any delivery. Events it already has a done delivery for are
    left alone unless ``include_done``; the service's inbox dedupes on the event id anyway."""
    route, targets, taken, left_out = service_replay_plan(service=service, types=types)
    results = {}
    with transaction.atomic():
        for sub in targets:
            chosen = events.filter(type__in=taken if route == "bus" else [sub.event_type])
            results[sub.name] = _deliver_again(sub, chosen, include_done=include_done)
    return ServiceReplay(route=route, types=taken, left_out=left_out, results=results)


def correlation_dead_replay(*, correlation_id) -> int:
    """Make the dead-lettered deliveries of one saga due now with fresh attempts; returns how
    many (the operator's "retry" on a saga)."""
    return deliveries_replay(
        Delivery.objects.filter(event__correlation_id=correlation_id, status=Delivery.Status.DEAD)
    )
