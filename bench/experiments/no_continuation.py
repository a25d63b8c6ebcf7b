"""Before continuation: every delivery a handler's transaction commits waits for a relay claim,
a broker message and a Celery task, even when the worker that ran the handler serves its queue
(outbox/continuation.py). For an A/B run:
``make bench ARGS="--only saga --ab bench.experiments.no_continuation"``.
"""

from shop.settings import *  # noqa: F403
from shop.settings import OUTBOX

OUTBOX = {**OUTBOX, "CONTINUATION": False}
