"""A cancelled order's flow page and timeline show the request and every compensation."""

from decimal import Decimal

import pytest
from django.urls import reverse

from inventory.services import product_create
from orders.services import order_cancellation_request, order_place
from tests.flow.conftest import deliveries_drain

pytestmark = pytest.mark.django_db


def test_the_cancellation_and_its_compensations_are_on_the_flow_page(
    client, customer, settings, monkeypatch
):
    monkeypatch.setattr("outbox.publisher.relay_wake", lambda: None)
    settings.SHOP_CURRENCY = "EUR"
    product_create(sku="MUG", name="Mug", price=Decimal("9.50"), stock=10)
    deliveries_drain()
    order, _ = order_place(
        customer=customer, lines=[{"sku": "MUG", "quantity": 2}], payment_token="tok_visa"
    )
    deliveries_drain()  # completed: paid, reserved, shipment scheduled
    order_cancellation_request(order_id=order.pk, reason="customer_cancelled")
    deliveries_drain()

    client.force_login(customer)
    page = client.get(reverse("order_pages:order-flow", args=[order.reference])).content.decode()
    for name in (
        "OrderCancellationRequested",
        "ShipmentCancelled",
        "PaymentRefunded",
        "StockReleased",
        "OrderCancelled",
    ):
        assert name in page, name
