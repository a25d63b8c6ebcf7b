"""Relay wake-ups by PostgreSQL NOTIFY: the publish statement calls ``pg_notify`` and the relay's
worker LISTENs (outbox/wake.py), instead of a Redis ``SET NX`` after each publishing commit and a
Celery message when the flag was down. For an A/B run:
``bench/run.py --only publish,latency,e2e --ab bench.experiments.wake_by_notify``.
"""

from shop.settings import *  # noqa: F403
from shop.settings import OUTBOX

OUTBOX = {**OUTBOX, "WAKE_BY_NOTIFY": True}
