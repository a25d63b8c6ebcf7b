"""A relay run: batch after batch until nothing is due, within its time box; wake-ups a drain
already answered; the heartbeat /readyz reads. The relay's clock is a counter here (one
millisecond per reading, as on an idle machine), so no test depends on how fast this one is."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
from django.db import transaction

from outbox import publish
from outbox.models import Delivery, Heartbeat
from outbox.relay import heartbeat, relay_run
from tests.testapp.events import FlakyThing

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def relay(monkeypatch, settings):
    """A relay process of its own: nothing remembered from earlier runs, a counter for clock,
    and every send recorded instead of reaching the broker."""
    monkeypatch.setattr("outbox.publisher.relay_wake", lambda: None)
    monkeypatch.setattr("outbox.relay._last_full_drain_started", 0.0)
    monkeypatch.setattr("outbox.relay._last_busy_run_started", 0.0)
    monkeypatch.setattr("outbox.relay._last_heartbeat", {})
    clock = (1_000_000 + n / 1000 for n in itertools.count())
    state = SimpleNamespace(now=lambda: next(clock), waits=[], sent=[])
    monkeypatch.setattr(
        "outbox.relay.time", SimpleNamespace(time=state.now, sleep=state.waits.append)
    )
    monkeypatch.setattr("outbox.relay.deliveries_dispatch", state.sent.extend)
    settings.OUTBOX = {**settings.OUTBOX, "RELAY_BATCH_SIZE": 2, "RELAY_MAX_SECONDS": 1000}
    return state


def due(count: int) -> list[int]:
    with transaction.atomic():
        events = [publish(FlakyThing(thing_id=f"t{n}")) for n in range(count)]
    return sorted(Delivery.objects.filter(event__in=events).values_list("pk", flat=True))


def undispatched() -> int:
    return Delivery.objects.filter(dispatched_at__isnull=True).count()


def test_a_run_claims_batch_after_batch_until_nothing_is_due(relay):
    ids = due(5)
    assert relay_run() == 5  # batches of 2, 2 and 1
    assert sorted(pk for pk, _ in relay.sent) == ids
    assert undispatched() == 0


def test_a_run_past_its_time_box_stops_after_the_batch_in_hand(relay, settings):
    settings.OUTBOX = {**settings.OUTBOX, "RELAY_MAX_SECONDS": 0.0005}  # < one tick
    due(5)
    assert relay_run() == 2  # one batch, then the time box is over
    assert undispatched() == 3
    assert relay_run() == 2  # the next run goes on
    assert undispatched() == 1


def test_a_wake_up_older_than_the_last_full_drain_claims_nothing(relay):
    sent_before = relay.now()  # a wake-up sent before the drain below began
    assert relay_run() == 0  # a full drain: nothing was due
    due(1)
    assert relay_run(woken_at=sent_before) == 0  # its commit was seen by that drain
    assert undispatched() == 1  # (this one was not: it waits for its own wake-up or the tick)
    assert relay_run(woken_at=relay.now()) == 1
    assert undispatched() == 0


def test_a_run_leaves_the_heartbeat_readyz_reads():
    relay_run()
    assert Heartbeat.objects.filter(name="relay").exists()


def test_a_heartbeat_is_written_at_most_every_few_seconds(relay, monkeypatch):
    heartbeat("worker", detail={"beat": 1})
    heartbeat("worker", detail={"beat": 2})  # a moment later: not written
    assert Heartbeat.objects.get(name="worker").detail == {"beat": 1}
    clock = itertools.count(relay.now() + 60)  # a minute later
    monkeypatch.setattr("outbox.relay.time", SimpleNamespace(time=lambda: next(clock)))
    heartbeat("worker", detail={"beat": 3})
    assert Heartbeat.objects.get(name="worker").detail == {"beat": 3}


def test_a_woken_run_right_after_a_busy_one_gathers_commits_and_the_tick_never_waits(
    relay, settings
):
    settings.OUTBOX = {**settings.OUTBOX, "RELAY_GATHER_SECONDS": 0.05}
    due(1)
    assert relay_run(woken_at=relay.now()) == 1  # no run before it: no wait
    assert relay.waits == []
    due(1)
    assert relay_run(woken_at=relay.now()) == 1  # a few ms after a run that claimed something
    assert len(relay.waits) == 1 and 0 < relay.waits[0] <= 0.05
    due(1)
    assert relay_run() == 1  # beat's tick is never held back
    assert len(relay.waits) == 1
    assert undispatched() == 0
