"""Fixtures of the fuzz tests: customers with API tokens and a small catalogue, no broker."""

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.fuzz.helpers import catalogue_create


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    # No broker in these tests: nothing needs waking when an order commits.
    monkeypatch.setattr("outbox.publisher.relay_wake", lambda: None)


@pytest.fixture
def customer(db):
    return get_user_model().objects.create_user("fuzz-alice", password="pw-fuzz-alice-123")


@pytest.fixture
def customer_token(customer):
    return Token.objects.create(user=customer).key


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
    return Token.objects.create(user=staff).key
