"""Reads of the orders app."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from orders.models import Order, OrderDeadline, order_reference_plausible
from outbox import (
    OpenDelivery,
    TimelineDelivery,
    TimelineEvent,
    correlations_active_since,
    correlations_with_dead_deliveries,
    deliveries_open_for_correlations,
    timeline_for_correlation,
)

__all__ = [  # the timeline's values are the outbox's; the views and tests name them from here
    "TimelineDelivery",
    "TimelineEvent",
    "order_get_for_user",
    "order_list_for_user",
    "order_timeline",
]


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
    if not order_reference_plausible(reference):
        raise Order.DoesNotExist
    return orders.get(reference=reference)


def order_timeline(*, order: Order) -> list[TimelineEvent]:
    """Every event of the order's saga, causes before effects, with each delivery's state;
    sensitive payload fields (the payment token) come redacted from the outbox."""
    return timeline_for_correlation(order.correlation_id)


# --- the operator's saga console ----------------------------------------------------------------

SAGA_FILTERS = ("stuck", "dead", "compensating")


@dataclass(frozen=True)
class SagaStep:
    """What a saga waits on: the oldest delivery of its events that is not done."""

    event_type: str
    subscriber: str
    status: str  # pending or dead
    attempts: int
    last_error: str | None


@dataclass(frozen=True)
class SagaRow:
    order: Order
    waiting_on: SagaStep | None  # None: no delivery open (a deadline or an operator decides)
    open_deliveries: tuple[OpenDelivery, ...]
    compensating: bool
    dead: bool


def saga_in_flight_queryset() -> QuerySet[Order]:
    """Orders not yet completed or cancelled, or with a cancellation on its way, or with a
    dead-lettered delivery (a compensation that failed after the order was cancelled, say);
    oldest first."""
    return Order.objects.filter(
        ~Q(status__in=[Order.Status.COMPLETED, Order.Status.CANCELLED])
        | Q(cancellation_requested_at__isnull=False)
        | Q(correlation_id__in=correlations_with_dead_deliveries())
    ).order_by("created_at", "id")


def saga_stuck_after() -> dt.timedelta:
    return dt.timedelta(seconds=settings.ORDERS_STUCK_AFTER_SECONDS)


def saga_filter(
    orders: QuerySet[Order], *, state: str, stuck_after: dt.timedelta | None = None
) -> QuerySet[Order]:
    """Narrow sagas in flight to the ``stuck`` (no progress for ``stuck_after``), ``dead``
    (a dead-lettered delivery) or ``compensating`` (cancellation on its way) ones."""
    if state == "compensating":
        return orders.filter(cancellation_requested_at__isnull=False)
    if state == "dead":
        return orders.filter(correlation_id__in=correlations_with_dead_deliveries())
    if state == "stuck":
        since = timezone.now() - (stuck_after or saga_stuck_after())
        quiet = orders.filter(updated_at__lt=since)
        candidates = list(quiet.values_list("correlation_id", flat=True))
        active = correlations_active_since(candidates, since)
        return quiet.exclude(correlation_id__in=active)
    raise ValueError(f"unknown saga filter {state!r}; use one of {', '.join(SAGA_FILTERS)}")


def saga_rows(orders: list[Order]) -> list[SagaRow]:
    """Each saga with the step it waits on, derived from its deliveries (one query)."""
    open_by_saga = deliveries_open_for_correlations([o.correlation_id for o in orders])
    rows = []
    for order in orders:
        deliveries = tuple(open_by_saga.get(order.correlation_id, ()))
        # A dead letter blocks the saga more than a pending retry: show it first.
        first = next((d for d in deliveries if d.status == "dead"), None) or next(
            iter(deliveries), None
        )
        rows.append(
            SagaRow(
                order=order,
                waiting_on=None
                if first is None
                else SagaStep(
                    event_type=first.event_type,
                    subscriber=first.subscriber,
                    status=first.status,
                    attempts=first.attempts,
                    last_error=first.last_error or None,
                ),
                open_deliveries=deliveries,
                compensating=order.cancellation_requested_at is not None,
                dead=any(d.status == "dead" for d in deliveries),
            )
        )
    return rows


def saga_counts_by_step() -> dict[str, int]:
    """Sagas in flight by the step they are in (their status; "cancelling" when compensating)."""
    base = Order.objects.filter(
        ~Q(status__in=[Order.Status.COMPLETED, Order.Status.CANCELLED])
        | Q(cancellation_requested_at__isnull=False)
    ).order_by()
    counts = dict(
        base.filter(cancellation_requested_at__isnull=True)
        .values_list("status")
        .annotate(n=Count("*"))
    )
    counts["cancelling"] = base.filter(cancellation_requested_at__isnull=False).count()
    return counts


def deadline_counts() -> dict[tuple[str, str], int]:
    """Deadlines fired, by (step, outcome)."""
    rows = (
        OrderDeadline.objects.filter(fired_at__isnull=False)
        .values_list("step", "outcome")
        .annotate(n=Count("*"))
        .order_by()
    )
    return {(step, outcome): n for step, outcome, n in rows}
