"""The relay publishes small bus claims itself, in a thread of its own process.

Without this, every claimed bus delivery takes a Celery hop: the relay sends its id to the
``bus`` queue and that queue's worker publishes it (``bus_deliveries_publish``). At a steady
trickle of events that hop (a broker message, the worker's turn) is a fair share of the time
from a commit to the broker's confirm. In the relay's worker (the process that consumes the
``outbox`` queue) a claim of at most ``EVENT_BUS["RELAY_PUBLISH_MAX"]`` bus deliveries is handed
instead to a publishing thread of that process, which runs the very same
``bus_deliveries_publish`` with its own database connection and its own broker connection: a
delivery is still done only after the broker confirmed it, a failed one is still retried with
backoff and dead-lettered, and an ordered delivery is still claimed only once the one before it
is done, whichever path published that one.

The relay's run also dispatches every local delivery, so nothing here may make it wait on a
broker:

- the hand-over is ``put_nowait`` on a queue of at most ``QUEUE_BATCHES`` batches: when the
  thread is behind, the claim goes to the ``bus`` queue as before;
- a batch that fails (any delivery not confirmed, or an error) or takes longer than
  ``SLOW_SECONDS`` (a broker that blocks publishers, a confirm that times out) turns the thread
  off for ``FALLBACK_SECONDS``: until then every claim goes to the ``bus`` queue, and so do the
  batches already waiting for the thread, without touching the broker. After it, the next small
  claim tries the broker again from the thread;
- a batch the thread never publishes (the process stopped or died) is leased, as every claimed
  delivery is: the next claim after its lease takes it again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time

from django.db import close_old_connections, connection

from outbox.bus.conf import bus_settings

logger = logging.getLogger(__name__)

# Batches waiting for the thread at most; one more claim goes to the ``bus`` queue.
QUEUE_BATCHES = 4
# A batch that took longer than this (publish and confirms) turns the thread off for a while.
SLOW_SECONDS = 1.0
# How long claims go to the ``bus`` queue after a failed or slow batch.
FALLBACK_SECONDS = 30.0
THREAD_NAME = "outbox-relay-bus-publisher"

_STOP = object()


class RelayPublisher:
    """A publishing thread of the relay's process and its bounded queue (started on the first
    batch, again in a forked child)."""

    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self._fallback_until = 0.0
        self._stopped = False

    def offer(self, ids: list[int]) -> bool:
        """Hand ``ids`` (one claim's bus deliveries) to the thread; False when the caller is to
        send them to the ``bus`` queue instead: too many, the thread off after a failure, or
        its queue full. Never waits."""
        limit = bus_settings().RELAY_PUBLISH_MAX
        if not ids or len(ids) > limit or time.monotonic() < self._fallback_until:
            return False
        try:
            self._ensure_thread()
            self._queue.put_nowait(list(ids))
        except queue.Full:
            return False
        return True

    def falling_back(self) -> bool:
        return time.monotonic() < self._fallback_until

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._stopped:
                raise queue.Full  # stopping: the caller sends to the bus queue
            if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
                return
            # A forked child inherits the parent's queue and no thread: both start afresh.
            self._queue = queue.Queue(maxsize=QUEUE_BATCHES)
            self._thread = threading.Thread(target=self._loop, name=THREAD_NAME, daemon=True)
            self._pid = os.getpid()
            self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Publish what is queued, then end the thread (a batch left over is leased)."""
        with self._lock:
            self._stopped = True
            thread, self._thread = self._thread, None
        if thread is None or not thread.is_alive() or self._pid != os.getpid():
            return
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=timeout)
        thread.join(timeout)

    def _loop(self) -> None:
        try:
            while True:
                ids = self._queue.get()
                if ids is _STOP:
                    return
                # What queued up while the last batch waited for its confirms: one batch more,
                # one confirm round trip for them all (no wait for more).
                stop = self._more(ids)
                try:
                    if self.falling_back():
                        self._to_bus_queue(ids)
                    else:
                        self._publish(ids)
                except Exception:  # never the end of the thread: the batch is leased
                    logger.exception("the relay's bus publisher failed on %s deliveries", len(ids))
                if stop:
                    return
        finally:
            connection.close()  # this thread's own

    def _more(self, ids: list[int]) -> bool:
        """Add to ``ids`` the batches waiting behind it, within ``BATCH_SIZE`` (each holds at
        most ``RELAY_PUBLISH_MAX``); True when the stop came among them."""
        conf = bus_settings()
        while len(ids) + conf.RELAY_PUBLISH_MAX <= conf.BATCH_SIZE:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                return False
            if more is _STOP:
                return True
            ids.extend(more)
        return False

    def _publish(self, ids: list[int]) -> None:
        from outbox.bus.publishing import bus_deliveries_publish

        close_old_connections()
        started = time.monotonic()
        try:
            outcomes = bus_deliveries_publish(delivery_ids=ids)
        except Exception as exc:
            # Rolled back: the deliveries stay pending, leased; the next claim after the lease
            # takes them again. A broken connection is replaced for the next batch.
            logger.warning(
                "the relay could not publish %s bus deliveries (%s); they are sent again when "
                "their lease runs out",
                len(ids),
                exc,
                exc_info=True,
            )
            connection.close()
            self._fall_back(f"{type(exc).__name__}: {exc}")
            return
        seconds = time.monotonic() - started
        if outcomes["retry"] or outcomes["dead"]:
            self._fall_back(f"{outcomes['retry'] + outcomes['dead']} not confirmed")
        elif seconds > SLOW_SECONDS:
            self._fall_back(f"a batch took {seconds:.1f}s")

    def _fall_back(self, reason: str) -> None:
        self._fallback_until = time.monotonic() + FALLBACK_SECONDS
        logger.warning(
            "the relay hands bus deliveries to the bus queue for %.0fs: %s",
            FALLBACK_SECONDS,
            reason,
        )

    def _to_bus_queue(self, ids: list[int]) -> None:
        from outbox.bus.target import bus_batches
        from outbox.transport import transport_get

        try:
            transport_get().deliveries_send([], bus_batches(ids))
        except Exception:
            logger.warning(
                "could not send %s bus deliveries to the bus queue; they are sent again when "
                "their lease runs out",
                len(ids),
                exc_info=True,
            )


_publisher: RelayPublisher | None = None


def relay_publisher_start() -> None:
    """This process is the relay's: small bus claims go to a publishing thread from now on
    (outbox/tasks.py, a step of the relay's worker, from its start to its stop)."""
    global _publisher
    if _publisher is None:
        _publisher = RelayPublisher()


def relay_publisher_stop() -> None:
    """Publish what the thread holds, end it and close its database connection; claims go to
    the bus queue from now on."""
    global _publisher
    publisher, _publisher = _publisher, None
    if publisher is not None:
        publisher.stop()


def relay_publisher_offer(ids: list[int]) -> bool:
    """Hand one claim's bus deliveries to this process's publishing thread; False when there is
    none (not the relay's process, the bus off or ``RELAY_PUBLISH_MAX`` 0) or it declines: the
    caller sends them to the ``bus`` queue."""
    if _publisher is None or not ids:
        return False
    conf = bus_settings()
    if not conf.enabled or conf.RELAY_PUBLISH_MAX <= 0:
        return False
    return _publisher.offer(ids)
