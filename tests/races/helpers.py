"""Helpers of the race tests: these need PostgreSQL's row locks and real concurrency (SQLite
serialises every writer at BEGIN, so nothing can overlap there)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import contextmanager

import pytest
from django.db import connection, transaction

from outbox.models import Delivery


def skip_unless_postgres():
    return pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason=(
            "races need PostgreSQL: SQLite takes its one write lock at BEGIN (IMMEDIATE), so "
            "concurrent transactions queue instead of racing"
        ),
    )


def run_at_once(calls: list[Callable[[], object]], *, timeout: float = 120) -> list:
    """Run each call in its own thread (its own database connection), all released together by
    a barrier; returns their results in order, re-raising the first error."""
    start = threading.Barrier(len(calls), timeout=60)
    results: list = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int, call: Callable[[], object]) -> None:
        try:
            start.wait()
            results[index] = call()
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "a thread is still running"
    if errors:
        raise errors[0]
    return results


@contextmanager
def delivery_row_locked(pk: int, *, timeout: float = 60):
    """The delivery's row locked by another transaction (a thread's own connection), as a relay
    or worker at work would hold it, until the block ends."""
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        try:
            with transaction.atomic():
                Delivery.objects.select_for_update().get(pk=pk)
                locked.set()
                release.wait(timeout)
        finally:
            connection.close()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert locked.wait(timeout), "the row was never locked"
        yield
    finally:
        release.set()
        thread.join(timeout)
