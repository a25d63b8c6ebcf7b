"""A worker treats each task as Django treats a request: its database connection outlives the
task up to CONN_MAX_AGE, and a broken one is replaced, instead of a new session per task."""

from __future__ import annotations

import pytest
from django.db import connection, connections

from shop.celery import app as celery_app
from tests.support import is_postgres, running_worker, wait_until

QUEUE = "tests-connections"
seen: list[object] = []


@celery_app.task(name="tests.connection_note", queue=QUEUE, ignore_result=True)
def connection_note(*, break_it: bool = False, close_it: bool = False) -> None:
    connection.ensure_connection()
    seen.append(connection.connection)
    if break_it:  # as a database restart leaves it: unusable, and the error noticed
        connection.connection.close()
        connection.errors_occurred = True
    if close_it:
        connection.close()


@pytest.fixture
def conn_max_age():
    default = connections.settings["default"]
    before = default["CONN_MAX_AGE"]
    yield lambda seconds: default.__setitem__("CONN_MAX_AGE", seconds)
    default["CONN_MAX_AGE"] = before


def notes(*calls: dict) -> list[object]:
    seen.clear()
    with running_worker(queues=[QUEUE], concurrency=1):  # one thread: one connection
        # Sent at once: both brokers keep one producer's messages in order (the embedded one
        # since shop/broker.py stamps them so), and the calls' order matters.
        for kwargs in calls:
            connection_note.apply_async(kwargs=kwargs)
        wait_until(lambda: len(seen) == len(calls), timeout=60, what="every task to run")
    return list(seen)


@pytest.mark.e2e
def test_tasks_share_a_connection_within_conn_max_age(transactional_db, conn_max_age):
    conn_max_age(60)
    first, second, third = notes({}, {}, {"close_it": True})
    assert first is second is third


@pytest.mark.e2e
@pytest.mark.postgres
def test_a_broken_connection_is_replaced_before_the_next_task(transactional_db, conn_max_age):
    if not is_postgres():
        pytest.skip("Django's SQLite backend reports every connection usable")
    conn_max_age(60)
    first, second, third = notes({"break_it": True}, {}, {"close_it": True})
    assert second is not first
    assert third is second


@pytest.mark.e2e
def test_conn_max_age_zero_gives_each_task_its_own_connection(transactional_db, conn_max_age):
    conn_max_age(0)
    first, second = notes({}, {"close_it": True})
    assert first is not second
