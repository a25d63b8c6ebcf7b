"""The same delivery handled by two workers at the same moment (a lease that ran out while the
first still worked, a message the broker sent twice) has one effect, for the saga's real
handlers: one charge and one PaymentCompleted; one reservation and one StockUpdated."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest
from django.db import transaction

from inventory.models import StockLevel, StockReservation
from inventory.services import product_create
from orders.services import catalog_item_upsert, order_place
from outbox import publish
from outbox.conf import outbox_settings
from outbox.handling import delivery_handle
from outbox.models import Delivery, Event
from payments.events import PaidLine, PaymentCompleted
from payments.gateway import SimulatedGateway
from payments.models import Payment
from tests.races.helpers import run_at_once, skip_unless_postgres

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    skip_unless_postgres(),
]

CHARGE = "payments.payment_charge_on_order_placed"
RESERVE = "inventory.stock_reserve_on_payment_completed"
# Seconds a handler takes, so that the second worker arrives while it runs. Well above the
# outbox's LOCK_WAIT_SECONDS (0.5): a duplicate waits that long for a locked delivery before it
# steps aside, so a handler that held the lock only about as long (0.5 s here before) left the
# outcome to the handler's other statements: once the saga's steps spent fewer of them (issue
# 12), the duplicate sometimes got the lock after the first committed, and the runs did not
# overlap.
SLOW = 1.0


class SlowGateway(SimulatedGateway):
    """The simulated gateway, slow, counting its charges."""

    charges: list[str] = []
    lock = threading.Lock()

    def charge(self, *, amount, currency, token, idempotency_key):
        with self.lock:
            SlowGateway.charges.append(idempotency_key)
        time.sleep(SLOW)
        return super().charge(
            amount=amount, currency=currency, token=token, idempotency_key=idempotency_key
        )


def test_a_handler_here_outlasts_a_duplicates_wait_for_the_lock():
    assert SLOW >= outbox_settings().LOCK_WAIT_SECONDS + 0.5


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    # The deliveries are run by the test's threads: no relay to wake.
    monkeypatch.setattr("outbox.publisher.relay_wake", lambda: None)


@pytest.fixture
def slow_gateway(settings):
    settings.PAYMENTS = {
        **settings.PAYMENTS,
        "GATEWAY": f"{__name__}.SlowGateway",
        "TIMEOUT_RATE": 0.0,
        "TIMEOUTS_PER_CHARGE": 0,
    }
    SlowGateway.charges = []
    return SlowGateway


def twice_at_once(delivery_id: int) -> list[str]:
    """The delivery handled by two threads at once; the sorted outcomes. The one that steps
    aside must do so while the other is still in the handler: it met the row lock, not a
    delivery already done."""

    def handle():
        outcome = delivery_handle(delivery_id=delivery_id)
        return outcome, time.monotonic()

    results = run_at_once([handle, handle])
    finished = dict(results)
    assert set(finished) == {"done", "skipped"}, results
    assert finished["skipped"] < finished["done"], "the two runs did not overlap"
    return sorted(finished)


def test_one_order_placed_delivery_handled_twice_at_once_charges_once(
    django_user_model, settings, slow_gateway
):
    settings.SHOP_CURRENCY = "EUR"
    catalog_item_upsert(sku="MUG", name="Mug", price="9.50", currency="EUR")
    customer = django_user_model.objects.create_user("erin", password="pw-erin-123")
    order, _ = order_place(
        customer=customer, lines=[{"sku": "MUG", "quantity": 2}], payment_token="tok_visa"
    )
    delivery = Delivery.objects.get(event__type="orders.OrderPlaced", subscriber=CHARGE)

    assert twice_at_once(delivery.pk) == ["done", "skipped"]

    assert slow_gateway.charges == [f"order-{order.pk}-charge"]
    payment = Payment.objects.get(order_id=order.pk)
    assert (payment.status, payment.amount) == ("captured", Decimal("19.00"))
    completed = Event.objects.filter(type="payments.PaymentCompleted")
    assert completed.count() == 1
    assert completed.get().aggregate_id == str(payment.pk)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("done", 1)
    # Handled again later (a late duplicate): nothing more.
    assert delivery_handle(delivery_id=delivery.pk) == "skipped"
    assert Payment.objects.count() == 1
    assert completed.count() == 1


def test_one_payment_completed_delivery_handled_twice_at_once_reserves_once(monkeypatch):
    product_create(sku="MUG", name="Mug", price=Decimal("9.50"), stock=5)
    import inventory.handlers

    real_reserve = inventory.handlers.stock_reserve
    calls = []

    def slow_reserve(**kwargs):
        calls.append(kwargs["order_id"])
        time.sleep(SLOW)
        return real_reserve(**kwargs)

    monkeypatch.setattr(inventory.handlers, "stock_reserve", slow_reserve)
    with transaction.atomic():
        stored = publish(
            PaymentCompleted(
                payment_id=1,
                order_id=42,
                amount="19.00",
                currency="EUR",
                lines=(PaidLine(sku="MUG", quantity=2),),
            )
        )
    delivery = stored.deliveries.get(subscriber=RESERVE)

    assert twice_at_once(delivery.pk) == ["done", "skipped"]

    assert calls == [42]  # the second worker stepped aside before running the handler
    reservation = StockReservation.objects.get()
    assert (reservation.order_id, reservation.status) == (42, "reserved")
    level = StockLevel.objects.get(product__sku="MUG")
    assert (level.on_hand, level.reserved) == (5, 2)
    assert Event.objects.filter(type="inventory.StockUpdated").count() == 1
    assert not Event.objects.filter(type="inventory.StockNotAvailable").exists()


def test_the_reservation_is_made_once_even_when_both_workers_run_the_handler(monkeypatch):
    """Below the delivery lock: should two runs of the handler for the same order ever overlap
    (two deliveries of one order's PaymentCompleted, e.g. a replayed copy of the event), the
    stock locks and the one-reservation-per-order rule still make a single reservation."""
    product_create(sku="MUG", name="Mug", price=Decimal("9.50"), stock=5)
    lines = (PaidLine(sku="MUG", quantity=2),)
    with transaction.atomic():
        first = publish(
            PaymentCompleted(payment_id=1, order_id=7, amount="19", currency="EUR", lines=lines)
        )
        second = publish(
            PaymentCompleted(payment_id=1, order_id=7, amount="19", currency="EUR", lines=lines)
        )
    ids = [e.deliveries.get(subscriber=RESERVE).pk for e in (first, second)]
    outcomes = run_at_once([lambda pk=pk: delivery_handle(delivery_id=pk) for pk in ids])
    assert outcomes == ["done", "done"]
    assert StockReservation.objects.count() == 1
    assert StockLevel.objects.get(product__sku="MUG").reserved == 2
    assert Event.objects.filter(type="inventory.StockUpdated").count() == 1
