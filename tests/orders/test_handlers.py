"""The saga's events, delivered to orders through the real outbox path."""

from decimal import Decimal

import pytest

from inventory.events import ProductCatalogued, ReservedLine, StockUpdated
from orders.models import CatalogItem, Order
from outbox.crypto import payload_open
from outbox.handling import delivery_handle
from outbox.models import Event
from outbox.registry import subscriber_get
from payments.events import PaidLine, PaymentCompleted, PaymentFailed, PaymentRefunded
from shipping.events import ShippingScheduled
from tests.orders.conftest import CATALOGUE_SUBSCRIBER
from tests.support import event_deliver

pytestmark = pytest.mark.django_db

ON_PAYMENT_COMPLETED = "orders.order_mark_paid_on_payment_completed"
ON_STOCK_UPDATED = "orders.order_mark_stock_reserved_on_stock_updated"
ON_SHIPPING_SCHEDULED = "orders.order_complete_on_shipping_scheduled"
ON_PAYMENT_FAILED = "orders.order_cancel_on_payment_failed"
ON_PAYMENT_REFUNDED = "orders.order_cancel_on_payment_refunded"


def payment_completed(order):
    return PaymentCompleted(
        payment_id=1,
        order_id=order.id,
        amount="19.00",
        currency="EUR",
        lines=(PaidLine(sku="MUG", quantity=2),),
    )


def stock_updated(order):
    return StockUpdated(
        reservation_id=2, order_id=order.id, lines=(ReservedLine(sku="MUG", quantity=2),)
    )


def shipping_scheduled(order):
    return ShippingScheduled(
        shipment_id=3, order_id=order.id, carrier="DHL", tracking_number="TRACK-1"
    )


def payment_failed(order):
    return PaymentFailed(payment_id=1, order_id=order.id, reason="card_declined")


def payment_refunded(order):
    return PaymentRefunded(
        payment_id=1, refund_id=4, order_id=order.id, amount="19.00", currency="EUR"
    )


def deliver(event, subscriber, order):
    outcome = event_deliver(event, subscriber=subscriber, correlation_id=order.correlation_id)
    assert outcome == "done"
    order.refresh_from_db()
    return order


def published(type_name: str, order) -> list[Event]:
    return list(Event.objects.filter(type=type_name, correlation_id=order.correlation_id))


def test_the_happy_path_moves_the_order_forward_to_completed(order):
    assert deliver(payment_completed(order), ON_PAYMENT_COMPLETED, order).status == "paid"
    assert (order.payment_status, order.payment_amount) == ("captured", Decimal("19.00"))
    assert deliver(stock_updated(order), ON_STOCK_UPDATED, order).status == "stock_reserved"
    assert deliver(shipping_scheduled(order), ON_SHIPPING_SCHEDULED, order).status == "completed"
    assert (order.shipment_status, order.shipment_carrier, order.shipment_tracking_number) == (
        "scheduled",
        "DHL",
        "TRACK-1",
    )
    assert order.cancellation_reason is None
    [completed] = published("orders.OrderCompleted", order)
    assert payload_open(completed.payload, event_type=completed.type) == {
        "order_id": order.id,
        "order_reference": order.reference,
        "customer_email": "alice@example.com",
    }
    # Published by the handler: same saga, caused by ShippingScheduled.
    cause = Event.objects.get(type="shipping.ShippingScheduled")
    assert completed.causation_id == cause.event_id
    assert not published("orders.OrderCancelled", order)


def test_stock_updated_before_payment_completed_ends_stock_reserved(order):
    assert deliver(stock_updated(order), ON_STOCK_UPDATED, order).status == "stock_reserved"
    deliver(payment_completed(order), ON_PAYMENT_COMPLETED, order)
    # The payment's facts are recorded; the status does not go back to paid.
    assert (order.status, order.payment_status, order.payment_amount) == (
        "stock_reserved",
        "captured",
        Decimal("19.00"),
    )


def test_late_events_never_move_a_completed_order_back(order):
    deliver(shipping_scheduled(order), ON_SHIPPING_SCHEDULED, order)
    deliver(stock_updated(order), ON_STOCK_UPDATED, order)
    deliver(payment_completed(order), ON_PAYMENT_COMPLETED, order)
    assert (order.status, order.payment_status) == ("completed", "captured")
    assert len(published("orders.OrderCompleted", order)) == 1


def test_payment_failed_cancels_the_order(order):
    deliver(payment_failed(order), ON_PAYMENT_FAILED, order)
    assert (order.status, order.cancellation_reason, order.payment_status) == (
        "cancelled",
        "payment_failed",
        "failed",
    )
    assert order.payment_amount is None
    [cancelled] = published("orders.OrderCancelled", order)
    assert payload_open(cancelled.payload, event_type=cancelled.type) == {
        "order_id": order.id,
        "order_reference": order.reference,
        "customer_email": "alice@example.com",
        "reason": "payment_failed",
    }


def test_payment_refunded_cancels_the_order_as_out_of_stock(order):
    deliver(payment_completed(order), ON_PAYMENT_COMPLETED, order)
    deliver(payment_refunded(order), ON_PAYMENT_REFUNDED, order)
    assert (order.status, order.cancellation_reason, order.payment_status) == (
        "cancelled",
        "out_of_stock",
        "refunded",
    )
    assert order.payment_amount == Decimal("19.00")
    [cancelled] = published("orders.OrderCancelled", order)
    assert payload_open(cancelled.payload, event_type=cancelled.type) == {
        "order_id": order.id,
        "order_reference": order.reference,
        "customer_email": "alice@example.com",
        "reason": "out_of_stock",
    }


def test_a_refund_handled_before_its_capture_stays_refunded_and_cancelled(order):
    deliver(payment_refunded(order), ON_PAYMENT_REFUNDED, order)
    deliver(payment_completed(order), ON_PAYMENT_COMPLETED, order)
    assert (order.status, order.cancellation_reason, order.payment_status) == (
        "cancelled",
        "out_of_stock",
        "refunded",
    )
    assert order.payment_amount == Decimal("19.00")


def test_a_cancelled_order_is_never_revived(order):
    deliver(payment_failed(order), ON_PAYMENT_FAILED, order)
    deliver(stock_updated(order), ON_STOCK_UPDATED, order)
    deliver(shipping_scheduled(order), ON_SHIPPING_SCHEDULED, order)
    assert (order.status, order.cancellation_reason) == ("cancelled", "payment_failed")
    assert not published("orders.OrderCompleted", order)


def test_a_duplicate_shipping_scheduled_publishes_one_order_completed(order):
    deliver(shipping_scheduled(order), ON_SHIPPING_SCHEDULED, order)
    deliver(shipping_scheduled(order), ON_SHIPPING_SCHEDULED, order)
    assert order.status == "completed"
    assert len(published("orders.OrderCompleted", order)) == 1


@pytest.mark.parametrize(
    ("make_event", "subscriber", "reason"),
    [
        (payment_failed, ON_PAYMENT_FAILED, "payment_failed"),
        (payment_refunded, ON_PAYMENT_REFUNDED, "out_of_stock"),
    ],
)
def test_a_duplicate_cancellation_publishes_one_order_cancelled(
    order, make_event, subscriber, reason
):
    deliver(make_event(order), subscriber, order)
    deliver(make_event(order), subscriber, order)
    assert (order.status, order.cancellation_reason) == ("cancelled", reason)
    assert len(published("orders.OrderCancelled", order)) == 1


def test_the_same_delivery_run_twice_has_its_effect_once(order):
    deliver(shipping_scheduled(order), ON_SHIPPING_SCHEDULED, order)
    delivery = Event.objects.get(type="shipping.ShippingScheduled").deliveries.get(
        subscriber=ON_SHIPPING_SCHEDULED
    )
    assert delivery_handle(delivery_id=delivery.pk) == "skipped"
    assert len(published("orders.OrderCompleted", order)) == 1


def test_product_catalogued_upserts_the_catalogue(db):
    for price, name in (("4.00", "Cup"), ("4.50", "Big cup")):
        outcome = event_deliver(
            ProductCatalogued(sku="CUP", name=name, price=price, currency="EUR"),
            subscriber=CATALOGUE_SUBSCRIBER,
        )
        assert outcome == "done"
    item = CatalogItem.objects.get(sku="CUP")
    assert (item.name, item.price, item.currency) == ("Big cup", Decimal("4.50"), "EUR")


def test_the_catalogue_subscription_is_ordered():
    # A product's updates must be applied in the order inventory published them.
    assert subscriber_get(CATALOGUE_SUBSCRIBER).ordered is True


def test_a_malformed_catalogue_event_is_retried_not_applied(db):
    outcome = event_deliver(
        ProductCatalogued(sku="CUP", name="Cup", price="free", currency="EUR"),
        subscriber=CATALOGUE_SUBSCRIBER,
    )
    assert outcome == "retry"
    assert not CatalogItem.objects.exists()


def test_an_event_for_an_unknown_order_is_retried(db):
    ghost = Order(id=999999)
    outcome = event_deliver(payment_completed(ghost), subscriber=ON_PAYMENT_COMPLETED)
    assert outcome == "retry"
