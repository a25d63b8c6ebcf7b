"""Exactly-once under real crashes: a worker or a relay process killed (SIGKILL: no cleanup, no
``finally``) at each moment that matters, then the delivery run again, as a lease running out
would have it. At the end every event has exactly one counted run per subscriber, measured by the
deliberately non-idempotent counting subscribers of tests/testapp (one row per committed run).

Each test names the guarantee of docs/outbox.md it guards. Both backends: the kill and the
recovery are the same on SQLite (the killed process's transaction is never committed) and on
PostgreSQL (the server rolls back the dead session's transaction and frees its row locks).
"""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.utils import timezone

from outbox.handling import delivery_handle
from outbox.models import Delivery
from outbox.relay import deliveries_claim
from tests.outbox.crashing import (
    COUNTERS,
    KILLED,
    child_run,
    counted_publish,
    delivery_of,
    exactly_once,
    runs_per_event,
)

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    # The tests play the relay's and the workers' parts themselves: no wake-ups.
    monkeypatch.setattr("outbox.publisher.relay_wake", lambda: None)


def handle_after_crash(delivery_id: int) -> str:
    """Run the delivery as the next worker would. On PostgreSQL the server may take a moment to
    notice the killed session and free its lock; until then the delivery is (rightly) skipped."""
    deadline = time.monotonic() + 30
    while True:
        outcome = delivery_handle(delivery_id=delivery_id)
        if outcome != "skipped" or time.monotonic() > deadline:
            return outcome
        time.sleep(0.05)


def handle_all(events) -> None:
    for event in events:
        for subscriber in COUNTERS:
            handle_after_crash(delivery_of(event, subscriber).pk)


def lease_expire(events) -> None:
    Delivery.objects.filter(event__in=events).update(
        next_attempt_at=timezone.now() - dt.timedelta(seconds=1)
    )


def test_worker_killed_after_the_handler_wrote_and_before_commit_leaves_no_effect():
    """Guarantee 2 (one effect per subscriber) and 3 (a killed worker loses nothing): the
    handler's writes die with the uncommitted transaction, and the next run makes the effect."""
    [event] = events = counted_publish()
    delivery = delivery_of(event)

    code, _ = child_run("handle", str(delivery.pk), fault="kill@after_handler_writes")

    assert code == KILLED
    assert runs_per_event(events)[(str(event.event_id), COUNTERS[0])] == 0
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("pending", 0)
    handle_all(events)
    assert runs_per_event(events) == exactly_once(events)


def test_worker_killed_as_it_marks_the_delivery_done_leaves_no_effect():
    """Guarantee 2: "after the handler committed, before the delivery is marked done" must not
    exist as a moment. The done-mark is in the handler's transaction, so a worker killed at the
    instant it sends it takes the handler's writes down with it; were the mark a step of its own
    after the handler's commit, this run's effect would stay and the next run would add another.
    """
    [event] = events = counted_publish()
    delivery = delivery_of(event)

    code, _ = child_run("handle", str(delivery.pk), fault="kill@done_mark")

    assert code == KILLED
    assert runs_per_event(events)[(str(event.event_id), COUNTERS[0])] == 0
    handle_all(events)
    assert runs_per_event(events) == exactly_once(events)


def test_relay_killed_during_its_claim_leaves_the_deliveries_due():
    """Guarantee 3: a relay killed inside its claim (statement run, not committed) leases
    nothing; the next claim takes every delivery at once, and each has one effect."""
    events = counted_publish(3)

    code, _ = child_run("relay", fault="kill@claim")

    assert code == KILLED
    assert not Delivery.objects.filter(event__in=events, dispatches__gt=0).exists()
    deadline = time.monotonic() + 30  # PostgreSQL: until the dead session's locks are freed
    claimed: list = []
    while len(claimed) < 2 * len(events) and time.monotonic() < deadline:
        claimed += deliveries_claim(limit=100)
    assert len(claimed) == 2 * len(events)
    handle_all(events)
    assert runs_per_event(events) == exactly_once(events)


def test_relay_killed_between_its_claim_and_the_broker_send_loses_nothing():
    """Guarantee 3: claimed and leased, never sent: the lease runs out, the deliveries are
    claimed again and handled once."""
    events = counted_publish(2)

    code, _ = child_run("relay", fault="kill@before_send")

    assert code == KILLED
    leased = Delivery.objects.filter(event__in=events, dispatches=1)
    assert leased.count() == 2 * len(events)
    assert deliveries_claim(limit=100) == []  # still leased: nobody sends them twice meanwhile
    lease_expire(events)
    assert len(deliveries_claim(limit=100)) == 2 * len(events)
    handle_all(events)
    assert runs_per_event(events) == exactly_once(events)
