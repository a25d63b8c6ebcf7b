"""What a run leaves on the delivery for the operator and the relay: the failure's traceback in
full, and a waiting ordered delivery's next look put ahead, not behind. (Surviving mutants of
outbox/handling.py; docs/outbox.md, "Mutation testing".)"""

import pytest
from django.db import transaction
from django.utils import timezone

from outbox import publish
from outbox.handling import delivery_handle
from outbox.models import Event
from tests.testapp.events import FlakyThing, OrderedThing

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def quiet(monkeypatch, outbox_fast):
    monkeypatch.setattr("outbox.publisher.relay_wake", lambda: None)


def published(event) -> Event:
    with transaction.atomic():
        return publish(event)


def test_a_failure_is_recorded_with_the_traceback_of_where_it_was_raised():
    delivery = published(FlakyThing(thing_id="t", fail_times=1)).deliveries.get()

    assert delivery_handle(delivery_id=delivery.pk) == "retry"

    delivery.refresh_from_db()
    summary, _, trace = delivery.last_error.partition("\n\n")
    assert summary == "RuntimeError: planned failure on attempt 1 of 1"
    # The traceback as Python prints it, down to the handler's line that raised.
    assert trace.startswith('Traceback (most recent call last):\n  File "')
    assert "in _fail_on_early_attempts\n" in trace
    assert trace.endswith("RuntimeError: planned failure on attempt 1 of 1\n")


def test_a_waiting_ordered_delivery_looks_again_later_not_at_once():
    published(OrderedThing(thing_id="t", seq=1))
    second = published(OrderedThing(thing_id="t", seq=2)).deliveries.get()
    before = timezone.now()

    assert delivery_handle(delivery_id=second.pk) == "waiting"

    second.refresh_from_db()
    assert second.next_attempt_at > before
