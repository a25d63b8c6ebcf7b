"""Reads of the payments app."""

from __future__ import annotations

from django.db.models import QuerySet

from payments.models import Payment, Refund


def payment_get_for_order(*, order_id: int) -> Payment | None:
    """The order's payment, or None when it has not been charged (yet)."""
    return Payment.objects.select_related("refund").filter(order_id=order_id).first()


def payment_list(*, status: str | None = None, order_ids: list[int] | None = None) -> QuerySet:
    """Payments, newest first, optionally narrowed to a status or to some orders."""
    payments = Payment.objects.select_related("refund")
    if status is not None:
        payments = payments.filter(status=status)
    if order_ids is not None:
        payments = payments.filter(order_id__in=order_ids)
    return payments.order_by("-created_at", "-id")


def refund_get_for_order(*, order_id: int) -> Refund | None:
    """The refund of the order's payment, or None when it has not been refunded."""
    return Refund.objects.select_related("payment").filter(payment__order_id=order_id).first()
