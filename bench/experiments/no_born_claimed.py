"""Before continued deliveries were born claimed: a step's publish inserts the deliveries the
worker will continue as due, and the worker claims them in a transaction of its own once the
step has committed (outbox/continuation.py). For an A/B run:
``bench/run.py --only saga,e2e,latency --ab bench.experiments.no_born_claimed``.
"""

from shop.settings import *  # noqa: F403
from shop.settings import OUTBOX

OUTBOX = {**OUTBOX, "CONTINUATION_BORN_CLAIMED": False}
