"""Helpers for tests: a real worker, a relay ticker, waiting, service checks."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from urllib.parse import urlparse

import pytest
from celery.contrib.testing.worker import TestWorkController, start_worker
from django.db import connection

from shop.celery import app as celery_app

IN_CI = bool(os.environ.get("CI"))


def require_service(url: str, name: str) -> None:
    """Skip when a service the test needs is down; in CI that is a failure, never a skip."""
    parts = urlparse(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or 0), timeout=2):
            return
    except OSError as exc:
        message = f"{name} at {parts.hostname}:{parts.port} is not reachable: {exc}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


def all_queues() -> list[str]:
    """The relay's queue and every subscriber's (the test app's among them), as in production."""
    from outbox.queues import RELAY_QUEUE
    from outbox.registry import subscriber_queues

    return [RELAY_QUEUE, *subscriber_queues()]


# How long the worker's loop may wait for a message before it looks at its shutdown flag again.
STOP_CHECK_SECONDS = 0.1


def _stop_check(*args) -> None:
    pass  # a timer of the event loop: it only bounds the loop's wait


class QuickStopWorkController(TestWorkController):
    """celery.contrib.testing's worker, which stops within ``STOP_CHECK_SECONDS``.

    A worker leaving ``running_worker`` is told to stop by a flag its loop reads between two
    waits for a message, and those waits are long: 2 s (twice, 4 s per stop) on a broker without
    an event loop (the embedded one); on Redis, closing the connection waits for the pending
    BRPOP's 1 s timeout. Bounding the wait changes nothing a task sees; only an idle worker's
    loop turns more often."""

    def on_consumer_ready(self, consumer):
        hub = getattr(self, "hub", None)
        if hub is not None:  # the event loop waits for a socket or its next timer
            hub.call_repeatedly(STOP_CHECK_SECONDS, _stop_check)
            transport = consumer.connection.transport
            if hasattr(transport, "brpop_timeout"):  # Redis: each channel's wait for a message
                transport.brpop_timeout = STOP_CHECK_SECONDS
                for channel in transport.channels:
                    channel.brpop_timeout = STOP_CHECK_SECONDS
        else:  # the blocking loop drains the connection with a 2 s timeout
            connection = consumer.connection
            drain = connection.drain_events

            def drain_bounded(timeout=None, **kwargs):
                bound = STOP_CHECK_SECONDS if timeout is None else min(timeout, STOP_CHECK_SECONDS)
                return drain(timeout=bound, **kwargs)

            connection.drain_events = drain_bounded
        super().on_consumer_ready(consumer)


def running_worker(*, queues: list[str] | None = None, concurrency: int = 2):
    """A real Celery worker in a thread of this process, with a pool of ``concurrency`` threads,
    on ``queues`` (all of them unless given)."""
    return start_worker(
        celery_app,
        pool="threads",
        concurrency=concurrency,
        queues=queues if queues is not None else all_queues(),
        perform_ping_check=False,
        shutdown_timeout=60,
        loglevel="WARNING",
        WorkController=QuickStopWorkController,
    )


class relay_ticker:
    """Sends the relay task every ``interval`` seconds, as beat does in production."""

    def __init__(self, interval: float = 0.25):
        self.interval = interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        from outbox.tasks import relay

        while not self.stop.wait(self.interval):
            # A broker hiccup is no failure: the next tick tries again.
            with contextlib.suppress(Exception):
                relay.apply_async(kwargs={"source": "test-ticker"})

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)


def wait_until(predicate: Callable[[], bool], *, timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


def event_deliver(event, *, subscriber: str, correlation_id=None) -> str:
    """Publish ``event`` as its producer would, then run its delivery to ``subscriber`` here.

    The real path (stored event, upcasting, the delivery record, the handler's transaction)
    without a worker; returns the outcome: done, retry, dead, waiting or skipped.
    """
    from django.db import transaction

    from outbox import publish
    from outbox.handling import delivery_handle

    with transaction.atomic():
        stored = publish(event, correlation_id=correlation_id)
    return delivery_handle(delivery_id=stored.deliveries.get(subscriber=subscriber).pk)


def problem_places(response) -> set[str]:
    """Where a problem document's errors point, by their first step: a body field ("lines"),
    the body itself ("#"), a header or a query parameter (its name)."""
    assert response["Content-Type"] == "application/problem+json", response["Content-Type"]
    places = set()
    for error in response.json().get("errors", []):
        if "pointer" in error:
            places.add(error["pointer"].split("/")[1] if "/" in error["pointer"] else "#")
        else:
            places.add(error.get("header") or error["parameter"])
    return places
