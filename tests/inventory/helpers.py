"""Small helpers for the inventory tests."""

import threading
from decimal import Decimal

from django.db import connection

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


def a_rival_reservation_commits_first(monkeypatch, *, status: str) -> list[StockReservation]:
    """The next StockReservation insert meets a rival's row for the same order, committed by
    another connection just before it (the race the unique order_id settles); returns the
    list the rival's row is put in. The insert is ``create`` (stock_release) or
    ``insert_or_nothing`` (stock_reserve)."""
    import inventory.services

    create = StockReservation.objects.create
    insert_or_nothing = inventory.services.insert_or_nothing
    rival: list[StockReservation] = []

    def the_rival_commits(order_id):
        def commit_the_rival():
            try:
                rival.append(create(order_id=order_id, status=status))
            finally:
                connection.close()

        thread = threading.Thread(target=commit_the_rival)
        thread.start()
        thread.join(60)

    def rival_commits_first(**fields):
        the_rival_commits(fields["order_id"])
        return create(**fields)

    def rival_commits_first_insert(obj):
        if isinstance(obj, StockReservation):
            the_rival_commits(obj.order_id)
        return insert_or_nothing(obj)

    monkeypatch.setattr(StockReservation.objects, "create", rival_commits_first)
    monkeypatch.setattr(inventory.services, "insert_or_nothing", rival_commits_first_insert)
    return rival
