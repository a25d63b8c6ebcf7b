"""The outbox's own Celery queues, named here once: the relay's and the bus's.

A subscriber's queue is its app's label unless ``subscribe(queue=...)`` says otherwise, so an app
that subscribes to something has a queue without being listed anywhere; the registry lists them
(``outbox.registry.subscriber_queues``). Processes take their queues from there: the Procfile's
worker and relay through ``manage.py outbox_queues``, the benchmark's and the test suite's
workers by calling it.

Nothing here imports Django at module level: the settings import :data:`RELAY_QUEUE`.
"""

from __future__ import annotations

# The relay's tasks (and any task sent without a queue of its own) go here.
RELAY_QUEUE = "outbox"
# Bus deliveries: a worker that serves this queue publishes them to the broker (outbox/bus/).
BUS_QUEUE = "bus"
