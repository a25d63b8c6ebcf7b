"""The relay runs as soon as it is woken, without waiting out the rest of
``RELAY_GATHER_SECONDS`` after a busy run (outbox/relay.py): what the gathering costs in
commit-to-handler latency, and saves in relay CPU. For an A/B run:
``make bench ARGS="--only latency,bus_latency --ab bench.experiments.no_relay_gather"``.
"""

from shop.settings import *  # noqa: F403
from shop.settings import OUTBOX

OUTBOX = {**OUTBOX, "RELAY_GATHER_SECONDS": 0.0}
