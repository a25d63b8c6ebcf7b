"""Staff editing the catalogue while orders reserve stock, and staff racing each other: every
answer is a 2xx or a 400, never a 500, and stock stays 0 <= reserved <= on hand."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from inventory.models import Product, StockLevel, StockReservation
from inventory.services import product_create, stock_reserve
from outbox.models import Event
from payments.events import PaidLine
from tests.races.helpers import run_at_once, skip_unless_postgres
from tests.security.credentials import api_token, grant

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    skip_unless_postgres(),
]


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    monkeypatch.setattr("outbox.publisher.relay_wake", lambda: None)


@pytest.fixture
def staff_token(django_user_model):
    staff = django_user_model.objects.create_user("gina", password="pw-gina-123", is_staff=True)
    return api_token(grant(staff, "inventory.add_product", "inventory.change_product"))


def staff_request(token: str, method: str, url: str, body: dict):
    def send():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        response = getattr(client, method)(url, body, format="json")
        return response.status_code, response.json()

    return send


def test_staff_creating_one_sku_at_once_make_one_product(staff_token):
    body = {"sku": "TWIN", "name": "Twin", "price": "5.00", "stock": 3}
    answers = run_at_once([staff_request(staff_token, "post", "/api/products/", body)] * 6)
    assert Counter(status for status, _ in answers) == {201: 1, 409: 5}
    for status, answer in answers:
        if status == 409:
            assert "already exists" in answer["detail"]
    assert Product.objects.filter(sku="TWIN").count() == 1
    assert StockLevel.objects.get(product__sku="TWIN").on_hand == 3
    assert Event.objects.filter(type="inventory.ProductCatalogued").count() == 1


def test_stock_edits_racing_reservations_keep_reserved_within_on_hand(staff_token):
    product_create(sku="BUSY", name="Busy", price=Decimal("5.00"), stock=10)
    one = [PaidLine(sku="BUSY", quantity=1)]
    reserve = [
        lambda order_id=order_id: stock_reserve(order_id=order_id, lines=one)
        for order_id in range(1, 11)
    ]
    edits = [
        staff_request(staff_token, "patch", "/api/products/BUSY/", {"stock": stock})
        for stock in (0, 2, 4, 6, 8)
    ]
    results = run_at_once(reserve + edits)

    answers = results[len(reserve) :]
    assert {status for status, _ in answers} <= {200, 400}
    for status, answer in answers:
        if status == 400:
            stock_errors = [e["detail"] for e in answer["errors"] if e["pointer"] == "#/stock"]
            assert "reserved for paid orders" in str(stock_errors)
    level = StockLevel.objects.get(product__sku="BUSY")
    assert 0 <= level.reserved <= level.on_hand
    reserved = StockReservation.objects.filter(status="reserved").count()
    assert level.reserved == reserved
    assert reserved + StockReservation.objects.filter(status="rejected").count() == 10
    assert Event.objects.filter(type="inventory.StockUpdated").count() == reserved
