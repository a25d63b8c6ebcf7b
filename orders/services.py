"""Writes of the orders app. Each changes orders' tables and publishes its events in one
transaction; the saga's handlers call the ``order_*`` transitions, which only move forward."""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, connections, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.crypto import salted_hmac

from orders.events import (
    OrderCancellationRequested,
    OrderCancelled,
    OrderCompleted,
    OrderPlaced,
    PlacedLine,
)
from orders.models import CatalogItem, Order, OrderDeadline, OrderLine
from outbox import atomic, insert_or_nothing, model_columns, publish, row_update, rows_load
from payments.events import PAYMENT_TOKEN_MAX_LENGTH, payment_token_problem

logger = logging.getLogger(__name__)

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


# What orders has heard of the shipment, forward only: a late ShippingScheduled never overwrites
# a parcel handed to the carrier, and nothing overwrites a cancelled shipment.
SHIPMENT_STATUS_RANK = {
    None: 0,
    "scheduled": 1,
    "handed_to_carrier": 2,
    "delivered": 3,
    "cancelled": 4,
}
# With the parcel at the carrier (or delivered), an order can no longer be cancelled.
SHIPMENT_PAST_RETURN = frozenset({"handed_to_carrier", "delivered"})
# Why an order may be cancelled on request (the others come from the saga's failures).
REQUESTED_REASONS = frozenset(
    {
        Order.CancellationReason.CUSTOMER_CANCELLED,
        Order.CancellationReason.TIMED_OUT,
        Order.CancellationReason.OPERATOR_CANCELLED,
    }
)


class OrderNotCancellable(Exception):
    """The order can no longer be cancelled; ``reason`` says why, for the customer."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


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
        existing = _order_of_key(customer, idempotency_key)
        if existing is not None:
            return _idempotent_match(existing=existing, fingerprint=fingerprint)

    order = Order(
        customer=customer,
        currency=currency,
        total=total,
        idempotency_key=idempotency_key,
        request_fingerprint=fingerprint,
    )
    # A conflict raises nothing (no savepoint needed to read the winner after losing a race on
    # the idempotency key: PostgreSQL's insert waits for the concurrent one to commit).
    if not insert_or_nothing(order):
        existing = None if idempotency_key is None else _order_of_key(customer, idempotency_key)
        if existing is None:
            raise IntegrityError(f"order {order.reference} conflicts with a stored order")
        return _idempotent_match(existing=existing, fingerprint=fingerprint)

    _deadline_set(order)
    order_lines = OrderLine.objects.bulk_create(
        OrderLine(order=order, sku=sku, quantity=quantity, unit_price=price)
        for sku, quantity, price in priced
    )
    _lines_known(order, order_lines)
    publish(
        OrderPlaced(
            order_id=order.pk,
            order_reference=order.reference,
            customer_email=customer.email or "",
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


def _order_of_key(customer, idempotency_key: str) -> Order | None:
    return Order.objects.filter(customer=customer, idempotency_key=idempotency_key).first()


def _lines_known(order: Order, lines: list[OrderLine]) -> None:
    """``order.lines.all()`` answers the lines just written, without reading them back (the
    API shows them in its answer): what ``prefetch_related`` would have stored, by id."""
    known = order.lines.all()
    known._result_cache = sorted(lines, key=lambda line: line.pk)
    known._prefetch_done = True
    order._prefetched_objects_cache = {
        OrderLine._meta.get_field("order").related_query_name(): known
    }


# --- the saga's transitions ---------------------------------------------------------------------


def _customer_facts(order: Order) -> dict[str, Any]:
    """What the order's customer-facing events carry, so that their subscribers (notifications)
    never read orders' tables: the order's id and reference, and its customer's address (read
    with the order's lock by ``_order_lock``, or here)."""
    email = getattr(order, "customer_email", None)
    if email is None:
        email = (
            get_user_model()
            .objects.filter(pk=order.customer_id)
            .values_list("email", flat=True)
            .first()
        )
    return {"order_id": order.pk, "order_reference": order.reference, "customer_email": email or ""}


# What the saga's transitions change: their UPDATE writes these, not the whole row.
_TRANSITION_FIELDS = (
    "status",
    "cancellation_reason",
    "payment_status",
    "payment_amount",
    "shipment_status",
    "shipment_carrier",
    "shipment_tracking_number",
    "cancellation_requested_at",
    "cancellation_requested_reason",
    "updated_at",
)


def _order_lock(order_id: int, *, with_email: bool = False) -> Order:
    """The order, locked; ``with_email``: with its customer's address (``customer_email``) read
    in the same statement, for the events that carry it (``_customer_facts``), a join instead of
    a read of its own in the transitions that may publish one. Each statement is written once
    (``_order_lock_sql``): building it with the ORM on every step cost more CPU than running it.
    Raises ``Order.DoesNotExist`` as ``get`` does."""
    with connection.cursor() as cursor:
        cursor.execute(_order_lock_sql(connection.alias, with_email), [order_id])
        row = cursor.fetchone()
    if row is None:
        raise Order.DoesNotExist(f"no order {order_id}")
    (order,) = rows_load(Order, [row], using=connection.alias)
    if with_email:
        order.customer_email = row[-1]
    return order


@functools.lru_cache(maxsize=8)
def _order_lock_sql(alias: str, with_email: bool) -> str:
    db = connections[alias]
    quote = db.ops.quote_name
    meta = Order._meta
    statement = f"SELECT {model_columns(Order, 'o')}"
    if with_email:
        customer = meta.get_field("customer")
        users = customer.related_model._meta
        statement += (
            f", u.{quote(users.get_field('email').column)} FROM {quote(meta.db_table)} o "
            f"INNER JOIN {quote(users.db_table)} u "
            f"ON u.{quote(customer.target_field.column)} = o.{quote(customer.column)}"
        )
    else:
        statement += f" FROM {quote(meta.db_table)} o"
    statement += f" WHERE o.{quote(meta.pk.column)} = %s"
    if db.features.has_select_for_update:
        statement += " " + db.ops.for_update_sql(
            of=("o",) if db.features.has_select_for_update_of else ()
        )
    return statement


def _order_save(order: Order) -> None:
    row_update(order, _TRANSITION_FIELDS)


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


def _shipment_record(order: Order, *, status: str) -> bool:
    if SHIPMENT_STATUS_RANK[order.shipment_status] >= SHIPMENT_STATUS_RANK[status]:
        return False
    order.shipment_status = status
    return True


@atomic
def order_mark_paid(*, order_id: int, amount: Decimal) -> Order:
    order = _order_lock(order_id)
    _payment_record(order, status=Order.PaymentStatus.CAPTURED, amount=amount)
    if _status_advance(order, Order.Status.PAID):
        _deadline_set(order)
    _order_save(order)
    return order


@atomic
def order_mark_stock_reserved(*, order_id: int) -> Order:
    order = _order_lock(order_id)
    if _status_advance(order, Order.Status.STOCK_RESERVED):
        _deadline_set(order)
        _order_save(order)
    return order


@atomic
def order_complete(*, order_id: int, carrier: str, tracking_number: str) -> Order:
    """Record the shipment and complete the order, publishing OrderCompleted on the transition."""
    order = _order_lock(order_id, with_email=True)
    if _shipment_record(order, status="scheduled"):
        order.shipment_carrier = carrier
        order.shipment_tracking_number = tracking_number
    # With a cancellation on its way the order waits for shipping's answer instead: it is
    # cancelled, or, if the parcel already left, completed when the refusal arrives. So an order
    # whose cancellation was accepted never completes first.
    completed = order.cancellation_requested_at is None and _status_advance(
        order, Order.Status.COMPLETED
    )
    _order_save(order)
    if completed:
        publish(OrderCompleted(**_customer_facts(order)), correlation_id=order.correlation_id)
    return order


@atomic
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
    order = _order_lock(order_id, with_email=True)
    _payment_record(order, status=payment_status, amount=payment_amount)
    cancelled = order.status not in TERMINAL_STATUSES
    if cancelled:
        # A refund that follows a cancellation request is that request's compensation.
        _cancelled_set(order, reason=order.cancellation_requested_reason or reason)
    _order_save(order)
    return order


def _cancelled_set(order: Order, *, reason: str) -> None:
    order.status = Order.Status.CANCELLED
    order.cancellation_reason = reason
    order.cancellation_requested_at = None  # answered: the order is cancelled
    publish(
        OrderCancelled(**_customer_facts(order), reason=reason),
        correlation_id=order.correlation_id,
    )


# --- cancellation on request --------------------------------------------------------------------


@transaction.atomic
def order_cancellation_request(*, order_id: int, reason: str) -> Order:
    """Ask for the order's cancellation (customer, operator or deadline); publish
    OrderCancellationRequested. The saga compensates by events and the order ends cancelled
    with ``reason`` once shipping has cancelled the shipment (see docs/architecture.md).

    Idempotent: an order already cancelled, or with a cancellation on its way, is returned as
    it is. Raises OrderNotCancellable once the parcel is with the carrier, or when the order
    completed otherwise.
    """
    if reason not in REQUESTED_REASONS:
        raise ValueError(f"not a reason to request a cancellation: {reason!r}")
    order = _order_lock(order_id)
    if order.status == Order.Status.CANCELLED or order.cancellation_requested_at is not None:
        return order
    if order.shipment_status in SHIPMENT_PAST_RETURN:
        raise OrderNotCancellable(
            "The order's parcel was already handed to the carrier "
            f"(shipment {order.shipment_status.replace('_', ' ')}): it can no longer be "
            "cancelled."
        )
    order.cancellation_requested_at = timezone.now()
    order.cancellation_requested_reason = reason
    order.save(update_fields=["cancellation_requested_at", "cancellation_requested_reason"])
    publish(
        OrderCancellationRequested(order_id=order.pk, reason=reason),
        correlation_id=order.correlation_id,
    )
    return order


@atomic
def order_cancel_compensated(*, order_id: int, reason: str) -> Order:
    """Shipping cancelled the order's shipment (or made sure there will be none): the order is
    cancelled, even a completed one, since it will not ship. The refund and the stock follow
    from the same event in payments and inventory."""
    order = _order_lock(order_id, with_email=True)
    _shipment_record(order, status="cancelled")
    if order.status != Order.Status.CANCELLED:
        if reason not in Order.CancellationReason.values:
            reason = (
                order.cancellation_requested_reason or Order.CancellationReason.CUSTOMER_CANCELLED
            )
        _cancelled_set(order, reason=reason)
    _order_save(order)
    return order


@atomic
def order_cancellation_refuse(*, order_id: int, shipment_status: str) -> Order:
    """Shipping refused: the parcel left before the request reached it. The request is
    withdrawn and the order completes (publishing OrderCompleted) if it had not yet."""
    order = _order_lock(order_id, with_email=True)
    if shipment_status in SHIPMENT_STATUS_RANK:
        _shipment_record(order, status=shipment_status)
    order.cancellation_requested_at = None
    order.cancellation_requested_reason = None
    # The parcel is with the carrier: the saga got there, so the order completes now if the
    # pending request held its completion back.
    completed = _status_advance(order, Order.Status.COMPLETED)
    _order_save(order)
    if completed:
        publish(OrderCompleted(**_customer_facts(order)), correlation_id=order.correlation_id)
    return order


@atomic
def order_shipment_progress(*, order_id: int, shipment_status: str) -> Order:
    """Record that the parcel was handed to the carrier, or delivered."""
    order = _order_lock(order_id)
    if _shipment_record(order, status=shipment_status):
        order.save(update_fields=["shipment_status", "updated_at"])
    return order


# --- the operator's actions on a saga -----------------------------------------------------------


def _operator_reason_clean(reason) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise ValidationError({"reason": ["Say why: the reason is kept in the admin's history."]})
    if len(reason) > 1000:
        raise ValidationError({"reason": ["At most 1000 characters."]})
    return reason.strip()


def _history_record(*, user, order: Order, message: str) -> None:
    from django.contrib.admin.models import CHANGE, LogEntry

    LogEntry.objects.log_actions(
        user_id=user.pk,
        queryset=[order],
        action_flag=CHANGE,
        change_message=message,
        single_object=True,
    )


@transaction.atomic
def saga_retry(*, order_id: int, user, reason: str) -> int:
    """Replay the saga's dead-lettered deliveries (fresh attempts, due now); returns how many.
    Recorded in the admin's history with who and why."""
    from outbox import correlation_dead_replay

    reason = _operator_reason_clean(reason)
    order = _order_lock(order_id)
    replayed = correlation_dead_replay(correlation_id=order.correlation_id)
    _history_record(
        user=user, order=order, message=f"Retried {replayed} dead-lettered step(s): {reason}"
    )
    return replayed


@transaction.atomic
def saga_cancel(*, order_id: int, user, reason: str) -> Order:
    """Cancel the order with compensation (reason ``operator_cancelled``), as the customer's
    cancel does; raises OrderNotCancellable after the handover. Recorded in the admin's history
    with who and why."""
    reason = _operator_reason_clean(reason)
    order = order_cancellation_request(
        order_id=order_id, reason=Order.CancellationReason.OPERATOR_CANCELLED
    )
    _history_record(user=user, order=order, message=f"Cancelled with compensation: {reason}")
    return order


# --- deadlines ----------------------------------------------------------------------------------


def deadline_seconds(step: str) -> float:
    return float(settings.ORDERS_DEADLINES[step])


def _deadline_set(order: Order) -> None:
    """The order just entered a waiting step: it has until now + the step's deadline."""
    step = order.status
    if step not in settings.ORDERS_DEADLINES:
        return
    due_at = timezone.now() + dt.timedelta(seconds=deadline_seconds(step))
    # Once per order and step (unique): a second arrival of the step changes nothing.
    insert_or_nothing(OrderDeadline(order=order, step=step, due_at=due_at))


@transaction.atomic
def order_deadline_fire(*, deadline_id: int, now: dt.datetime | None = None) -> OrderDeadline:
    """Fire one due deadline: an order still waiting in that step is cancelled (``timed_out``),
    one that moved on is left alone. Firing it again does nothing more: ``fired_at`` is set
    once, re-checked on the locked row."""
    now = now or timezone.now()
    deadline = (
        OrderDeadline.objects.select_for_update()
        .filter(pk=deadline_id, fired_at__isnull=True, due_at__lte=now)
        .first()
    )
    if deadline is None:
        return OrderDeadline.objects.get(pk=deadline_id)
    order = _order_lock(deadline.order_id)
    waiting = (
        order.status == deadline.step
        and order.cancellation_requested_at is None
        and order.shipment_status is None
    )
    deadline.fired_at = now
    deadline.outcome = (
        OrderDeadline.Outcome.CANCELLED if waiting else OrderDeadline.Outcome.MOVED_ON
    )
    deadline.save(update_fields=["fired_at", "outcome"])
    if waiting:
        logger.info("order %s timed out waiting in %s", order.pk, deadline.step)
        order_cancellation_request(order_id=order.pk, reason=Order.CancellationReason.TIMED_OUT)
    return deadline


def order_deadlines_fire(*, now: dt.datetime | None = None, limit: int = 500) -> int:
    """Fire every due deadline (up to ``limit``), each in its own transaction; returns how
    many cancelled an order. Beat runs it (orders.tasks.deadlines_fire)."""
    now = now or timezone.now()
    due = OrderDeadline.objects.filter(fired_at__isnull=True, due_at__lte=now)
    # Most deadlines are of steps their orders left long ago: one statement retires them, its
    # condition checked by the database on each row it changes.
    due.exclude(order__status=F("step")).update(
        fired_at=now, outcome=OrderDeadline.Outcome.MOVED_ON
    )
    due = list(due.order_by("due_at").values_list("pk", flat=True)[:limit])
    return sum(
        order_deadline_fire(deadline_id=pk, now=now).outcome == OrderDeadline.Outcome.CANCELLED
        for pk in due
    )


DEADLINES_PURGE_BATCH = 1000


def order_deadlines_purge(*, now: dt.datetime | None = None) -> int:
    """Delete the deadline rows of orders that ended (completed or cancelled) and have not
    changed for ``ORDERS_DEADLINE_RETENTION_DAYS`` (0 keeps them); returns how many. A deadline
    only matters while its order waits in a step: once the order ended it is history, kept as
    long as the order's events are. Beat runs it hourly (orders.tasks.deadlines_purge)."""
    days = settings.ORDERS_DEADLINE_RETENTION_DAYS
    if days <= 0:
        return 0
    cutoff = (now or timezone.now()) - dt.timedelta(days=days)
    expired = OrderDeadline.objects.filter(
        order__status__in=TERMINAL_STATUSES, order__updated_at__lt=cutoff
    )
    deleted = 0
    while batch := list(expired.values_list("pk", flat=True)[:DEADLINES_PURGE_BATCH]):
        # The condition again, in the delete itself: an order that moved meanwhile keeps its.
        deleted += expired.filter(pk__in=batch).delete()[0]
        if len(batch) < DEADLINES_PURGE_BATCH:
            break
    return deleted


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
