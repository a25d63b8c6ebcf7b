"""Relay wake-ups after commit: one on its way at a time on Redis, one per commit elsewhere, and
never a commit that waits for beat's tick."""

from __future__ import annotations

import time

import pytest
from django.conf import settings
from django.db import transaction

from outbox import publish
from outbox.models import Delivery
from outbox.relay import RELAY_QUEUE, relay_run
from outbox.wake import wake_flag_lower
from shop.celery import app as celery_app
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
