"""The worker reserves one message per process (Celery's default is 4): fewer deliveries wait
in one process's buffer while the other is idle, at one broker round trip per message. For an
A/B run: ``make bench ARGS="--only saga --ab bench.experiments.celery_prefetch_1"``.
"""

from shop.settings import *  # noqa: F403

CELERY_WORKER_PREFETCH_MULTIPLIER = 1
