"""Before the lean worker: Celery's INFO lines per task message ("Task ... received", "Task ...
succeeded in ...") and its rate-limit bookkeeping, both of which shop/settings.py now leaves
out. For an A/B run: ``make bench ARGS="--only saga --ab bench.experiments.celery_task_logs"``.
"""

from shop.settings import *  # noqa: F403
from shop.settings import LOGGING

CELERY_WORKER_DISABLE_RATE_LIMITS = False
LOGGING = {
    **LOGGING,
    "loggers": {
        name: config
        for name, config in LOGGING["loggers"].items()
        if name not in ("celery.worker.strategy", "celery.app.trace")
    },
}
