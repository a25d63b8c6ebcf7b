"""Writes of the orders app. Each changes orders' tables and publishes its events in one
transaction; the saga's handlers call the ``order_*`` transitions, which only move forward."""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils.crypto import salted_hmac

from orders.events import OrderCancelled, OrderCompleted, OrderPlaced, PlacedLine
from orders.models import CatalogItem, Order, OrderLine
from outbox import publish
from payments.events import PAYMENT_TOKEN_MAX_LENGTH, payment_token_problem

MAX_LINES = 100
MAX_QUANTITY = 1000
MAX_PAYMENT_TOKEN_LENGTH = PAYMENT_TOKEN_MAX_LENGTH
MAX_IDEMPOTENCY_KEY_LENGTH = 255
# Order.total is Decimal(12, 2).
MAX_TOTAL = Decimal("9999999999.99")
# CatalogItem.price and OrderLine.unit_price are Decimal(10, 2).
MAX_UNIT_PRICE = Decimal("99999999.99")

# Forward-only progress. Cancelled and completed are terminal: nothing moves an order out.
STATUS_RANK = {
    Order.Status.PLACED: 0,
    Order.Status.PAID: 1,
    Order.Status.STOCK_RESERVED: 2,
    Order.Status.COMPLETED: 3,
}
TERMINAL_STATUSES = {Order.Status.COMPLETED, Order.Status.CANCELLED}
# A payment's facts also only move forward: a refund is never overwritten by the capture it
# undid, whichever of the two events orders handles first.
PAYMENT_STATUS_RANK = {
    None: 0,
    Order.PaymentStatus.CAPTURED: 1,
    Order.PaymentStatus.FAILED: 1,
    Order.PaymentStatus.REFUNDED: 2,
}


class IdempotencyKeyReused(Exception):
    """The idempotency key was already used by this customer for a different request."""

    def __init__(self, *, order: Order):
        self.order = order
        super().__init__(
            f"idempotency key {order.idempotency_key!r} was already used for another request "
            f"(order {order.pk})"
        )


# --- placing an order ---------------------------------------------------------------------------


def _lines_clean(lines: Any) -> tuple[list[tuple[str, int]], list[str]]:
    """The lines as (sku, quantity) pairs, and what is wrong with them."""
    if not isinstance(lines, (list, tuple)):
        return [], ["Expected a list of lines."]
    if not lines:
        return [], ["An order needs at least one line."]
    if len(lines) > MAX_LINES:
        return [], [f"An order has at most {MAX_LINES} lines."]
    cleaned: list[tuple[str, int]] = []
    errors: list[str] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not isinstance(line, dict):
            errors.append(f"Line {number}: expected an object with sku and quantity.")
            continue
        sku, quantity = line.get("sku"), line.get("quantity")
        if not isinstance(sku, str) or not sku:
            errors.append(f"Line {number}: sku must be a non-empty string.")
            continue
        if (
            not isinstance(quantity, int)
            or isinstance(quantity, bool)
            or not 1 <= quantity <= MAX_QUANTITY
        ):
            errors.append(f"Line {number}: quantity must be an integer from 1 to {MAX_QUANTITY}.")
            continue
        if sku in seen:
            errors.append(f"Line {number}: sku {sku!r} appears more than once.")
            continue
        seen.add(sku)
        cleaned.append((sku, quantity))
    return cleaned, errors


def _payment_token_errors(payment_token: Any) -> list[str]:
    if not isinstance(payment_token, str) or not payment_token.strip():
        return ["A payment token is required."]
    if len(payment_token) > MAX_PAYMENT_TOKEN_LENGTH:
        return [f"A payment token has at most {MAX_PAYMENT_TOKEN_LENGTH} characters."]
    problem = payment_token_problem(payment_token)
    return [problem] if problem else []


def order_request_fingerprint(*, lines: Sequence[tuple[str, int]], payment_token: str) -> str:
    """HMAC-SHA256 of the request's canonical form (lines sorted by sku, then the token), keyed
    with ORDERS_FINGERPRINT_SECRET: a plain hash of a short token could be reversed by trying
    every token, and the fingerprint is stored beside the order."""
    canonical = json.dumps(
        {"lines": sorted([sku, quantity] for sku, quantity in lines), "token": payment_token},
        separators=(",", ":"),
        sort_keys=True,
        ensure_ascii=True,
    )
    return salted_hmac(
        "orders.request_fingerprint",
        canonical,
        secret=settings.ORDERS_FINGERPRINT_SECRET,
        algorithm="sha256",
    ).hexdigest()


def _idempotent_match(*, existing: Order, fingerprint: str) -> tuple[Order, bool]:
    if existing.request_fingerprint != fingerprint:
        raise IdempotencyKeyReused(order=existing)
    return existing, False


@transaction.atomic
def order_place(
    *,
    customer,
    lines: Sequence[dict[str, Any]],
    payment_token: str,
    idempotency_key: str | None = None,
) -> tuple[Order, bool]:
    """Place an order priced from the catalogue and publish OrderPlaced; returns (order, created).

    With an idempotency key, repeating the same request returns the order it created (created
    is False); reusing the key for a different request raises IdempotencyKeyReused.
    """
    cleaned, line_errors = _lines_clean(lines)
    errors: dict[str, list[str]] = {}
    if idempotency_key is not None and (
        not isinstance(idempotency_key, str)
        or not 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_LENGTH
    ):
        errors["idempotency_key"] = [
            f"An idempotency key has 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters."
        ]
    token_errors = _payment_token_errors(payment_token)
    if token_errors:
        errors["payment_token"] = token_errors

    currency = settings.SHOP_CURRENCY
    catalogue = CatalogItem.objects.in_bulk([sku for sku, _ in cleaned])
    priced: list[tuple[str, int, Decimal]] = []
    for sku, quantity in cleaned:
        item = catalogue.get(sku)
        if item is None:
            line_errors.append(f"Unknown sku {sku!r}.")
        elif item.currency != currency:
            line_errors.append(f"Sku {sku!r} is not sold in {currency}.")
        else:
            priced.append((sku, quantity, item.price))
    total = sum((price * quantity for _, quantity, price in priced), Decimal("0.00"))
    if not line_errors and total > MAX_TOTAL:
        line_errors.append("The order's total is too large.")
    if line_errors:
        errors["lines"] = line_errors
    if errors:
        raise ValidationError(errors)

    fingerprint = order_request_fingerprint(lines=cleaned, payment_token=payment_token)
    if idempotency_key is not None:
        existing = Order.objects.filter(customer=customer, idempotency_key=idempotency_key).first()
        if existing is not None:
            return _idempotent_match(existing=existing, fingerprint=fingerprint)

    try:
        # A savepoint, so that losing a race on the idempotency key leaves the outer
        # transaction usable for reading the winner.
        with transaction.atomic():
            order = Order.objects.create(
                customer=customer,
                currency=currency,
                total=total,
                idempotency_key=idempotency_key,
                request_fingerprint=fingerprint,
            )
    except IntegrityError:
        if idempotency_key is None:
            raise
        existing = Order.objects.filter(customer=customer, idempotency_key=idempotency_key).first()
        if existing is None:
            raise
        return _idempotent_match(existing=existing, fingerprint=fingerprint)

    order_lines = OrderLine.objects.bulk_create(
        OrderLine(order=order, sku=sku, quantity=quantity, unit_price=price)
        for sku, quantity, price in priced
    )
    publish(
        OrderPlaced(
            order_id=order.pk,
            customer_id=customer.pk,
            lines=tuple(
                PlacedLine(sku=line.sku, quantity=line.quantity, unit_price=str(line.unit_price))
                for line in order_lines
            ),
            total=str(order.total),
            currency=order.currency,
            payment_token=payment_token,
        ),
        correlation_id=order.correlation_id,
    )
    return order, True


# --- the saga's transitions ---------------------------------------------------------------------


def _order_lock(order_id: int) -> Order:
    return Order.objects.select_for_update().get(pk=order_id)


def _status_advance(order: Order, status: str) -> bool:
    """Move the order forward to ``status``; False when it is already there, past it, or done."""
    if order.status in TERMINAL_STATUSES or STATUS_RANK[order.status] >= STATUS_RANK[status]:
        return False
    order.status = status
    return True


def _payment_record(order: Order, *, status: str, amount: Decimal | None) -> None:
    if PAYMENT_STATUS_RANK[order.payment_status] < PAYMENT_STATUS_RANK[status]:
        order.payment_status = status
    if amount is not None and order.payment_amount is None:
        order.payment_amount = amount


@transaction.atomic
def order_mark_paid(*, order_id: int, amount: Decimal) -> Order:
    order = _order_lock(order_id)
    _payment_record(order, status=Order.PaymentStatus.CAPTURED, amount=amount)
    _status_advance(order, Order.Status.PAID)
    order.save()
    return order


@transaction.atomic
def order_mark_stock_reserved(*, order_id: int) -> Order:
    order = _order_lock(order_id)
    if _status_advance(order, Order.Status.STOCK_RESERVED):
        order.save()
    return order


@transaction.atomic
def order_complete(*, order_id: int, carrier: str, tracking_number: str) -> Order:
    """Record the shipment and complete the order, publishing OrderCompleted on the transition."""
    order = _order_lock(order_id)
    order.shipment_status = "scheduled"
    order.shipment_carrier = carrier
    order.shipment_tracking_number = tracking_number
    completed = _status_advance(order, Order.Status.COMPLETED)
    order.save()
    if completed:
        publish(OrderCompleted(order_id=order.pk), correlation_id=order.correlation_id)
    return order


@transaction.atomic
def order_cancel(
    *,
    order_id: int,
    reason: str,
    payment_status: str,
    payment_amount: Decimal | None = None,
) -> Order:
    """Record the payment's outcome and cancel the order, publishing OrderCancelled on the
    transition. A completed or already cancelled order keeps its status and reason."""
    if reason not in Order.CancellationReason.values:
        raise ValueError(f"unknown cancellation reason {reason!r}")
    order = _order_lock(order_id)
    _payment_record(order, status=payment_status, amount=payment_amount)
    cancelled = order.status not in TERMINAL_STATUSES
    if cancelled:
        order.status = Order.Status.CANCELLED
        order.cancellation_reason = reason
    order.save()
    if cancelled:
        publish(
            OrderCancelled(order_id=order.pk, reason=reason), correlation_id=order.correlation_id
        )
    return order


# --- the catalogue ------------------------------------------------------------------------------


@transaction.atomic
def catalog_item_upsert(*, sku: str, name: str, price: str | Decimal, currency: str) -> CatalogItem:
    """Create or update the catalogue's entry for ``sku`` with the product's current facts."""
    try:
        amount = Decimal(price)
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError(f"catalogue price for {sku!r} is not a decimal: {price!r}") from None
    if not amount.is_finite() or not Decimal("0") <= amount <= MAX_UNIT_PRICE:
        raise ValueError(f"catalogue price for {sku!r} is out of range: {price!r}")
    if not isinstance(currency, str) or len(currency) != 3:
        raise ValueError(f"catalogue currency for {sku!r} is not a currency code: {currency!r}")
    item, _ = CatalogItem.objects.update_or_create(
        sku=sku,
        defaults={"name": name, "price": amount.quantize(Decimal("0.01")), "currency": currency},
    )
    return item
