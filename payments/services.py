"""Writes of the payments app: charge an order, refund it. Each publishes its outcome in the
same transaction as the rows it writes.

Both services are safe to call twice for the same order: the second call returns what the first
did, without calling the gateway or publishing again. The gateway call itself is made with an
idempotency key derived from the order, so even a call whose transaction rolled back (and is
retried) cannot capture or refund a second time while the gateway remembers the key.

Gateways forget keys (about a day). So each call that moves money is first recorded as a
``GatewayAttempt`` in a transaction of its own that commits before the call (the handlers'
``prepare``: ``payment_charge_prepare``, ``payment_refund_prepare``). A run that finds an attempt
whose outcome is not recorded asks the gateway what the key came to, and records that, instead of
calling again; when the gateway no longer knows the key and the attempt is older than the
gateway's key retention, the attempt is ``unresolved`` and nothing calls the gateway for it until
an operator says what happened (``payment_attempt_resolve``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Protocol

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from outbox import atomic, insert_or_nothing, publish, row_get, row_update
from payments.errors import PaymentAttemptNotResolvable, PaymentNotRefundable, PaymentOutcomeUnknown
from payments.events import PaidLine, PaymentCompleted, PaymentFailed, PaymentRefunded
from payments.gateway import ChargeResult, RefundResult, gateway_get
from payments.models import GatewayAttempt, Payment, Refund

_CURRENCY = re.compile(r"[A-Z]{3}")
_MAX_AMOUNT = Decimal("9999999999.99")  # DecimalField(max_digits=12, decimal_places=2)


class OrderLine(Protocol):
    """What a charge needs of an order line (orders.events.PlacedLine has it)."""

    sku: str
    quantity: int


def payment_charge(
    *, order_id: int, amount: Decimal, currency: str, token: str, lines: Iterable[OrderLine]
) -> Payment:
    """Charge the order's amount once; publish PaymentCompleted or PaymentFailed.

    Idempotent per order: when the order already has a payment, that payment is returned and
    nothing else happens; that includes the ``voided`` row payment_cancel leaves for an order
    cancelled before it was charged, so a late OrderPlaced charges nothing.
    ``GatewayUnavailable`` propagates, so the caller retries.
    """
    with atomic():
        lines = tuple(lines)
        _validate_charge(order_id=order_id, amount=amount, currency=currency, lines=lines)

        existing = row_get(Payment, order_id=order_id)
        if existing is not None:
            if existing.status == Payment.Status.VOIDED:
                # Voided while an earlier run's charge was in flight: a capture it made is refunded.
                late = _late_capture(order_id=order_id)
                if late is not None:
                    existing = Payment.objects.select_for_update().get(pk=existing.pk)
                    if existing.status == Payment.Status.VOIDED:
                        return _refund_late_capture(voided=existing, payment=late)
            return existing

        idempotency_key = _key(GatewayAttempt.Kind.CHARGE, order_id)
        attempt = _attempt_lock(
            kind=GatewayAttempt.Kind.CHARGE, order_id=order_id, amount=amount, currency=currency
        )
        if attempt.state == GatewayAttempt.State.ATTEMPTING:
            result = gateway_get().charge(
                amount=amount, currency=currency, token=token, idempotency_key=idempotency_key
            )
            _attempt_outcome_record(attempt, result)
        else:
            result = _attempt_charge_result(attempt)
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
        if not insert_or_nothing(payment):
            # A concurrent duplicate may have inserted the order's payment since we looked: the
            # gateway gave it the same charge (same key), so its payment is ours to return.
            existing = Payment.objects.select_for_update().filter(order_id=order_id).first()
            if existing is None:
                raise IntegrityError(f"order {order_id}'s payment conflicts with no row")
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


def payment_refund(*, order_id: int) -> Refund:
    """Refund the order's captured payment in full, once; publish PaymentRefunded.

    Idempotent per order: an existing refund is returned as it is. Raises
    ``PaymentNotRefundable`` when the order has no payment or its payment was not captured.
    """
    with atomic():
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


def payment_charge_prepare(
    *, order_id: int, amount: Decimal, currency: str, lines: Iterable[OrderLine]
) -> None:
    """Before a run of the charge handler, in a transaction that commits before the gateway is
    called: record the charge attempt, or, when an earlier run recorded one whose outcome is
    unknown, ask the gateway what its key came to and record that (see the module's docstring).
    Refuses what ``payment_charge`` refuses. ``GatewayUnavailable`` propagates (a retry)."""
    with transaction.atomic():
        _validate_charge(order_id=order_id, amount=amount, currency=currency, lines=tuple(lines))
        existing = row_get(Payment, order_id=order_id)
        if existing is not None and existing.status != Payment.Status.VOIDED:
            return
        _attempt_prepare(
            kind=GatewayAttempt.Kind.CHARGE, order_id=order_id, amount=amount, currency=currency
        )


def payment_refund_prepare(*, order_id: int) -> None:
    """Before a run of a refunding handler: the same as ``payment_charge_prepare``, for the
    refund of the order's captured payment (nothing when there is none to refund)."""
    with transaction.atomic():
        payment = Payment.objects.filter(order_id=order_id, status=Payment.Status.CAPTURED).first()
        if payment is None:
            return
        _attempt_prepare(
            kind=GatewayAttempt.Kind.REFUND,
            order_id=order_id,
            amount=payment.amount,
            currency=payment.currency,
        )


def payment_attempt_resolve(
    *, order_id: int, kind: str, reference: str, note: str
) -> GatewayAttempt:
    """An operator's answer for an ``unresolved`` attempt, after checking the gateway's own
    records: ``reference`` is the charge (or refund) id the gateway made, or ``""`` when it
    made none. The attempt becomes ``succeeded``; or, with no reference, a charge ``declined``
    (decline code ``not_charged``: the order is cancelled, the customer is not charged twice)
    and a refund ``attempting`` again (it is made on the next run). Replaying the dead-lettered
    delivery then finishes the saga. Refuses any attempt that is not unresolved."""
    with transaction.atomic():
        attempt = (
            GatewayAttempt.objects.select_for_update().filter(order_id=order_id, kind=kind).first()
        )
        if attempt is None or attempt.state != GatewayAttempt.State.UNRESOLVED:
            state = "none" if attempt is None else attempt.state
            raise PaymentAttemptNotResolvable(
                f"order {order_id} has no unresolved {kind} attempt (it is {state})"
            )
        if not note.strip():
            raise ValidationError({"note": ["say how the outcome was established"]})
        if reference:
            attempt.state = GatewayAttempt.State.SUCCEEDED
            attempt.gateway_reference = reference
        elif kind == GatewayAttempt.Kind.CHARGE:
            attempt.state = GatewayAttempt.State.DECLINED
            attempt.decline_code = "not_charged"
        else:
            # No refund was made: the next run makes it, the gateway's memory counted from now.
            attempt.state = GatewayAttempt.State.ATTEMPTING
            attempt.created_at = timezone.now()
            attempt.runs = 0
        attempt.note = f"{attempt.note}\nresolved by an operator: {note.strip()}".strip()
        attempt.save()
        return attempt


def payment_cancel(*, order_id: int) -> Payment:
    """Compensate a cancelled order: refund its captured payment (PaymentRefunded), or, when it
    was not charged yet, leave a ``voided`` payment so that a late OrderPlaced charges nothing.

    Idempotent: a failed, refunded or voided payment is returned as it is.
    """
    with atomic():
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
    attempt = _attempt_lock(
        kind=GatewayAttempt.Kind.REFUND,
        order_id=order_id,
        amount=payment.amount,
        currency=payment.currency,
    )
    if attempt.state == GatewayAttempt.State.ATTEMPTING:
        result = gateway_get().refund(
            charge_id=payment.gateway_charge_id,
            amount=payment.amount,
            currency=payment.currency,
            idempotency_key=attempt.idempotency_key,
        )
        _attempt_outcome_record(attempt, result)
    elif attempt.state == GatewayAttempt.State.SUCCEEDED:
        result = RefundResult(
            refund_id=attempt.gateway_reference, amount=attempt.amount, currency=attempt.currency
        )
    else:
        raise _outcome_unknown(attempt)
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


def _key(kind: str, order_id: int) -> str:
    return f"order-{order_id}-{kind}"


def _attempt_prepare(*, kind: str, order_id: int, amount: Decimal, currency: str) -> None:
    # Inserted first: on a first run (nearly every run) there is no attempt yet.
    attempt, created = _attempt_get_or_create(
        kind=kind, order_id=order_id, amount=amount, currency=currency, insert_first=True
    )
    if created or attempt.state != GatewayAttempt.State.ATTEMPTING:
        return
    # An earlier run may have called the gateway: ask it before anything calls again.
    gateway = gateway_get()
    if kind == GatewayAttempt.Kind.CHARGE:
        found = gateway.charge_lookup(idempotency_key=attempt.idempotency_key)
    else:
        found = gateway.refund_lookup(idempotency_key=attempt.idempotency_key)
    if found is not None:
        _attempt_outcome_record(attempt, found)
    elif attempt.created_at <= timezone.now() - gateway.key_retention:
        # The gateway would remember a call made since the attempt was recorded, unless the
        # attempt is older than the gateway's memory: then nobody knows whether money moved.
        attempt.state = GatewayAttempt.State.UNRESOLVED
        attempt.note = (
            f"the gateway does not know the key {attempt.idempotency_key!r}, and the attempt "
            f"is older than its key retention ({gateway.key_retention}): the {kind} may or may "
            "not have been made"
        )
        attempt.save(update_fields=["state", "note", "updated_at"])
    else:
        # No earlier call reached the gateway: this run makes it.
        GatewayAttempt.objects.filter(pk=attempt.pk).update(runs=F("runs") + 1)


def _attempt_lock(*, kind: str, order_id: int, amount: Decimal, currency: str) -> GatewayAttempt:
    """The order's attempt of this kind, locked; recorded now (in the caller's transaction) when
    no ``prepare`` recorded it, as for a direct call of the service."""
    attempt, _ = _attempt_get_or_create(
        kind=kind, order_id=order_id, amount=amount, currency=currency, insert_first=False
    )
    return attempt


def _attempt_get_or_create(
    *, kind: str, order_id: int, amount: Decimal, currency: str, insert_first: bool
) -> tuple[GatewayAttempt, bool]:
    """The order's attempt of this kind, locked, and whether it was recorded just now.
    ``insert_first``: try the insert before the read (one statement when there was none)."""
    if not insert_first:
        attempt = row_get(GatewayAttempt, lock=True, order_id=order_id, kind=kind)
        if attempt is not None:
            return attempt, False
    attempt = GatewayAttempt(
        kind=kind,
        order_id=order_id,
        idempotency_key=_key(kind, order_id),
        amount=amount,
        currency=currency,
        runs=1,
    )
    # The new row is ours alone until we commit; a concurrent duplicate's insert waits for it.
    if insert_or_nothing(attempt):
        return attempt, True
    # Recorded already (by an earlier run, or a concurrent duplicate that committed first).
    attempt = row_get(GatewayAttempt, lock=True, order_id=order_id, kind=kind)
    if attempt is None:
        raise IntegrityError(f"order {order_id}'s {kind} attempt conflicts with no row")
    return attempt, False


def _attempt_outcome_record(attempt: GatewayAttempt, result: ChargeResult | RefundResult) -> None:
    if isinstance(result, RefundResult):
        attempt.state = GatewayAttempt.State.SUCCEEDED
        attempt.gateway_reference = result.refund_id
    elif result.captured:
        attempt.state = GatewayAttempt.State.SUCCEEDED
        attempt.gateway_reference = result.charge_id
    else:
        attempt.state = GatewayAttempt.State.DECLINED
        attempt.decline_code = result.decline_code or "declined"
    row_update(attempt, ["state", "gateway_reference", "decline_code", "updated_at"])


def _attempt_charge_result(attempt: GatewayAttempt) -> ChargeResult:
    if attempt.state == GatewayAttempt.State.SUCCEEDED:
        return ChargeResult(status="captured", charge_id=attempt.gateway_reference)
    if attempt.state == GatewayAttempt.State.DECLINED:
        return ChargeResult(status="declined", decline_code=attempt.decline_code)
    raise _outcome_unknown(attempt)


def _outcome_unknown(attempt: GatewayAttempt) -> PaymentOutcomeUnknown:
    return PaymentOutcomeUnknown(
        f"the {attempt.kind} of order {attempt.order_id} is unresolved: {attempt.note}; an "
        "operator establishes what happened at the gateway (manage.py payments_attempt_resolve), "
        "then replays this delivery"
    )


def _late_capture(*, order_id: int) -> Payment | None:
    """A capture recorded by an attempt of an order whose payment is voided, as an unsaved
    Payment, or None."""
    attempt = GatewayAttempt.objects.filter(
        order_id=order_id, kind=GatewayAttempt.Kind.CHARGE, state=GatewayAttempt.State.SUCCEEDED
    ).first()
    if attempt is None:
        return None
    return Payment(
        order_id=order_id,
        amount=attempt.amount,
        currency=attempt.currency,
        gateway_charge_id=attempt.gateway_reference,
        idempotency_key=attempt.idempotency_key,
    )


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
