"""Two counting subscribers for every event type the installed apps declare in their
``events`` modules (the saga's, and any added later): one plain, one ``ordered``, on two of the
shop's queues, so that fan-out and the ordered claim are counted too.

The event types are derived from INSTALLED_APPS, not listed: an event type added to an app is
counted without a change here.
"""

from __future__ import annotations

import sys

from django.apps import apps

from chaos.countingapp.models import CountedRun
from outbox import DomainEvent, subscribe
from outbox.context import handling_current

# (subscriber name prefix, queue, ordered)
COUNTERS = (("chaos.count", "orders", False), ("chaos.count_ordered", "inventory", True))


def counted_run_create(*, subscriber: str, event: DomainEvent) -> None:
    """Not idempotent on purpose: every run that commits is one more row."""
    CountedRun.objects.create(
        subscriber=subscriber,
        event_id=event.meta.event_id,
        event_type=event.event_type,
        attempt=handling_current().attempt,
    )


def _counter(subscriber: str):
    def count(event: DomainEvent) -> None:
        counted_run_create(subscriber=subscriber, event=event)

    count.__qualname__ = f"count[{subscriber}]"
    return count


def event_classes() -> list[type[DomainEvent]]:
    """Every event class declared in an installed app's ``events`` module."""
    found = []
    for config in apps.get_app_configs():
        module = sys.modules.get(f"{config.name}.events")
        for value in vars(module).values() if module else ():
            if (
                isinstance(value, type)
                and issubclass(value, DomainEvent)
                and value is not DomainEvent
                and value.__module__ == module.__name__
            ):
                found.append(value)
    return found


for _event_class in event_classes():
    for _prefix, _queue, _ordered in COUNTERS:
        _name = f"{_prefix}.{_event_class.event_type}"
        subscribe(_event_class, name=_name, queue=_queue, ordered=_ordered)(_counter(_name))
