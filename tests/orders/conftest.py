"""Fixtures of the orders tests: customers and a catalogue, built through the real paths."""

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model

from inventory.events import ProductCatalogued
from orders.models import CatalogItem
from orders.services import order_place
from tests.security.credentials import grant
from tests.support import event_deliver

CATALOGUE_SUBSCRIBER = "orders.catalog_update_on_product_catalogued"


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    # No broker in these tests: deliveries are run in-process by event_deliver.
    monkeypatch.setattr("outbox.publisher.relay_wake", lambda: None)


@pytest.fixture
def customer(db):
    return get_user_model().objects.create_user(
        "alice", email="alice@example.com", password="pw-alice-123"
    )


@pytest.fixture
def other_customer(db):
    return get_user_model().objects.create_user("bob", password="pw-bob-123")


@pytest.fixture
def staff(db):
    """Staff who may see any order (is_staff alone grants nothing)."""
    user = get_user_model().objects.create_user("carol", password="pw-carol-123", is_staff=True)
    return grant(user, "orders.view_any_order")


@pytest.fixture
def operator(db):
    """Staff who see any order's machinery: subscribers, attempts, errors, ids."""
    user = get_user_model().objects.create_user("olive", password="pw-olive-123", is_staff=True)
    return grant(user, "orders.view_any_order", "orders.view_order_machinery")


def product_catalogue(sku: str, price: str, *, name: str | None = None, currency: str = "EUR"):
    outcome = event_deliver(
        ProductCatalogued(sku=sku, name=name or sku.title(), price=price, currency=currency),
        subscriber=CATALOGUE_SUBSCRIBER,
    )
    assert outcome == "done"
    return CatalogItem.objects.get(sku=sku)


@pytest.fixture
def catalogue(db, settings):
    settings.SHOP_CURRENCY = "EUR"
    return {
        "MUG": product_catalogue("MUG", "9.50", name="Mug"),
        "TEE": product_catalogue("TEE", "20.00", name="T-shirt"),
    }


@pytest.fixture
def order(customer, catalogue):
    placed, created = order_place(
        customer=customer, lines=[{"sku": "MUG", "quantity": 2}], payment_token="tok_visa"
    )
    assert created
    assert placed.total == Decimal("19.00")
    return placed
