"""Shipping's handler through the real outbox path, and the saga's tail across both apps."""

from decimal import Decimal

import pytest

from inventory.events import ReservedLine, StockUpdated
from inventory.models import StockLevel, StockReservation
from inventory.services import product_create
from outbox.handling import delivery_handle
from outbox.models import Event
from payments.events import PaidLine, PaymentCompleted
from shipping.models import Shipment
from tests.support import event_deliver

pytestmark = pytest.mark.django_db

SCHEDULE = "shipping.shipment_schedule_on_stock_updated"


def stock_updated(order_id: int = 1) -> StockUpdated:
    return StockUpdated(
        reservation_id=order_id, order_id=order_id, lines=(ReservedLine(sku="MUG", quantity=2),)
    )


def test_reserved_stock_gets_a_shipment_scheduled_in_the_same_saga():
    assert event_deliver(stock_updated(), subscriber=SCHEDULE) == "done"
    shipment = Shipment.objects.get(order_id=1)
    cause = Event.objects.get(type="inventory.StockUpdated")
    effect = Event.objects.get(type="shipping.ShippingScheduled")
    assert effect.payload["tracking_number"] == shipment.tracking_number
    assert (effect.causation_id, effect.correlation_id) == (cause.event_id, cause.correlation_id)


def test_stock_updated_delivered_twice_makes_one_shipment():
    assert event_deliver(stock_updated(), subscriber=SCHEDULE) == "done"
    assert event_deliver(stock_updated(), subscriber=SCHEDULE) == "done"
    assert Shipment.objects.count() == 1
    assert Event.objects.filter(type="shipping.ShippingScheduled").count() == 1


def _run(event_type: str, subscriber: str) -> str:
    delivery = Event.objects.get(type=event_type).deliveries.get(subscriber=subscriber)
    return delivery_handle(delivery_id=delivery.pk)


def test_payment_to_shipment_to_goods_leaving_the_shelf():
    product_create(sku="MUG", name="Mug", price=Decimal("9.50"), stock=5)
    paid = PaymentCompleted(
        payment_id=1,
        order_id=1,
        amount="19.00",
        currency="EUR",
        lines=(PaidLine(sku="MUG", quantity=2),),
    )
    assert event_deliver(paid, subscriber="inventory.stock_reserve_on_payment_completed") == "done"
    assert _run("inventory.StockUpdated", SCHEDULE) == "done"
    assert _run("shipping.ShippingScheduled", "inventory.stock_fulfil_on_shipping_scheduled") == (
        "done"
    )
    level = StockLevel.objects.get(product__sku="MUG")
    assert (level.on_hand, level.reserved) == (3, 0)
    assert StockReservation.objects.get(order_id=1).status == "fulfilled"
    assert Shipment.objects.get(order_id=1).lines == [{"sku": "MUG", "quantity": 2}]
    # One saga: every event carries the payment's correlation id.
    correlation = Event.objects.get(type="payments.PaymentCompleted").correlation_id
    saga = Event.objects.exclude(type="inventory.ProductCatalogued")
    assert set(saga.values_list("correlation_id", flat=True)) == {correlation}
    assert saga.count() == 3
