"""Before connection reuse: a new database connection for every task, as Celery's Django fix-up
gives when CELERY_DB_REUSE_MAX is unset (shop/celery.py explains the change). For an A/B run:
``make bench ARGS="--only e2e --settings bench.experiments.new_connection_per_task"``.
"""

from shop.settings import *  # noqa: F403
from shop.settings import DATABASES

CELERY_DB_REUSE_MAX = None
DATABASES["default"]["CONN_MAX_AGE"] = 0
