"""Compensation in payments: a cancelled order keeps no capture."""

from decimal import Decimal

import pytest

from outbox.models import Event
from payments.models import Payment, Refund
from payments.services import payment_cancel, payment_charge

pytestmark = pytest.mark.django_db

LINES = [type("Line", (), {"sku": "MUG", "quantity": 1})()]


def charge(order_id: int) -> Payment:
    return payment_charge(
        order_id=order_id, amount=Decimal("9.50"), currency="EUR", token="tok_visa", lines=LINES
    )


def test_a_captured_payment_is_refunded_once(gateway):
    charge(1)
    payment_cancel(order_id=1)
    payment_cancel(order_id=1)
    assert Payment.objects.get(order_id=1).status == "refunded"
    assert Refund.objects.filter(payment__order_id=1).count() == 1
    assert len(gateway.calls_of("refund")) == 1
    assert Event.objects.filter(type="payments.PaymentRefunded").count() == 1


def test_an_order_cancelled_before_its_charge_is_never_charged(gateway):
    assert payment_cancel(order_id=2).status == "voided"
    assert charge(2).status == "voided"
    assert gateway.calls_of("charge") == []
    assert not Event.objects.filter(type__startswith="payments.").exists()


def test_a_capture_that_lands_after_the_void_is_refunded_at_once(gateway, monkeypatch):
    """The cancellation commits while the gateway is capturing: the charge's insert then meets
    the voided row, and the capture is given back in the same transaction."""
    real_charge = gateway.charge

    def charge_while_cancelled(**kwargs):
        result = real_charge(**kwargs)
        payment_cancel(order_id=3)  # what the other transaction committed meanwhile
        return result

    monkeypatch.setattr(gateway, "charge", charge_while_cancelled)
    payment = charge(3)
    assert payment.status == "refunded"
    assert payment.amount == Decimal("9.50") and payment.gateway_charge_id
    assert Refund.objects.get(payment=payment).amount == Decimal("9.50")
    assert len(gateway.calls_of("refund")) == 1
    assert list(Event.objects.values_list("type", flat=True)) == ["payments.PaymentRefunded"]


def test_a_failed_payment_has_nothing_to_compensate(gateway):
    payment_charge(
        order_id=4,
        amount=Decimal("9.50"),
        currency="EUR",
        token="tok_chargeDeclined",
        lines=LINES,
    )
    assert payment_cancel(order_id=4).status == "failed"
    assert gateway.calls_of("refund") == []
