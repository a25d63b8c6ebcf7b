"""stock_reserve and stock_fulfil: all or nothing, never below zero, once per order."""

from types import SimpleNamespace

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from inventory.models import Product, StockReservation
from inventory.services import product_update, stock_fulfil, stock_reserve
from payments.events import PaidLine
from tests.inventory.helpers import (
    a_product,
    a_rival_reservation_commits_first,
    payloads,
    snapshot,
    stock,
)

pytestmark = pytest.mark.django_db


def line(sku: str, quantity: int) -> PaidLine:
    return PaidLine(sku=sku, quantity=quantity)


def test_reserving_lines_that_fit_reserves_them_all_and_publishes_stock_updated():
    a_product("MUG", stock=5)
    a_product("TEE", stock=2)
    reservation = stock_reserve(order_id=7, lines=[line("TEE", 2), line("MUG", 3)])
    assert reservation.status == StockReservation.Status.RESERVED
    assert (stock("MUG"), stock("TEE")) == ((5, 3), (2, 2))
    assert sorted(reservation.lines.values_list("sku", "quantity")) == [("MUG", 3), ("TEE", 2)]
    assert payloads("inventory.StockUpdated") == [
        {
            "reservation_id": reservation.pk,
            "order_id": 7,
            "lines": [{"sku": "MUG", "quantity": 3}, {"sku": "TEE", "quantity": 2}],
        }
    ]
    assert payloads("inventory.StockNotAvailable") == []


def test_one_short_line_means_nothing_is_reserved():
    a_product("MUG", stock=5)
    a_product("TEE", stock=1)
    reservation = stock_reserve(order_id=7, lines=[line("MUG", 2), line("TEE", 3)])
    assert reservation.status == StockReservation.Status.REJECTED
    assert (stock("MUG"), stock("TEE")) == ((5, 0), (1, 0))
    assert sorted(reservation.lines.values_list("sku", "quantity")) == [("MUG", 2), ("TEE", 3)]
    assert payloads("inventory.StockNotAvailable") == [
        {
            "reservation_id": reservation.pk,
            "order_id": 7,
            "short": [{"sku": "TEE", "requested": 3, "available": 1}],
        }
    ]
    assert payloads("inventory.StockUpdated") == []


def test_an_unknown_sku_has_nothing_available():
    a_product("MUG", stock=5)
    reservation = stock_reserve(order_id=7, lines=[line("MUG", 1), line("GHOST", 1)])
    assert reservation.status == "rejected"
    assert stock("MUG") == (5, 0)
    assert payloads("inventory.StockNotAvailable")[0]["short"] == [
        {"sku": "GHOST", "requested": 1, "available": 0}
    ]


def test_available_is_on_hand_minus_what_other_orders_reserved():
    a_product("MUG", stock=5)
    assert stock_reserve(order_id=1, lines=[line("MUG", 3)]).status == "reserved"
    assert stock_reserve(order_id=2, lines=[line("MUG", 3)]).status == "rejected"
    assert stock_reserve(order_id=3, lines=[line("MUG", 2)]).status == "reserved"
    assert stock("MUG") == (5, 5)
    assert payloads("inventory.StockNotAvailable")[0]["short"] == [
        {"sku": "MUG", "requested": 3, "available": 2}
    ]


def test_a_sku_on_two_lines_is_checked_and_reserved_as_their_sum():
    a_product("MUG", stock=3)
    rejected = stock_reserve(order_id=1, lines=[line("MUG", 2), line("MUG", 2)])
    assert rejected.status == "rejected"
    assert payloads("inventory.StockNotAvailable")[0]["short"] == [
        {"sku": "MUG", "requested": 4, "available": 3}
    ]
    reserved = stock_reserve(order_id=2, lines=[line("MUG", 1), {"sku": "MUG", "quantity": 2}])
    assert reserved.status == "reserved"
    assert list(reserved.lines.values_list("sku", "quantity")) == [("MUG", 3)]
    assert stock("MUG") == (3, 3)


@pytest.mark.parametrize("enough", [True, False])
def test_reserving_again_for_the_same_order_returns_the_first_answer_and_changes_nothing(enough):
    a_product("MUG", stock=5 if enough else 1)
    first = stock_reserve(order_id=7, lines=[line("MUG", 2)])
    before = snapshot()
    product_update(sku="MUG", stock=6)  # even if the answer would differ now
    again = stock_reserve(order_id=7, lines=[line("MUG", 2)])
    assert again.pk == first.pk
    assert again.status == first.status
    assert stock("MUG") == (6, 2 if enough else 0)
    assert snapshot()[2:] == before[2:]  # no new reservation, no new event


@pytest.mark.parametrize(
    ("order_id", "lines", "field", "says"),
    [
        (7, [], "lines", "an order has at least one line"),
        (7, [line("MUG", 0)], "lines", "line 0: quantity must be a positive integer, got 0"),
        (7, [line("MUG", -1)], "lines", "line 0: quantity must be a positive integer"),
        (7, [{"sku": "MUG", "quantity": True}], "lines", "got True"),
        (7, [{"sku": "MUG", "quantity": "1"}], "lines", "got '1'"),
        (7, [{"sku": "", "quantity": 1}], "lines", "line 0: sku must be a string of 1 to 64"),
        (7, [{"quantity": 1}], "lines", "sku must be a string of 1 to 64 characters, got None"),
        (7, [{"sku": "M" * 65, "quantity": 1}], "lines", "line 0: sku must be a string"),
        (7, [line("MUG", 1), line("TEE", 0)], "lines", "line 1: quantity"),
        (7, [line("MUG", 2**63)], "lines", "quantity must be a positive integer"),
        (0, [line("MUG", 1)], "order_id", "must be a positive integer, got 0"),
        ("7", [line("MUG", 1)], "order_id", "must be a positive integer, got '7'"),
    ],
)
def test_malformed_requests_are_refused_and_change_nothing(order_id, lines, field, says):
    a_product("MUG", stock=5)
    before = snapshot()
    with pytest.raises(ValidationError) as exc:
        stock_reserve(order_id=order_id, lines=lines)
    # The error names the field and says what is wrong with it (the API's problem+json).
    assert list(exc.value.message_dict) == [field]
    assert any(says in message for message in exc.value.message_dict[field])
    assert snapshot() == before


def test_the_largest_quantity_a_line_can_hold_is_a_request_like_any_other():
    a_product("MUG", stock=5)
    reservation = stock_reserve(order_id=7, lines=[line("MUG", 2**63 - 1)])
    assert reservation.status == StockReservation.Status.REJECTED  # not enough, but well-formed
    assert stock("MUG") == (5, 0)


def test_fulfil_takes_the_reserved_goods_off_the_shelf_once():
    a_product("MUG", stock=5)
    a_product("TEE", stock=2)
    stock_reserve(order_id=7, lines=[line("MUG", 3), line("TEE", 2)])
    stock_reserve(order_id=8, lines=[line("MUG", 1)])

    fulfilled = stock_fulfil(order_id=7)
    assert fulfilled.status == StockReservation.Status.FULFILLED
    assert (stock("MUG"), stock("TEE")) == ((2, 1), (0, 0))

    before = snapshot()
    assert stock_fulfil(order_id=7).status == "fulfilled"
    assert snapshot() == before
    # The reservation still answers a late duplicate of the payment: nothing is reserved anew.
    assert stock_reserve(order_id=7, lines=[line("MUG", 3)]).status == "fulfilled"
    assert snapshot() == before


def test_fulfil_leaves_a_rejected_reservation_alone_and_ignores_unknown_orders():
    a_product("MUG", stock=1)
    stock_reserve(order_id=7, lines=[line("MUG", 2)])
    before = snapshot()
    assert stock_fulfil(order_id=7).status == "rejected"
    assert stock_fulfil(order_id=99) is None
    assert snapshot() == before


def test_at_rest_on_hand_is_initial_stock_minus_fulfilled_orders():
    a_product("MUG", stock=10)
    quantities = {1: 3, 2: 4, 3: 5, 4: 2}  # order 3 does not fit once 1 and 2 are reserved
    for order_id, quantity in quantities.items():
        stock_reserve(order_id=order_id, lines=[line("MUG", quantity)])
    for order_id in quantities:
        stock_fulfil(order_id=order_id)
    completed = [
        r.order_id for r in StockReservation.objects.filter(status="fulfilled").order_by("order_id")
    ]
    assert completed == [1, 2, 4]
    assert stock("MUG") == (10 - 3 - 4 - 2, 0)


def test_a_reservation_is_stored_with_its_lines():
    a_product("MUG", stock=5)
    stock_reserve(order_id=7, lines=[line("MUG", 2)])
    [reservation] = StockReservation.objects.filter(order_id__in=[7, 8])
    assert reservation.order_id == 7
    assert [(rl.sku, rl.quantity) for rl in reservation.lines.all()] == [("MUG", 2)]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite serialises writers at BEGIN")
@pytest.mark.django_db(transaction=True)
def test_a_duplicate_that_committed_first_without_sharing_a_lock_is_the_answer(monkeypatch):
    # Two deliveries of one order naming only unknown skus lock no stock row, so both reach
    # the insert; the one that commits second hits the unique order_id and returns the first.
    rival = a_rival_reservation_commits_first(monkeypatch, status="rejected")
    reservation = stock_reserve(order_id=7, lines=[line("GONE", 1)])
    assert rival and reservation.pk == rival[0].pk
    assert list(StockReservation.objects.values_list("order_id", "status")) == [(7, "rejected")]
    assert payloads("inventory.StockNotAvailable") == []  # the rival's answer, not a second one


@pytest.mark.parametrize("lines", [[object()], [SimpleNamespace(sku="MUG")]])
def test_a_line_without_a_sku_or_a_quantity_is_refused_on_lines(lines):
    a_product("MUG", stock=5)
    before = snapshot()
    with pytest.raises(ValidationError) as exc:
        stock_reserve(order_id=7, lines=lines)
    assert list(exc.value.message_dict) == ["lines"]
    assert snapshot() == before


def test_an_order_without_lines_is_told_so():
    with pytest.raises(ValidationError) as exc:
        stock_reserve(order_id=7, lines=[])
    assert exc.value.message_dict == {"lines": ["an order has at least one line"]}


@pytest.mark.parametrize("sku", ["M", "M" * Product._meta.get_field("sku").max_length])
def test_a_sku_of_one_character_or_of_the_longest_length_is_well_formed(sku):
    """The sku's length limits are inclusive: such a line is judged on its stock (an unknown
    sku has none, so the reservation is rejected), not refused as malformed."""
    reservation = stock_reserve(order_id=7, lines=[line(sku, 1)])
    assert reservation.status == StockReservation.Status.REJECTED
    assert [p["short"][0]["sku"] for p in payloads("inventory.StockNotAvailable")] == [sku]
