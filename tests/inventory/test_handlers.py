"""Inventory's handlers, run through the real outbox path (stored event, delivery record)."""

import pytest

from inventory.models import StockReservation
from outbox.handling import delivery_handle
from outbox.models import Event
from payments.events import PaidLine, PaymentCompleted
from shipping.events import ShippingScheduled
from tests.inventory.helpers import a_product, payloads, snapshot, stock
from tests.support import event_deliver

pytestmark = pytest.mark.django_db

RESERVE = "inventory.stock_reserve_on_payment_completed"
FULFIL = "inventory.stock_fulfil_on_shipping_scheduled"


def paid(order_id: int = 1, **quantities: int) -> PaymentCompleted:
    lines = tuple(PaidLine(sku=sku, quantity=q) for sku, q in quantities.items())
    return PaymentCompleted(
        payment_id=order_id, order_id=order_id, amount="19.00", currency="EUR", lines=lines
    )


def scheduled(order_id: int = 1) -> ShippingScheduled:
    return ShippingScheduled(
        shipment_id=order_id, order_id=order_id, carrier="DHL", tracking_number=f"DHL{order_id}"
    )


def test_a_completed_payment_reserves_its_lines_and_says_so_in_the_same_saga():
    a_product("MUG", stock=5)
    assert event_deliver(paid(MUG=2), subscriber=RESERVE) == "done"
    assert stock("MUG") == (5, 2)
    cause = Event.objects.get(type="payments.PaymentCompleted")
    effect = Event.objects.get(type="inventory.StockUpdated")
    assert effect.payload["lines"] == [{"sku": "MUG", "quantity": 2}]
    assert (effect.causation_id, effect.correlation_id) == (cause.event_id, cause.correlation_id)


def test_a_payment_for_more_than_there_is_reserves_nothing_and_says_what_is_short():
    a_product("MUG", stock=5)
    a_product("TEE", stock=1)
    assert event_deliver(paid(MUG=2, TEE=2), subscriber=RESERVE) == "done"
    assert (stock("MUG"), stock("TEE")) == ((5, 0), (1, 0))
    assert payloads("inventory.StockNotAvailable")[0]["short"] == [
        {"sku": "TEE", "requested": 2, "available": 1}
    ]
    assert payloads("inventory.StockUpdated") == []


def test_a_payment_delivered_twice_makes_one_reservation():
    a_product("MUG", stock=5)
    assert event_deliver(paid(MUG=2), subscriber=RESERVE) == "done"
    assert event_deliver(paid(MUG=2), subscriber=RESERVE) == "done"  # a second event, same order
    assert StockReservation.objects.count() == 1
    assert stock("MUG") == (5, 2)
    assert len(payloads("inventory.StockUpdated")) == 1


def test_the_same_delivery_run_twice_is_skipped_the_second_time():
    a_product("MUG", stock=5)
    event_deliver(paid(MUG=2), subscriber=RESERVE)
    delivery = Event.objects.get(type="payments.PaymentCompleted").deliveries.get(
        subscriber=RESERVE
    )
    assert delivery_handle(delivery_id=delivery.pk) == "skipped"
    assert stock("MUG") == (5, 2)


def test_a_malformed_payment_is_retried_and_changes_nothing():
    a_product("MUG", stock=5)
    before = snapshot()
    assert event_deliver(paid(MUG=0), subscriber=RESERVE) == "retry"
    after = snapshot()
    assert after[:3] == before[:3]
    assert after[3] == before[3] + 1  # only the PaymentCompleted itself


def test_a_scheduled_shipment_takes_the_goods_off_the_shelf_once():
    a_product("MUG", stock=5)
    event_deliver(paid(MUG=2), subscriber=RESERVE)
    assert event_deliver(scheduled(), subscriber=FULFIL) == "done"
    assert event_deliver(scheduled(), subscriber=FULFIL) == "done"
    assert stock("MUG") == (3, 0)
    assert StockReservation.objects.get(order_id=1).status == "fulfilled"


def test_a_scheduled_shipment_of_an_order_without_reservation_changes_nothing():
    a_product("MUG", stock=5)
    assert event_deliver(scheduled(order_id=42), subscriber=FULFIL) == "done"
    assert stock("MUG") == (5, 0)
