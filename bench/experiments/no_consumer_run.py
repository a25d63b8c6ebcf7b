"""Before the consumer ran what it stored: B's consumer stores each batch and wakes its relay,
whose claim sends the deliveries to B's worker through Celery, instead of claiming a small
batch's deliveries itself and running them in its own process once the batch is acknowledged
(``EVENT_BUS["RUN"]``, outbox/bus/consuming.py, ``ConsumerRun``). What the two hops on B cost
in cross-database latency, and what running handlers in the consumer costs it in throughput.
For an A/B run:
``bench/run.py --only bus_latency --ab bench.experiments.no_consumer_run``.
"""

from shop.settings import *  # noqa: F403
from shop.settings import EVENT_BUS

EVENT_BUS = {**EVENT_BUS, "RUN": False}
