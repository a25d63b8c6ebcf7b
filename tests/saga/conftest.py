"""The saga end to end: every app, a real Celery worker, the configured broker and database."""

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from inventory.services import product_create
from orders.models import CatalogItem
from tests.support import wait_until


@pytest.fixture
def customer(transactional_db):
    return get_user_model().objects.create_user("alice", password="alice-pass-123")


@pytest.fixture
def api(customer):
    client = APIClient()
    client.force_authenticate(customer)
    return client


@pytest.fixture
def catalogue(worker):
    """Products created through inventory, and seen by orders' catalogue via their events."""
    stock = {"MUG": 100, "TEE": 100, "LAST": 3}
    prices = {"MUG": Decimal("9.50"), "TEE": Decimal("20.00"), "LAST": Decimal("5.00")}
    for sku, units in stock.items():
        product_create(sku=sku, name=sku.title(), price=prices[sku], stock=units)
    wait_until(lambda: CatalogItem.objects.count() == len(stock), what="orders' catalogue")
    return stock


def place(api, lines, token="tok_visa", **headers):
    response = api.post(
        "/api/orders/",
        {"lines": [{"sku": s, "quantity": q} for s, q in lines], "payment_token": token},
        format="json",
        **headers,
    )
    assert response.status_code == 202, response.content
    return response.json()["id"]


@pytest.fixture
def operator_api(transactional_db):
    """An operator's client: the timeline with its machinery (causes, deliveries)."""
    from tests.security.credentials import grant

    user = get_user_model().objects.create_user("olive", is_staff=True)
    client = APIClient()
    client.force_authenticate(grant(user, "orders.view_any_order", "orders.view_order_machinery"))
    return client
