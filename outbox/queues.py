"""The Celery queues: the relay's, named here once, and the subscribers', read from the registry.

A subscriber's queue is its app's label unless ``subscribe(queue=...)`` says otherwise, so an app
that subscribes to something has a queue without being listed anywhere. Processes take their
queues from here: the Procfile's worker and relay through ``manage.py outbox_queues``, the
benchmark's and the test suite's workers through :func:`subscriber_queues`.

Nothing here imports Django at module level: the settings import :data:`RELAY_QUEUE`.
"""

from __future__ import annotations

# The relay's tasks (and any task sent without a queue of its own) go here.
RELAY_QUEUE = "outbox"


def subscriber_queues() -> list[str]:
    """Every queue a subscriber's deliveries are sent to, sorted; never the relay's. With an
    event bus configured (``EVENT_BUS_URL``), the bus's queue too: its deliveries are published
    to the broker by whichever worker takes them (outbox/bus/).

    Call it once Django's apps are ready (the outbox app imports every app's handlers then).
    """
    from django.conf import settings

    from outbox.bus.target import BUS_QUEUE
    from outbox.registry import subscribers_all

    queues = {s.queue for s in subscribers_all()} - {RELAY_QUEUE}
    if getattr(settings, "EVENT_BUS_URL", ""):
        queues.add(BUS_QUEUE)
    return sorted(queues)
