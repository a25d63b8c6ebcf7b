"""Before Celery messages without acknowledgement emulation: kombu's default on Redis, which
copies every message a worker takes to the ``unacked`` hash (one pipelined round trip) and
removes it when the worker acknowledges it (another), with a periodic sweep that restores
unacknowledged ones after the visibility timeout. shop/settings.py now switches it off (it was
measured as B, "no emulation", against it as A; docs/benchmarks.md). For an A/B run:
``make bench ARGS="--only e2e --ab bench.experiments.redis_ack_emulation"``.
"""

from shop.settings import *  # noqa: F403
from shop.settings import CELERY_BROKER_URL

if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CELERY_BROKER_TRANSPORT_OPTIONS = {"ack_emulation": True}
