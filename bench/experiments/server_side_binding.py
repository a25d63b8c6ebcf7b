"""psycopg binds the parameters of every statement server-side (Django's ``server_side_binding``)
instead of quoting them into the SQL text client-side, so psycopg prepares a statement after its
fifth execution on a connection (``prepare_threshold``, 5 by default): the publish statement is
then parsed and planned once per connection. On PostgreSQL only. For an A/B run:
``bench/run.py --only publish,latency,e2e --ab bench.experiments.server_side_binding``.
"""

from shop.settings import *  # noqa: F403
from shop.settings import DATABASES

if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["OPTIONS"] = {
        **DATABASES["default"].get("OPTIONS", {}),
        "server_side_binding": True,
    }
