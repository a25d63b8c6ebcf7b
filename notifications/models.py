"""What the notifications app keeps: one row per order event it has answered with an email.

Other apps' facts arrive in their events (the order's reference, the customer's address) and
are copied here by value; nothing refers to another app's tables.
"""

from django.db import models


class Notification(models.Model):
    """The app's inbox and its record of sent mail: unique on the event it answers, and written
    in the transaction of that event's delivery, so a redelivered or replayed event finds it and
    sends nothing again (docs/architecture.md, "Notifications")."""

    class Kind(models.TextChoices):
        ORDER_PLACED = "order_placed"
        ORDER_COMPLETED = "order_completed"
        ORDER_CANCELLED = "order_cancelled"

    class Status(models.TextChoices):
        SENT = "sent"  # handed to the mail server
        NO_ADDRESS = "no_address"  # the customer has no email address: nothing to send

    event_id = models.UUIDField(unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    order_id = models.BigIntegerField(db_index=True)
    order_reference = models.CharField(max_length=20, blank=True)
    recipient = models.EmailField(blank=True)
    subject = models.CharField(max_length=200)
    message_id = models.CharField(max_length=200)
    status = models.CharField(max_length=20, choices=Status.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.kind} {self.order_reference or self.order_id} to {self.recipient or '-'}"
