"""An ordered delivery waits only for the earlier undone deliveries of its own subscriber and
aggregate: another subscriber's dead letter on the same aggregate blocks nothing of this one,
neither in the worker nor in the relay's claim. (Surviving mutants of outbox/handling.py and
outbox/relay.py that dropped the subscriber from the predecessor query; docs/outbox.md.)"""

import pytest
from django.db import transaction

from outbox import publish
from outbox.handling import delivery_handle
from outbox.models import Delivery, Event
from outbox.relay import deliveries_claim
from tests.testapp.events import OrderedThing

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def quiet(monkeypatch, outbox_fast):
    monkeypatch.setattr("outbox.publisher.relay_wake", lambda: None)


def published(event) -> Event:
    with transaction.atomic():
        return publish(event)


@pytest.fixture
def another_subscribers_dead_letter():
    """An earlier event of aggregate thing:t, handled by our ordered subscriber, and dead for
    another ordered subscriber (say, of a service deployed next to this one)."""
    earlier = published(OrderedThing(thing_id="t", seq=1))
    assert delivery_handle(delivery_id=earlier.deliveries.get().pk) == "done"
    mine = earlier.deliveries.get()
    Delivery.objects.create(
        event=earlier,
        subscriber="tests.another_ordered",
        status=Delivery.Status.DEAD,
        ordered=True,
        aggregate_key=mine.aggregate_key,
        next_attempt_at=mine.next_attempt_at,
    )


def test_the_worker_does_not_wait_for_another_subscribers_delivery(
    another_subscribers_dead_letter,
):
    later = published(OrderedThing(thing_id="t", seq=2)).deliveries.get()
    assert delivery_handle(delivery_id=later.pk) == "done"


def test_the_relay_claims_past_another_subscribers_delivery(another_subscribers_dead_letter):
    later = published(OrderedThing(thing_id="t", seq=2)).deliveries.get()
    assert (later.pk, later.subscriber) in deliveries_claim(limit=100)
