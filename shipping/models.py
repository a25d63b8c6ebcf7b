"""Shipments. The order is referenced by id: it belongs to the orders app."""

from django.db import models


class Shipment(models.Model):
    class Status(models.TextChoices):
        SCHEDULED = "scheduled"  # the initial status, and for now the only one reached
        SHIPPED = "shipped"
        DELIVERED = "delivered"

    order_id = models.BigIntegerField(unique=True)
    carrier = models.CharField(max_length=32)
    tracking_number = models.CharField(max_length=64, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SCHEDULED)
    # What goes in the parcel: [{"sku": ..., "quantity": ...}], as reserved by inventory.
    lines = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"shipment {self.tracking_number} of order {self.order_id} ({self.status})"
