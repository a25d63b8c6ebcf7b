"""Celery on Redis without kombu's acknowledgement emulation (the ``unacked`` hash: one
pipelined round trip when a worker takes a message, another when it acknowledges it). Measured
as B against the emulation as A it saved about 1 ms of worker CPU per message
(docs/benchmarks.md, lever d), but shop/settings.py keeps kombu's default: without the
emulation, a worker that cannot put its reserved messages back at shutdown (Redis already gone)
pickles them into a file in the temporary folder (kombu's emergency dump), the likely source
of two files a clean-clone run of the suite left behind. For an A/B run:
``make bench ARGS="--only e2e --ab bench.experiments.no_redis_ack_emulation"``.
"""

from shop.settings import *  # noqa: F403
from shop.settings import CELERY_BROKER_URL

if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CELERY_BROKER_TRANSPORT_OPTIONS = {"ack_emulation": False}
