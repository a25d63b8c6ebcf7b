"""Helpers of the fuzz and security tests: a catalogue, and what a rejected request must leave
as it was."""

from decimal import Decimal

from inventory.services import product_create
from orders.models import CatalogItem, Order, OrderLine
from outbox.handling import delivery_handle
from outbox.models import Delivery, Event

CATALOGUE = {"MUG": "9.50", "TEE": "20.00", "CAP": "12.25"}
CATALOGUE_SUBSCRIBER = "orders.catalog_update_on_product_catalogued"


def catalogue_create(stock: int = 50) -> dict[str, str]:
    """Products created through inventory, and orders' catalogue filled from their events (the
    deliveries run here, no worker)."""
    for sku, price in CATALOGUE.items():
        product_create(sku=sku, name=sku.title(), price=Decimal(price), stock=stock)
    for delivery in Delivery.objects.filter(subscriber=CATALOGUE_SUBSCRIBER, status="pending"):
        assert delivery_handle(delivery_id=delivery.pk) == "done"
    assert CatalogItem.objects.count() == len(CATALOGUE)
    return CATALOGUE


def db_snapshot() -> dict:
    """The rows a rejected (4xx) request must leave as they were: counts of every table a
    request can write, and the products' state, which a PATCH changes without adding rows."""
    from django.contrib.auth import get_user_model
    from knox.models import AuthToken

    from inventory.models import Product, StockLevel, StockReservation
    from payments.models import Payment

    return {
        "orders": Order.objects.count(),
        "order_lines": OrderLine.objects.count(),
        "events": Event.objects.count(),
        "deliveries": Delivery.objects.count(),
        "payments": Payment.objects.count(),
        "reservations": StockReservation.objects.count(),
        "users": get_user_model().objects.count(),
        "tokens": AuthToken.objects.count(),
        "products": list(Product.objects.order_by("sku").values_list("sku", "name", "price")),
        "stock": list(
            StockLevel.objects.order_by("product__sku").values_list(
                "product__sku", "on_hand", "reserved"
            )
        ),
    }
