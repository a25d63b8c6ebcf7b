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

On PostgreSQL with ``OUTBOX["WAKE_BY_NOTIFY"]`` there is no flag and no message: the publish
statement itself calls ``pg_notify`` (``outbox/sql.py``), and the relay's worker LISTENs in a
thread of its own (:class:`RelayListener`) that runs the relay when a notification arrives. The
argument that nothing waits for beat's tick:

* PostgreSQL delivers a notification only when its transaction commits, and to a listener only
  after that commit is visible (a rolled-back transaction or savepoint notifies no one): a run
  that begins after the listener read it claims the commit;
* notifications that arrive while a run is under way wait in the listener's connection, and
  the next run begins after the listener read them all, so one run answers many commits;
* a notification sent while the listener is not connected is lost (LISTEN does not queue for
  absent listeners), so the listener runs the relay each time it has reconnected and LISTENs;
  between the loss and that run beat's tick, every second, claims what is due (at start-up,
  as before there was a listener, beat's tick or a wake-up starts the relay).

Nothing is ever lost by any of this either: the database is the record.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from collections.abc import Callable

import redis
from django.db import DEFAULT_DB_ALIAS, close_old_connections, connections

from outbox.conf import outbox_settings
from outbox.transport import transport_get

logger = logging.getLogger(__name__)

FLAG_SECONDS = 2
FLAG_KEY = "outbox:relay-wake"

# The channel is the database's own: each service's relay hears its own database's commits.
NOTIFY_CHANNEL = "outbox_relay"
NOTIFY_SQL = f"SELECT pg_notify('{NOTIFY_CHANNEL}', '')"
# How long the listener waits for a notification before it looks at its stop flag again.
LISTEN_POLL_SECONDS = 1.0
# The longest pause between two attempts to reconnect (it doubles from 50 ms up to this).
LISTEN_RECONNECT_MAX_SECONDS = 1.0
LISTENER_NAME = "outbox-relay-listener"

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


def wake_by_notify(using: str = DEFAULT_DB_ALIAS) -> bool:
    """True when commits on ``using`` wake the relay by NOTIFY (its listener LISTENs on the
    default database only)."""
    return (
        using == DEFAULT_DB_ALIAS
        and connections[using].vendor == "postgresql"
        and outbox_settings().WAKE_BY_NOTIFY
    )


def relay_wake() -> None:
    """Ask the relay to run now rather than at beat's next tick, unless a wake-up is already on
    its way. Best effort: if the broker is unreachable the events are safe in the database and
    beat's tick will find them.

    Also where commits wake the relay by NOTIFY: called after a commit, as here (a worker's
    continuation leaving deliveries over, a replay), a ``pg_notify`` would be a transaction of
    its own, with a commit record to flush under NOTIFY's lock; the flag and the message cost
    less, and the relay's worker takes its messages as before."""
    if not wake_flag_raise():
        return
    try:
        transport_get().relay_wake_send(time.time())
    except Exception:
        logger.warning("could not wake the relay; beat's tick will dispatch", exc_info=True)


class RelayListener:
    """LISTENs on the default database in a thread of its own and calls ``run(woken_at)`` (the
    relay) once per batch of notifications, and once after each reconnection.

    Its connection does nothing but listen (``application_name`` ``outbox-relay-listener`` in
    ``pg_stat_activity``) and, after each ``LISTEN_POLL_SECONDS`` without a notification, ask
    the server whether it is still there, so a connection that died silently is found within
    about that long. ``run`` uses the thread's own Django connection. A lost connection is
    retried after 50 ms, doubling up to ``LISTEN_RECONNECT_MAX_SECONDS``; a failing run is
    logged and the listener goes on (beat's tick is the safety net for both). ``stop`` ends the
    thread at once, whatever it waits for."""

    def __init__(self, run: Callable[[float], object]):
        self._run = run
        self._stop = threading.Event()
        self._stop_read, self._stop_write = os.pipe()
        self._thread = threading.Thread(target=self._loop, name=LISTENER_NAME, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        os.write(self._stop_write, b"x")
        self._thread.join(timeout)
        if not self._thread.is_alive():
            os.close(self._stop_read)
            os.close(self._stop_write)

    def _loop(self) -> None:
        # Not at start-up: the relay then waits for a wake-up or beat's tick, as without NOTIFY
        # (and the bench's relay scenario starts the relay's drain on its own signal).
        listened = False
        failures = 0
        try:
            while not self._stop.is_set():
                listening = connections.create_connection(DEFAULT_DB_ALIAS)
                try:
                    listening.ensure_connection()
                    raw = listening.connection
                    raw.execute(f"SET application_name = '{LISTENER_NAME}'")
                    raw.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    failures = 0
                    if listened:  # whatever committed while nothing listened
                        self._wake()
                    listened = True
                    self._listen(raw)
                except Exception:
                    if self._stop.is_set():
                        break
                    failures += 1
                    logger.warning(
                        "relay listener lost its database connection; reconnecting (beat's "
                        "tick dispatches meanwhile)",
                        exc_info=True,
                    )
                finally:
                    with contextlib.suppress(Exception):
                        listening.close()
                self._stop.wait(min(LISTEN_RECONNECT_MAX_SECONDS, 0.05 * 2 ** (failures - 1)))
        finally:
            connections.close_all()  # this thread's own, the relay's

    def _listen(self, raw) -> None:
        """Until stopped; raises when the connection is lost."""
        while not self._stop.is_set():
            ready, _, _ = select.select(
                [raw.fileno(), self._stop_read], [], [], LISTEN_POLL_SECONDS
            )
            if self._stop_read in ready:
                return
            # Every notification that has arrived, however many commits: one run for them all.
            if ready and any(True for _ in raw.notifies(timeout=0)):
                self._wake()
                continue
            # Quiet, or readable with nothing to read (the server hung up): still there?
            raw.execute("SELECT 1")  # raises if not

    def _wake(self) -> None:
        try:
            self._run(time.time())
        except Exception:
            logger.warning("relay run after a notification failed", exc_info=True)
            # The next run opens a new connection: no health check before each run (a round
            # trip as long as the claim), a broken connection is found by the run it breaks.
            close_old_connections()
            connections[DEFAULT_DB_ALIAS].close()


# Pools whose worker runs tasks in the process that starts the listener's thread: a prefork
# pool forks its processes from it, and a thread holding a connection does not survive a fork.
_LISTENER_POOLS = ("celery.concurrency.solo", "celery.concurrency.thread")


def relay_listener_wanted(pool_cls) -> bool:
    """Whether the relay's worker listens (its commits wake it by NOTIFY); on a pool it cannot
    run beside, it says so, and beat's tick wakes the relay."""
    from celery.concurrency import get_implementation

    if not wake_by_notify():
        return False
    if get_implementation(pool_cls).__module__ not in _LISTENER_POOLS:
        logger.warning(
            "OUTBOX WAKE_BY_NOTIFY needs the relay's worker on the solo (or threads) pool; this "
            "one listens to no notification, and beat's tick wakes the relay every second"
        )
        return False
    return True
