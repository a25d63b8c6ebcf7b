"""Cancellation and deadlines end to end: a real worker, the configured broker and database.

Each test stops the saga at one step by running a worker on some of the apps' queues only,
cancels (or lets a deadline fire) while the next step's event is still on its way, then runs
every queue: the late event and the compensation then meet in any order, and the order must
still end cancelled with no capture kept, no stock held and no shipment.
"""

import random
import threading
import time
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db.models import Sum
from rest_framework.test import APIClient

from inventory.models import StockLevel, StockReservation
from inventory.services import product_create
from orders.models import CatalogItem, Order
from orders.services import order_deadlines_fire
from outbox.models import Delivery
from payments.models import Payment, Refund
from shipping.models import Shipment
from shipping.services import shipment_hand_to_carrier
from tests.support import all_queues, relay_ticker, running_worker, wait_until

pytestmark = pytest.mark.e2e

STOCK = {"MUG": 50, "TEE": 50}
# The queues that take an order up to (and not past) each step.
UP_TO = {
    "placed": None,
    "paid": ["outbox", "orders", "payments"],
    "stock_reserved": ["outbox", "orders", "payments", "inventory"],
    "completed": all_queues(),
}


@pytest.fixture
def shop(transactional_db, outbox_fast):
    """Products in inventory and in orders' catalogue, and a customer's API client."""
    with running_worker(queues=["outbox", "orders"]), relay_ticker():
        for sku, units in STOCK.items():
            product_create(sku=sku, name=sku.title(), price=Decimal("10.00"), stock=units)
        wait_until(lambda: CatalogItem.objects.count() == len(STOCK), what="orders' catalogue")
    customer = get_user_model().objects.create_user("alice", password="alice-pass-123")
    client = APIClient()
    client.force_authenticate(customer)
    return client


def place(api) -> int:
    body = {"lines": [{"sku": "MUG", "quantity": 2}, {"sku": "TEE", "quantity": 1}]}
    response = api.post("/api/orders/", {**body, "payment_token": "tok_visa"}, format="json")
    assert response.status_code == 202, response.content
    return Order.objects.get(reference=response.json()["id"]).pk


def ref(order_id: int) -> str:
    """The order's reference, which its URLs take."""
    return Order.objects.get(pk=order_id).reference


def run(queues, until, what: str, timeout: float = 60) -> None:
    with running_worker(queues=queues), relay_ticker():
        wait_until(until, timeout=timeout, what=what)


def status_is(order_id: int, status: str):
    return lambda: Order.objects.filter(pk=order_id, status=status).exists()


def settled(order_ids) -> bool:
    return (
        Order.objects.filter(pk__in=order_ids, status__in=["completed", "cancelled"])
        .exclude(cancellation_requested_at__isnull=False, status="completed")
        .count()
        == len(order_ids)
        and not Delivery.objects.filter(status="pending").exists()
    )


def settle(order_ids) -> None:
    run(all_queues(), lambda: settled(order_ids), f"orders {order_ids} settled", timeout=90)


def assert_compensated(order_id: int, reason: str) -> None:
    order = Order.objects.get(pk=order_id)
    assert (order.status, order.cancellation_reason) == ("cancelled", reason)
    payment = Payment.objects.filter(order_id=order_id).first()
    assert payment is None or payment.status in ("voided", "failed", "refunded"), payment
    if payment is not None and payment.status == "refunded":
        assert Refund.objects.filter(payment=payment).count() == 1
    reservation = StockReservation.objects.filter(order_id=order_id).first()
    assert reservation is None or reservation.status in ("released", "cancelled", "rejected")
    shipment = Shipment.objects.filter(order_id=order_id).first()
    assert shipment is None or shipment.status == "cancelled"


def assert_stock_at_rest() -> None:
    """Stock equals the initial stock less what completed orders took; nothing reserved."""
    completed = Order.objects.filter(status="completed")
    for level in StockLevel.objects.select_related("product"):
        sku = level.product.sku
        taken = completed.filter(lines__sku=sku).aggregate(n=Sum("lines__quantity"))["n"] or 0
        assert (level.on_hand, level.reserved) == (STOCK[sku] - taken, 0), sku


@pytest.mark.parametrize("step", ["placed", "paid", "stock_reserved", "completed"])
def test_cancel_at_each_step_compensates_everything(shop, step):
    order_id = place(shop)
    if UP_TO[step]:
        run(UP_TO[step], status_is(order_id, step), f"order at {step}")
    response = shop.post(f"/api/orders/{ref(order_id)}/cancel/")
    assert response.status_code == 202, response.content
    settle([order_id])
    assert_compensated(order_id, "customer_cancelled")
    assert_stock_at_rest()
    again = shop.post(f"/api/orders/{ref(order_id)}/cancel/")
    assert again.status_code == 202
    assert again.json()["status"] == "cancelled"
    types = [e["type"] for e in shop.get(f"/api/orders/{ref(order_id)}/events/").json()]
    assert types[-1] == "orders.OrderCancelled" or "orders.OrderCancelled" in types
    assert "orders.OrderCancellationRequested" in types
    assert "orders.OrderCompleted" not in types or step == "completed"


def test_after_the_handover_a_cancel_is_409(shop):
    order_id = place(shop)
    run(all_queues(), status_is(order_id, "completed"), "order completed")
    shipment_hand_to_carrier(shipment_id=Shipment.objects.get(order_id=order_id).pk)
    run(
        all_queues(),
        lambda: Order.objects.get(pk=order_id).shipment_status == "handed_to_carrier",
        "orders to hear of the handover",
    )
    response = shop.post(f"/api/orders/{ref(order_id)}/cancel/")
    assert response.status_code == 409
    assert "handed to the carrier" in response.json()["detail"]


def test_a_cancel_that_loses_the_race_with_the_handover_is_refused(shop):
    """The customer cancels while the operator hands the parcel over, before shipping saw the
    request: shipping refuses, nothing is refunded and the order stays completed."""
    order_id = place(shop)
    run(all_queues(), status_is(order_id, "completed"), "order completed")
    assert shop.post(f"/api/orders/{ref(order_id)}/cancel/").status_code == 202
    shipment_hand_to_carrier(shipment_id=Shipment.objects.get(order_id=order_id).pk)
    settle([order_id])
    order = Order.objects.get(pk=order_id)
    assert (order.status, order.cancellation_requested_at) == ("completed", None)
    assert order.shipment_status == "handed_to_carrier"
    assert Payment.objects.get(order_id=order_id).status == "captured"
    assert not Refund.objects.exists()
    assert_stock_at_rest()
    assert shop.post(f"/api/orders/{ref(order_id)}/cancel/").status_code == 409


def test_cancels_racing_the_running_saga(shop):
    """Orders cancelled at random moments while every queue runs: each ends either completed
    (the cancel came too late only if the parcel left, which never happens here) or
    cancelled, with everything compensated."""
    rng = random.Random(13)
    order_ids = []
    with running_worker(queues=all_queues()), relay_ticker():
        cancellers = []
        for _ in range(8):
            order_id = place(shop)
            order_ids.append(order_id)
            delay = rng.uniform(0, 0.4)

            def cancel(order_id=order_id, delay=delay):
                time.sleep(delay)
                client = APIClient()
                client.force_authenticate(Order.objects.get(pk=order_id).customer)
                assert client.post(f"/api/orders/{ref(order_id)}/cancel/").status_code == 202

            thread = threading.Thread(target=cancel)
            thread.start()
            cancellers.append(thread)
        for thread in cancellers:
            thread.join(30)
        wait_until(lambda: settled(order_ids), timeout=90, what="every order settled")
    for order_id in order_ids:
        assert_compensated(order_id, "customer_cancelled")
    assert_stock_at_rest()


@pytest.mark.parametrize("step", ["placed", "paid", "stock_reserved"])
def test_a_deadline_at_each_step_cancels_and_late_events_change_nothing(shop, settings, step):
    settings.ORDERS_DEADLINES = {**settings.ORDERS_DEADLINES, step: 0}
    order_id = place(shop)
    if UP_TO[step]:
        run(UP_TO[step], status_is(order_id, step), f"order at {step}")
    assert order_deadlines_fire() == 1  # what beat's tick does
    assert order_deadlines_fire() == 0
    if step == "placed":
        # The payment is captured after the deadline fired, before payments hears of it.
        run(
            ["outbox", "payments"],
            lambda: Payment.objects.filter(order_id=order_id, status="captured").exists(),
            "a late capture",
        )
    settle([order_id])
    assert_compensated(order_id, "timed_out")
    assert_stock_at_rest()
    if step == "placed":
        assert Payment.objects.get(order_id=order_id).status == "refunded"
