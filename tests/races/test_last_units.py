"""Twenty customers order the last five units at the same moment, over the API, through the real
worker: exactly five orders complete; the others are refunded once and cancelled out of stock;
stock never goes below zero."""

from collections import Counter
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db.models import Count
from rest_framework.test import APIClient

from inventory.models import StockLevel, StockReservation
from inventory.services import product_create
from orders.models import CatalogItem, Order
from outbox.models import Delivery, Event
from payments.models import Payment, Refund
from shipping.models import Shipment
from tests.races.helpers import run_at_once, skip_unless_postgres
from tests.support import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.e2e, skip_unless_postgres()]

UNITS = 5
ORDERS = 20


@pytest.fixture
def last_five(worker, settings):
    settings.SHOP_CURRENCY = "EUR"
    product_create(sku="LAST5", name="Last five", price=Decimal("7.00"), stock=UNITS)
    wait_until(lambda: CatalogItem.objects.filter(sku="LAST5").exists(), what="the catalogue")


def stock_sample(seen: list) -> None:
    level = StockLevel.objects.get(product__sku="LAST5")
    seen.append((level.on_hand, level.reserved))


@pytest.mark.timeout(600)
def test_twenty_orders_for_the_last_five_units(last_five):
    customers = [
        get_user_model().objects.create_user(f"racer{i}", password=f"pw-racer-{i}-123")
        for i in range(ORDERS)
    ]

    def order_for(customer):
        def place():
            client = APIClient()
            client.force_authenticate(customer)
            body = {"lines": [{"sku": "LAST5", "quantity": 1}], "payment_token": "tok_visa"}
            response = client.post("/api/orders/", body, format="json")
            assert response.status_code == 202, response.content
            return response.json()["id"]

        return place

    order_ids = run_at_once([order_for(c) for c in customers])
    assert len(set(order_ids)) == ORDERS

    seen: list[tuple[int, int]] = []

    def settled() -> bool:
        stock_sample(seen)
        return (
            Order.objects.filter(status__in=["completed", "cancelled"]).count() == ORDERS
            and not Delivery.objects.filter(status="pending").exists()
        )

    wait_until(settled, timeout=400, what="every order completed or cancelled, deliveries done")

    # Stock: never below zero, never more reserved than on hand, none left reserved at rest.
    assert all(on_hand >= 0 and 0 <= reserved <= on_hand for on_hand, reserved in seen)
    assert StockLevel.objects.get(product__sku="LAST5").on_hand == 0
    assert StockLevel.objects.get(product__sku="LAST5").reserved == 0

    outcomes = Counter(Order.objects.values_list("status", "cancellation_reason"))
    assert outcomes == {("completed", None): UNITS, ("cancelled", "out_of_stock"): ORDERS - UNITS}

    # One payment per order; a refund for each cancelled one, exactly one, and none else.
    assert not Payment.objects.values("order_id").annotate(n=Count("id")).filter(n__gt=1)
    for order in Order.objects.all():
        payment = Payment.objects.get(order_id=order.pk)
        refunds = Refund.objects.filter(payment=payment).count()
        if order.status == "completed":
            assert (payment.status, refunds) == ("captured", 0)
            assert Shipment.objects.filter(order_id=order.pk).count() == 1
            assert order.payment_status == "captured"
        else:
            assert (payment.status, refunds) == ("refunded", 1)
            assert not Shipment.objects.filter(order_id=order.pk).exists()
            assert order.payment_status == "refunded"

    reservations = Counter(StockReservation.objects.values_list("status", flat=True))
    assert reservations == {"fulfilled": UNITS, "rejected": ORDERS - UNITS}
    events = Counter(Event.objects.values_list("type", flat=True))
    assert events["inventory.StockUpdated"] == UNITS
    assert events["inventory.StockNotAvailable"] == ORDERS - UNITS
    assert events["payments.PaymentRefunded"] == ORDERS - UNITS
    assert events["orders.OrderCompleted"] == UNITS
    assert events["orders.OrderCancelled"] == ORDERS - UNITS
    assert not Delivery.objects.filter(status="dead").exists()
