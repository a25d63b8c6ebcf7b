"""Small helpers for the inventory tests."""

from decimal import Decimal

from inventory.models import Product, StockLevel, StockReservation
from inventory.services import product_create
from outbox.models import Event


def payloads(event_type: str) -> list[dict]:
    """Payloads of the events of ``event_type`` published so far, oldest first."""
    return list(
        Event.objects.filter(type=event_type).order_by("position").values_list("payload", flat=True)
    )


def a_product(
    sku: str = "MUG", *, stock: int = 10, price: str = "19.99", name: str = ""
) -> Product:
    return product_create(sku=sku, name=name or f"The {sku}", price=Decimal(price), stock=stock)


def stock(sku: str) -> tuple[int, int]:
    """(on_hand, reserved) of the sku."""
    level = StockLevel.objects.get(product__sku=sku)
    return level.on_hand, level.reserved


def snapshot() -> tuple:
    """Everything inventory owns plus the event store, to check that nothing changed."""
    return (
        list(Product.objects.order_by("sku").values_list("sku", "name", "price", "currency")),
        list(
            StockLevel.objects.order_by("product__sku").values_list(
                "product__sku", "on_hand", "reserved"
            )
        ),
        list(StockReservation.objects.order_by("order_id").values_list("order_id", "status")),
        Event.objects.count(),
    )
