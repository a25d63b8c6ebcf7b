"""Payments' own tables. The order is referenced by id: orders' rows are not ours to join."""

from django.db import models
from django.db.models import Q


class Payment(models.Model):
    """The one charge attempt of an order: captured, failed (declined), or later refunded.

    ``voided``: the order was cancelled before it was charged; the row makes a late charge
    refuse (amount 0, no charge id).
    """

    class Status(models.TextChoices):
        CAPTURED = "captured"
        FAILED = "failed"
        REFUNDED = "refunded"
        VOIDED = "voided"

    # Unique: one payment per order, so a duplicated OrderPlaced cannot charge twice.
    order_id = models.BigIntegerField(unique=True)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=10, choices=Status.choices)
    decline_code = models.CharField(max_length=100, blank=True)
    gateway_charge_id = models.CharField(max_length=255, blank=True, db_index=True)
    idempotency_key = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(amount__gte=0), name="payments_payment_amount_gte_0"
            ),
            # A failed or voided payment has no capture; a captured (or refunded) one has its
            # charge id.
            models.CheckConstraint(
                condition=(Q(status__in=["failed", "voided"]) & Q(gateway_charge_id=""))
                | (Q(status__in=["captured", "refunded"]) & ~Q(gateway_charge_id="")),
                name="payments_payment_charge_id_iff_captured",
            ),
        ]

    def __str__(self) -> str:
        return (
            f"Payment {self.pk} of order {self.order_id}: "
            f"{self.amount} {self.currency} ({self.status})"
        )


class Refund(models.Model):
    """The refund of a captured payment. One-to-one: a payment is refunded at most once."""

    payment = models.OneToOneField(Payment, on_delete=models.PROTECT, related_name="refund")
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3)
    gateway_refund_id = models.CharField(max_length=255, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gte=0), name="payments_refund_amount_gte_0"),
        ]

    def __str__(self) -> str:
        return f"Refund {self.pk} of payment {self.payment_id}: {self.amount} {self.currency}"


class GatewayAttempt(models.Model):
    """A call to the gateway that changes money (a charge or a refund), recorded in a
    transaction of its own that commits before the call is made (the handler's ``prepare``).

    ``attempting``: the call may have been made and its outcome is not recorded yet (the first
    run, or a run that timed out or crashed after the call). A later run asks the gateway what
    became of the idempotency key before calling again. ``succeeded`` and ``declined``: the
    outcome. ``unresolved``: the gateway no longer knows the key (it forgets keys after
    ``key_retention``) and the attempt is older than that, so the money may or may not have
    moved; no run calls the gateway for it again until an operator resolves it
    (``payment_attempt_resolve``, docs/operations.md).
    """

    class Kind(models.TextChoices):
        CHARGE = "charge"
        REFUND = "refund"

    class State(models.TextChoices):
        ATTEMPTING = "attempting"
        SUCCEEDED = "succeeded"
        DECLINED = "declined"
        UNRESOLVED = "unresolved"

    kind = models.CharField(max_length=10, choices=Kind.choices)
    order_id = models.BigIntegerField()
    idempotency_key = models.CharField(max_length=255, unique=True)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3)
    state = models.CharField(max_length=12, choices=State.choices, default=State.ATTEMPTING)
    # Runs that reached the point of calling the gateway; more than one means that an earlier
    # run may have made the call.
    runs = models.PositiveIntegerField(default=0)
    gateway_reference = models.CharField(max_length=255, blank=True)  # charge or refund id
    decline_code = models.CharField(max_length=100, blank=True)
    note = models.TextField(blank=True)  # why it is unresolved, or how an operator resolved it
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["order_id", "kind"], name="payments_attempt_one_per_kind"
            ),
            models.CheckConstraint(
                condition=Q(amount__gte=0), name="payments_attempt_amount_gte_0"
            ),
            models.CheckConstraint(
                condition=~Q(state="succeeded") | ~Q(gateway_reference=""),
                name="payments_attempt_succeeded_has_reference",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} of order {self.order_id}: {self.amount} {self.currency} ({self.state})"
