"""Before the wake-up by NOTIFY: every publishing transaction raises the Redis flag (``SET NX``)
after its commit and sends the relay a Celery message when the flag was down, instead of the
publish statement's ``pg_notify`` and the relay's listener (outbox/wake.py). Measured as B =
``OUTBOX["WAKE_BY_NOTIFY"]`` on against A = off, when off was the default (docs/benchmarks.md,
"The publish path, again"). For an A/B run:
``bench/run.py --only publish,latency,e2e --ab bench.experiments.wake_by_broker``.
"""

from shop.settings import *  # noqa: F403
from shop.settings import OUTBOX

OUTBOX = {**OUTBOX, "WAKE_BY_NOTIFY": False}
