"""Orders placed over HTTP travel the whole saga through a real worker and end where they must."""

import itertools
from collections import Counter

import pytest
from django.db.models import Count

from inventory.models import StockLevel
from orders.models import Order
from outbox.models import Delivery, Event
from outbox.tasks import deliver
from payments.models import Payment, Refund
from shipping.models import Shipment
from tests.saga.conftest import place
from tests.support import wait_until

pytestmark = pytest.mark.e2e

TERMINAL = ("completed", "cancelled")


def settle(order_ids, timeout=60):
    wait_until(
        lambda: (
            Order.objects.filter(reference__in=order_ids, status__in=TERMINAL).count()
            == len(order_ids)
        ),
        timeout=timeout,
        what=f"{len(order_ids)} orders to reach completed or cancelled",
    )
    wait_until(
        lambda: not Delivery.objects.filter(status="pending").exists(),
        timeout=timeout,
        what="every delivery done",
    )


def assert_invariants(initial_stock: dict[str, int]) -> None:
    """The saga's invariants, from every app's own tables."""
    completed = Counter()
    for order in Order.objects.filter(status="completed").prefetch_related("lines"):
        for line in order.lines.all():
            completed[line.sku] += line.quantity
    for level in StockLevel.objects.select_related("product"):
        sku = level.product.sku
        assert level.on_hand == initial_stock[sku] - completed[sku], sku
        assert level.reserved == 0, f"{sku}: reservations left open at rest"
        assert level.on_hand >= 0
    assert not Order.objects.exclude(status__in=TERMINAL).exists()
    captured = Payment.objects.filter(status__in=["captured", "refunded"])
    assert not captured.values("order_id").annotate(n=Count("id")).filter(n__gt=1).exists()
    for order in Order.objects.filter(cancellation_reason="out_of_stock"):
        payment = Payment.objects.get(order_id=order.pk)
        assert payment.status == "refunded"
        assert Refund.objects.filter(payment=payment).count() == 1
    for order in Order.objects.filter(cancellation_reason="payment_failed"):
        assert not captured.filter(order_id=order.pk).exists()
    for order in Order.objects.filter(status="completed"):
        assert Shipment.objects.filter(order_id=order.pk).count() == 1


def test_happy_path_completes_with_payment_and_shipment(api, operator_api, catalogue):
    order_id = place(api, [("MUG", 2), ("TEE", 1)])
    settle([order_id])
    body = api.get(f"/api/orders/{order_id}/").json()
    assert body["status"] == "completed"
    assert body["cancellation_reason"] is None
    assert body["total"] == "39.00"
    assert body["payment"] == {"status": "captured", "amount": "39.00"}
    assert body["shipment"]["status"] == "scheduled"
    assert body["shipment"]["carrier"] and body["shipment"]["tracking_number"]
    timeline = operator_api.get(f"/api/orders/{order_id}/events/").json()
    assert [e["type"] for e in api.get(f"/api/orders/{order_id}/events/").json()] == [
        e["type"] for e in timeline
    ]
    assert [e["type"] for e in timeline] == [
        "orders.OrderPlaced",
        "payments.PaymentCompleted",
        "inventory.StockUpdated",
        "shipping.ShippingScheduled",
        "orders.OrderCompleted",
    ]
    for cause, effect in itertools.pairwise(timeline):
        assert effect["causation_id"] == cause["id"]
    assert all(d["status"] == "done" for e in timeline for d in e["deliveries"])
    assert_invariants(catalogue)


def test_declined_payment_cancels_the_order_without_a_capture(api, catalogue):
    order_id = place(api, [("MUG", 1)], token="tok_chargeDeclined")
    settle([order_id])
    body = api.get(f"/api/orders/{order_id}/").json()
    assert (body["status"], body["cancellation_reason"]) == ("cancelled", "payment_failed")
    assert body["payment"]["status"] == "failed"
    assert body["shipment"] is None
    assert_invariants(catalogue)


def test_out_of_stock_refunds_the_payment_and_cancels(api, catalogue):
    order_id = place(api, [("MUG", 1), ("LAST", 4)])  # only 3 LAST in stock
    settle([order_id])
    body = api.get(f"/api/orders/{order_id}/").json()
    assert (body["status"], body["cancellation_reason"]) == ("cancelled", "out_of_stock")
    assert body["payment"] == {"status": "refunded", "amount": "29.50"}
    types = [e["type"] for e in api.get(f"/api/orders/{order_id}/events/").json()]
    assert types == [
        "orders.OrderPlaced",
        "payments.PaymentCompleted",
        "inventory.StockNotAvailable",
        "payments.PaymentRefunded",
        "orders.OrderCancelled",
    ]
    assert_invariants(catalogue)


def test_orders_racing_for_the_last_units_complete_exactly_as_many_as_there_are(api, catalogue):
    order_ids = [place(api, [("LAST", 1)]) for _ in range(8)]
    settle(order_ids, timeout=90)
    statuses = Counter(Order.objects.values_list("status", "cancellation_reason"))
    assert statuses == {("completed", None): 3, ("cancelled", "out_of_stock"): 5}
    assert_invariants(catalogue)


def test_every_delivery_sent_twice_more_changes_nothing(api, catalogue):
    order_ids = [place(api, [("MUG", 1)]), place(api, [("LAST", 5)])]
    settle(order_ids)
    before = (Event.objects.count(), Payment.objects.count(), Refund.objects.count())
    ids = list(Delivery.objects.values_list("id", "subscriber"))
    queues = {"orders", "payments", "inventory", "shipping"}
    for queue in queues:
        mine = [pk for pk, name in ids if name.split(".")[0] == queue]
        deliver.apply_async(args=[mine], queue=queue)
        deliver.apply_async(args=[mine], queue=queue)
    # A new order placed after the duplicates proves the queues drained past them.
    order_ids.append(place(api, [("TEE", 1)]))
    settle(order_ids)
    after = (Event.objects.count() - 5, Payment.objects.count() - 1, Refund.objects.count())
    assert after == before
    assert set(Delivery.objects.values_list("attempts", flat=True)) == {1}
    assert_invariants(catalogue)


def test_transient_gateway_timeouts_are_retried_to_success(api, catalogue, settings):
    settings.PAYMENTS = {**settings.PAYMENTS, "TIMEOUTS_PER_CHARGE": 2}
    reference = place(api, [("TEE", 2)])
    settle([reference])
    order_id = Order.objects.get(reference=reference).pk
    assert Order.objects.get(pk=order_id).status == "completed"
    charge = Delivery.objects.get(
        event__type="orders.OrderPlaced",
        event__aggregate_id=str(order_id),
        subscriber="payments.payment_charge_on_order_placed",
    )
    assert charge.attempts == 3
    assert "GatewayUnavailable" in charge.last_error
    assert Payment.objects.filter(order_id=order_id).count() == 1
    assert_invariants(catalogue)


def test_idempotency_key_retries_create_one_order(api, catalogue):
    first = place(api, [("MUG", 1)], HTTP_IDEMPOTENCY_KEY="retry-me")
    again = place(api, [("MUG", 1)], HTTP_IDEMPOTENCY_KEY="retry-me")
    assert first == again
    settle([first])
    assert Order.objects.count() == 1
    assert Payment.objects.count() == 1
