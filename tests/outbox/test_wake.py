"""Relay wake-ups after commit: one on its way at a time on Redis, one per commit elsewhere, by
NOTIFY on PostgreSQL when set, and never a commit that waits for beat's tick."""

from __future__ import annotations

import time

import pytest
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction

from outbox import publish
from outbox.models import Delivery
from outbox.relay import RELAY_QUEUE, relay_run
from outbox.wake import LISTENER_NAME, NOTIFY_CHANNEL, wake_flag_lower
from shop.celery import app as celery_app
from tests.support import running_worker, wait_until
from tests.testapp.events import ThingHappened

pytestmark = pytest.mark.django_db(transaction=True)

on_redis = pytest.mark.skipif(
    not settings.CELERY_BROKER_URL.startswith("redis://"), reason="the flag lives in Redis"
)


def relay_queue_size() -> int:
    with celery_app.connection_for_write() as conn:
        return conn.default_channel.queue_declare(RELAY_QUEUE).message_count


@pytest.fixture(autouse=True)
def empty_relay_queue():
    with celery_app.connection_for_write() as conn:
        conn.default_channel.queue_declare(RELAY_QUEUE)
        conn.default_channel.queue_purge(RELAY_QUEUE)
    wake_flag_lower()
    yield


def commit(thing_id: str) -> None:
    with transaction.atomic():
        publish(ThingHappened(thing_id=thing_id))


@on_redis
def test_commits_while_a_wake_up_is_on_its_way_send_no_other():
    for n in range(3):
        commit(f"t{n}")
    assert relay_queue_size() == 1
    relay_run()  # what the wake-up makes happen: the flag comes down before the claim
    commit("after")
    assert relay_queue_size() == 2


@on_redis
def test_the_next_run_claims_the_commits_that_sent_no_wake_up():
    for n in range(3):
        commit(f"t{n}")
    assert relay_queue_size() == 1
    sent = relay_run()
    assert sent == Delivery.objects.count() == 9  # 3 events x 3 subscribers of ThingHappened
    assert not Delivery.objects.filter(dispatched_at__isnull=True).exists()


@on_redis
def test_a_flag_left_by_a_lost_wake_up_expires(monkeypatch):
    monkeypatch.setattr("outbox.wake.FLAG_SECONDS", 1)
    commit("first")
    with celery_app.connection_for_write() as conn:
        conn.default_channel.queue_purge(RELAY_QUEUE)  # the wake-up is lost; the flag stays
    commit("while the flag is up")
    assert relay_queue_size() == 0  # beat's tick would dispatch it now; the relay is not woken
    time.sleep(1.2)
    commit("after it expired")
    assert relay_queue_size() == 1


def test_every_commit_wakes_the_relay_where_there_is_no_flag(monkeypatch):
    monkeypatch.setattr("outbox.wake._flag", lambda: None)  # as on the filesystem broker
    for n in range(3):
        commit(f"t{n}")
    assert relay_queue_size() == 3


def test_a_flag_that_cannot_be_read_still_wakes_the_relay(monkeypatch):
    def unreachable():
        raise ConnectionError("Redis is restarting")

    monkeypatch.setattr("outbox.wake._flag", unreachable)
    commit("t")
    assert relay_queue_size() == 1


def test_a_busy_relay_gathers_commits_before_its_next_woken_run(monkeypatch, settings):
    settings.OUTBOX = {**settings.OUTBOX, "RELAY_GATHER_SECONDS": 0.05}
    waits: list[float] = []
    # The relay's clock advances 1 ms per reading, whatever the machine's load: a run takes a
    # few ms, well inside the gathering window, as it does on an idle machine.
    clock = iter(1_000_000 + n / 1000 for n in range(1_000_000))
    monkeypatch.setattr("outbox.relay.time.time", lambda: next(clock))
    monkeypatch.setattr("outbox.relay.time.sleep", waits.append)
    monkeypatch.setattr("outbox.relay._last_busy_run_started", 0.0)
    monkeypatch.setattr("outbox.relay._last_full_drain_started", 0.0)

    relay_run(woken_at=next(clock))  # nothing due: no wait, and the next run waits for nothing
    commit("t1")
    relay_run(woken_at=next(clock))
    assert waits == []
    commit("t2")
    relay_run(woken_at=next(clock))  # right after a run that claimed something
    assert len(waits) == 1 and 0 < waits[0] <= 0.05
    commit("t3")
    relay_run()  # beat's tick is never held back
    assert len(waits) == 1
    assert not Delivery.objects.filter(dispatched_at__isnull=True).exists()


# --- By NOTIFY (PostgreSQL, OUTBOX["WAKE_BY_NOTIFY"]) -------------------------------------------

on_postgres = pytest.mark.skipif(connection.vendor != "postgresql", reason="NOTIFY is PostgreSQL's")


@pytest.fixture
def by_notify(settings):
    settings.OUTBOX = {**settings.OUTBOX, "WAKE_BY_NOTIFY": True}


@pytest.fixture
def listening():
    """A connection of the test's own that LISTENs on the relay's channel."""
    own = connections.create_connection(DEFAULT_DB_ALIAS)
    own.ensure_connection()
    own.connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
    yield own.connection
    own.close()


def notifications(raw) -> int:
    time.sleep(0.2)  # delivered at commit; give it the time to cross the socket
    return sum(1 for _ in raw.notifies(timeout=0))


def listener_pids() -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s",
            [LISTENER_NAME],
        )
        return [pid for (pid,) in cursor.fetchall()]


def delivered(count: int):
    return lambda: Delivery.objects.filter(status="done").count() == count


@on_postgres
def test_by_notify_a_commit_notifies_once_and_sends_no_message(by_notify, listening):
    with transaction.atomic():
        for n in range(3):
            publish(ThingHappened(thing_id=f"t{n}"))
    assert notifications(listening) == 1  # one per transaction, however many publishes
    assert relay_queue_size() == 0
    commit("second")
    assert notifications(listening) == 1


@on_postgres
def test_by_notify_a_rolled_back_publish_notifies_no_one(by_notify, listening):
    with pytest.raises(RuntimeError), transaction.atomic():
        publish(ThingHappened(thing_id="gone"))
        raise RuntimeError("rolled back")
    with transaction.atomic():
        with pytest.raises(RuntimeError), transaction.atomic():  # a savepoint
            publish(ThingHappened(thing_id="gone too"))
            raise RuntimeError("rolled back")
        Delivery.objects.count()
    assert notifications(listening) == 0


@on_postgres
def test_by_notify_a_published_event_is_handled_without_beat(by_notify):
    with running_worker():
        wait_until(lambda: len(listener_pids()) == 1, timeout=10, what="the relay listening")
        commit("woken")
        wait_until(delivered(3), timeout=10, what="three deliveries done, no beat")
        commit("woken again")
        wait_until(delivered(6), timeout=10, what="three more")
    assert relay_queue_size() == 0  # no wake-up went through the broker
    assert listener_pids() == []  # the worker's stop ends the listener and its connection


@on_postgres
def test_by_notify_the_listener_comes_back_after_losing_its_connection(by_notify):
    with running_worker():
        wait_until(lambda: len(listener_pids()) == 1, timeout=10, what="the relay listening")
        [lost] = listener_pids()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [lost])
        commit("while it reconnects")
        wait_until(delivered(3), timeout=10, what="the commit handled, no beat")
        wait_until(
            lambda: len(listener_pids()) == 1 and listener_pids() != [lost],
            timeout=10,
            what="a new listening connection",
        )
        commit("after it came back")
        wait_until(delivered(6), timeout=10, what="woken by the new connection")


@pytest.mark.skipif(connection.vendor == "postgresql", reason="the path without NOTIFY")
def test_without_postgresql_the_setting_changes_nothing(by_notify, monkeypatch):
    monkeypatch.setattr("outbox.wake._flag", lambda: None)  # every commit sends its wake-up
    for n in range(2):
        commit(f"t{n}")
    assert relay_queue_size() == 2
