"""Keep each worker process's database connection across tasks.

Celery's Django fix-up closes every database connection before and after each task unless
CELERY_DB_REUSE_MAX is set, so each delivery (and each relay run) opens a new PostgreSQL
connection, whose new backend then warms its catalogue caches on the first query.
"""

from shop.settings import *  # noqa: F403

# The fix-up then closes connections every 2 x this many tasks only.
CELERY_DB_REUSE_MAX = 1000
