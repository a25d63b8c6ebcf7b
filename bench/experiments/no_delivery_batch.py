"""Before several deliveries per transaction: each delivery of a message, and each the
worker's continuation claims, runs in a transaction of its own (outbox/handling.py,
``deliveries_handle_together``). For an A/B run:
``make bench ARGS="--only saga,e2e --ab bench.experiments.no_delivery_batch"``.
"""

from shop.settings import *  # noqa: F403
from shop.settings import OUTBOX

OUTBOX = {**OUTBOX, "DELIVERY_BATCH_SIZE": 1}
