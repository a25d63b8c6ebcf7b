"""Concurrent retries of one order creation over HTTP, with one Idempotency-Key: one order,
one OrderPlaced, and every retry answered with that order (or a 409 for another body)."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from rest_framework.test import APIClient

from orders.models import Order, OrderLine
from orders.services import catalog_item_upsert
from outbox.models import Delivery, Event
from outbox.registry import subscribers_for
from tests.races.helpers import run_at_once, skip_unless_postgres
from tests.security.credentials import api_token

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    skip_unless_postgres(),
]

BODY = {"lines": [{"sku": "MUG", "quantity": 2}], "payment_token": "tok_visa"}


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    monkeypatch.setattr("outbox.publisher.relay_wake", lambda: None)


@pytest.fixture
def token(django_user_model, settings):
    settings.SHOP_CURRENCY = "EUR"
    for sku, price in (("MUG", "9.50"), ("TEE", "20.00")):
        catalog_item_upsert(sku=sku, name=sku.title(), price=price, currency="EUR")
    customer = django_user_model.objects.create_user("frank", password="pw-frank-123")
    return api_token(customer)


def poster(token: str, body: dict, key: str):
    """A client's request, as its own HTTP client (its own connection) would send it."""

    def post():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        response = client.post(
            "/api/orders/", body, format="json", headers={"Idempotency-Key": key}
        )
        return response.status_code, response.json()

    return post


def assert_one_order():
    order = Order.objects.get()
    assert OrderLine.objects.filter(order=order).count() == 1
    placed = Event.objects.filter(type="orders.OrderPlaced")
    assert placed.count() == 1
    assert placed.get().aggregate_id == str(order.pk)
    # One delivery per subscriber of OrderPlaced (payments, notifications), each once.
    assert sorted(
        Delivery.objects.filter(event__type="orders.OrderPlaced").values_list(
            "subscriber", flat=True
        )
    ) == sorted(s.name for s in subscribers_for("orders.OrderPlaced"))
    return order


def test_eight_concurrent_retries_make_one_order(token):
    answers = run_at_once([poster(token, BODY, "retry-1")] * 8)
    assert {status for status, _ in answers} == {202}
    order = assert_one_order()
    assert {body["id"] for _, body in answers} == {order.reference}


@pytest.fixture
def both_past_the_lookup(monkeypatch):
    """Hold each request's insert until two have looked the key up and found nothing: the
    window where only the database's unique constraint can tell them apart."""
    barrier = threading.Barrier(2, timeout=20)
    real_create = Order.objects.create

    def create_after_both_looked(**kwargs):
        barrier.wait()
        return real_create(**kwargs)

    monkeypatch.setattr(Order.objects, "create", create_after_both_looked)


def test_two_retries_both_past_the_lookup_make_one_order(token, both_past_the_lookup):
    answers = run_at_once([poster(token, BODY, "retry-2")] * 2)
    assert [status for status, _ in answers] == [202, 202]
    order = assert_one_order()
    assert {body["id"] for _, body in answers} == {order.reference}


def test_one_key_with_two_bodies_at_once_is_one_order_and_a_409(token, both_past_the_lookup):
    other = {"lines": [{"sku": "TEE", "quantity": 1}], "payment_token": "tok_visa"}
    answers = run_at_once([poster(token, BODY, "retry-3"), poster(token, other, "retry-3")])
    assert Counter(status for status, _ in answers) == {202: 1, 409: 1}
    order = assert_one_order()
    [(_, accepted)] = [answer for answer in answers if answer[0] == 202]
    [(_, conflict)] = [answer for answer in answers if answer[0] == 409]
    assert accepted["id"] == order.reference
    assert "Idempotency-Key" in conflict["detail"]


def test_many_keys_at_once_make_one_order_each(token):
    """Different keys never collapse into one order."""
    answers = run_at_once([poster(token, BODY, f"key-{i}") for i in range(6)] * 2)
    assert {status for status, _ in answers} == {202}
    assert Order.objects.count() == 6
    assert Event.objects.filter(type="orders.OrderPlaced").count() == 6
    assert len({body["id"] for _, body in answers}) == 6
