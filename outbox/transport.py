"""What the outbox sends with, handed over by ``outbox/tasks.py``: the one module that talks to
Celery. The relay, the wake-up and the publisher use the transport set here and import no task,
so they know nothing of Celery and nothing imports them back (no relay -> tasks -> relay)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured


@dataclass(frozen=True)
class Transport:
    # Send delivery ids over one connection: (queue, ids) per message to subscribers' queues,
    # and batches of bus delivery ids to the bus queue (outbox/bus/), one message each.
    deliveries_send: Callable[[list[tuple[str, list[int]]], list[list[int]]], None]
    # Ask the relay to run; the argument is when the wake-up was sent (time.time()).
    relay_wake_send: Callable[[float], None]
    # The broker's URL and transport options, read when used (tests change them at start-up).
    broker: Callable[[], tuple[str, dict]]


_transport: Transport | None = None


def transport_set(transport: Transport) -> None:
    global _transport
    _transport = transport


def transport_get() -> Transport:
    if _transport is None:
        raise ImproperlyConfigured(
            "the outbox has no transport: outbox.tasks sets it when the outbox app is ready"
        )
    return _transport
