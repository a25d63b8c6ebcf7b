"""publish(): the event and its deliveries exist if and only if the caller's transaction commits."""

import uuid
from unittest import mock

import pytest
from django.db import transaction

from outbox import NotInTransaction, UnknownEventType, publish, publish_many, subscribe
from outbox.context import Handling, handling
from outbox.errors import EventPayloadError
from outbox.models import Delivery, Event
from tests.testapp.events import ThingHappened

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_wake():
    """These tests look at rows, not at the relay: keep wake-ups off the broker."""
    with mock.patch("outbox.publisher.relay_wake") as wake:
        yield wake


def test_committed_event_is_stored_with_a_delivery_per_subscriber():
    with transaction.atomic():
        row = publish(ThingHappened(thing_id="t1", seq=4))
    event = Event.objects.get()
    assert event == row
    assert event.type == "tests.ThingHappened"
    assert event.version == 1
    assert (event.aggregate_type, event.aggregate_id) == ("thing", "t1")
    assert event.payload == {"thing_id": "t1", "seq": 4}
    assert event.correlation_id == event.event_id  # a new saga starts with this event
    assert event.causation_id is None
    subscribers = sorted(Delivery.objects.values_list("subscriber", flat=True))
    assert subscribers == ["tests.record_a", "tests.record_b", "tests.record_c"]
    assert set(Delivery.objects.values_list("status", flat=True)) == {"pending"}


def test_rolled_back_transaction_leaves_nothing():
    with pytest.raises(RuntimeError), transaction.atomic():
        publish(ThingHappened(thing_id="t1"))
        raise RuntimeError("the caller's change failed")
    assert Event.objects.count() == 0
    assert Delivery.objects.count() == 0


def test_rolled_back_savepoint_drops_its_event_only():
    with transaction.atomic():
        publish(ThingHappened(thing_id="kept"))
        with pytest.raises(RuntimeError), transaction.atomic():
            publish(ThingHappened(thing_id="dropped"))
            raise RuntimeError
    assert list(Event.objects.values_list("aggregate_id", flat=True)) == ["kept"]


def test_publish_outside_a_transaction_raises_and_writes_nothing():
    with pytest.raises(NotInTransaction, match=r"inside transaction.atomic\(\)"):
        publish(ThingHappened(thing_id="t1"))
    assert Event.objects.count() == 0


def test_the_relay_is_woken_once_per_committed_transaction(no_wake):
    with transaction.atomic():
        publish(ThingHappened(thing_id="a"))
        publish(ThingHappened(thing_id="b"))
        assert no_wake.call_count == 0  # not before commit
    assert no_wake.call_count == 1
    with pytest.raises(RuntimeError), transaction.atomic():
        publish(ThingHappened(thing_id="c"))
        raise RuntimeError
    assert no_wake.call_count == 1  # not after a rollback


def test_publish_many_writes_all_events_in_one_go():
    with transaction.atomic():
        rows = publish_many([ThingHappened(thing_id=str(i), seq=i) for i in range(5)])
    assert [r.payload["seq"] for r in rows] == [0, 1, 2, 3, 4]
    assert Delivery.objects.count() == 15
    positions = [r.position for r in rows]
    assert positions == sorted(positions)
    # Each returned row is the stored one, and each delivery belongs to its own event.
    for row in rows:
        assert Event.objects.get(position=row.position).event_id == row.event_id
        assert set(Delivery.objects.filter(event=row).values_list("aggregate_key", "status")) == {
            (f"thing:{row.payload['seq']}", "pending")
        }
    assert Delivery.objects.filter(event__in=rows).count() == 15


def test_events_published_while_handling_inherit_correlation_and_cause():
    cause_id, saga_id = uuid.uuid4(), uuid.uuid4()
    context = Handling(
        event_id=cause_id,
        event_type="tests.Cause",
        correlation_id=saga_id,
        subscriber="tests.x",
        attempt=1,
    )
    with handling(context), transaction.atomic():
        row = publish(ThingHappened(thing_id="t"))
    assert row.correlation_id == saga_id
    assert row.causation_id == cause_id


def test_explicit_correlation_id_and_headers():
    saga = uuid.uuid4()
    with transaction.atomic():
        row = publish(ThingHappened(thing_id="t"), correlation_id=str(saga), headers={"x": "1"})
    row.refresh_from_db()
    assert row.correlation_id == saga
    assert row.headers["x"] == "1"


@pytest.mark.parametrize(
    "bad",
    [{"type": "tests.ThingHappened"}, "tests.ThingHappened", ThingHappened, None],
    ids=["dict", "str", "class", "none"],
)
def test_publishing_something_that_is_not_an_event_is_a_clear_error(bad):
    with pytest.raises(UnknownEventType, match="publish\\(\\) takes a DomainEvent instance"):
        with transaction.atomic():
            publish(bad)
    assert Event.objects.count() == 0


def test_payload_that_is_not_json_is_a_clear_error_and_writes_nothing():
    with pytest.raises(EventPayloadError, match=r"thing_id: UUID is not JSON-serialisable"):
        with transaction.atomic():
            publish(ThingHappened(thing_id=uuid.uuid4()))
    assert Event.objects.count() == 0


def test_bad_correlation_id_is_a_clear_error():
    with pytest.raises(ValueError, match="correlation_id must be a UUID"):
        with transaction.atomic():
            publish(ThingHappened(thing_id="t"), correlation_id="order-7")


def test_subscribing_to_an_unknown_event_type_is_a_clear_error():
    with pytest.raises(UnknownEventType, match="unknown event type 'tests.NoSuchThing'"):
        subscribe("tests.NoSuchThing")
    with pytest.raises(UnknownEventType, match="is not a DomainEvent subclass"):
        subscribe(dict)


def test_events_are_numbered_per_aggregate_in_publishing_order_with_their_deliveries():
    """Several events of two aggregates in one call, then one more: each aggregate's events get
    1, 2, 3, ... in the order they were published, and every delivery carries its event's."""
    with transaction.atomic():
        rows = publish_many(
            [
                ThingHappened(thing_id="a", seq=1),
                ThingHappened(thing_id="b", seq=1),
                ThingHappened(thing_id="a", seq=2),
                ThingHappened(thing_id="a", seq=3),
                ThingHappened(thing_id="b", seq=2),
            ]
        )
    assert [row.sequence for row in rows] == [1, 1, 2, 3, 2]
    with transaction.atomic():
        publish_many([ThingHappened(thing_id="b", seq=3), ThingHappened(thing_id="a", seq=4)])
    numbered = [
        (aggregate_id, payload["seq"], sequence)
        for aggregate_id, payload, sequence in Event.objects.order_by("position").values_list(
            "aggregate_id", "payload", "sequence"
        )
    ]
    assert numbered == [
        ("a", 1, 1),
        ("b", 1, 1),
        ("a", 2, 2),
        ("a", 3, 3),
        ("b", 2, 2),
        ("b", 3, 3),
        ("a", 4, 4),
    ]
    for event in Event.objects.all():
        assert {d.sequence for d in event.deliveries.all()} == {event.sequence}
        assert {d.aggregate_key for d in event.deliveries.all()} == {f"thing:{event.aggregate_id}"}
