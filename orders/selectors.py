"""Reads of the orders app."""

from __future__ import annotations

import dataclasses
from typing import Any

from django.db.models import QuerySet

from orders.models import Order
from outbox import TimelineDelivery, TimelineEvent, timeline_for_correlation

__all__ = [  # the timeline's values are the outbox's; the views and tests name them from here
    "TimelineDelivery",
    "TimelineEvent",
    "order_get_for_user",
    "order_list_for_user",
    "order_timeline",
    "payload_redact",
]


def order_list_for_user(*, user) -> QuerySet[Order]:
    """The user's orders (staff: everyone's), newest first, with their lines."""
    orders = Order.objects.prefetch_related("lines").order_by("-created_at", "-id")
    if not user.is_staff:
        orders = orders.filter(customer=user)
    return orders


def order_get_for_user(*, user, order_id: int) -> Order:
    """One order the user may see; raises Order.DoesNotExist for anyone else's."""
    return order_list_for_user(user=user).get(pk=order_id)


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
        dataclasses.replace(event, payload=payload_redact(event.payload))
        for event in timeline_for_correlation(order.correlation_id)
    ]
