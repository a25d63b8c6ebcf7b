"""Who listens to what: handler functions subscribed to event types.

::

    @subscribe(OrderPlaced)
    def payment_charge_on_order_placed(event: OrderPlaced) -> None: ...

A subscriber's name (``"<app>.<function>"`` unless given) is what deliveries record, so it
must stay stable once events have been delivered to it. Its Celery queue defaults to its app's
label, so each app's handlers can be given workers of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from outbox.errors import SubscriptionError, UnknownSubscriber
from outbox.events import DomainEvent, check_declared, event_type_get
from outbox.queues import BUS_QUEUE, RELAY_QUEUE


@dataclass(frozen=True)
class Subscriber:
    name: str
    event_class: type[DomainEvent]
    handler: Callable[[DomainEvent], None]
    queue: str
    ordered: bool
    max_attempts: int | None
    prepare: Callable[[DomainEvent], None] | None = None

    @property
    def event_type(self) -> str:
        return self.event_class.event_type


_subscribers: dict[str, Subscriber] = {}
_by_type: dict[str, list[Subscriber]] = {}


def subscribe(
    event: type[DomainEvent] | str,
    *,
    name: str | None = None,
    queue: str | None = None,
    ordered: bool = False,
    max_attempts: int | None = None,
    prepare: Callable[[DomainEvent], None] | None = None,
):
    """Subscribe the decorated function to ``event`` (a DomainEvent class or type name).

    ``ordered=True``: this subscriber receives one aggregate's events in the order they were
    published, even across retries: a later event waits until the earlier one is done.

    ``prepare=``: a function of the event that runs before each run of the handler, in a
    transaction of its own that commits first (the delivery stays pending). For a handler that
    calls something outside the database: ``prepare`` records the call it is about to make, so a
    later run knows that an earlier one may have made it. It writes its own rows only and
    publishes nothing; it runs again before every retry, so it must be idempotent.
    """
    event_class = event_type_get(event) if isinstance(event, str) else event
    check_declared(event_class)
    if max_attempts is not None and (not isinstance(max_attempts, int) or max_attempts < 1):
        raise SubscriptionError(f"max_attempts must be a positive int, got {max_attempts!r}")
    if prepare is not None and (ordered or not callable(prepare)):
        raise SubscriptionError(
            "prepare= must be callable, and is not offered to ordered subscribers"
        )

    def register(fn: Callable[[DomainEvent], None]) -> Callable[[DomainEvent], None]:
        if not callable(fn):
            raise SubscriptionError(f"{fn!r} is not callable")
        app_label = fn.__module__.split(".")[0]
        if (queue or app_label) == RELAY_QUEUE:
            raise SubscriptionError(
                f"{fn.__module__}.{fn.__name__}: queue {RELAY_QUEUE!r} is the relay's; "
                "a subscriber's deliveries need a queue of their own"
            )
        sub = Subscriber(
            name=name or f"{app_label}.{fn.__name__}",
            event_class=event_class,
            handler=fn,
            queue=queue or app_label,
            ordered=ordered,
            max_attempts=max_attempts,
            prepare=prepare,
        )
        if len(sub.name) > 200:
            raise SubscriptionError(f"subscriber name is longer than 200 characters: {sub.name}")
        existing = _subscribers.get(sub.name)
        if existing is not None:
            if existing.handler.__qualname__ == fn.__qualname__ and existing.event_class is (
                event_class
            ):
                return fn  # the same module imported twice
            raise SubscriptionError(
                f"subscriber name {sub.name!r} is taken by {existing.handler.__module__}."
                f"{existing.handler.__qualname__}; pass name= to tell them apart"
            )
        _subscribers[sub.name] = sub
        _by_type.setdefault(event_class.event_type, []).append(sub)
        return fn

    return register


def subscribers_for(event_type: str) -> list[Subscriber]:
    return _by_type.get(event_type, [])


def subscriber_get(name: str) -> Subscriber:
    try:
        return _subscribers[name]
    except KeyError:
        raise UnknownSubscriber(
            f"no subscriber named {name!r}; registered: {', '.join(sorted(_subscribers))}"
        ) from None


def subscribers_all() -> list[Subscriber]:
    return sorted(_subscribers.values(), key=lambda s: s.name)


def subscriber_queues() -> list[str]:
    """Every queue a subscriber's deliveries are sent to, sorted; never the relay's. With an
    event bus configured (``EVENT_BUS_URL``), the bus's queue too: its deliveries are published
    to the broker by whichever worker takes them (outbox/bus/).

    Call it once Django's apps are ready (the outbox app imports every app's handlers then).
    """
    from django.conf import settings

    queues = {s.queue for s in subscribers_all()} - {RELAY_QUEUE}
    if getattr(settings, "EVENT_BUS_URL", ""):
        queues.add(BUS_QUEUE)
    return sorted(queues)
