"""Fixtures of the fuzz tests: customers with API tokens and a small catalogue, no broker."""

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from tests.fuzz.helpers import catalogue_create
from tests.security.credentials import api_token, grant


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    # No broker in these tests: nothing needs waking when an order commits.
    monkeypatch.setattr("outbox.publisher.relay_wake", lambda: None)


@pytest.fixture
def customer(db):
    return get_user_model().objects.create_user("fuzz-alice", password="pw-fuzz-alice-123")


@pytest.fixture
def customer_token(customer):
    return api_token(customer)


@pytest.fixture
def api(customer_token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {customer_token}")
    return client


@pytest.fixture
def catalogue(db, settings):
    settings.SHOP_CURRENCY = "EUR"
    return catalogue_create()


@pytest.fixture
def other_customer(db):
    return get_user_model().objects.create_user("fuzz-bob", password="pw-fuzz-bob-123")


@pytest.fixture
def staff_token(db):
    staff = get_user_model().objects.create_user(
        "fuzz-carol", password="pw-fuzz-carol-123", is_staff=True
    )
    # A catalogue manager who may also see any order: the widest API access a staff user has.
    return api_token(
        grant(staff, "inventory.add_product", "inventory.change_product", "orders.view_any_order")
    )
