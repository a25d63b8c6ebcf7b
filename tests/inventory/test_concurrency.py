"""Concurrent reservations on PostgreSQL: row locks keep stock from being oversold."""

import threading
from functools import partial

import pytest
from django.db import connection

from inventory.models import StockLevel, StockReservation
from inventory.services import stock_reserve
from outbox.models import Event
from payments.events import PaidLine
from tests.inventory.helpers import a_product, stock

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="needs PostgreSQL's row locks and real threads"
    ),
]


def run_concurrently(calls: list) -> list[BaseException]:
    """Run each call in its own thread (its own connection), all starting at once."""
    start = threading.Barrier(len(calls))
    errors: list[BaseException] = []

    def run(call):
        try:
            start.wait()
            call()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    return errors


def test_concurrent_orders_for_the_same_product_never_oversell_it():
    a_product("MUG", stock=5)
    one_mug = [PaidLine(sku="MUG", quantity=1)]
    calls = [partial(stock_reserve, order_id=order_id, lines=one_mug) for order_id in range(1, 13)]
    assert run_concurrently(calls) == []
    assert stock("MUG") == (5, 5)
    statuses = list(StockReservation.objects.values_list("status", flat=True))
    assert sorted(statuses) == ["rejected"] * 7 + ["reserved"] * 5
    assert Event.objects.filter(type="inventory.StockUpdated").count() == 5
    assert Event.objects.filter(type="inventory.StockNotAvailable").count() == 7
    assert not StockLevel.objects.filter(reserved__gt=5).exists()


def test_orders_naming_the_same_products_in_opposite_orders_do_not_deadlock():
    a_product("MUG", stock=100)
    a_product("TEE", stock=100)
    forward = [PaidLine(sku="MUG", quantity=1), PaidLine(sku="TEE", quantity=1)]
    backward = [PaidLine(sku="TEE", quantity=1), PaidLine(sku="MUG", quantity=1)]
    calls = [
        partial(stock_reserve, order_id=order_id, lines=forward if order_id % 2 else backward)
        for order_id in range(1, 21)
    ]
    assert run_concurrently(calls) == []
    assert (stock("MUG"), stock("TEE")) == ((100, 20), (100, 20))


def test_a_duplicate_delivered_concurrently_still_makes_one_reservation():
    a_product("MUG", stock=5)
    two_mugs = [PaidLine(sku="MUG", quantity=2)]
    calls = [partial(stock_reserve, order_id=1, lines=two_mugs) for _ in range(6)]
    assert run_concurrently(calls) == []
    assert StockReservation.objects.count() == 1
    assert stock("MUG") == (5, 2)
    assert Event.objects.filter(type="inventory.StockUpdated").count() == 1
