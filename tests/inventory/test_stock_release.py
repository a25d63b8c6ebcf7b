"""Compensation in inventory: a cancelled order's stock becomes available again, once."""

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from inventory.models import StockReservation
from inventory.services import stock_fulfil, stock_release, stock_reserve
from tests.inventory.helpers import (
    a_product,
    a_rival_reservation_commits_first,
    payloads,
    snapshot,
    stock,
)

pytestmark = pytest.mark.django_db

LINES = [{"sku": "MUG", "quantity": 3}]


def test_a_reservation_is_released_once():
    a_product("MUG", stock=10)
    stock_reserve(order_id=1, lines=LINES)
    assert stock("MUG") == (10, 3)
    stock_release(order_id=1)
    stock_release(order_id=1)
    assert stock("MUG") == (10, 0)
    assert StockReservation.objects.get(order_id=1).status == "released"
    assert payloads("inventory.StockReleased") == [
        {
            "reservation_id": StockReservation.objects.get(order_id=1).pk,
            "order_id": 1,
            "lines": [{"sku": "MUG", "quantity": 3}],
            "restocked": False,
        }
    ]


def test_goods_of_a_cancelled_shipment_go_back_on_the_shelf():
    a_product("MUG", stock=10)
    stock_reserve(order_id=2, lines=LINES)
    stock_fulfil(order_id=2)
    assert stock("MUG") == (7, 0)
    stock_release(order_id=2)
    assert stock("MUG") == (10, 0)
    assert payloads("inventory.StockReleased")[0]["restocked"] is True


def test_a_payment_arriving_after_the_cancellation_reserves_nothing():
    a_product("MUG", stock=10)
    marker = stock_release(order_id=3)
    assert marker.status == "cancelled"
    assert stock_reserve(order_id=3, lines=LINES).status == "cancelled"
    assert stock("MUG") == (10, 0)
    assert payloads("inventory.StockUpdated") == []
    assert payloads("inventory.StockReleased") == []


def test_a_late_fulfil_after_a_release_changes_nothing():
    a_product("MUG", stock=10)
    stock_reserve(order_id=4, lines=LINES)
    stock_release(order_id=4)  # ShipmentCancelled handled before ShippingScheduled
    stock_fulfil(order_id=4)
    assert stock("MUG") == (10, 0)


def test_a_rejected_reservation_has_nothing_to_release():
    a_product("MUG", stock=1)
    stock_reserve(order_id=5, lines=LINES)
    assert stock_release(order_id=5).status == "rejected"
    assert stock("MUG") == (1, 0)


@pytest.mark.parametrize("order_id", [0, -1, True, "3", None])
def test_a_release_for_a_malformed_order_id_is_refused_on_order_id_and_changes_nothing(order_id):
    a_product("MUG", stock=10)
    before = snapshot()
    with pytest.raises(ValidationError) as exc:
        stock_release(order_id=order_id)
    assert exc.value.message_dict == {"order_id": [f"must be a positive integer, got {order_id!r}"]}
    assert snapshot() == before


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite serialises writers at BEGIN")
@pytest.mark.django_db(transaction=True)
def test_a_release_racing_a_reservation_that_committed_first_releases_that_one(monkeypatch):
    # The order had no reservation when the release looked; a reservation committed before
    # the release's cancelled marker could: the release then handles the reservation found.
    rival = a_rival_reservation_commits_first(monkeypatch, status="rejected")
    released = stock_release(order_id=6)
    assert rival and released.pk == rival[0].pk
    assert list(StockReservation.objects.values_list("order_id", "status")) == [(6, "rejected")]
