"""The outbox end to end: a real Celery worker on the configured broker (filesystem or Redis)."""

import threading

import pytest
from django.db import close_old_connections, connection, transaction

from outbox import publish, publish_many
from outbox.handling import delivery_handle
from outbox.models import Delivery
from outbox.relay import deliveries_claim, relay_run
from outbox.replay import deliveries_replay
from outbox.tasks import deliver
from tests.support import relay_ticker, running_worker, wait_until
from tests.testapp import handlers
from tests.testapp.events import (
    FlakyThing,
    OrderedThing,
    RoutedThing,
    SlowThing,
    ThingHappened,
)
from tests.testapp.models import Effect

pytestmark = pytest.mark.e2e


def all_done(count: int):
    return lambda: Delivery.objects.filter(status="done").count() == count


def settled():
    """Nothing pending any more (done or dead)."""
    return not Delivery.objects.filter(status="pending").exists()


def test_n_events_reach_m_subscribers_each_handled_exactly_once(worker):
    n = 40
    for start in range(0, n, 10):  # several transactions, several wake-ups
        with transaction.atomic():
            publish_many([ThingHappened(thing_id=str(i), seq=i) for i in range(start, start + 10)])
    wait_until(all_done(n * 3), timeout=60, what="120 deliveries done")
    for name in "abc":
        seen = list(Effect.objects.filter(subscriber=name).values_list("seq", flat=True))
        assert sorted(seen) == list(range(n)), f"subscriber {name}"
    assert set(Delivery.objects.values_list("attempts", flat=True)) == {1}


def test_a_duplicated_delivery_message_changes_nothing(worker):
    with transaction.atomic():
        event = publish(ThingHappened(thing_id="dup"))
    wait_until(all_done(3), what="first delivery")
    ids = list(event.deliveries.values_list("id", flat=True))
    deliver.apply_async(args=[ids], queue="tests")  # the same delivery task sent again
    deliver.apply_async(args=[ids], queue="tests")
    with transaction.atomic():  # a marker sent after the duplicates, on the same queue
        publish(ThingHappened(thing_id="marker"))
    wait_until(all_done(6), what="marker handled after the duplicates")
    assert Effect.objects.filter(aggregate_id="dup").count() == 3
    assert set(event.deliveries.values_list("attempts", flat=True)) == {1}


def test_a_lost_message_is_delivered_again_after_the_lease(transactional_db, outbox_fast):
    with transaction.atomic():
        publish(ThingHappened(thing_id="lost"))
    # The relay claims the deliveries and dies before sending them (or the broker loses them).
    assert len(deliveries_claim(limit=10)) == 3
    assert relay_run() == 0  # still leased: nothing to send yet
    with running_worker(), relay_ticker():
        wait_until(all_done(3), timeout=30, what="redelivery after the 1s lease")
    assert Effect.objects.filter(aggregate_id="lost").count() == 3


def test_failing_twice_then_succeeding_ends_done_with_three_attempts(worker):
    with transaction.atomic():
        event = publish(FlakyThing(thing_id="k", fail_times=2))
    wait_until(all_done(1), what="retries to succeed")
    delivery = event.deliveries.get()
    assert delivery.attempts == 3
    assert list(Effect.objects.values_list("attempt", flat=True)) == [3]


def test_always_failing_is_dead_lettered_and_replay_after_the_fix_succeeds(worker, monkeypatch):
    monkeypatch.setitem(handlers.BROKEN, "flaky", True)
    with transaction.atomic():
        event = publish(FlakyThing(thing_id="d"))
    wait_until(settled, what="dead letter")
    delivery = event.deliveries.get()
    assert (delivery.status, delivery.attempts) == ("dead", 3)
    assert "the flaky handler is broken" in delivery.last_error

    monkeypatch.setitem(handlers.BROKEN, "flaky", False)
    deliveries_replay(Delivery.objects.filter(status="dead"))
    wait_until(all_done(1), what="replayed dead letter")
    assert Effect.objects.count() == 1


def test_ordered_subscriber_handles_one_aggregate_in_order_when_the_first_fails(worker):
    # Each in its own transaction, the way a real aggregate's events are published.
    for seq in (1, 2, 3, 4):
        with transaction.atomic():
            publish(OrderedThing(thing_id="agg", seq=seq, fail_times=1 if seq == 1 else 0))
    wait_until(all_done(4), timeout=60, what="ordered deliveries")
    assert list(Effect.objects.order_by("id").values_list("seq", flat=True)) == [1, 2, 3, 4]


def test_a_worker_on_the_payments_queue_runs_payments_handlers_only(transactional_db):
    with transaction.atomic():
        publish(RoutedThing(thing_id="r"))
    with running_worker(queues=["payments"]):
        relay_run()  # the relay sends each subscriber's delivery to its own queue
        wait_until(lambda: Effect.objects.filter(subscriber="payments").exists())
    assert not Effect.objects.filter(subscriber="inventory").exists()
    statuses = dict(Delivery.objects.values_list("subscriber", "status"))
    assert statuses == {"tests.routed_payments": "done", "tests.routed_inventory": "pending"}


@pytest.mark.django_db(transaction=True)
def test_the_same_delivery_handled_by_two_workers_at_once_has_one_effect():
    with transaction.atomic():
        delivery = publish(SlowThing(thing_id="s", seconds=0.5)).deliveries.get()
    start = threading.Barrier(2)
    outcomes = []

    def work():
        try:
            start.wait()
            outcomes.append(delivery_handle(delivery_id=delivery.pk))
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["done", "skipped"]
    assert Effect.objects.filter(subscriber="slow").count() == 1
