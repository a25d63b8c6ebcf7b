"""Continuation (outbox/continuation.py): a worker runs the deliveries its runs commit for its
own queues, claimed through the relay's lease, within bounds; the relay gets what is left.

The first tests run the worker's task body here (``deliveries_run``, what ``outbox.deliver``
does with a message) on the real database, with the worker's queues set as a worker sets them
when it starts; the last runs a real Celery worker on the real broker.
"""

import time
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model

from inventory.services import product_create
from orders.models import CatalogItem, Order
from orders.services import order_place
from outbox.continuation import deliveries_run, queues_served_set
from outbox.models import Delivery
from outbox.registry import subscriber_queues
from outbox.relay import deliveries_claim, relay_run
from tests.support import running_worker, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

AFTER_PLACED = (
    "payments.PaymentCompleted",
    "inventory.StockUpdated",
    "shipping.ShippingScheduled",
    "orders.OrderCompleted",
)


@pytest.fixture
def wakes(monkeypatch):
    """The relay wake-ups asked for, by whom: the publisher's on commit, or the worker's."""
    asked = []
    monkeypatch.setattr("outbox.publisher.relay_wake", lambda: asked.append("publisher"))
    monkeypatch.setattr("outbox.continuation.relay_wake", lambda: asked.append("worker"))
    return asked


@pytest.fixture
def serving():
    """Set the queues of 'this worker'; none again afterwards, as outside a worker."""
    yield queues_served_set
    queues_served_set(())


@pytest.fixture
def placed(wakes, serving, settings):
    settings.OUTBOX = {**settings.OUTBOX, "LEASE_SECONDS": 0.5}
    product_create(sku="MUG", name="Mug", price=Decimal("9.50"), stock=10)
    deliveries_run(list(Delivery.objects.filter(status="pending").values_list("id", flat=True)))
    assert CatalogItem.objects.filter(sku="MUG").exists()
    customer = get_user_model().objects.create_user("alice")
    order, _ = order_place(
        customer=customer, lines=[{"sku": "MUG", "quantity": 2}], payment_token="tok_visa"
    )
    wakes.clear()
    ids = list(Delivery.objects.filter(status="pending").values_list("id", flat=True))
    assert len(ids) == 2  # payments and notifications
    return order, ids


def _deliveries(*types):
    return Delivery.objects.filter(event__type__in=types)


def test_one_message_runs_the_order_to_its_end_on_a_worker_serving_every_queue(
    placed, serving, wakes
):
    order, ids = placed
    serving(subscriber_queues())

    deliveries_run(ids)

    assert Order.objects.get(pk=order.pk).status == "completed"
    assert not Delivery.objects.filter(status="pending").exists()
    continued = _deliveries(*AFTER_PLACED)
    assert continued.count() == 7
    # Each one claimed through the lease, once, and run once; the relay never asked to run.
    assert set(continued.values_list("dispatches", "attempts")) == {(1, 1)}
    assert wakes == []


def test_deliveries_of_queues_the_worker_does_not_serve_are_the_relays(placed, serving, wakes):
    _, ids = placed
    serving(["payments", "notifications"])

    deliveries_run(ids)

    waiting = _deliveries("payments.PaymentCompleted")
    assert set(waiting.values_list("status", "dispatches")) == {("pending", 0)}
    assert wakes == ["publisher"]
    assert sorted(pk for pk, _ in deliveries_claim(limit=10)) == sorted(
        waiting.values_list("id", flat=True)
    )


def test_a_chain_stops_at_its_depth_and_the_relay_is_woken_for_the_rest(
    placed, serving, wakes, settings
):
    order, ids = placed
    serving(subscriber_queues())
    settings.OUTBOX = {**settings.OUTBOX, "CONTINUATION_MAX_DEPTH": 2}

    deliveries_run(ids)

    assert set(
        _deliveries("payments.PaymentCompleted", "inventory.StockUpdated").values_list("status")
    ) == {("done",)}
    left = _deliveries("shipping.ShippingScheduled")
    assert set(left.values_list("status", "dispatches")) == {("pending", 0)}
    assert Order.objects.get(pk=order.pk).status != "completed"
    assert wakes == ["publisher"]  # once, for the commit that published ShippingScheduled


@pytest.mark.parametrize(
    ("setting", "woken_by"),
    [
        # Past its time a task claims nothing more, and wakes the relay the publish left to it.
        ({"CONTINUATION_MAX_SECONDS": 0.0}, "worker"),
        # Off: the publish wakes the relay itself, as without continuation.
        ({"CONTINUATION": False}, "publisher"),
    ],
)
def test_a_task_past_its_time_or_with_continuation_off_leaves_the_next_step_to_the_relay(
    placed, serving, wakes, settings, setting, woken_by
):
    _, ids = placed
    serving(subscriber_queues())
    settings.OUTBOX = {**settings.OUTBOX, **setting}

    deliveries_run(ids)

    assert set(_deliveries("payments.PaymentCompleted").values_list("status", "dispatches")) == {
        ("pending", 0)
    }
    assert wakes == [woken_by]


def test_the_claim_takes_an_ordered_delivery_only_after_its_predecessor_is_done():
    from django.db import transaction

    from outbox import publish
    from outbox.handling import delivery_handle
    from outbox.relay import deliveries_claim_of
    from tests.testapp.events import OrderedThing

    with transaction.atomic():
        first = publish(OrderedThing(thing_id="t", seq=1))
    with transaction.atomic():
        second = publish(OrderedThing(thing_id="t", seq=2))
    events = {first.position, second.position}
    name = first.deliveries.get().subscriber

    claimed = deliveries_claim_of(events=events, subscribers={name})

    assert [pk for pk, _ in claimed] == [first.deliveries.get().pk]
    assert delivery_handle(delivery_id=claimed[0][0]) == "done"
    later = deliveries_claim_of(events=events, subscribers={name})
    assert [pk for pk, _ in later] == [second.deliveries.get().pk]
    # Claimed once: a second claim finds it leased.
    assert deliveries_claim_of(events=events, subscribers={name}) == []


class Killed(BaseException):
    """The worker process dying in the middle of a task (nothing of it runs on)."""


def test_a_worker_killed_after_its_claim_leaves_leased_deliveries_the_relay_sends_again(
    placed, serving, wakes, monkeypatch
):
    order, ids = placed
    serving(subscriber_queues())
    from outbox import continuation

    handle = continuation.delivery_handle
    handle_together = continuation.deliveries_handle_together

    def dies_on_payment_completed(*, delivery_id):
        if Delivery.objects.get(pk=delivery_id).event.type == "payments.PaymentCompleted":
            raise Killed
        return handle(delivery_id=delivery_id)

    def batch_dies_on_payment_completed(*, delivery_ids):
        # The same death when the worker runs the claimed deliveries as one batch.
        types = Delivery.objects.filter(pk__in=delivery_ids).values_list("event__type", flat=True)
        if "payments.PaymentCompleted" in types:
            raise Killed
        return handle_together(delivery_ids=delivery_ids)

    monkeypatch.setattr(continuation, "delivery_handle", dies_on_payment_completed)
    monkeypatch.setattr(continuation, "deliveries_handle_together", batch_dies_on_payment_completed)
    with pytest.raises(Killed):
        deliveries_run(ids)

    leased = _deliveries("payments.PaymentCompleted")
    leased_ids = set(leased.values_list("id", flat=True))
    assert set(leased.values_list("status", "dispatches")) == {("pending", 1)}
    # Under lease no relay takes them (a message delivery the task never reached is the
    # relay's: it was never claimed by the worker).
    first = {pk for pk, _ in deliveries_claim(limit=10)}
    assert not first & leased_ids
    time.sleep(0.6)  # the lease (0.5 s) runs out
    again = {pk for pk, _ in deliveries_claim(limit=10)}
    assert leased_ids <= again
    monkeypatch.setattr(continuation, "delivery_handle", handle)
    monkeypatch.setattr(continuation, "deliveries_handle_together", handle_together)
    deliveries_run(sorted(first | again))
    assert Order.objects.get(pk=order.pk).status == "completed"
    assert set(Delivery.objects.values_list("status", "attempts")) == {("done", 1)}


def test_the_next_steps_deliveries_are_leased_to_the_worker_in_the_commit_that_creates_them(
    placed, serving, wakes, monkeypatch
):
    """Born claimed: the step's publish inserts the deliveries the worker will continue with
    the lease a claim would give, so that a worker killed right after the step's commit (before
    it ran or claimed anything more) leaves them to the relay once the lease runs out."""
    order, ids = placed
    serving(subscriber_queues())
    from outbox import continuation

    handle = continuation._handle_batch
    committed = []

    def dies_after_the_first_commit(delivery_ids):
        handle(delivery_ids)
        committed.append(list(delivery_ids))
        raise Killed

    monkeypatch.setattr(continuation, "_handle_batch", dies_after_the_first_commit)
    with pytest.raises(Killed):
        deliveries_run(ids)

    assert Delivery.objects.filter(pk__in=committed[0], status="done").count() == 2
    leased = _deliveries("payments.PaymentCompleted")
    leased_ids = set(leased.values_list("id", flat=True))
    assert len(leased_ids) == 2  # orders and inventory
    assert set(leased.values_list("status", "dispatches", "attempts")) == {("pending", 1, 0)}
    assert all(d.dispatched_at is not None for d in leased)
    assert wakes == []  # every delivery of the step went to this worker's queues
    # Leased to the dead worker: no relay takes them until the lease (0.5 s) runs out.
    assert not {pk for pk, _ in deliveries_claim(limit=10)} & leased_ids
    time.sleep(0.6)
    again = {pk for pk, _ in deliveries_claim(limit=10)}
    assert leased_ids <= again
    monkeypatch.setattr(continuation, "_handle_batch", handle)
    deliveries_run(sorted(again))
    assert Order.objects.get(pk=order.pk).status == "completed"
    assert set(Delivery.objects.values_list("status", "attempts")) == {("done", 1)}


@pytest.mark.parametrize("batch_size", [20, 1])
def test_a_step_that_fails_after_its_publish_continues_nothing_and_its_retry_does(
    placed, serving, wakes, monkeypatch, settings, batch_size
):
    """What a failed run published was rolled back with it (the batch's savepoint, or the
    delivery's own transaction): nothing of it is left, and the retry's publish is continued
    as usual."""
    import dataclasses

    from outbox import registry

    order, ids = placed
    serving(subscriber_queues())
    settings.OUTBOX = {**settings.OUTBOX, "DELIVERY_BATCH_SIZE": batch_size}
    name = "inventory.stock_reserve_on_payment_completed"
    reserve = registry.subscriber_get(name)
    failures = []

    def fails_once_after_publishing(event):
        reserve.handler(event)
        if not failures:
            failures.append(event)
            raise RuntimeError("after the publish")

    monkeypatch.setitem(
        registry._subscribers,
        name,
        dataclasses.replace(reserve, handler=fails_once_after_publishing),
    )

    deliveries_run(ids)

    assert failures
    assert not _deliveries("inventory.StockUpdated").exists()
    failed = Delivery.objects.get(subscriber=name)
    assert (failed.status, failed.attempts) == ("pending", 1)
    assert Order.objects.get(pk=order.pk).status == "paid"
    Delivery.objects.filter(pk=failed.pk).update(backoff_until=None)
    deliveries_run([failed.pk])
    assert Order.objects.get(pk=order.pk).status == "completed"
    later = _deliveries(*AFTER_PLACED[1:])
    assert set(later.values_list("dispatches", "attempts")) == {(1, 1)}


@pytest.mark.e2e
def test_a_real_worker_finishes_the_saga_from_the_relays_one_dispatch(wakes, outbox_fast):
    """No relay runs but the one here: the worker continues every step after the first."""
    product_create(sku="TEE", name="Tee", price=Decimal("20.00"), stock=10)
    customer = get_user_model().objects.create_user("bob")
    with running_worker(queues=subscriber_queues()):
        assert relay_run() == 1
        wait_until(lambda: CatalogItem.objects.filter(sku="TEE").exists(), what="catalogue")
        order, _ = order_place(
            customer=customer, lines=[{"sku": "TEE", "quantity": 1}], payment_token="tok_visa"
        )
        assert relay_run() == 2
        wait_until(
            lambda: Order.objects.get(pk=order.pk).status == "completed", what="order completed"
        )
        wait_until(lambda: not Delivery.objects.filter(status="pending").exists(), what="done")
    assert set(_deliveries(*AFTER_PLACED).values_list("dispatches", "attempts")) == {(1, 1)}
    assert wakes == ["publisher", "publisher"]  # product_create's and order_place's commits
