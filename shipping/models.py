"""Shipments. The order is referenced by id: it belongs to the orders app."""

from django.db import models


class Shipment(models.Model):
    """An order's shipment: scheduled -> handed_to_carrier -> delivered, or cancelled.

    The operator moves it forward from the admin. ``handed_to_carrier`` is the point of no
    return: before it the order may be cancelled (the shipment becomes ``cancelled``), after it
    not. A shipment cancelled before it was ever scheduled is a row too (no carrier, no tracking
    number): it is what makes a late StockUpdated schedule nothing.
    """

    class Status(models.TextChoices):
        SCHEDULED = "scheduled"
        HANDED_TO_CARRIER = "handed_to_carrier"
        DELIVERED = "delivered"
        CANCELLED = "cancelled"

    order_id = models.BigIntegerField(unique=True)
    carrier = models.CharField(max_length=32, blank=True)
    # Null for a shipment cancelled before it was scheduled.
    tracking_number = models.CharField(max_length=64, unique=True, null=True, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.SCHEDULED)
    # What goes in the parcel: [{"sku": ..., "quantity": ...}], as reserved by inventory.
    lines = models.JSONField(default=list)
    # The order's saga: the events an operator's step publishes (outside any handler) join it.
    correlation_id = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return (
            f"shipment {self.tracking_number or self.pk} of order {self.order_id} ({self.status})"
        )
