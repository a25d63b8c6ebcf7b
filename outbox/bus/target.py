"""The bus as a subscriber: which events leave, and the delivery that carries them.

An event type leaves when its class says ``externalised: ClassVar[bool] = True`` (or the
``EXTERNALISE_ALL`` switch is on) and ``EVENT_BUS_URL`` is set. It then gets one delivery to the
subscriber named ``bus``, written with the event in the publisher's transaction, so it is on
its way if and only if the event committed (guarantee 6).
"""

from __future__ import annotations

from django.conf import settings

from outbox.bus.conf import bus_settings
from outbox.errors import OutboxError
from outbox.events import DomainEvent, event_type_get, event_types_all
from outbox.queues import BUS_QUEUE
from outbox.registry import Subscriber

BUS_SUBSCRIBER = "bus"
# A replay addressed to one consuming service: the subscriber ``bus:<service>`` (its own
# delivery records, published to that service's queue or replay subject alone).
REPLAY_PREFIX = f"{BUS_SUBSCRIBER}:"


class NotABusHandler(OutboxError):
    pass


class NoBus(OutboxError):
    """The bus is named (a replay to ``bus``) but ``EVENT_BUS_URL`` is not set."""


def _direct(event: DomainEvent) -> None:
    # Bus deliveries are published in batches by outbox.bus.publishing, never one by one.
    raise NotABusHandler("bus deliveries are published by the bus queue's worker")


def bus_subscriber(*, ordered: bool) -> Subscriber:
    return Subscriber(
        name=BUS_SUBSCRIBER,
        event_class=DomainEvent,
        handler=_direct,
        queue=BUS_QUEUE,
        ordered=ordered,
        max_attempts=None,
    )


def event_externalised(event_type: str) -> bool:
    """Whether events of ``event_type`` go to the bus (when a bus is configured)."""
    conf = bus_settings()
    if conf.EXTERNALISE_ALL:
        return True
    try:
        return bool(getattr(event_type_get(event_type), "externalised", False))
    except OutboxError:
        return False


def bus_targets_for(event_type: str) -> list[Subscriber]:
    """The bus subscriber, if ``event_type`` leaves through a configured bus; else nothing.

    Called by publish() for every event type it writes, next to the registry's subscribers.
    """
    if not getattr(settings, "EVENT_BUS_URL", ""):
        return []  # the common case, on publish()'s hot path: one attribute read
    conf = bus_settings()
    if not event_externalised(event_type):
        return []
    return [bus_subscriber(ordered=conf.ORDERED)]


def bus_delivery(subscriber: str) -> bool:
    """Whether deliveries to ``subscriber`` are published to the bus (``bus``, or a replay to
    one service, ``bus:<service>``)."""
    return subscriber == BUS_SUBSCRIBER or subscriber.startswith(REPLAY_PREFIX)


def replay_subscriber_name(service: str) -> str:
    return f"{REPLAY_PREFIX}{service}"


def replay_service(subscriber: str) -> str | None:
    """The service a bus delivery is addressed to alone; None for the ordinary ``bus``."""
    return subscriber.removeprefix(REPLAY_PREFIX) if subscriber.startswith(REPLAY_PREFIX) else None


def replay_subscriber(service: str) -> Subscriber:
    """The bus as a replay's subscriber for one consuming ``service``: its deliveries are
    published straight to that service (RabbitMQ: its replay exchange, bound to its queue
    alone; NATS: its replay subject, which only its durable consumer takes), never to the
    topic every service listens to. Ordered per aggregate, like the bus."""
    return Subscriber(
        name=replay_subscriber_name(service),
        event_class=DomainEvent,
        handler=_direct,
        queue=BUS_QUEUE,
        ordered=bus_settings().ORDERED,
        max_attempts=None,
    )


def bus_batches(ids: list[int]) -> list[list[int]]:
    """Claimed bus deliveries as the relay sends them to the ``bus`` queue: up to BATCH_SIZE
    ids per message, each published as one confirmed batch."""
    size = bus_settings().BATCH_SIZE
    return [ids[start : start + size] for start in range(0, len(ids), size)]


def bus_replay_target() -> tuple[Subscriber, list[str] | None]:
    """The bus as a replay's subscriber, and the event types it takes (None: every type).

    ``outbox_replay --subscriber bus`` uses it: events the bus never carried (a type declared
    externalised later, events from before the bus was configured) get a bus delivery, and
    dead or waiting ones are made due again, so that a service that joins late can be sent
    what it missed.
    """
    if not getattr(settings, "EVENT_BUS_URL", ""):
        raise NoBus(f"subscriber {BUS_SUBSCRIBER!r}: EVENT_BUS_URL is not set, there is no bus")
    conf = bus_settings()
    if conf.EXTERNALISE_ALL:
        return bus_subscriber(ordered=conf.ORDERED), None
    types = [cls.event_type for cls in event_types_all() if event_externalised(cls.event_type)]
    return bus_subscriber(ordered=conf.ORDERED), types
