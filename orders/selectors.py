"""Reads of the orders app."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from orders.models import Order
from outbox.selectors import events_for_correlation


def order_list_for_user(*, user) -> QuerySet[Order]:
    """The user's orders (with orders.view_any_order: everyone's), newest first, with lines."""
    orders = Order.objects.prefetch_related("lines").order_by("-created_at", "-id")
    if not user.has_perm("orders.view_any_order"):
        orders = orders.filter(customer=user)
    return orders


# The old numeric ids (the primary key) of orders placed before references: at most this many
# digits, so that a lookup never overflows the column.
MAX_ID_DIGITS = 18


def order_get_for_user(*, user, reference: str) -> Order:
    """One order the user may see, by its public reference; raises Order.DoesNotExist for
    anyone else's. Staff with orders.view_any_order may also name an order by its numeric id
    (the admin's, and the URLs of before references); for anyone else a number is no order."""
    orders = order_list_for_user(user=user)
    if reference.isascii() and reference.isdigit() and len(reference) <= MAX_ID_DIGITS:
        if not user.has_perm("orders.view_any_order"):
            raise Order.DoesNotExist
        return orders.get(pk=int(reference))
    return orders.get(reference=reference)


@dataclass(frozen=True)
class TimelineDelivery:
    subscriber: str
    status: str
    attempts: int
    last_error: str | None  # the error's first line


@dataclass(frozen=True)
class TimelineEvent:
    id: uuid.UUID
    type: str
    version: int
    occurred_at: dt.datetime
    aggregate_type: str
    aggregate_id: str
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None
    payload: dict[str, Any]
    deliveries: tuple[TimelineDelivery, ...]


# Payload fields the timeline shows masked: the event store keeps them for the handlers, but a
# payment token has no business in a page a customer or an operator reads.
REDACTED_FIELDS = frozenset({"payment_token"})


def payload_redact(payload: dict[str, Any]) -> dict[str, Any]:
    return {
        key: (f"{value[:4]}…" if isinstance(value, str) else "…")
        if key in REDACTED_FIELDS
        else value
        for key, value in payload.items()
    }


def order_timeline(*, order: Order) -> list[TimelineEvent]:
    """Every event of the order's saga, causes before effects, with each delivery's state."""
    return [
        TimelineEvent(
            id=event.event_id,
            type=event.type,
            version=event.version,
            occurred_at=event.occurred_at,
            aggregate_type=event.aggregate_type,
            aggregate_id=event.aggregate_id,
            correlation_id=event.correlation_id,
            causation_id=event.causation_id,
            payload=payload_redact(event.payload),
            deliveries=tuple(
                TimelineDelivery(
                    subscriber=delivery.subscriber,
                    status=delivery.status,
                    attempts=delivery.attempts,
                    last_error=delivery.last_error.split("\n", 1)[0] or None,
                )
                for delivery in event.deliveries.all()
            ),
        )
        for event in events_for_correlation(order.correlation_id)
    ]
