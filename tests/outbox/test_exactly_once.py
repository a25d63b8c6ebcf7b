"""Exactly-once measured: a duplicate of a delivery (a second message, a second worker, a second
relay) arriving at each moment of the first one's run, with the deliberately non-idempotent
counting subscribers of tests/testapp. At the end every event has exactly one counted run per
subscriber (guarantee 2 of docs/outbox.md), counted from the subscriber's own table.

The first worker or relay is a real process of its own, held at a fault point
(tests/outbox/crash_child.py); the duplicate is this test's own connection.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from outbox.handling import delivery_handle
from outbox.models import Delivery
from outbox.relay import deliveries_claim, deliveries_dispatch
from tests.outbox.crashing import (
    COUNTERS,
    KILLED,
    child_held,
    child_run,
    counted_publish,
    delivery_of,
    exactly_once,
    runs_per_event,
)
from tests.races.helpers import skip_unless_postgres
from tests.support import relay_ticker, running_worker, wait_until

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    monkeypatch.setattr("outbox.publisher.relay_wake", lambda: None)


def all_done(events) -> bool:
    return not Delivery.objects.filter(event__in=events).exclude(status="done").exists()


def handle_all(events) -> None:
    for event in events:
        for subscriber in COUNTERS:
            delivery_handle(delivery_id=delivery_of(event, subscriber).pk)


@pytest.mark.postgres
@skip_unless_postgres()
@pytest.mark.parametrize("point", ["after_handler_writes", "done_mark"])
def test_a_duplicate_arriving_while_the_first_run_is_uncommitted_steps_aside(point, tmp_path):
    """Guarantee 2, on PostgreSQL's row lock: while one worker is inside the delivery's
    transaction, after the handler wrote (``after_handler_writes``) or as it marks the delivery
    done (``done_mark``), a second worker with the same delivery id runs nothing. At
    ``done_mark`` this also proves the handler's commit and the done-mark are one step: were the
    mark a transaction of its own, the handler would have committed and released the lock, and
    the duplicate would run it again."""
    [event] = events = counted_publish()
    delivery = delivery_of(event)

    with child_held("handle", str(delivery.pk), point=point, folder=tmp_path) as first:
        assert delivery_handle(delivery_id=delivery.pk) == "skipped"
        assert first.finish() == "done"

    assert delivery_handle(delivery_id=delivery.pk) == "skipped"  # a late duplicate
    handle_all(events)
    assert runs_per_event(events) == exactly_once(events)


@pytest.mark.postgres
@skip_unless_postgres()
def test_a_second_relay_claiming_during_the_first_ones_claim_takes_nothing(tmp_path):
    """Guarantee 5: a relay holding its claim (statement run, not yet committed) keeps another
    relay off those rows (SKIP LOCKED), and once committed, off them for a lease: one dispatch."""
    events = counted_publish(3)

    with child_held("relay", point="claim", folder=tmp_path, lease_seconds=60) as first:
        assert deliveries_claim(limit=100) == []
        assert first.finish() == str(2 * len(events))

    assert deliveries_claim(limit=100) == []
    assert set(Delivery.objects.filter(event__in=events).values_list("dispatches", flat=True)) == {
        1
    }
    handle_all(events)
    assert runs_per_event(events) == exactly_once(events)


@pytest.mark.e2e
def test_two_messages_for_every_delivery_have_one_effect_each(outbox_fast):
    """Guarantee 2 and 3: the lease ran out between the broker send and the worker (a backlog),
    so the relay sent every delivery again: two messages per delivery reach a real worker."""
    events = counted_publish(4)
    sent = deliveries_claim(limit=100)
    deliveries_dispatch(sent)
    Delivery.objects.filter(event__in=events).update(
        next_attempt_at=timezone.now() - dt.timedelta(seconds=1)
    )
    again = deliveries_claim(limit=100)
    assert sorted(again) == sorted(sent)
    deliveries_dispatch(again)

    with running_worker(queues=["tests"]):
        wait_until(lambda: all_done(events), timeout=60, what="every delivery done")

    assert runs_per_event(events) == exactly_once(events)
    assert set(Delivery.objects.filter(event__in=events).values_list("attempts", flat=True)) == {1}


@pytest.mark.e2e
def test_relay_killed_right_after_a_send_loses_nothing_and_doubles_nothing(outbox_fast):
    """Guarantee 3: the relay dies after one message reached the broker and before the others
    were sent; a real worker and the ticking relay finish the job, each effect once."""
    events = counted_publish(4)

    code, _ = child_run("relay", fault="kill@after_send")
    assert code == KILLED

    with running_worker(queues=["outbox", "tests"]), relay_ticker():
        wait_until(lambda: all_done(events), timeout=60, what="every delivery done")

    assert runs_per_event(events) == exactly_once(events)
