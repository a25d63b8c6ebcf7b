"""What each step of the saga costs in SQL statements, pinned per backend.

A happy order's deliveries run here, one at a time, on the real delivery path (lock, handler,
record; `outbox/handling.py`), each under ``django_assert_max_num_queries`` with the count its
subscriber may spend. A change that adds a statement to a saga step fails here, so the cost
per order that `make bench` measures (docs/benchmarks.md) cannot creep back unnoticed.

The counts include transaction control Django sends as statements: here, inside the test's
transaction, the delivery's own transaction is a savepoint (2 statements that are BEGIN and
COMMIT in production), and the savepoints of the services' ``atomic`` blocks.
"""

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model

from inventory.models import StockLevel
from inventory.services import product_create
from orders.models import Order
from orders.services import order_place
from outbox.continuation import deliveries_run, queues_served_set
from outbox.handling import delivery_handle
from outbox.models import Delivery
from outbox.registry import subscriber_queues
from tests.support import is_postgres

pytestmark = pytest.mark.django_db

# subscriber: (PostgreSQL, SQLite). Before the cuts (PostgreSQL): 14, 11, 19, 11, 14, 12, 14.
# The charge was cut to 12 (PostgreSQL), then grew to 26 by design when its gateway attempt came
# to be recorded and committed before the gateway call (issue 16: the delivery locked twice, the
# attempt looked up and inserted in the prepare transaction, read and updated in the handler's;
# docs/architecture.md, "Calls that move money"). The ceiling pins that cost from here on.
# Every step that publishes then lost one on PostgreSQL (issue 12): the aggregate's sequence
# number is taken in the statement that writes the event and its deliveries (outbox/sql.py).
# Then (issue 12, "Fewer statements per step", docs/benchmarks.md), before -> after on
# PostgreSQL: charge 25 -> 18, paid 9 -> 7, reserve 14 -> 9, stock reserved 9 -> 7, schedule
# 10 -> 6, complete 10 -> 7, fulfil 10 -> 8, each notification 8 -> 5. No savepoint of the
# service's own inside a handler's run (`outbox.atomic`); an insert that may meet an existing
# row is one `INSERT ... ON CONFLICT DO NOTHING RETURNING` (`outbox.insert_or_nothing`) instead
# of a read, a savepoint and the insert (the payment, the gateway attempt, the reservation, the
# shipment, the notification); the customer's address is read with the order's lock.
# Then every step one less on PostgreSQL (issue 12, "The outbox's own bookkeeping per step"):
# the delivery's lock is also its done mark (`UPDATE ... RETURNING`, outbox/sql.py), so no
# `UPDATE` after the handler: charge 18 -> 17, paid 7 -> 6, reserve 9 -> 8, stock reserved
# 7 -> 6, schedule 6 -> 5, complete 7 -> 6, fulfil 8 -> 7, each notification 5 -> 4.
STATEMENTS = {
    "payments.payment_charge_on_order_placed": (17, 20),
    "orders.order_mark_paid_on_payment_completed": (6, 7),
    "inventory.stock_reserve_on_payment_completed": (8, 11),
    "orders.order_mark_stock_reserved_on_stock_updated": (6, 7),
    "shipping.shipment_schedule_on_stock_updated": (5, 8),
    # 10, then 11 when OrderCompleted came to carry the customer's address for notifications;
    # 7 since it is read with the order's lock. On SQLite two more, the insert of the event's
    # delivery to notifications and the sequence upsert (PostgreSQL writes sequence, event and
    # deliveries in one).
    "orders.order_complete_on_shipping_scheduled": (6, 9),
    "inventory.stock_fulfil_on_shipping_scheduled": (7, 8),
    "notifications.notification_on_order_placed": (4, 5),
    "notifications.notification_on_order_completed": (4, 5),
}


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    # No broker: the deliveries are run here.
    monkeypatch.setattr("outbox.publisher.relay_wake", lambda: None)


def _deliver_all(assert_max) -> list[str]:
    """Every pending delivery, oldest first, until none is left; the subscribers run."""
    ran = []
    while pending := list(Delivery.objects.filter(status="pending").order_by("id")):
        for delivery in pending:
            if delivery.subscriber in STATEMENTS:
                limit = STATEMENTS[delivery.subscriber][0 if is_postgres() else 1]
                with assert_max(limit):
                    outcome = delivery_handle(delivery_id=delivery.pk)
            else:
                outcome = delivery_handle(delivery_id=delivery.pk)
            assert outcome == "done", delivery.subscriber
            ran.append(delivery.subscriber)
    return ran


def test_each_saga_step_stays_within_its_statements(django_assert_max_num_queries):
    product_create(sku="MUG", name="Mug", price=Decimal("9.50"), stock=100)
    product_create(sku="TEE", name="Tee", price=Decimal("20.00"), stock=100)
    _deliver_all(django_assert_max_num_queries)  # the catalogue reaches orders
    customer = get_user_model().objects.create_user("alice", email="alice@example.com")
    order, _ = order_place(
        customer=customer,
        lines=[{"sku": "MUG", "quantity": 1}, {"sku": "TEE", "quantity": 2}],
        payment_token="tok_visa",
    )

    ran = _deliver_all(django_assert_max_num_queries)

    assert set(STATEMENTS) <= set(ran)
    assert Order.objects.get(pk=order.pk).status == "completed"
    # One UPDATE for all the order's stock rows moved each row by its own line.
    stock = dict(StockLevel.objects.values_list("product__sku", "on_hand"))
    reserved = dict(StockLevel.objects.values_list("product__sku", "reserved"))
    assert stock == {"MUG": 99, "TEE": 98}
    assert reserved == {"MUG": 0, "TEE": 0}


def test_a_reservation_moves_each_stock_row_by_its_own_line():
    from inventory.services import stock_fulfil, stock_reserve
    from payments.events import PaidLine

    for sku in ("A", "B", "C"):
        product_create(sku=sku, name=sku, price=Decimal("1.00"), stock=10)
    lines = (PaidLine(sku="C", quantity=3), PaidLine(sku="A", quantity=1))
    stock_reserve(order_id=7, lines=lines)
    levels = {
        s: (h, r)
        for s, h, r in StockLevel.objects.values_list("product__sku", "on_hand", "reserved")
    }
    assert levels == {"A": (10, 1), "B": (10, 0), "C": (10, 3)}
    stock_fulfil(order_id=7)
    levels = {
        s: (h, r)
        for s, h, r in StockLevel.objects.values_list("product__sku", "on_hand", "reserved")
    }
    assert levels == {"A": (9, 0), "B": (10, 0), "C": (7, 0)}


# The whole happy order from its first message on a worker serving every queue
# (outbox/continuation.py: each step's deliveries continued, several per transaction), every
# statement of it: (PostgreSQL, SQLite). 86 (98) when the worker claimed each step's deliveries
# after its commit (a transaction of three statements per step); 74 (82) since the publish
# inserts them already leased to it; 68 on PostgreSQL since each lock is also the done mark, of
# the delivery or of the batch (issue 12, "The outbox's own bookkeeping per step"); 66 (80)
# since a batch whose only runnable delivery sits beside ones that run alone runs it without a
# savepoint (issue 12, "The saga's statements, again").
CONTINUED_ORDER = (66, 80)


def test_an_order_continued_on_one_worker_stays_within_its_statements(
    django_assert_max_num_queries, monkeypatch
):
    monkeypatch.setattr("outbox.continuation.relay_wake", lambda: None)
    product_create(sku="MUG", name="Mug", price=Decimal("9.50"), stock=100)
    _deliver_all(django_assert_max_num_queries)
    customer = get_user_model().objects.create_user("alice", email="alice@example.com")
    order, _ = order_place(
        customer=customer, lines=[{"sku": "MUG", "quantity": 1}], payment_token="tok_visa"
    )
    ids = list(Delivery.objects.filter(status="pending").values_list("id", flat=True))
    queues_served_set(subscriber_queues())
    try:
        with django_assert_max_num_queries(CONTINUED_ORDER[0 if is_postgres() else 1]):
            deliveries_run(ids)
    finally:
        queues_served_set(())

    assert Order.objects.get(pk=order.pk).status == "completed"
    assert set(Delivery.objects.values_list("status", "attempts", "dispatches")) <= {
        ("done", 1, 0),
        ("done", 1, 1),
    }


# Placing an order over the API with token auth, every statement of the request (issue 12, "The
# apps' statements written once", docs/benchmarks.md): 13 on PostgreSQL before, then 8 (knox's
# three reads of the token, its user and the user's every token became one; the order's insert
# lost its savepoint; the answer's lines are the ones just written, not read back). On SQLite
# two more: the aggregate's sequence and the deliveries are statements of their own.
PLACE_OVER_HTTP = (8, 10)


def test_placing_an_order_over_http_stays_within_its_statements(
    django_assert_max_num_queries, settings
):
    from knox.models import AuthToken
    from rest_framework.test import APIClient

    settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, "orders": None}
    product_create(sku="MUG", name="Mug", price=Decimal("9.50"), stock=100)
    _deliver_all(django_assert_max_num_queries)  # the catalogue reaches orders
    customer = get_user_model().objects.create_user("alice", email="alice@example.com")
    _, token = AuthToken.objects.create(user=customer)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    body = {"lines": [{"sku": "MUG", "quantity": 2}], "payment_token": "tok_visa"}

    with django_assert_max_num_queries(PLACE_OVER_HTTP[0 if is_postgres() else 1]):
        response = client.post("/api/orders/", body, format="json")

    assert response.status_code == 202, response.content
    order = Order.objects.get(reference=response.json()["id"])
    assert response.json()["lines"] == [{"sku": "MUG", "quantity": 2, "unit_price": "9.50"}]
    assert list(order.lines.values_list("sku", "quantity")) == [("MUG", 2)]
