"""Before the relay published small bus claims itself: every claimed bus delivery goes to the
``bus`` queue's worker in a Celery message, which publishes it (outbox/bus/relaying.py). For an
A/B run: ``bench/run.py --only bus_latency,bus --ab bench.experiments.no_relay_publish``.
"""

from shop.settings import *  # noqa: F403
from shop.settings import EVENT_BUS

EVENT_BUS = {**EVENT_BUS, "RELAY_PUBLISH_MAX": 0}
