"""The chaos run's checker finds what it is there to find.

A small world is built through the apps' own services (one order completed, one declined, one
out of stock), in-process and without a broker; the checker must pass it, and must report each
invariant broken on purpose. A checker that cannot fail proves nothing.
"""

from __future__ import annotations

import sys
import threading
import uuid
from collections import Counter
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
from chaos.checks import Report, check, check_counting, check_http, counting_verdict
from chaos.load import Ack, Customer, Load, LoadStats, OrderRequest

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


PLACED, PAID = "chaos.count.orders.OrderPlaced", "chaos.count_ordered.orders.OrderPlaced"


def counting_violations(counted: Counter, *, at_rest: bool = True) -> list[str]:
    # Two events, two counting subscribers of the first one's type, one of the second's.
    expected = {("e1", PLACED), ("e1", PAID), ("e2", PLACED)}
    report = Report()
    counting_verdict(report=report, expected=expected, counted=counted, at_rest=at_rest)
    return report.violations


def test_counted_effects_are_exactly_one_per_event_and_counting_subscriber():
    once = Counter({("e1", PLACED): 1, ("e1", PAID): 1, ("e2", PLACED): 1})
    assert counting_violations(once) == []
    # A handler's effect that happened twice is a violation at any moment...
    twice = once + Counter({("e1", PAID): 1})
    assert any("counted twice" in v for v in counting_violations(twice))
    assert any("counted twice" in v for v in counting_violations(twice, at_rest=False))
    # ...one never counted only at rest (its delivery may be on its way)...
    missing = once - Counter({("e2", PLACED): 1})
    assert any("never counted" in v for v in counting_violations(missing))
    assert counting_violations(missing, at_rest=False) == []
    # ...and an effect for an event that is not in the store always.
    stray = once + Counter({("e3", PLACED): 1})
    assert any("no stored event" in v for v in counting_violations(stray, at_rest=False))


def test_no_counting_subscriber_installed_is_a_violation():
    # The suite does not install chaos/countingapp: a run without it must not pass silently.
    report = Report()
    check_counting(report=report)
    assert any("counting subscribers" in v for v in report.violations)


class ScriptedHttp:
    """Answers the load's requests from a script: a status, or an exception to raise."""

    timeout = 20.0

    def __init__(self, *answers):
        self.answers = list(answers)

    def request(self, method, path, **kwargs):
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer, {"id": "ORD-7"} if answer < 300 else {"status": answer}


def test_the_load_records_every_status_and_every_hung_request():
    customer = Customer(user_id=1, username="c", token="t")
    request = OrderRequest(
        number=0, key="k", customer=customer, lines=(("MUG", 1),), payment_token="tok_visa"
    )
    http = ScriptedHttp(503, TimeoutError("timed out"), ConnectionResetError(), 503, 202)
    load = Load(http=http, plan=[request], seconds=0, threads=1, stop=threading.Event())
    load.run()
    assert load.acks[0].order_id == "ORD-7" and load.acks[0].attempts == 5
    assert load.stats.statuses == Counter({503: 2, 202: 1})
    assert (len(load.stats.timeouts), load.stats.connection_errors) == (1, 1)


def http_violations(stats: LoadStats) -> list[str]:
    report = Report()
    # Database faults at t=100..105 and 225..226, a web restart at 200..230; timeout 20 s.
    check_http(
        report=report,
        stats=stats,
        timeout=20,
        database_faults=[(100.0, 105.0), (225.0, 226.0)],
        web_restarts=[(200.0, 230.0)],
    )
    return report.violations


def test_503_is_counted_but_a_500_or_a_request_hung_by_the_database_is_a_violation():
    assert http_violations(LoadStats(statuses=Counter({202: 90, 503: 12}))) == []
    crashed = http_violations(LoadStats(statuses=Counter({202: 90, 503: 12, 500: 1})))
    assert any("a 500 is a crash" in v for v in crashed)
    # In flight while the database was away or slow: a violation.
    for sent in (85.0, 102.0):
        hung = http_violations(LoadStats(statuses=Counter({202: 90}), timeouts=[sent]))
        assert any("during a database fault" in v for v in hung)
    # Hung while no database fault was under way, or while the web process was restarting
    # (loading the app, requests waiting in its listen queue): reported only.
    idle = LoadStats(statuses=Counter({202: 90}), timeouts=[50.0, 106.0, 210.0])
    assert http_violations(idle) == []
