"""The chaos run's checker finds what it is there to find.

A small world is built through the apps' own services (one order completed, one declined, one
out of stock, and three the customer cancelled: before the payment, mid-saga, and after the
order completed), in-process and without a broker; the checker must pass it, and must report each
invariant broken on purpose. A checker that cannot fail proves nothing.
"""

from __future__ import annotations

import random
import sys
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import F
from django.utils import timezone

from inventory.models import StockLevel, StockReservation
from inventory.services import product_create, stock_fulfil, stock_release, stock_reserve
from orders.models import Order
from orders.services import (
    catalog_item_upsert,
    order_cancel,
    order_cancel_compensated,
    order_cancellation_request,
    order_complete,
    order_mark_paid,
    order_mark_stock_reserved,
    order_place,
)
from outbox.models import Delivery, Event
from payments.events import PaidLine
from payments.models import Payment, Refund
from payments.services import payment_cancel, payment_charge, payment_refund
from shipping.models import Shipment
from shipping.services import shipment_cancel, shipment_schedule

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from chaos.checks import Report, check, check_counting, check_http, counting_verdict
from chaos.load import (
    Ack,
    CancelAnswer,
    Customer,
    Load,
    LoadStats,
    OrderRequest,
    requests_plan,
)

INITIAL = {"MUG": 3, "PEN": 10}
CANCELLED = "customer_cancelled"
# The world's orders, in the order they were placed.
COMPLETED, DECLINED, SHORT, EARLY, MID, LATE = range(6)


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):
    # Services run in-process here; nothing needs to wake a relay.
    monkeypatch.setattr("outbox.publisher.relay_wake", lambda: None)


@dataclass
class World:
    """The orders placed (as the load acknowledged them) and the cancels their customers sent."""

    acks: list[Ack]
    cancels: list[CancelAnswer]


def customer_cancel(order: Order) -> CancelAnswer:
    """A customer's cancel (answered 202 with the order as it was), compensated as the saga's
    handlers do it."""
    accepted = order_cancellation_request(order_id=order.pk, reason=CANCELLED)
    shipment_cancel(order_id=order.pk, reason=CANCELLED)
    payment_cancel(order_id=order.pk)
    stock_release(order_id=order.pk)
    order_cancel_compensated(order_id=order.pk, reason=CANCELLED)
    return CancelAnswer(
        order_id=order.reference, status=202, attempts=1, body={"status": accepted.status}
    )


@pytest.fixture
def world(db) -> World:
    """Six orders at rest: completed (2 mugs), declined, out of stock (1 mug left), and three
    pens the customer cancelled: before the payment, once paid and reserved, once completed."""
    user = get_user_model().objects.create_user("chaos-check", password="chaos-check-pw-1")
    customer = Customer(user_id=user.pk, username=user.username, token="")
    for sku, stock in INITIAL.items():
        product_create(sku=sku, name=sku.title(), price=Decimal("5.00"), stock=stock)
        catalog_item_upsert(
            sku=sku, name=sku.title(), price="5.00", currency=settings.SHOP_CURRENCY
        )
    placed: list[Ack] = []
    cancels: list[CancelAnswer] = []

    def place(
        quantity: int, token: str, *, sku: str = "MUG", charge: bool = True
    ) -> tuple[Order, list[PaidLine]]:
        key = f"check-{len(placed)}"
        order, _ = order_place(
            customer=user,
            lines=[{"sku": sku, "quantity": quantity}],
            payment_token=token,
            idempotency_key=key,
        )
        request = OrderRequest(
            number=len(placed),
            key=key,
            customer=customer,
            lines=((sku, quantity),),
            payment_token=token,
        )
        placed.append(Ack(request=request, order_id=order.reference, attempts=1))
        lines = [PaidLine(sku=sku, quantity=quantity)]
        if charge:
            payment_charge(
                order_id=order.pk,
                amount=order.total,
                currency=order.currency,
                token=token,
                lines=lines,
            )
        return order, lines

    def complete(order: Order, lines: list[PaidLine]) -> None:
        order_mark_paid(order_id=order.pk, amount=order.total)
        stock_reserve(order_id=order.pk, lines=lines)
        order_mark_stock_reserved(order_id=order.pk)
        shipment = shipment_schedule(order_id=order.pk, lines=lines)
        order_complete(
            order_id=order.pk, carrier=shipment.carrier, tracking_number=shipment.tracking_number
        )
        stock_fulfil(order_id=order.pk)

    completed, lines = place(2, "tok_visa")
    complete(completed, lines)

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

    early, _ = place(1, "tok_visa", sku="PEN", charge=False)
    cancels.append(customer_cancel(early))
    mid, lines = place(2, "tok_visa", sku="PEN")
    order_mark_paid(order_id=mid.pk, amount=mid.total)
    stock_reserve(order_id=mid.pk, lines=lines)
    cancels.append(customer_cancel(mid))
    late, lines = place(3, "tok_visa", sku="PEN")
    complete(late, lines)
    cancels.append(customer_cancel(late))
    Delivery.objects.update(status=Delivery.Status.DONE)
    return World(acks=placed, cancels=cancels)


@pytest.fixture
def acks(world) -> list[Ack]:
    return world.acks


def violations(world: World, *, at_rest: bool = True) -> list[str]:
    report = Report()
    check(
        report=report,
        acks=world.acks,
        initial_stock=INITIAL,
        at_rest=at_rest,
        cancels=world.cancels,
    )
    return report.violations


def test_the_world_at_rest_passes(world):
    assert violations(world) == []
    report = Report()
    check(report=report, acks=world.acks, initial_stock=INITIAL, cancels=world.cancels)
    rows = {label.strip(): value for label, value, _ in report.rows}
    assert rows["202 cancels by the order's status then"] == ("completed x1, paid x1, placed x1")
    assert sorted(Order.objects.values_list("status", "cancellation_reason")) == sorted(
        [
            ("completed", None),
            ("cancelled", "payment_failed"),
            ("cancelled", "out_of_stock"),
            ("cancelled", CANCELLED),
            ("cancelled", CANCELLED),
            ("cancelled", CANCELLED),
        ]
    )
    # The three cancels: voided before the charge, refunded mid-saga, refunded after completion.
    assert sorted(Payment.objects.values_list("status", flat=True)) == sorted(
        ["captured", "failed", "refunded", "voided", "refunded", "refunded"]
    )
    # The one cancelled after it completed has both end events, as docs/architecture.md says.
    late = Order.objects.get(reference=world.acks[LATE].order_id)
    assert sorted(
        Event.objects.filter(
            type__in=("orders.OrderCompleted", "orders.OrderCancelled"), payload__order_id=late.pk
        ).values_list("type", flat=True)
    ) == ["orders.OrderCancelled", "orders.OrderCompleted"]


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
def test_each_broken_invariant_is_a_violation(world, breakage, expected):
    breakage(world.acks)
    found = violations(world)
    assert any(expected in violation for violation in found), found


def order_of(world: World, which: int) -> Order:
    return Order.objects.get(reference=world.acks[which].order_id)


def leave_cancellation_pending(world):
    Order.objects.filter(pk=order_of(world, COMPLETED).pk).update(
        cancellation_requested_at=timezone.now(), cancellation_requested_reason=CANCELLED
    )


def cancel_for_another_reason_than_requested(world):
    Order.objects.filter(pk=order_of(world, MID).pk).update(
        cancellation_requested_reason="timed_out"
    )


def cancel_for_an_unexpected_reason(world):
    Order.objects.filter(pk=order_of(world, MID).pk).update(
        cancellation_reason="timed_out", cancellation_requested_reason="timed_out"
    )


def keep_the_capture(world):
    Refund.objects.filter(payment__order_id=order_of(world, MID).pk).delete()
    Payment.objects.filter(order_id=order_of(world, MID).pk).update(status="captured")


def refund_in_part(world):
    Refund.objects.filter(payment__order_id=order_of(world, LATE).pk).update(amount=Decimal("1.00"))


def refund_the_completed(world):
    payment = Payment.objects.get(order_id=order_of(world, COMPLETED).pk)
    Refund.objects.create(
        payment=payment, amount=payment.amount, currency=payment.currency, gateway_refund_id="r"
    )


def hold_the_stock(world):
    StockReservation.objects.filter(order_id=order_of(world, MID).pk).update(status="reserved")


def keep_units_reserved(world):
    StockLevel.objects.filter(product__sku="PEN").update(reserved=1)


def ship_the_cancelled(world):
    Shipment.objects.filter(order_id=order_of(world, LATE).pk).update(status="scheduled")


def lose_the_shipment(world):
    Shipment.objects.filter(order_id=order_of(world, COMPLETED).pk).delete()


def complete_the_cancelled(world):
    # Both end events, the order completed: not the documented cancellation after completion.
    Order.objects.filter(pk=order_of(world, LATE).pk).update(
        status="completed", cancellation_reason=None, cancellation_requested_reason=None
    )


def complete_after_cancelling(world):
    # OrderCancelled, then an OrderCompleted: the order moved again after it was cancelled.
    order = order_of(world, EARLY)
    event = Event.objects.get(type="orders.OrderCancelled", payload__order_id=order.pk)
    event.pk, event.event_id, event.type = None, uuid.uuid4(), "orders.OrderCompleted"
    event.save()


def cancel_twice(world):
    order = order_of(world, MID)
    event = Event.objects.get(type="orders.OrderCancelled", payload__order_id=order.pk)
    event.pk, event.event_id = None, uuid.uuid4()
    event.save()


def accept_a_cancel_not_honoured(world):
    world.cancels.append(
        CancelAnswer(order_id=world.acks[COMPLETED].order_id, status=202, attempts=1)
    )


def cancel_unasked(world):
    world.cancels.pop()


def answer_a_cancel_with_500(world):
    world.cancels[0] = replace(world.cancels[0], status=500)


def refuse_a_cancel_before_the_handover(world):
    world.cancels.append(
        CancelAnswer(order_id=world.acks[COMPLETED].order_id, status=409, attempts=1)
    )


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (leave_cancellation_pending, "cancellation request pending"),
        (cancel_for_another_reason_than_requested, "cancellation fields"),
        (cancel_for_an_unexpected_reason, "cancelled for another reason"),
        (keep_the_capture, "cancelled, capture kept"),
        (refund_in_part, "cancelled, capture kept"),
        (refund_the_completed, "completed, yet refunded"),
        (hold_the_stock, "stock held, cancelled"),
        (keep_units_reserved, "stock: PEN"),
        (ship_the_cancelled, "cancelled, shipment live"),
        (lose_the_shipment, "completed, no live shipment"),
        (complete_the_cancelled, "completed and cancelled"),
        (complete_after_cancelling, "completed and cancelled"),
        (cancel_twice, "events published twice"),
        (accept_a_cancel_not_honoured, "202 cancel, not cancelled"),
        (cancel_unasked, "customer_cancelled, never asked"),
        (answer_a_cancel_with_500, "cancel answers"),
        (refuse_a_cancel_before_the_handover, "cancel refused before the handover"),
    ],
)
def test_each_broken_cancellation_invariant_is_a_violation(world, breakage, expected):
    assert violations(world) == []
    breakage(world)
    found = violations(world)
    assert any(expected in violation for violation in found), found


def test_not_at_rest_only_safety_is_judged(world):
    # An order still on its way is no violation while the system is not quiet...
    leave_order_paid(world.acks)
    leave_delivery_pending(world.acks)
    leave_cancellation_pending(world)
    assert violations(world, at_rest=False) == []
    # ...but a double capture is, at any moment.
    capture_twice(world.acks)
    assert any("max captures per order" in v for v in violations(world, at_rest=False))


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
        self.paths = []

    def request(self, method, path, **kwargs):
        self.paths.append(path)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer, {"id": "ORD-7"} if answer < 300 else {"status": answer}


def test_the_load_cancels_its_share_after_the_202_and_retries_until_answered():
    customer = Customer(user_id=1, username="c", token="t")
    request = OrderRequest(
        number=0,
        key="k",
        customer=customer,
        lines=(("MUG", 1),),
        payment_token="tok_visa",
        cancel_after=0.0,
    )
    http = ScriptedHttp(202, 503, ConnectionResetError(), 202)
    load = Load(http=http, plan=[request], seconds=0, threads=1, stop=threading.Event())
    load.run()
    assert load.acks[0].order_id == "ORD-7"
    cancel = load.cancels[0]
    assert (cancel.order_id, cancel.status, cancel.attempts) == ("ORD-7", 202, 3)
    assert http.paths == ["/api/orders/"] + ["/api/orders/ORD-7/cancel/"] * 3


def test_the_plan_cancels_about_the_share_asked_for_within_two_seconds():
    customers = [Customer(user_id=1, username="c", token="t")]
    plan = requests_plan(
        count=1000,
        customers=customers,
        skus=["MUG", "PEN", "TEE"],
        decline_share=0.15,
        cancel_share=0.2,
        rng=random.Random(7),
        run_id="r",
    )
    delays = [r.cancel_after for r in plan if r.cancel_after is not None]
    assert 150 < len(delays) < 250
    assert all(0 <= delay <= 2 for delay in delays)


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
