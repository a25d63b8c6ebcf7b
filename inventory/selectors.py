"""Reads of the inventory app."""

from django.db.models import F, IntegerField, QuerySet, Value
from django.db.models.functions import Coalesce

from inventory.models import Product


def product_list() -> QuerySet[Product]:
    """Every product, by sku, with ``available`` (on hand minus reserved) annotated."""
    return (
        Product.objects.select_related("stock")
        .annotate(
            available=Coalesce(
                F("stock__on_hand") - F("stock__reserved"),
                Value(0),
                output_field=IntegerField(),
            )
        )
        .order_by("sku")
    )


def product_get(*, sku: str) -> Product:
    """One product with ``available`` annotated; raises ``Product.DoesNotExist``."""
    return product_list().get(sku=sku)
