"""The stock row lock, proven at its own level (PostgreSQL, two real connections).

Guards "stock never goes below zero" and "an order's reservation sees every reservation
committed before it": stock_reserve locks the StockLevel rows of its skus and keeps them locked
until its transaction ends, so a second reservation of the same product waits, then reads the
first one's units as reserved. End to end (tests/races/test_last_units.py) a missing lock is
absorbed by the ``reserved <= on_hand`` constraint and the handler's retry, so only this test
sees the lock itself go missing.
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection

import inventory.services
from inventory.models import StockReservation
from inventory.services import stock_reserve
from payments.events import PaidLine
from tests.inventory.helpers import a_product, stock
from tests.races.helpers import skip_unless_postgres
from tests.support import wait_until

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    skip_unless_postgres(),
]


def backend_waits_for_a_lock(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
    return bool(row) and row[0] == "Lock"


def test_a_second_reservation_of_the_same_product_waits_for_the_first_to_commit(monkeypatch):
    a_product("MUG", stock=3)
    real_publish = inventory.services.publish
    first_inside, let_first_commit = threading.Event(), threading.Event()

    def publish_holding_the_first(event):
        # The first reservation pauses here, after it read and wrote stock, before commit.
        if event.order_id == 1:
            first_inside.set()
            assert let_first_commit.wait(60)
        return real_publish(event)

    monkeypatch.setattr(inventory.services, "publish", publish_holding_the_first)
    second_pid: list[int] = []
    second_done = threading.Event()

    def reserve(order_id: int, quantity: int, ready: threading.Event | None = None):
        try:
            if ready is not None:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_backend_pid()")
                    second_pid.append(cursor.fetchone()[0])
                ready.set()
            stock_reserve(order_id=order_id, lines=[PaidLine(sku="MUG", quantity=quantity)])
        finally:
            connection.close()

    first = threading.Thread(target=reserve, args=(1, 2))
    first.start()
    assert first_inside.wait(60)
    second_ready = threading.Event()
    second = threading.Thread(
        target=lambda: (reserve(2, 2, second_ready), second_done.set()), daemon=True
    )
    second.start()
    try:
        assert second_ready.wait(60)
        wait_until(
            lambda: second_done.is_set() or backend_waits_for_a_lock(second_pid[0]),
            timeout=60,
            what="the second reservation to wait for a lock or to finish",
        )
        assert not second_done.is_set(), "the second reservation did not wait for the first"
        assert backend_waits_for_a_lock(second_pid[0])
    finally:
        let_first_commit.set()
        first.join(60)
        second.join(60)

    # The second one read the first one's two units as reserved: one left, it is short.
    statuses = dict(StockReservation.objects.values_list("order_id", "status"))
    assert statuses == {1: "reserved", 2: "rejected"}
    assert stock("MUG") == (3, 2)
