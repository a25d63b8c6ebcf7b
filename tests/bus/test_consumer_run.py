"""The consumer runs what it stored (``EVENT_BUS`` ``RUN``, outbox/bus/consuming.py,
``ConsumerRun``): once its batch has committed, and only then, it claims the batch's deliveries
with the relay's claim and runs them with the worker's code; a burst, a queue it does not run
and whatever it could not claim are the relay's. No broker needed here (the adapters' encode
and decode alone), on this run's database; tests/bus/test_consumer_run_broker.py runs it on the
real brokers, a consumer killed in the middle of a handler among them."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.db import OperationalError, connection

from inventory.services import product_create
from orders.models import Order
from orders.services import order_place
from outbox.bus import consuming
from outbox.bus.adapters.base import Verdict
from outbox.bus.consuming import ConsumerRun, bus_messages_receive, consumer_run
from outbox.continuation import deliveries_run, queues_served_set
from outbox.models import Delivery
from outbox.registry import subscriber_queues
from outbox.relay import deliveries_claim
from tests.bus.test_wire import ADAPTERS, received, stored
from tests.outbox.test_wake import by_notify, listening, notifications, on_postgres
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db(transaction=True)

__all__ = ["by_notify", "listening"]  # the fixtures, imported


@pytest.fixture(autouse=True)
def consuming_tests_events(settings, monkeypatch):
    settings.EVENT_BUS = {**settings.EVENT_BUS, "LOCAL_APPS": ["orders"]}  # tests.* consumed
    # Outside a consumer or worker: nothing continues (an earlier test may have left queues set).
    monkeypatch.setattr("outbox.continuation._queues", frozenset())


@pytest.fixture
def wakes(monkeypatch):
    """The relay wake-ups the consumer sent after a commit or after its claims."""
    sent: list[None] = []
    monkeypatch.setattr(consuming, "relay_wake", lambda: sent.append(None))
    return sent


def things(count: int, *, type: str = "tests.ThingHappened", aggregate: str = "t-1") -> list:
    return [
        stored(type=type, aggregate_id=aggregate, payload={"thing_id": aggregate, "seq": n})
        for n in range(count)
    ]


def receive(rows, run: ConsumerRun | None, adapter=ADAPTERS[0]) -> list[Verdict]:
    return bus_messages_receive(
        messages=[received(adapter, row) for row in rows], adapter=adapter, run=run
    )


def a_run(**changes) -> ConsumerRun:
    return ConsumerRun(
        **{"queues": ["tests", "payments", "inventory"], "max_events": 10, "max_seconds": 5.0}
        | changes
    )


def effects(subscriber: str | None = None) -> list[tuple[str, int]]:
    rows = Effect.objects.order_by("id")
    if subscriber:
        rows = rows.filter(subscriber=subscriber)
    return [(row.subscriber, row.seq) for row in rows]


@pytest.mark.parametrize("adapter", ADAPTERS, ids=["amqp", "nats"])
def test_a_small_batch_is_run_by_the_consumer_after_its_commit_and_wakes_no_relay(adapter, wakes):
    run = a_run()
    rows = things(3)
    assert receive(rows, run, adapter) == [Verdict.ACK] * 3
    # Stored and committed; nothing runs before the batch is settled with the broker.
    assert Delivery.objects.filter(status="pending", dispatches=0).count() == 9
    assert effects() == []

    run.run()

    assert Delivery.objects.filter(status="done").count() == 9
    assert sorted(effects()) == sorted((name, n) for n in range(3) for name in "abc")
    assert Delivery.objects.filter(dispatches=1).count() == 9  # claimed once, by the consumer
    assert wakes == []
    run.run()  # nothing kept since: nothing claimed, no wake-up
    assert wakes == []


def test_a_batch_of_more_than_max_events_is_left_to_the_relay(wakes):
    run = a_run(max_events=2)
    receive(things(3), run)
    assert len(wakes) == 1  # on the commit, for all of it

    run.run()

    assert effects() == []
    assert Delivery.objects.filter(status="pending", dispatches=0).count() == 9
    assert len(wakes) == 1
    assert len(deliveries_claim(limit=100)) == 9  # the relay's, untouched


def test_the_bound_counts_the_events_stored_since_the_last_run(wakes):
    """Stored one message per transaction (the fallback, or batches of one before a run), the
    events are counted together: past the bound, the rest is the relay's."""
    run = a_run(max_events=2)
    for row in things(3):
        receive([row], run)
    assert len(wakes) == 1  # the third, past the bound

    run.run()

    assert sorted(effects()) == sorted((name, n) for n in range(2) for name in "abc")
    assert Delivery.objects.filter(status="pending", dispatches=0).count() == 3
    assert len(wakes) == 1


def test_a_delivery_the_relay_claimed_first_stays_the_relays(wakes):
    run = a_run()
    receive(things(2), run)
    relay_claimed = deliveries_claim(limit=2)  # a relay woken by something else, faster

    run.run()

    mine = Delivery.objects.exclude(id__in=[pk for pk, _ in relay_claimed])
    assert list(mine.values_list("status", "dispatches").distinct()) == [("done", 1)]
    theirs = Delivery.objects.filter(id__in=[pk for pk, _ in relay_claimed])
    assert list(theirs.values_list("status", "dispatches").distinct()) == [("pending", 1)]
    assert len(effects()) == 4
    assert len(wakes) == 1  # fewer claimed than kept: the relay is told


def test_one_aggregates_ordered_events_all_run_in_the_consumer_in_their_order(wakes):
    """The relay's claim takes an ordered subscriber's next event only once the earlier is
    done: the consumer claims again after each run, within its budget."""
    run = a_run()
    receive(things(3, type="tests.OrderedThing"), run)

    run.run()

    assert effects("in_order") == [("in_order", 0), ("in_order", 1), ("in_order", 2)]
    assert wakes == []


def test_an_ordered_event_whose_predecessor_is_not_done_is_the_relays(wakes):
    run = a_run()
    receive(things(1, type="tests.OrderedThing"), None)  # an earlier batch, not run here
    receive(things(2, type="tests.OrderedThing")[1:], run)

    run.run()

    assert effects() == []
    assert len(wakes) == 2  # the earlier one's commit, then the claim that found nothing


def test_a_queue_the_consumer_does_not_run_is_left_to_the_relay(wakes):
    run = a_run(queues=["payments"])
    receive([stored(type="tests.RoutedThing", payload={"thing_id": "t-1"})], run)
    assert len(wakes) == 1  # on the commit: the inventory delivery is the relay's

    run.run()

    assert effects() == [("payments", 0)]
    [(_, subscriber)] = deliveries_claim(limit=10)
    assert subscriber == "tests.routed_inventory"


def test_the_budget_leaves_the_rest_to_the_relay(wakes):
    run = a_run(max_seconds=0.0)
    receive(things(2, type="tests.OrderedThing"), run)

    run.run()

    assert effects() == [("in_order", 0)]  # the first claim's run; no second claim
    assert len(wakes) == 1


def test_a_database_failing_under_the_run_leaves_it_to_the_lease_and_raises_nothing(wakes):
    run = a_run()
    receive(things(2), run)

    def down(execute, sql, params, many, context):
        raise OperationalError("the database is down (a test's fault)")

    with connection.execute_wrapper(down):
        run.run()  # the claim fails: nothing claimed, nothing raised

    assert effects() == []
    assert Delivery.objects.filter(status="pending", dispatches=0).count() == 6
    assert len(wakes) == 1


def test_a_failing_handler_run_by_the_consumer_is_retried_as_a_workers_would_be(wakes):
    run = a_run()
    rows = [
        stored(type="tests.FlakyThing", payload={"thing_id": "t-1", "fail_times": 1}),
    ]
    receive(rows, run)

    run.run()

    [delivery] = Delivery.objects.all()
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    assert "planned failure" in delivery.last_error
    assert effects() == []
    assert wakes == []  # claimed; the retry is due later, as any failed attempt


def test_the_settings_turn_it_off_or_refuse_what_makes_no_sense(settings):
    settings.EVENT_BUS = {**settings.EVENT_BUS, "RUN": True, "RUN_MAX_EVENTS": 10}
    assert consumer_run() is not None
    settings.EVENT_BUS = {**settings.EVENT_BUS, "RUN": False}
    assert consumer_run() is None
    settings.EVENT_BUS = {**settings.EVENT_BUS, "RUN": True, "RUN_MAX_EVENTS": 0}
    assert consumer_run() is None
    settings.EVENT_BUS = {**settings.EVENT_BUS, "RUN_MAX_EVENTS": -1}
    with pytest.raises(ImproperlyConfigured, match="must not be negative"):
        consumer_run()
    settings.EVENT_BUS = {**settings.EVENT_BUS, "RUN_MAX_EVENTS": 5, "RUN_QUEUES": ["nowhere"]}
    with pytest.raises(ImproperlyConfigured, match="nowhere, not a queue"):
        consumer_run()
    settings.EVENT_BUS = {**settings.EVENT_BUS, "RUN_QUEUES": ["payments", "bus"]}
    with pytest.raises(ImproperlyConfigured, match="bus, not a queue"):
        consumer_run()
    settings.EVENT_BUS = {**settings.EVENT_BUS, "RUN_QUEUES": ["payments"]}
    assert consumer_run().queues == {"payments"}


# --- The wake-up by NOTIFY, in the storing transaction --------------------------------------


@on_postgres
def test_by_notify_what_the_consumer_leaves_wakes_the_relay_in_its_transaction(
    by_notify, listening, wakes
):
    receive(things(3), a_run(max_events=2))  # a burst: the relay's
    assert notifications(listening) == 1
    receive(things(3), None)  # the consumer runs nothing
    assert notifications(listening) == 1
    assert wakes == []  # no flag, no message


@on_postgres
def test_by_notify_what_the_consumer_runs_notifies_no_one(by_notify, listening, wakes):
    run = a_run()
    receive(things(2), run)
    assert notifications(listening) == 0
    run.run()
    assert notifications(listening) == 0
    assert wakes == []
    assert Delivery.objects.filter(status="done").count() == 6


# --- Continuation: what the consumer's handlers publish for its queues runs next, here ---------


def test_a_consumed_event_continues_into_its_handlers_own_events_in_the_consumer(
    settings, wakes, monkeypatch
):
    """PaymentCompleted taken in from the bus (payments is another service): inventory's
    handler publishes StockUpdated, shipping's ShippingScheduled, orders' OrderCompleted; the
    consumer claims and runs each next step itself, as a worker's continuation would."""
    settings.EVENT_BUS = {
        **settings.EVENT_BUS,
        "LOCAL_APPS": ["orders", "inventory", "shipping", "notifications"],
    }
    publisher_wakes: list[None] = []
    monkeypatch.setattr("outbox.publisher.relay_wake", lambda: publisher_wakes.append(None))
    product_create(sku="MUG", name="Mug", price=Decimal("9.50"), stock=10)
    deliveries_run(list(Delivery.objects.filter(status="pending").values_list("id", flat=True)))
    customer = get_user_model().objects.create_user("alice")
    order, _ = order_place(
        customer=customer, lines=[{"sku": "MUG", "quantity": 2}], payment_token="tok_visa"
    )
    before = set(Delivery.objects.values_list("id", flat=True))
    publisher_wakes.clear()
    paid = stored(
        type="payments.PaymentCompleted",
        aggregate_type="payment",
        aggregate_id="1",
        payload={
            "payment_id": 1,
            "order_id": order.pk,
            "amount": "19.00",
            "currency": "EUR",
            "lines": [{"sku": "MUG", "quantity": 2}],
        },
    )
    queues = subscriber_queues()
    queues_served_set(queues)  # as the consumer command sets them
    try:
        run = ConsumerRun(queues=queues, max_events=10, max_seconds=5.0)
        assert receive([paid], run) == [Verdict.ACK]
        run.run()
    finally:
        queues_served_set(())

    assert Order.objects.get(pk=order.pk).status == "completed"
    chain = Delivery.objects.exclude(id__in=before)
    assert set(chain.values_list("event__type", flat=True)) >= {
        "payments.PaymentCompleted",
        "inventory.StockUpdated",
        "shipping.ShippingScheduled",
        "orders.OrderCompleted",
    }
    assert list(chain.values_list("status", "dispatches").distinct()) == [("done", 1)]
    assert wakes == [] and publisher_wakes == []  # no relay, no Celery message: all here
