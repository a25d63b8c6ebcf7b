"""Products and their stock. Other apps' rows (orders) are referenced by id, never by key."""

from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import F, Q

# \Z, not $: "$" would also accept a trailing newline.
SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z"
sku_validator = RegexValidator(
    SKU_PATTERN,
    "Use letters, digits, '.', '_' or '-', starting with a letter or a digit.",
    code="invalid_sku",
)
PRICE_MIN = Decimal("0.01")
# More units than any shelf holds: a typo guard, and far from PositiveIntegerField's limit.
STOCK_MAX = 1_000_000


def currency_default() -> str:
    return settings.SHOP_CURRENCY


class Product(models.Model):
    sku = models.CharField(max_length=64, unique=True, validators=[sku_validator])
    name = models.CharField(max_length=200)
    price = models.DecimalField(
        max_digits=10, decimal_places=2, validators=[MinValueValidator(PRICE_MIN)]
    )
    currency = models.CharField(max_length=3, default=currency_default)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["sku"]
        constraints = [
            models.CheckConstraint(condition=Q(price__gt=0), name="inventory_product_price_gt_0"),
        ]

    def __str__(self) -> str:
        return f"{self.sku} ({self.name})"


class StockLevel(models.Model):
    product = models.OneToOneField(Product, on_delete=models.CASCADE, related_name="stock")
    on_hand = models.PositiveIntegerField(default=0)
    reserved = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(reserved__lte=F("on_hand")),
                name="inventory_stocklevel_reserved_lte_on_hand",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.product.sku}: {self.on_hand} on hand, {self.reserved} reserved"

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


class StockReservation(models.Model):
    """One order's claim on stock: all of its lines reserved, or (rejected) none.

    ``released``: the order was cancelled and its stock is available again. ``cancelled``: the
    order was cancelled before anything was reserved; the row makes a late reservation refuse.
    """

    class Status(models.TextChoices):
        RESERVED = "reserved"
        REJECTED = "rejected"
        FULFILLED = "fulfilled"
        RELEASED = "released"
        CANCELLED = "cancelled"

    order_id = models.BigIntegerField(unique=True)
    status = models.CharField(max_length=16, choices=Status.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"reservation {self.pk} of order {self.order_id} ({self.status})"


class StockReservationLine(models.Model):
    reservation = models.ForeignKey(
        StockReservation, on_delete=models.CASCADE, related_name="lines"
    )
    sku = models.CharField(max_length=64)
    # Requested, not necessarily available: a rejected line may ask for more than any stock.
    quantity = models.PositiveBigIntegerField()

    class Meta:
        ordering = ["sku"]
        constraints = [
            models.UniqueConstraint(
                fields=["reservation", "sku"], name="inventory_reservationline_unique_sku"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.sku}"
