"""Throttles: the token endpoint per username and per client address, order writes per user.

The counts live in the configured cache (Redis in the PostgreSQL + Redis pass when it names
one, this process's memory otherwise); each test starts from an empty one.
"""

from __future__ import annotations

import uuid

import pytest
from django.core.cache import cache

from tests.security.conftest import PASSWORDS

TOKEN_URL = "/api/auth/token/"


@pytest.fixture(autouse=True)
def rates(settings):
    # Many password checks in a row: a fast hasher keeps them cheap (the throttle is the point).
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.THROTTLE_RATES = {"login": "5/min", "orders": "3/min"}
    # Counts of this test alone, in the configured cache (never cleared: it may be shared).
    prefix = f"throttle-test-{uuid.uuid4().hex}"
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": prefix}}
    yield settings.THROTTLE_RATES
    if settings.CACHES["default"]["BACKEND"].endswith("RedisCache"):
        client = cache._cache.get_client(write=True)
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)


def token_request(client, username: str, password: str, address: str):
    return client.post(
        TOKEN_URL,
        {"username": username, "password": password},
        content_type="application/json",
        REMOTE_ADDR=address,
    )


@pytest.mark.django_db
def test_brute_force_on_one_user_is_locked_out_from_every_address(client, customer, other_customer):
    for attempt in range(5):
        response = token_request(client, "alice", f"guess-{attempt}", f"10.0.0.{attempt}")
        assert response.status_code == 401  # wrong credentials (shop/auth.py)
    # The sixth try, from yet another address and with the right password: locked out.
    locked = token_request(client, "alice", PASSWORDS["alice"], "10.0.0.99")
    assert locked.status_code == 429
    assert int(locked["Retry-After"]) > 0
    assert "token" not in locked.json()
    # Another user from another address still logs in.
    other = token_request(client, "bob", PASSWORDS["bob"], "10.0.1.1")
    assert other.status_code == 200 and other.json()["token"]


@pytest.mark.django_db
def test_one_address_guessing_many_users_is_locked_out(client, customer, other_customer):
    for attempt in range(5):
        response = token_request(client, f"user-{attempt}", "guess", "10.0.2.1")
        assert response.status_code == 401  # wrong credentials (shop/auth.py)
    assert token_request(client, "bob", PASSWORDS["bob"], "10.0.2.1").status_code == 429
    # The same user from another address is not.
    assert token_request(client, "bob", PASSWORDS["bob"], "10.0.2.2").status_code == 200


@pytest.mark.django_db
def test_usernames_are_counted_whatever_their_case_or_spaces(client, customer):
    for attempt, spelled in enumerate(["alice", "ALICE", " Alice", "alicE ", "aLiCe"]):
        token_request(client, spelled, "guess", f"10.0.3.{attempt}")
    assert token_request(client, "alice", PASSWORDS["alice"], "10.0.3.9").status_code == 429


def place(client, key: str):
    return client.post(
        "/api/orders/",
        {"lines": [{"sku": "MUG", "quantity": 1}], "payment_token": "tok_visa"},
        content_type="application/json",
        headers={"Idempotency-Key": key},
    )


@pytest.mark.django_db
def test_order_creation_is_throttled_per_user_and_reading_is_not(
    client, customer, other_customer, catalogue
):
    from orders.models import Order

    client.force_login(customer)
    for n in range(3):
        assert place(client, f"k{n}").status_code == 202
    throttled = place(client, "k3")
    assert throttled.status_code == 429
    assert int(throttled["Retry-After"]) > 0
    assert Order.objects.filter(customer=customer).count() == 3  # nothing placed
    assert client.get("/api/orders/").status_code == 200  # reads are not counted

    client.force_login(other_customer)
    assert place(client, "k0").status_code == 202


@pytest.mark.django_db
def test_rates_are_read_on_each_request(client, customer, catalogue, rates):
    client.force_login(customer)
    for n in range(3):
        place(client, f"r{n}")
    assert place(client, "r3").status_code == 429
    rates["orders"] = "100/min"
    assert place(client, "r4").status_code == 202
