"""Orders' own tables: the order and its lines, and the catalogue orders prices them from.

Other apps' rows are referenced by id only; the catalogue is a local copy kept from
``inventory.ProductCatalogued`` events, because orders may not read inventory's tables.
"""

import secrets
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class CatalogItem(models.Model):
    """A sellable product as orders last heard of it: what a new order line costs."""

    sku = models.CharField(max_length=100, primary_key=True)
    name = models.CharField(max_length=255)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    currency = models.CharField(max_length=3)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.sku} {self.name} ({self.price} {self.currency})"


# Letters and digits a reader cannot confuse (no 0/O, 1/I/L), as in a booking reference.
REFERENCE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
REFERENCE_LENGTH = 12  # 31**12 (~2**59) references: guessing one is hopeless


def order_reference_new() -> str:
    """A random public reference ("ORD-" and 12 characters): it says nothing about how many
    orders there are, unlike the sequential primary key, which never leaves the shop's staff."""
    return "ORD-" + "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(REFERENCE_LENGTH))


def order_reference_plausible(reference: str) -> bool:
    """Whether ``reference`` has the shape of a reference. Anything else (whatever a client put
    in a URL) is no order and is not looked up: PostgreSQL refuses a NUL character in a query."""
    return (
        len(reference) == len("ORD-") + REFERENCE_LENGTH
        and reference.startswith("ORD-")
        and all(character in REFERENCE_ALPHABET for character in reference[4:])
    )


class Order(models.Model):
    class Status(models.TextChoices):
        PLACED = "placed"
        PAID = "paid"
        STOCK_RESERVED = "stock_reserved"
        COMPLETED = "completed"
        CANCELLED = "cancelled"

    class CancellationReason(models.TextChoices):
        PAYMENT_FAILED = "payment_failed"
        OUT_OF_STOCK = "out_of_stock"
        CUSTOMER_CANCELLED = "customer_cancelled"
        TIMED_OUT = "timed_out"
        OPERATOR_CANCELLED = "operator_cancelled"

    class PaymentStatus(models.TextChoices):
        CAPTURED = "captured"
        FAILED = "failed"
        REFUNDED = "refunded"

    customer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="orders"
    )
    # The order's public id: in the API's URLs and answers, the pages, and anything a customer
    # reads. The primary key stays internal (events, other apps, the admin).
    reference = models.CharField(
        max_length=20, unique=True, default=order_reference_new, editable=False
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PLACED)
    # Null, not "", for facts not known yet (DJ001): the API shows them as null, and the
    # idempotency constraint leaves keyless orders out.
    cancellation_reason = models.CharField(  # noqa: DJ001
        max_length=20, choices=CancellationReason.choices, null=True, blank=True
    )
    currency = models.CharField(max_length=3)
    total = models.DecimalField(max_digits=12, decimal_places=2)
    # The saga's id: every event of this order's story carries it.
    correlation_id = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    # Keyed HMAC-SHA256 of the request's canonical form, to tell a retry from a reused key.
    request_fingerprint = models.CharField(max_length=64)
    # What orders has heard from payments and shipping, for the order's view.
    payment_status = models.CharField(  # noqa: DJ001
        max_length=20, choices=PaymentStatus.choices, null=True, blank=True
    )
    payment_amount = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    shipment_status = models.CharField(max_length=20, null=True, blank=True)  # noqa: DJ001
    shipment_carrier = models.CharField(max_length=100, null=True, blank=True)  # noqa: DJ001
    shipment_tracking_number = models.CharField(max_length=100, null=True, blank=True)  # noqa: DJ001
    # A cancellation asked for (by the customer, an operator or a deadline) and not answered
    # yet: shipping either cancels the shipment (the order then ends cancelled) or refuses,
    # because the parcel is with the carrier (the request is then cleared).
    cancellation_requested_at = models.DateTimeField(null=True, blank=True)
    cancellation_requested_reason = models.CharField(  # noqa: DJ001
        max_length=20, choices=CancellationReason.choices, null=True, blank=True
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        # A customer sees their own orders and their saga's story; these are for the shop's staff.
        permissions = [
            ("view_any_order", "Can view any customer's order in the API and the pages"),
            (
                "view_order_machinery",
                "Can see an order's machinery: subscribers, attempts, errors and internal ids",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="orders_order_idempotency_key",
            )
        ]
        indexes = [
            models.Index(fields=["customer", "-created_at"], name="orders_order_customer_recent")
        ]

    def __str__(self) -> str:
        return f"Order {self.reference} ({self.status})"


class SagaInFlight(Order):
    """Orders whose saga is still running (or being compensated): the operator's console."""

    class Meta:
        proxy = True
        verbose_name = "saga in flight"
        verbose_name_plural = "sagas in flight"


class OrderDeadline(models.Model):
    """How long the order may wait in one step of its saga (a row per step it entered).

    Beat fires due deadlines (orders.tasks.deadlines_fire): an order still in that step is
    cancelled with reason ``timed_out``; one that moved on is left alone. ``fired_at`` is set
    once, on the locked row, so firing twice does nothing more.
    """

    class Outcome(models.TextChoices):
        CANCELLED = "cancelled"  # the order was still waiting: a cancellation was requested
        MOVED_ON = "moved_on"  # the order had left the step (or was being cancelled already)

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="deadlines")
    step = models.CharField(max_length=20, choices=Order.Status.choices)
    due_at = models.DateTimeField()
    fired_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=10, choices=Outcome.choices, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["order", "step"], name="orders_deadline_once_per_step")
        ]
        indexes = [
            models.Index(
                fields=["due_at"], condition=Q(fired_at__isnull=True), name="orders_deadline_due"
            )
        ]

    def __str__(self) -> str:
        return f"order {self.order_id} in {self.step} until {self.due_at:%Y-%m-%d %H:%M:%S}"


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    sku = models.CharField(max_length=100)
    quantity = models.PositiveIntegerField()
    unit_price = models.DecimalField(max_digits=10, decimal_places=2)

    def __str__(self) -> str:
        return f"{self.quantity} x {self.sku} @ {self.unit_price}"
