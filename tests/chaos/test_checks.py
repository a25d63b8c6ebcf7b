"""The chaos run's checker finds what it is there to find.

A small world is built through the apps' own services (one order completed, one declined, one
out of stock), in-process and without a broker; the checker must pass it, and must report each
invariant broken on purpose. A checker that cannot fail proves nothing.
"""

from __future__ import annotations

import sys
import uuid
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import F

from inventory.models import StockLevel
from inventory.services import product_create, stock_fulfil, stock_reserve
from orders.models import Order
from orders.services import (
    catalog_item_upsert,
    order_cancel,
    order_complete,
    order_mark_paid,
    order_mark_stock_reserved,
    order_place,
)
from outbox.models import Delivery, Event
from payments.events import PaidLine
from payments.models import Refund
from payments.services import payment_charge, payment_refund
from shipping.services import shipment_schedule

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from chaos.checks import Report, check
from chaos.load import Ack, Customer, OrderRequest

INITIAL = {"MUG": 3}


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):
    # Services run in-process here; nothing needs to wake a relay.
    monkeypatch.setattr("outbox.publisher.relay_wake", lambda: None)


@pytest.fixture
def acks(db) -> list[Ack]:
    """Three orders at rest: completed (2 units), declined, out of stock (1 unit left)."""
    user = get_user_model().objects.create_user("chaos-check", password="chaos-check-pw-1")
    customer = Customer(user_id=user.pk, username=user.username, token="")
    product_create(sku="MUG", name="Mug", price=Decimal("5.00"), stock=INITIAL["MUG"])
    catalog_item_upsert(sku="MUG", name="Mug", price="5.00", currency=settings.SHOP_CURRENCY)
    placed: list[Ack] = []

    def place(quantity: int, token: str) -> tuple[Order, list[PaidLine]]:
        key = f"check-{len(placed)}"
        order, _ = order_place(
            customer=user,
            lines=[{"sku": "MUG", "quantity": quantity}],
            payment_token=token,
            idempotency_key=key,
        )
        request = OrderRequest(
            number=len(placed),
            key=key,
            customer=customer,
            lines=(("MUG", quantity),),
            payment_token=token,
        )
        placed.append(Ack(request=request, order_id=order.reference, attempts=1))
        lines = [PaidLine(sku="MUG", quantity=quantity)]
        payment_charge(
            order_id=order.pk, amount=order.total, currency=order.currency, token=token, lines=lines
        )
        return order, lines

    completed, lines = place(2, "tok_visa")
    order_mark_paid(order_id=completed.pk, amount=completed.total)
    stock_reserve(order_id=completed.pk, lines=lines)
    order_mark_stock_reserved(order_id=completed.pk)
    shipment = shipment_schedule(order_id=completed.pk, lines=lines)
    order_complete(
        order_id=completed.pk, carrier=shipment.carrier, tracking_number=shipment.tracking_number
    )
    stock_fulfil(order_id=completed.pk)

    declined, _ = place(1, "tok_chargeDeclined")
    order_cancel(order_id=declined.pk, reason="payment_failed", payment_status="failed")

    short, lines = place(2, "tok_visa")
    order_mark_paid(order_id=short.pk, amount=short.total)
    stock_reserve(order_id=short.pk, lines=lines)  # 1 unit left: rejected
    payment_refund(order_id=short.pk)
    order_cancel(
        order_id=short.pk,
        reason="out_of_stock",
        payment_status="refunded",
        payment_amount=short.total,
    )
    Delivery.objects.update(status=Delivery.Status.DONE)
    return placed


def violations(acks: list[Ack], *, at_rest: bool = True) -> list[str]:
    report = Report()
    check(report=report, acks=acks, initial_stock=INITIAL, at_rest=at_rest)
    return report.violations


def test_the_world_at_rest_passes(acks):
    assert violations(acks) == []
    assert set(Order.objects.values_list("status", "cancellation_reason")) == {
        ("completed", None),
        ("cancelled", "payment_failed"),
        ("cancelled", "out_of_stock"),
    }


def lose_order(acks):
    Order.objects.filter(reference=acks[0].order_id).delete()


def leave_order_paid(acks):
    Order.objects.filter(reference=acks[0].order_id).update(status="paid")


def capture_twice(acks):
    order = Order.objects.get(reference=acks[0].order_id)
    event = Event.objects.get(type="payments.PaymentCompleted", payload__order_id=order.pk)
    event.pk, event.event_id = None, uuid.uuid4()
    event.save()


def forget_refund(acks):
    Refund.objects.all().delete()


def lose_a_unit(acks):
    StockLevel.objects.update(on_hand=F("on_hand") - 1)


def leave_delivery_pending(acks):
    Delivery.objects.filter(pk=Delivery.objects.first().pk).update(status="pending")


def dead_letter(acks):
    Delivery.objects.filter(pk=Delivery.objects.first().pk).update(status="dead")


def decline_was_captured(acks):
    # As if the declined card's request had been tok_visa: its outcome contradicts the card.
    acks[1] = replace(acks[1], request=replace(acks[1].request, payment_token="tok_visa"))


def acknowledge_twice(acks):
    acks.append(replace(acks[0], request=replace(acks[0].request, key="another-key")))


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (lose_order, "lost orders"),
        (leave_order_paid, "stuck"),
        (capture_twice, "max captures per order"),
        (forget_refund, "refunds"),
        (lose_a_unit, "stock: MUG"),
        (leave_delivery_pending, "deliveries done / pending / dead"),
        (dead_letter, "dead letter"),
        (decline_was_captured, "outcome contradicts the card"),
        (acknowledge_twice, "one order acknowledged for two requests"),
    ],
)
def test_each_broken_invariant_is_a_violation(acks, breakage, expected):
    breakage(acks)
    found = violations(acks)
    assert any(expected in violation for violation in found), found


def test_not_at_rest_only_safety_is_judged(acks):
    # An order still on its way is no violation while the system is not quiet...
    leave_order_paid(acks)
    leave_delivery_pending(acks)
    assert violations(acks, at_rest=False) == []
    # ...but a double capture is, at any moment.
    capture_twice(acks)
    assert any("max captures per order" in v for v in violations(acks, at_rest=False))
