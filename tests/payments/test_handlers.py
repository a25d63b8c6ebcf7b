"""The payments handlers, run through the real outbox path with real events."""

from decimal import Decimal

import pytest
from django.utils import timezone

from inventory.events import ShortLine, StockNotAvailable
from orders.events import OrderPlaced, PlacedLine
from outbox.handling import delivery_handle
from outbox.models import Delivery, Event
from outbox.registry import subscriber_get
from payments.models import Payment, Refund
from tests.support import event_deliver

pytestmark = pytest.mark.django_db

CHARGE = "payments.payment_charge_on_order_placed"
REFUND = "payments.payment_refund_on_stock_not_available"


def order_placed(order_id=1, token="tok_visa", total="19.00", **changes) -> OrderPlaced:
    return OrderPlaced(
        **{
            "order_id": order_id,
            "order_reference": "ORD-ABCDEFGHJKMN",
            "customer_email": "",
            "customer_id": 1,
            "lines": (PlacedLine(sku="MUG", quantity=2, unit_price="9.50"),),
            "total": total,
            "currency": "EUR",
            "payment_token": token,
            **changes,
        }
    )


def stock_not_available(order_id=1) -> StockNotAvailable:
    return StockNotAvailable(
        reservation_id=7,
        order_id=order_id,
        short=(ShortLine(sku="MUG", requested=2, available=0),),
    )


def published(type_: str) -> list[Event]:
    return list(Event.objects.filter(type=type_))


def delivery_of(type_: str, subscriber: str) -> Delivery:
    return Delivery.objects.get(event__type=type_, subscriber=subscriber)


def handle_due(delivery: Delivery) -> str:
    """Run the delivery now, as the relay would once its retry time has come."""
    Delivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now(), backoff_until=None
    )
    return delivery_handle(delivery_id=delivery.pk)


def test_an_order_placed_with_a_good_card_is_captured_and_announced():
    assert event_deliver(order_placed(), subscriber=CHARGE) == "done"
    payment = Payment.objects.get()
    assert (payment.order_id, payment.status, payment.amount) == (1, "captured", Decimal("19.00"))
    [completed] = published("payments.PaymentCompleted")
    assert completed.payload["lines"] == [{"sku": "MUG", "quantity": 2}]
    assert completed.payload["amount"] == "19.00"
    # The saga's thread: the outcome is caused by, and correlated with, the order's event.
    [placed] = published("orders.OrderPlaced")
    assert completed.causation_id == placed.event_id
    assert completed.correlation_id == placed.correlation_id


def test_an_order_placed_with_a_declined_card_fails_with_the_reason():
    event = order_placed(token="tok_chargeDeclinedExpiredCard")
    assert event_deliver(event, subscriber=CHARGE) == "done"
    payment = Payment.objects.get()
    assert (payment.status, payment.decline_code, payment.gateway_charge_id) == (
        "failed",
        "expired_card",
        "",
    )
    [failed] = published("payments.PaymentFailed")
    assert failed.payload == {"payment_id": payment.pk, "order_id": 1, "reason": "expired_card"}
    assert published("payments.PaymentCompleted") == []


def test_a_duplicated_order_placed_charges_once(gateway):
    event = order_placed()
    assert event_deliver(event, subscriber=CHARGE) == "done"
    assert event_deliver(event, subscriber=CHARGE) == "done"  # published twice by mistake
    assert Payment.objects.count() == 1
    assert len(gateway.calls_of("charge")) == 1
    assert len(published("payments.PaymentCompleted")) == 1


def test_a_delivery_handled_twice_charges_once(gateway):
    assert event_deliver(order_placed(), subscriber=CHARGE) == "done"
    delivery = delivery_of("orders.OrderPlaced", CHARGE)
    Delivery.objects.filter(pk=delivery.pk).update(status=Delivery.Status.PENDING)  # lease lost
    assert handle_due(delivery) == "done"
    assert Payment.objects.count() == 1
    assert len(gateway.calls_of("charge")) == 1
    assert len(published("payments.PaymentCompleted")) == 1


def test_a_gateway_timeout_is_retried_and_then_captured_once(settings, gateway):
    settings.PAYMENTS = {**settings.PAYMENTS, "TIMEOUTS_PER_CHARGE": 1}
    assert event_deliver(order_placed(), subscriber=CHARGE) == "retry"
    delivery = delivery_of("orders.OrderPlaced", CHARGE)
    assert "GatewayUnavailable: timeout" in delivery.last_error
    assert not Payment.objects.exists()
    assert published("payments.PaymentCompleted") == []

    assert handle_due(delivery) == "done"
    payment = Payment.objects.get()
    assert payment.status == "captured"
    charges = gateway.calls_of("charge")
    assert len(charges) == 2
    assert {kwargs["idempotency_key"] for kwargs, _ in charges} == {"order-1-charge"}
    assert len(published("payments.PaymentCompleted")) == 1


def test_an_order_with_a_total_that_is_not_a_decimal_is_retried_then_dead_lettered(settings):
    settings.OUTBOX = {**settings.OUTBOX, "MAX_ATTEMPTS": 1}
    assert event_deliver(order_placed(total="lots"), subscriber=CHARGE) == "dead"
    error = delivery_of("orders.OrderPlaced", CHARGE).last_error
    assert "total 'lots' is not a decimal" in error
    assert not Payment.objects.exists()


def test_stock_not_available_refunds_the_captured_payment():
    event_deliver(order_placed(), subscriber=CHARGE)
    assert event_deliver(stock_not_available(), subscriber=REFUND) == "done"
    payment = Payment.objects.get()
    refund = Refund.objects.get()
    assert payment.status == "refunded"
    assert (refund.payment_id, refund.amount, refund.currency) == (
        payment.pk,
        Decimal("19.00"),
        "EUR",
    )
    [refunded] = published("payments.PaymentRefunded")
    assert refunded.payload == {
        "payment_id": payment.pk,
        "refund_id": refund.pk,
        "order_id": 1,
        "amount": "19.00",
        "currency": "EUR",
    }


def test_stock_not_available_handled_twice_refunds_exactly_once(gateway):
    event_deliver(order_placed(), subscriber=CHARGE)
    event = stock_not_available()
    assert event_deliver(event, subscriber=REFUND) == "done"
    assert event_deliver(event, subscriber=REFUND) == "done"
    delivery = Delivery.objects.filter(subscriber=REFUND).first()
    Delivery.objects.filter(pk=delivery.pk).update(status=Delivery.Status.PENDING)
    assert handle_due(delivery) == "done"
    assert Refund.objects.count() == 1
    assert len(gateway.calls_of("refund")) == 1
    assert len(published("payments.PaymentRefunded")) == 1


def test_a_refund_timeout_is_retried_and_then_refunded_once(settings, gateway):
    event_deliver(order_placed(), subscriber=CHARGE)
    settings.PAYMENTS = {**settings.PAYMENTS, "TIMEOUTS_PER_CHARGE": 1}
    assert event_deliver(stock_not_available(), subscriber=REFUND) == "retry"
    assert not Refund.objects.exists()
    assert handle_due(delivery_of("inventory.StockNotAvailable", REFUND)) == "done"
    assert Refund.objects.count() == 1
    assert len(published("payments.PaymentRefunded")) == 1


@pytest.mark.parametrize(
    ("placed", "message"),
    [
        (None, "PaymentNotRefundable: order 1 has no payment to refund"),
        ("tok_chargeDeclined", "PaymentNotRefundable: payment"),
    ],
)
def test_refunding_a_missing_or_failed_payment_is_a_clear_error(settings, placed, message):
    settings.OUTBOX = {**settings.OUTBOX, "MAX_ATTEMPTS": 2}
    if placed:
        event_deliver(order_placed(token=placed), subscriber=CHARGE)
    assert event_deliver(stock_not_available(), subscriber=REFUND) == "retry"
    delivery = delivery_of("inventory.StockNotAvailable", REFUND)
    assert handle_due(delivery) == "dead"
    delivery.refresh_from_db()
    assert delivery.last_error.startswith(message)
    assert not Refund.objects.exists()
    assert published("payments.PaymentRefunded") == []


def test_the_handlers_run_on_the_payments_queue():
    assert subscriber_get(CHARGE).queue == subscriber_get(REFUND).queue == "payments"
