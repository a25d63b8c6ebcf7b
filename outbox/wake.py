"""Relay wake-ups, coalesced: at most one on its way at a time, on a Redis broker.

Every transaction that publishes asks the relay to run once it has committed. Sent one message
per commit, a steady stream of small transactions makes the relay run once per commit, each run
claiming one or two deliveries. Instead the publisher raises a flag in the broker's Redis
(``SET NX``) after its commit and sends a wake-up only when it was the one to raise it; the relay
lowers the flag before it claims. That ordering is the whole argument that nothing waits for
beat's tick:

* a publisher that finds the flag up committed before it looked, and the flag was raised by a
  wake-up that no run has answered yet (every run lowers it first); the next run lowers it after
  that look, so its claim, which comes after, sees the commit;
* a publisher that raises it sends its own wake-up.

If a wake-up is lost with the flag up (a relay killed while holding the message), the next relay
run lowers it: beat's tick every second, or the flag's expiry after ``FLAG_SECONDS``. Nothing is
ever lost by any of this: the database is the record and beat's tick claims whatever is due.

On a broker other than Redis (the embedded filesystem broker) every commit sends its wake-up.
"""

from __future__ import annotations

import logging
import time

import redis

from outbox.transport import transport_get

logger = logging.getLogger(__name__)

FLAG_SECONDS = 2
FLAG_KEY = "outbox:relay-wake"

_clients: dict[str, redis.Redis] = {}


def _flag() -> tuple[redis.Redis, str] | None:
    url, options = transport_get().broker()
    if not url.startswith(("redis://", "rediss://")):
        return None
    client = _clients.get(url)
    if client is None:
        # Short timeouts: a wake-up is an optimisation and must never hold a request up for long.
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        _clients[url] = client
    prefix = options.get("global_keyprefix", "")
    return client, f"{prefix}{FLAG_KEY}"


def wake_flag_raise() -> bool:
    """Raise the flag; True when this caller raised it (and so must send the wake-up).

    True as well where there is no flag (not Redis) or it cannot be read: sending one wake-up
    too many costs a query, a missing one costs latency.
    """
    try:
        flag = _flag()
        if flag is None:
            return True
        client, key = flag
        return bool(client.set(key, b"1", nx=True, ex=FLAG_SECONDS))
    except Exception:
        logger.debug("relay wake flag not readable; sending the wake-up", exc_info=True)
        return True


def wake_flag_lower() -> None:
    """Lower the flag; the relay calls this before a run's first claim."""
    try:
        flag = _flag()
        if flag is not None:
            client, key = flag
            client.delete(key)
    except Exception:
        # Left up, it expires after FLAG_SECONDS; until then beat's tick does the waking.
        logger.debug("relay wake flag not lowered", exc_info=True)


def relay_wake() -> None:
    """Ask the relay to run now rather than at beat's next tick, unless a wake-up is already on
    its way. Best effort: if the broker is unreachable the events are safe in the database and
    beat's tick will find them."""
    if not wake_flag_raise():
        return
    try:
        transport_get().relay_wake_send(time.time())
    except Exception:
        logger.warning("could not wake the relay; beat's tick will dispatch", exc_info=True)
