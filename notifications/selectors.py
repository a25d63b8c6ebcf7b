"""Reading what notifications sent."""

from django.db.models import QuerySet

from notifications.models import Notification


def notifications_for_order(*, order_id: int) -> QuerySet[Notification]:
    """The emails answering an order's events, oldest first."""
    return Notification.objects.filter(order_id=order_id).order_by("created_at", "id")
