"""Running deliveries: exactly-once effects, retries with backoff, dead letters, upcasting."""

import datetime as dt
import uuid

import pytest
from django.db import transaction
from django.utils import timezone

from outbox import publish
from outbox.handling import backoff_delay, delivery_handle
from outbox.models import Delivery, Event
from outbox.replay import deliveries_replay
from tests.testapp import handlers
from tests.testapp.events import FlakyThing, OrderedThing, ThingHappened
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def quiet(monkeypatch, outbox_fast):
    monkeypatch.setattr("outbox.publisher.relay_wake", lambda: None)


def published(event) -> Event:
    with transaction.atomic():
        return publish(event)


def handle_due(delivery: Delivery) -> str:
    """Run the delivery now, as the relay would once its retry time has come."""
    Delivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now(), backoff_until=None
    )
    return delivery_handle(delivery_id=delivery.pk)


def test_handled_once_even_when_delivered_twice():
    event = published(ThingHappened(thing_id="t"))
    delivery = event.deliveries.get(subscriber="tests.record_a")
    assert delivery_handle(delivery_id=delivery.pk) == "done"
    assert delivery_handle(delivery_id=delivery.pk) == "skipped"
    assert Effect.objects.filter(subscriber="a").count() == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("done", 1)
    assert delivery.completed_at is not None


def test_handler_receives_the_typed_event_with_its_meta():
    event = published(ThingHappened(thing_id="t", seq=9))
    delivery_handle(delivery_id=event.deliveries.get(subscriber="tests.record_b").pk)
    effect = Effect.objects.get(subscriber="b")
    assert (effect.event_id, effect.aggregate_id, effect.seq) == (event.event_id, "t", 9)


def test_failing_k_times_then_succeeding_ends_done_after_k_plus_1_attempts():
    delivery = published(FlakyThing(thing_id="t", fail_times=2)).deliveries.get()
    outcomes = [handle_due(delivery) for _ in range(3)]
    assert outcomes == ["retry", "retry", "done"]
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("done", 3)
    assert "planned failure on attempt 2 of 2" in delivery.last_error
    # The failed attempts' writes were rolled back with them: one effect, from attempt 3.
    assert list(Effect.objects.values_list("attempt", flat=True)) == [3]


def test_a_failure_schedules_the_retry_with_backoff():
    delivery = published(FlakyThing(thing_id="t", fail_times=1)).deliveries.get()
    before = timezone.now()
    assert delivery_handle(delivery_id=delivery.pk) == "retry"
    delivery.refresh_from_db()
    assert delivery.status == "pending"
    assert before < delivery.next_attempt_at <= timezone.now() + dt.timedelta(seconds=0.3)
    assert delivery.last_error.startswith("RuntimeError: planned failure on attempt 1 of 1")


def test_always_failing_is_dead_lettered_after_max_attempts_and_replays_after_a_fix(
    monkeypatch,
):
    monkeypatch.setitem(handlers.BROKEN, "flaky", True)
    delivery = published(FlakyThing(thing_id="t")).deliveries.get()
    outcomes = [handle_due(delivery) for _ in range(3)]
    assert outcomes == ["retry", "retry", "dead"]  # max_attempts=3 for this subscriber
    assert handle_due(delivery) == "skipped"  # a dead letter is not retried by itself
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("dead", 3)
    assert "the flaky handler is broken" in delivery.last_error
    assert Effect.objects.count() == 0

    monkeypatch.setitem(handlers.BROKEN, "flaky", False)  # the fix is deployed
    assert deliveries_replay(Delivery.objects.filter(pk=delivery.pk)) == 1
    assert delivery_handle(delivery_id=delivery.pk) == "done"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("done", 1)
    assert Effect.objects.count() == 1


def test_backoff_grows_exponentially_is_capped_and_jittered():
    for attempt in range(1, 12):
        delay = backoff_delay(attempt=attempt, base=1.0, cap=60.0)
        ceiling = min(60.0, 2 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert len({backoff_delay(attempt=3, base=1.0, cap=60.0) for _ in range(20)}) > 1


def _stored(type_: str, version: int, payload: dict, subscriber: str) -> Delivery:
    """An event as older code stored it, with its delivery to ``subscriber``."""
    event = Event.objects.create(
        type=type_,
        version=version,
        aggregate_type="person",
        aggregate_id="1",
        payload=payload,
        correlation_id=uuid.uuid4(),
        occurred_at=timezone.now(),
    )
    return Delivery.objects.create(
        event=event,
        subscriber=subscriber,
        next_attempt_at=timezone.now(),
        aggregate_key="person:1",
    )


def test_a_stored_v1_event_reaches_the_v2_handler_through_its_upcaster():
    delivery = _stored(
        "tests.Reshaped", 1, {"person_id": 1, "name": "Ada Lovelace"}, "tests.reshaped"
    )
    assert delivery_handle(delivery_id=delivery.pk) == "done"
    effect = Effect.objects.get(subscriber="reshaped")
    assert effect.data == {"given": "Ada", "family": "Lovelace", "version": 2}
    delivery.event.refresh_from_db()
    assert delivery.event.version == 1  # the store is never rewritten


def test_an_event_version_with_no_path_to_the_current_one_is_dead_lettered_clearly():
    delivery = _stored("tests.Stranded", 1, {"person_id": 1, "tag": "x"}, "tests.stranded")
    assert [handle_due(delivery) for _ in range(2)] == ["retry", "dead"]
    delivery.refresh_from_db()
    assert delivery.last_error.startswith(
        "UpcastError: tests.Stranded v1 cannot be read: no upcaster from v1"
    )


def test_a_payload_the_handler_cannot_parse_is_dead_lettered_after_its_attempts(settings):
    settings.OUTBOX = {**settings.OUTBOX, "MAX_ATTEMPTS": 2}
    delivery = _stored("tests.ThingHappened", 1, {"thing": "garbled"}, "tests.record_a")
    assert [handle_due(delivery) for _ in range(2)] == ["retry", "dead"]
    delivery.refresh_from_db()
    assert delivery.last_error.startswith(
        "EventPayloadError: tests.ThingHappened: missing thing_id; unknown thing"
    )


def test_a_delivery_to_a_subscriber_that_no_longer_exists_is_dead_lettered(settings):
    settings.OUTBOX = {**settings.OUTBOX, "MAX_ATTEMPTS": 1}
    delivery = _stored("tests.ThingHappened", 1, {"thing_id": "t"}, "tests.retired_handler")
    assert delivery_handle(delivery_id=delivery.pk) == "dead"
    delivery.refresh_from_db()
    assert delivery.last_error.startswith("UnknownSubscriber: no subscriber named")


def test_an_ordered_delivery_waits_for_its_predecessor():
    first = published(OrderedThing(thing_id="t", seq=1)).deliveries.get()
    second = published(OrderedThing(thing_id="t", seq=2)).deliveries.get()
    other = published(OrderedThing(thing_id="u", seq=1)).deliveries.get()
    assert delivery_handle(delivery_id=second.pk) == "waiting"
    assert delivery_handle(delivery_id=other.pk) == "done"  # another aggregate: no wait
    assert delivery_handle(delivery_id=first.pk) == "done"
    assert handle_due(second) == "done"
    assert list(Effect.objects.filter(aggregate_id="t").values_list("seq", flat=True)) == [1, 2]


def test_the_delivery_a_worker_locks_is_the_stored_one_field_by_field():
    from outbox.handling import _pending_lock

    event = published(ThingHappened(thing_id="t", seq=7))
    stored = event.deliveries.select_related("event").get(subscriber="tests.record_a")
    with transaction.atomic():
        locked = _pending_lock(stored.pk)
    assert {f.attname: getattr(locked, f.attname) for f in Delivery._meta.concrete_fields} == {
        f.attname: getattr(stored, f.attname) for f in Delivery._meta.concrete_fields
    }
    assert {f.attname: getattr(locked.event, f.attname) for f in Event._meta.concrete_fields} == {
        f.attname: getattr(stored.event, f.attname) for f in Event._meta.concrete_fields
    }
    assert locked.event.payload == {"thing_id": "t", "seq": 7}
    Delivery.objects.filter(pk=stored.pk).update(status="done")
    with transaction.atomic():
        assert _pending_lock(stored.pk) is None
