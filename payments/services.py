"""Writes of the payments app: charge an order, refund it. Each publishes its outcome in the
same transaction as the rows it writes.

Both services are safe to call twice for the same order: the second call returns what the first
did, without calling the gateway or publishing again. The gateway call itself is made with an
idempotency key derived from the order, so even a call whose transaction rolled back (and is
retried) cannot capture or refund a second time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Protocol

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from outbox import publish
from payments.errors import PaymentNotRefundable
from payments.events import PaidLine, PaymentCompleted, PaymentFailed, PaymentRefunded
from payments.gateway import gateway_get
from payments.models import Payment, Refund

_CURRENCY = re.compile(r"[A-Z]{3}")
_MAX_AMOUNT = Decimal("9999999999.99")  # DecimalField(max_digits=12, decimal_places=2)


class OrderLine(Protocol):
    """What a charge needs of an order line (orders.events.PlacedLine has it)."""

    sku: str
    quantity: int


@transaction.atomic
def payment_charge(
    *, order_id: int, amount: Decimal, currency: str, token: str, lines: Iterable[OrderLine]
) -> Payment:
    """Charge the order's amount once; publish PaymentCompleted or PaymentFailed.

    Idempotent per order: when the order already has a payment, that payment is returned and
    nothing else happens; that includes the ``voided`` row payment_cancel leaves for an order
    cancelled before it was charged, so a late OrderPlaced charges nothing.
    ``GatewayUnavailable`` propagates, so the caller retries.
    """
    lines = tuple(lines)
    _validate_charge(order_id=order_id, amount=amount, currency=currency, lines=lines)

    existing = Payment.objects.filter(order_id=order_id).first()
    if existing is not None:
        return existing

    idempotency_key = f"order-{order_id}-charge"
    result = gateway_get().charge(
        amount=amount, currency=currency, token=token, idempotency_key=idempotency_key
    )
    payment = Payment(
        order_id=order_id,
        amount=amount,
        currency=currency,
        idempotency_key=idempotency_key,
    )
    if result.captured:
        payment.status = Payment.Status.CAPTURED
        payment.gateway_charge_id = result.charge_id
    else:
        payment.status = Payment.Status.FAILED
        payment.decline_code = result.decline_code or "declined"
    try:
        # A concurrent duplicate may have inserted the order's payment since we looked: the
        # gateway gave it the same charge (same key), so its payment is ours to return.
        with transaction.atomic():
            payment.save()
    except IntegrityError:
        existing = Payment.objects.select_for_update().filter(order_id=order_id).first()
        if existing is None:
            raise
        if existing.status == Payment.Status.VOIDED and result.captured:
            # The order was cancelled while the gateway captured: the capture is not kept.
            return _refund_late_capture(voided=existing, payment=payment)
        return existing

    if payment.status == Payment.Status.CAPTURED:
        publish(
            PaymentCompleted(
                payment_id=payment.pk,
                order_id=order_id,
                amount=str(amount),
                currency=currency,
                lines=tuple(PaidLine(sku=line.sku, quantity=line.quantity) for line in lines),
            )
        )
    else:
        publish(
            PaymentFailed(payment_id=payment.pk, order_id=order_id, reason=payment.decline_code)
        )
    return payment


@transaction.atomic
def payment_refund(*, order_id: int) -> Refund:
    """Refund the order's captured payment in full, once; publish PaymentRefunded.

    Idempotent per order: an existing refund is returned as it is. Raises
    ``PaymentNotRefundable`` when the order has no payment or its payment was not captured.
    """
    # The row lock makes concurrent duplicates queue here; the second then finds the refund.
    payment = Payment.objects.select_for_update().filter(order_id=order_id).first()
    if payment is None:
        raise PaymentNotRefundable(f"order {order_id} has no payment to refund")
    existing = Refund.objects.filter(payment=payment).first()
    if existing is not None:
        return existing
    if payment.status != Payment.Status.CAPTURED:
        raise PaymentNotRefundable(
            f"payment {payment.pk} of order {order_id} is {payment.status}, not captured: "
            "there is nothing to refund"
        )
    return _refund(payment)


@transaction.atomic
def payment_cancel(*, order_id: int) -> Payment:
    """Compensate a cancelled order: refund its captured payment (PaymentRefunded), or, when it
    was not charged yet, leave a ``voided`` payment so that a late OrderPlaced charges nothing.

    Idempotent: a failed, refunded or voided payment is returned as it is.
    """
    if not isinstance(order_id, int) or isinstance(order_id, bool) or order_id < 1:
        raise ValidationError({"order_id": [f"must be a positive integer, got {order_id!r}"]})
    payment = Payment.objects.select_for_update().filter(order_id=order_id).first()
    if payment is None:
        try:
            # Unique on order_id: a charge that commits first makes this insert fail, and is
            # then refunded below; a charge that commits second finds this row (payment_charge).
            with transaction.atomic():
                return Payment.objects.create(
                    order_id=order_id,
                    amount=Decimal("0.00"),
                    currency="",
                    status=Payment.Status.VOIDED,
                    idempotency_key=f"order-{order_id}-charge",
                )
        except IntegrityError:
            payment = Payment.objects.select_for_update().get(order_id=order_id)
    if (
        payment.status == Payment.Status.CAPTURED
        and not Refund.objects.filter(payment=payment).exists()
    ):
        _refund(payment)
    return payment


def _refund_late_capture(*, voided: Payment, payment: Payment) -> Payment:
    """The gateway captured ``payment`` for an order whose payment was voided meanwhile: record
    the capture on the voided row and refund it at once."""
    voided.amount = payment.amount
    voided.currency = payment.currency
    voided.gateway_charge_id = payment.gateway_charge_id
    voided.status = Payment.Status.CAPTURED
    voided.save(update_fields=["amount", "currency", "gateway_charge_id", "status", "updated_at"])
    _refund(voided)
    return voided


def _refund(payment: Payment) -> Refund:
    order_id = payment.order_id
    result = gateway_get().refund(
        charge_id=payment.gateway_charge_id,
        amount=payment.amount,
        currency=payment.currency,
        idempotency_key=f"order-{order_id}-refund",
    )
    refund = Refund.objects.create(
        payment=payment,
        amount=payment.amount,
        currency=payment.currency,
        gateway_refund_id=result.refund_id,
    )
    payment.status = Payment.Status.REFUNDED
    payment.save(update_fields=["status", "updated_at"])
    publish(
        PaymentRefunded(
            payment_id=payment.pk,
            refund_id=refund.pk,
            order_id=order_id,
            amount=str(payment.amount),
            currency=payment.currency,
        )
    )
    return refund


def _validate_charge(
    *, order_id: int, amount: Decimal, currency: str, lines: tuple[OrderLine, ...]
) -> None:
    errors: dict[str, list[str]] = {}
    if not isinstance(order_id, int) or isinstance(order_id, bool) or order_id < 1:
        errors.setdefault("order_id", []).append(f"must be a positive integer, got {order_id!r}")
    if not isinstance(amount, Decimal) or not amount.is_finite():
        errors.setdefault("amount", []).append(f"must be a finite Decimal, got {amount!r}")
    elif amount < 0:
        errors.setdefault("amount", []).append(f"must not be negative, got {amount}")
    elif amount != amount.quantize(Decimal("0.01")) or amount > _MAX_AMOUNT:
        errors.setdefault("amount", []).append(
            f"must have at most 2 decimal places and be at most {_MAX_AMOUNT}, got {amount}"
        )
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        errors.setdefault("currency", []).append(
            f"must be a 3-letter ISO code such as 'EUR', got {currency!r}"
        )
    if not lines:
        errors.setdefault("lines", []).append("an order has at least one line")
    for i, line in enumerate(lines):
        sku = getattr(line, "sku", None)
        quantity = getattr(line, "quantity", None)
        if not isinstance(sku, str) or not sku:
            errors.setdefault("lines", []).append(f"line {i}: sku must be a non-empty string")
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
            errors.setdefault("lines", []).append(
                f"line {i}: quantity must be a positive integer, got {quantity!r}"
            )
    if errors:
        raise ValidationError(errors)
