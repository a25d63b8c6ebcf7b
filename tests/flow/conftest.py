"""Fixtures of the flow page's tests: users, and one order's saga run in this process.

``saga_order`` runs the whole saga through the real outbox path (stored events, delivery
records, the apps' handlers in their own transactions), one delivery at a time, with two
faults injected so the page has every delivery state to show:

1. OrderPlaced   -> payments.payment_charge_on_order_placed          retried: 2 gateway timeouts
2. PaymentCompleted -> inventory.stock_reserve_..., orders.order_mark_paid_...   done
3. StockUpdated  -> shipping.shipment_schedule_...                    done
                 -> orders.order_mark_stock_reserved_on_stock_updated pending: never handled
4. ShippingScheduled -> orders.order_complete_...                     done
                 -> inventory.stock_fulfil_on_shipping_scheduled      dead: warehouse down
5. OrderCompleted -> notifications.notification_on_order_completed done
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model

from inventory.services import product_create
from orders.models import Order
from orders.services import order_place
from outbox.handling import delivery_handle
from outbox.models import Delivery
from payments.gateway import GatewayUnavailable
from tests.security.credentials import grant

CUSTOMER_PASSWORD = "alice-pass-123"
LEFT_PENDING = "orders.order_mark_stock_reserved_on_stock_updated"
RETRIED = "payments.payment_charge_on_order_placed"
DEAD = "inventory.stock_fulfil_on_shipping_scheduled"
MAX_ATTEMPTS = 3


@pytest.fixture
def customer(db):
    return get_user_model().objects.create_user("alice", password=CUSTOMER_PASSWORD)


@pytest.fixture
def other_customer(db):
    return get_user_model().objects.create_user("bob", password="bob-pass-123")


@pytest.fixture
def staff(db):
    user = get_user_model().objects.create_user("carol", password="carol-pass-123", is_staff=True)
    # Any order, and its admin page (is_staff alone grants nothing).
    return grant(user, "orders.view_any_order", "orders.view_order")


OPERATOR_PASSWORD = "olive-pass-123"


@pytest.fixture
def operator(db):
    """Staff who see any order's machinery: subscribers, attempts, errors, ids."""
    user = get_user_model().objects.create_user("olive", password=OPERATOR_PASSWORD, is_staff=True)
    return grant(user, "orders.view_any_order", "orders.view_order", "orders.view_order_machinery")


def deliveries_drain(*, leave: tuple[str, ...] = (), rounds: int = 20) -> None:
    """Handle every pending delivery (but those to ``leave``) here, until none is left."""
    for _ in range(rounds):
        due = list(
            Delivery.objects.filter(status=Delivery.Status.PENDING)
            .exclude(subscriber__in=leave)
            .order_by("id")
            .values_list("id", flat=True)
        )
        if not due:
            return
        # Each round stands for time passing: a failed delivery's retry backoff is over.
        Delivery.objects.filter(pk__in=due).update(backoff_until=None)
        for delivery_id in due:
            delivery_handle(delivery_id=delivery_id)
    raise AssertionError(f"deliveries still pending after {rounds} rounds")


@pytest.fixture
def saga_order(customer, settings, monkeypatch) -> Order:
    # No broker here: every delivery is handled in this process by deliveries_drain.
    monkeypatch.setattr("outbox.publisher.relay_wake", lambda: None)
    settings.OUTBOX = {**settings.OUTBOX, "MAX_ATTEMPTS": MAX_ATTEMPTS}
    settings.SHOP_CURRENCY = "EUR"

    product_create(sku="MUG", name="Mug", price=Decimal("9.50"), stock=10)
    deliveries_drain()  # the catalogue: orders learns the product's price

    import payments.handlers

    calls: Counter[int] = Counter()
    charge = payments.handlers.payment_charge

    def charge_after_two_timeouts(**kwargs):
        calls[kwargs["order_id"]] += 1
        if calls[kwargs["order_id"]] <= 2:
            raise GatewayUnavailable("timeout: the gateway did not answer within 10 s")
        return charge(**kwargs)

    def warehouse_down(**kwargs):
        raise ConnectionError("warehouse API unreachable: connection refused")

    monkeypatch.setattr("payments.handlers.payment_charge", charge_after_two_timeouts)
    monkeypatch.setattr("inventory.handlers.stock_fulfil", warehouse_down)

    order, created = order_place(
        customer=customer, lines=[{"sku": "MUG", "quantity": 2}], payment_token="tok_visa"
    )
    assert created
    deliveries_drain(leave=(LEFT_PENDING,))
    order.refresh_from_db()
    assert order.status == Order.Status.COMPLETED
    return order
