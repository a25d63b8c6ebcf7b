"""After the storm: wait until the system is quiet, then check every invariant.

Runs in this process through Django's ORM on the run's database (set up by ``run``), and asks
the HTTP API about a sample of orders and the catalogue. Import after ``django.setup()``.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import DatabaseError, connection
from django.db.models import Sum

from chaos.clock import say
from chaos.load import (
    CANCEL_ACCEPTED,
    CANCEL_REFUSED,
    DECLINED_TOKEN,
    Ack,
    CancelAnswer,
    Http,
    LoadStats,
)
from inventory.models import StockLevel, StockReservation
from orders.models import Order, OrderLine
from outbox.models import Delivery, Event
from payments.models import Payment, Refund
from shipping.models import Shipment

TERMINAL = (Order.Status.COMPLETED, Order.Status.CANCELLED)
PAYMENT_FAILED = Order.CancellationReason.PAYMENT_FAILED
OUT_OF_STOCK = Order.CancellationReason.OUT_OF_STOCK
CUSTOMER_CANCELLED = Order.CancellationReason.CUSTOMER_CANCELLED
# The saga's own failures: an order that already ended so keeps its reason when cancelled.
FAILED_REASONS = (PAYMENT_FAILED, OUT_OF_STOCK)
# Reasons a cancellation request carries (the operator's and the deadline's do not happen in a
# chaos run: no operator, deadlines of 30 minutes).
REQUESTED_REASONS = (
    CUSTOMER_CANCELLED,
    Order.CancellationReason.OPERATOR_CANCELLED,
    Order.CancellationReason.TIMED_OUT,
)
LIVE_SHIPMENT = (
    Shipment.Status.SCHEDULED,
    Shipment.Status.HANDED_TO_CARRIER,
    Shipment.Status.DELIVERED,
)
PAST_RETURN = (Shipment.Status.HANDED_TO_CARRIER, Shipment.Status.DELIVERED)


@dataclass
class Quiet:
    reached: bool
    at: float  # time.monotonic() when it was reached (or given up)
    state: dict


def _quiet_state(acked_ids: set[str]) -> dict:
    return {
        "orders not completed/cancelled": Order.objects.exclude(status__in=TERMINAL).count(),
        "acknowledged orders not found": len(acked_ids)
        - Order.objects.filter(reference__in=acked_ids).count(),
        "pending deliveries": Delivery.objects.filter(status=Delivery.Status.PENDING).count(),
    }


def wait_quiet(
    acked_ids: set[str],
    *,
    timeout: float,
    describe: Callable[[], str] | None = None,
    state: Callable[[], dict] | None = None,
    settle: float = 0.0,
) -> Quiet:
    """Until every order is completed or cancelled, every acknowledged order exists, and no
    delivery is pending (dead letters do not count: they wait for an operator).

    ``state``: more to wait for (a count per item, all 0 when quiet), such as the split
    deployment's other databases and its bus; ``settle``: it must stay quiet this long (a count
    that is only sampled now and then, such as a broker's queue lengths), and it was reached
    when it first got quiet."""
    deadline = time.monotonic() + timeout
    next_report = time.monotonic() + 10
    current: dict = {}
    quiet_since: float | None = None
    while True:
        try:
            current = _quiet_state(acked_ids)
            if state is not None:
                current.update(state())
        except DatabaseError as exc:  # PostgreSQL restarting: ask again
            current = {"database": str(exc).strip().splitlines()[0]}
            connection.close()
        if any(current.values()):
            quiet_since = None
        else:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= settle:
                return Quiet(reached=True, at=quiet_since, state=current)
        if time.monotonic() > deadline:
            return Quiet(reached=False, at=time.monotonic(), state=current)
        if time.monotonic() > next_report:
            next_report += 10
            extra = f", {describe()}" if describe else ""
            say("waiting for quiet: " + ", ".join(f"{k} {v}" for k, v in current.items()) + extra)
        time.sleep(0.5)


@dataclass
class Report:
    rows: list[tuple[str, object, bool | None]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row(self, label: str, value: object, ok: bool | None = None) -> None:
        """A line of the summary; ok=False makes it a violation."""
        self.rows.append((label, value, ok))
        if ok is False:
            self.violations.append(f"{label}: {value}")

    def must(self, condition: bool, violation: str) -> None:
        if not condition:
            self.violations.append(violation)


def _examples(items, limit: int = 5) -> str:
    items = sorted(items)
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(str(item) for item in items[:limit]) + more


@dataclass
class World:
    """What the checks read once: the acknowledged requests, the customers' cancels and every
    order, by id."""

    acks: list[Ack]
    orders: dict[int, Order]
    acked_ids: Counter
    terminal: set[int]
    at_rest: bool
    cancels: dict[int, CancelAnswer] = field(default_factory=dict)  # by order id, once sent

    @classmethod
    def read(cls, acks: list[Ack], at_rest: bool, cancels: list[CancelAnswer] = ()) -> World:
        orders = {order.pk: order for order in Order.objects.all()}
        # The API acknowledged each order by its public reference; the checks join on the
        # primary key, as the other apps' rows do (an unknown reference stays as it is: lost).
        pk_of = {order.reference: pk for pk, order in orders.items()}
        acks = [
            dataclasses.replace(ack, order_id=pk_of.get(ack.order_id, ack.order_id)) for ack in acks
        ]
        return cls(
            acks=acks,
            orders=orders,
            acked_ids=Counter(ack.order_id for ack in acks),
            terminal={pk for pk, order in orders.items() if order.status in TERMINAL},
            at_rest=at_rest,
            cancels={pk_of.get(c.order_id, c.order_id): c for c in cancels},
        )

    def rest(self, ok: bool) -> bool | None:
        """A completion verdict: judged only at rest."""
        return ok if self.at_rest else None

    def cancelled(self, *reasons: str) -> set[int]:
        """The cancelled orders (with one of ``reasons``, if given)."""
        return {
            pk
            for pk in self.terminal
            if self.orders[pk].status == Order.Status.CANCELLED
            and (not reasons or self.orders[pk].cancellation_reason in reasons)
        }

    @property
    def completed(self) -> set[int]:
        return {pk for pk in self.terminal if self.orders[pk].status == Order.Status.COMPLETED}

    @property
    def cancel_accepted(self) -> set[int]:
        """The orders whose cancel got a 202."""
        return {pk for pk, c in self.cancels.items() if c.status == CANCEL_ACCEPTED}


def check(
    *,
    report: Report,
    acks: list[Ack],
    initial_stock: dict[str, int],
    at_rest: bool = True,
    cancels: list[CancelAnswer] = (),
    outboxes: dict[str, str] | None = None,
) -> None:
    """Every invariant of the saga, from each app's own tables, as steps in the summary's order.

    Safety (nothing lost, nothing twice, stock never negative) must hold at any moment.
    Completion (every order ended, refunds match, stock adds up, no delivery pending) only
    holds at rest: when the run did not get quiet, those rows are shown but not judged, and the
    one violation is that it did not get quiet.

    ``outboxes``: {database alias: its name in the summary} of every outbox to check (the split
    deployment's services each have one); default: the one database.
    """
    world = World.read(acks, at_rest, cancels)
    _check_acknowledged(report, world)
    _check_outcomes(report, world)
    _check_cancellations(report, world)
    _check_money(report, world)
    _check_event_store(report, world)
    _check_stock(report, world, initial_stock)
    _check_reservations(report, world)
    _check_shipments(report, world)
    for using, name in (outboxes or {"default": ""}).items():
        _check_outbox(report, world, using=using, name=name)


def _check_acknowledged(report: Report, w: World) -> None:
    """Acknowledged orders: all there, once, as they were asked for."""
    acks, orders, acked_ids = w.acks, w.orders, w.acked_ids
    report.row("orders placed (2xx answers, client side)", len(acks))
    report.row("orders found (database)", len(orders))
    lost = set(acked_ids) - set(orders)
    report.row("lost orders (acknowledged, not found)", len(lost), not lost)
    report.must(not lost, f"lost orders: {_examples(lost)}")
    twice = [order_id for order_id, n in acked_ids.items() if n > 1]
    report.row("one order acknowledged for two requests", len(twice), not twice)
    mismatched = [
        ack.order_id
        for ack in acks
        if ack.order_id in orders
        and (
            orders[ack.order_id].idempotency_key != ack.request.key
            or orders[ack.order_id].customer_id != ack.request.customer.user_id
        )
    ]
    report.row("acknowledged ids of another request", len(mismatched), not mismatched)
    keyless = [pk for pk, order in orders.items() if order.idempotency_key is None]
    report.row("orders without an idempotency key", len(keyless), not keyless)
    unacknowledged = set(orders) - set(acked_ids)
    if unacknowledged:
        report.notes.append(
            f"{len(unacknowledged)} orders exist whose request never got a 2xx (given up): "
            f"{_examples(unacknowledged)}"
        )


def _check_outcomes(report: Report, w: World) -> None:
    """Where every order ended, and why."""
    acks, orders, terminal = w.acks, w.orders, w.terminal
    statuses = Counter(order.status for order in orders.values())
    reasons = Counter(orders[pk].cancellation_reason for pk in w.cancelled())
    report.row("completed", statuses[Order.Status.COMPLETED])
    report.row("cancelled: payment_failed", reasons[PAYMENT_FAILED])
    report.row("cancelled: out_of_stock", reasons[OUT_OF_STOCK])
    report.row("cancelled: customer_cancelled", reasons[CUSTOMER_CANCELLED])
    expected = (*FAILED_REASONS, CUSTOMER_CANCELLED)
    odd = sorted(pk for pk in w.cancelled() if orders[pk].cancellation_reason not in expected)
    report.row("cancelled: other reason (or none)", len(odd), not odd)
    report.must(not odd, f"cancelled for another reason: {_examples(odd)}")
    stuck = sorted(set(orders) - terminal)
    report.row("stuck in between (placed/paid/stock_reserved)", len(stuck), w.rest(not stuck))
    if w.at_rest:
        report.must(not stuck, f"stuck orders: {_examples(stuck)}")
    # A declined card ends payment_failed, or customer_cancelled when its customer cancelled
    # before payments heard of the order; payment_failed is a declined card's only.
    wrong_outcome = []
    for ack in acks:
        if ack.order_id not in terminal:
            continue
        reason = orders[ack.order_id].cancellation_reason
        declined = ack.request.payment_token == DECLINED_TOKEN
        cancel_sent = ack.order_id in w.cancels
        if declined != (reason == PAYMENT_FAILED) and not (
            declined and cancel_sent and reason == CUSTOMER_CANCELLED
        ):
            wrong_outcome.append(ack.order_id)
    report.row(
        "outcome contradicts the card (declined <=> payment_failed, unless cancelled first)",
        len(wrong_outcome),
        not wrong_outcome,
    )


def _check_cancellations(report: Report, w: World) -> None:
    """The customers' cancels: answered as documented, and each 202 ends the order cancelled."""
    orders, cancels = w.orders, w.cancels
    answers = Counter(cancel.status for cancel in cancels.values())
    report.row(
        "cancels sent / answered 202 / 409 / no answer",
        f"{len(cancels)} / {answers[CANCEL_ACCEPTED]} / {answers[CANCEL_REFUSED]} / "
        f"{answers[None]}",
    )
    # Where the saga was when the cancel was accepted: the order as the 202 showed it.
    when = Counter(
        (c.body.get("status") if isinstance(c.body, dict) else None) or "?"
        for c in cancels.values()
        if c.status == CANCEL_ACCEPTED
    )
    report.row(
        "  202 cancels by the order's status then",
        ", ".join(f"{status} x{n}" for status, n in sorted(when.items())) or "none",
    )
    undocumented = sorted(
        f"{pk}: {c.status} {str(c.body)[:80]}"
        for pk, c in cancels.items()
        if c.status not in (CANCEL_ACCEPTED, CANCEL_REFUSED, None)
    )
    report.row("cancels answered otherwise than 202/409", len(undocumented), not undocumented)
    report.must(not undocumented, f"cancel answers: {_examples(undocumented)}")
    # 409 is the answer once the parcel is with the carrier, and only then.
    refused_early = sorted(
        pk
        for pk, c in cancels.items()
        if c.status == CANCEL_REFUSED
        and (pk not in orders or orders[pk].shipment_status not in PAST_RETURN)
    )
    report.row("cancels refused (409) before the handover", len(refused_early), not refused_early)
    report.must(
        not refused_early, f"cancel refused before the handover: {_examples(refused_early)}"
    )
    # A 202 ends the order cancelled, customer_cancelled unless it had already failed.
    not_cancelled = sorted(
        pk
        for pk in w.cancel_accepted
        if pk not in orders
        or orders[pk].status != Order.Status.CANCELLED
        or orders[pk].cancellation_reason not in (CUSTOMER_CANCELLED, *FAILED_REASONS)
    )
    report.row(
        "cancels accepted (202) whose order did not end cancelled (customer_cancelled, or the "
        "saga's own failure)",
        len(not_cancelled),
        w.rest(not not_cancelled),
    )
    if w.at_rest:
        report.must(not not_cancelled, f"202 cancel, not cancelled: {_examples(not_cancelled)}")
    unasked = sorted(pk for pk in w.cancelled(CUSTOMER_CANCELLED) if pk not in cancels)
    report.row("customer_cancelled without a cancel sent", len(unasked), not unasked)
    report.must(not unasked, f"customer_cancelled, never asked: {_examples(unasked)}")
    # cancellation_requested_at: a request not answered yet. Cancelled clears it and keeps the
    # request's reason as the order's; a refusal clears both; at rest none is left pending.
    pending = sorted(pk for pk, o in orders.items() if o.cancellation_requested_at is not None)
    report.row("cancellation requests left pending", len(pending), w.rest(not pending))
    if w.at_rest:
        report.must(not pending, f"cancellation request pending: {_examples(pending)}")
    inconsistent = sorted(
        pk
        for pk, o in orders.items()
        if (o.status == Order.Status.CANCELLED and o.cancellation_requested_at is not None)
        or (
            o.status == Order.Status.CANCELLED
            and o.cancellation_requested_reason is not None
            and o.cancellation_requested_reason != o.cancellation_reason
        )
        or (o.status != Order.Status.CANCELLED and o.cancellation_reason is not None)
        or (o.status == Order.Status.CANCELLED and o.cancellation_reason is None)
    )
    report.row("cancellation fields contradict the status", len(inconsistent), not inconsistent)
    report.must(not inconsistent, f"cancellation fields: {_examples(inconsistent)}")


def _check_money(report: Report, w: World) -> None:
    """Money: one capture at most; a cancelled order keeps no capture (one full refund each),
    a completed one is never refunded."""
    orders, terminal, rest = w.orders, w.terminal, w.rest
    captures = _per_order("payments.PaymentCompleted")
    refund_events = _per_order("payments.PaymentRefunded")
    payments = {payment.order_id: payment for payment in Payment.objects.all()}
    refunds = {
        refund.payment.order_id: refund for refund in Refund.objects.select_related("payment")
    }
    most = max(captures.values(), default=0)
    report.row("max captures per order", most, most <= 1)
    refunded_twice = [pk for pk in set(refund_events) if refund_events[pk] > 1]
    report.row("orders refunded twice", len(refunded_twice), not refunded_twice)
    report.must(not refunded_twice, f"refunded twice: {_examples(refunded_twice)}")
    # Captured: the gateway charged it (a charge id), whether PaymentCompleted was published or
    # the capture came late, for an order voided meanwhile, and was refunded at once.
    captured = {pk for pk, payment in payments.items() if payment.gateway_charge_id}
    unrefunded = {
        pk
        for pk in w.cancelled() & captured
        if pk not in refunds or refunds[pk].amount != payments[pk].amount
    }
    refunded_completed = set(refunds) & w.completed
    uncaptured_refunds = set(refunds) - captured
    report.row(
        "refunds (= captures of cancelled orders, in full)",
        len(refunds),
        not uncaptured_refunds and rest(not unrefunded and not refunded_completed),
    )
    if w.at_rest:
        report.must(not unrefunded, f"cancelled, capture kept: {_examples(unrefunded)}")
        report.must(
            not refunded_completed, f"completed, yet refunded: {_examples(refunded_completed)}"
        )
    report.must(not uncaptured_refunds, f"refund of no capture: {_examples(uncaptured_refunds)}")
    # (payment status, captures) each outcome allows.
    expected_payment = {
        Order.Status.COMPLETED: {(Payment.Status.CAPTURED, 1)},
        PAYMENT_FAILED: {(Payment.Status.FAILED, 0)},
        OUT_OF_STOCK: {(Payment.Status.REFUNDED, 1)},
        # Voided before the charge, declined meanwhile, captured and refunded, or captured
        # late for a voided order and refunded at once (no PaymentCompleted then).
        CUSTOMER_CANCELLED: {
            (Payment.Status.VOIDED, 0),
            (Payment.Status.FAILED, 0),
            (Payment.Status.REFUNDED, 1),
            (Payment.Status.REFUNDED, 0),
        },
    }
    payment_wrong = []
    for pk in terminal:
        order = orders[pk]
        payment = payments.get(pk)
        found = (payment.status if payment else None, captures[pk])
        if found not in expected_payment.get(order.cancellation_reason or order.status, ()):
            payment_wrong.append(pk)
    report.row(
        "ended orders whose payment does not match", len(payment_wrong), rest(not payment_wrong)
    )
    if w.at_rest:
        report.must(not payment_wrong, f"payment mismatch: {_examples(payment_wrong)}")


def _check_event_store(report: Report, w: World) -> None:
    """The event store: each saga event once per order, every end announced once; an order
    both completed and cancelled only as docs/architecture.md allows it (cancelled after it
    completed, before the handover: OrderCompleted, then OrderCancelled, status cancelled)."""
    orders, terminal = w.orders, w.terminal
    per_order = Counter(
        Event.objects.filter(payload__has_key="order_id").values_list("type", "payload__order_id")
    )
    repeated = sorted(f"{kind} of {order_id}" for (kind, order_id), n in per_order.items() if n > 1)
    report.row("saga events published twice for one order", len(repeated), not repeated)
    report.must(not repeated, f"events published twice: {_examples(repeated)}")
    end_event = {Order.Status.COMPLETED: "orders.OrderCompleted"}
    unannounced = [
        pk
        for pk, order in orders.items()
        if per_order[("orders.OrderPlaced", pk)] != 1
        or (
            pk in terminal
            and per_order[(end_event.get(order.status, "orders.OrderCancelled"), pk)] != 1
        )
    ]
    report.row("orders without their OrderPlaced / end event", len(unannounced), not unannounced)
    report.must(not unannounced, f"end not announced: {_examples(unannounced)}")
    both = {
        pk
        for pk in orders
        if per_order[("orders.OrderCompleted", pk)] and per_order[("orders.OrderCancelled", pk)]
    }
    first = {}
    for kind, order_id in (
        Event.objects.filter(
            type__in=("orders.OrderCompleted", "orders.OrderCancelled"),
            payload__order_id__in=list(both),
        )
        .order_by("pk")
        .values_list("type", "payload__order_id")
    ):
        first.setdefault(order_id, kind)
    undocumented = sorted(
        pk
        for pk in both
        if first.get(pk) != "orders.OrderCompleted"
        or orders[pk].status != Order.Status.CANCELLED
        or orders[pk].cancellation_reason not in REQUESTED_REASONS
    )
    report.row(
        "orders both completed and cancelled (cancelled after completion / otherwise)",
        f"{len(both) - len(undocumented)} / {len(undocumented)}",
        not undocumented,
    )
    report.must(not undocumented, f"completed and cancelled: {_examples(undocumented)}")


def _check_stock(report: Report, w: World, initial_stock: dict[str, int]) -> None:
    """Stock: never negative; at rest on hand = initial - completed, nothing reserved."""
    at_rest, rest = w.at_rest, w.rest
    taken = dict(
        OrderLine.objects.filter(order__status=Order.Status.COMPLETED)
        .values("sku")
        .annotate(units=Sum("quantity"))
        .values_list("sku", "units")
    )
    levels = {level.product.sku: level for level in StockLevel.objects.select_related("product")}
    negative, unbalanced = [], []
    for sku, initial in sorted(initial_stock.items()):
        level = levels.get(sku)
        if level is None or level.on_hand < 0 or level.reserved > level.on_hand:
            negative.append(f"{sku}: {level.on_hand if level else 'missing'}")
            continue
        expected = initial - taken.get(sku, 0)
        if level.on_hand != expected or level.reserved:
            unbalanced.append(
                f"{sku}: on hand {level.on_hand} (expected {expected}), reserved {level.reserved}"
            )
    report.row("stock below zero (or reserved > on hand)", len(negative), not negative)
    report.row(
        "stock on hand = initial - completed, none reserved",
        " ".join(f"{sku}={levels[sku].on_hand}" for sku in sorted(levels)),
        rest(not unbalanced),
    )
    for line in negative + (unbalanced if at_rest else []):
        report.violations.append(f"stock: {line}")
    if not any(level.on_hand == 0 for level in levels.values()):
        report.notes.append("no product ran out: the out-of-stock path was not exercised")


def _check_reservations(report: Report, w: World) -> None:
    """Reservations: none left open at rest, none held (reserved or fulfilled) for a cancelled
    order."""
    statuses = dict(StockReservation.objects.values_list("order_id", "status"))
    held = (StockReservation.Status.RESERVED, StockReservation.Status.FULFILLED)
    open_reservations = sum(1 for s in statuses.values() if s == StockReservation.Status.RESERVED)
    report.row("reservations left open", open_reservations, w.rest(open_reservations == 0))
    held_cancelled = sorted(pk for pk in w.cancelled() if statuses.get(pk) in held)
    report.row(
        "reservations held for a cancelled order", len(held_cancelled), w.rest(not held_cancelled)
    )
    if w.at_rest:
        report.must(not held_cancelled, f"stock held, cancelled: {_examples(held_cancelled)}")


def _check_shipments(report: Report, w: World) -> None:
    """Shipments: exactly one live shipment per completed order; a cancelled one has none, or a
    cancelled one."""
    statuses = dict(Shipment.objects.values_list("order_id", "status"))
    live = {pk for pk, status in statuses.items() if status in LIVE_SHIPMENT}
    completed = w.completed
    unshipped = completed - live
    shipped_cancelled = live & w.cancelled()
    stray = live - set(w.orders)
    report.row(
        "live shipments (one per completed order)",
        len(live),
        not stray and w.rest(not unshipped and not shipped_cancelled and live == completed),
    )
    report.must(not stray, f"shipment of no order: {_examples(stray)}")
    if w.at_rest:
        report.must(not unshipped, f"completed, no live shipment: {_examples(unshipped)}")
        report.must(
            not shipped_cancelled, f"cancelled, shipment live: {_examples(shipped_cancelled)}"
        )


def _check_outbox(report: Report, w: World, *, using: str = "default", name: str = "") -> None:
    """The outbox (of the database ``using``, called ``name`` in the rows): nothing pending at
    rest, no dead letter; retries shown by error."""
    rest = w.rest
    of = f" ({name})" if name else ""
    deliveries = Delivery.objects.using(using)
    by_status = Counter(deliveries.values_list("status", flat=True))
    pending, dead = by_status[Delivery.Status.PENDING], by_status[Delivery.Status.DEAD]
    report.row(
        f"deliveries done / pending / dead{of}",
        f"{by_status[Delivery.Status.DONE]} / {pending} / {dead}",
        dead == 0 and rest(pending == 0),
    )
    for letter in deliveries.filter(status=Delivery.Status.DEAD)[:5]:
        report.violations.append(
            f"dead letter{of} {letter.pk} ({letter.subscriber}, {letter.attempts} attempts): "
            f"{letter.last_error.splitlines()[0] if letter.last_error else ''}"
        )
    retried = deliveries.filter(attempts__gt=1)
    errors = Counter(
        (error.splitlines()[0][:70] if error else "(no error recorded)")
        for error in retried.values_list("last_error", flat=True)
    )
    report.row(f"deliveries that needed more than one attempt{of}", retried.count())
    for error, n in errors.most_common(4):
        report.rows.append((f"  {n} x", error, None))


def check_counting(
    *,
    report: Report,
    at_rest: bool = True,
    using: str = "default",
    apps: tuple[str, ...] | None = None,
    name: str = "",
) -> None:
    """Exactly-once measured: each event in the store has exactly one counted effect per
    counting subscriber of its type (chaos/countingapp). Twice is a violation at any moment;
    none only at rest (the delivery may still be on its way).

    ``using``: the database (alias) to read, called ``name`` in the rows; ``apps``: only the
    events these apps publish (a service of the split deployment counts its own apps' events;
    the others it stores are those it received)."""
    from outbox.registry import subscribers_all

    counting = {
        s.name: s.event_type
        for s in subscribers_all()
        if s.name.startswith("chaos.") and (apps is None or s.event_type.split(".")[0] in apps)
    }
    if not counting:  # a check that cannot fail proves nothing
        report.row("counting subscribers", "none installed (SHOP_CHAOS_APPS unset?)", False)
        return
    from chaos.countingapp.models import CountedRun  # installed, so importable

    by_type: dict[str, list[str]] = {}
    for subscriber, event_type in counting.items():
        by_type.setdefault(event_type, []).append(subscriber)
    expected = {
        (str(event_id), subscriber)
        for event_id, event_type in Event.objects.using(using).values_list("event_id", "type")
        for subscriber in by_type.get(event_type, ())
    }
    counted = Counter(
        (str(event_id), subscriber)
        for event_id, subscriber in CountedRun.objects.using(using).values_list(
            "event_id", "subscriber"
        )
    )
    counting_verdict(report=report, expected=expected, counted=counted, at_rest=at_rest, name=name)


def counting_verdict(
    *,
    report: Report,
    expected: set[tuple[str, str]],
    counted: Counter,
    at_rest: bool = True,
    name: str = "",
) -> None:
    """The rows for ``check_counting``: ``expected`` (event id, subscriber) pairs against the
    ``counted`` runs of each pair (in the database called ``name``)."""
    of = f" ({name})" if name else ""
    twice = sorted(
        f"{name} x{n} for {event_id}" for (event_id, name), n in counted.items() if n > 1
    )
    missing = sorted(f"{name} for {event_id}" for event_id, name in expected - set(counted))
    stray = sorted(f"{name} for {event_id}" for event_id, name in set(counted) - expected)
    once = sum(1 for pair in expected if counted[pair] == 1)
    subscribers = len({name.rsplit(".", 2)[0] for _, name in expected})
    report.row(
        f"counted effects{of}: (event, counting subscriber) pairs exactly once ({subscribers} "
        "subscribers)",
        f"{once} of {len(expected)}",
        not twice and not stray and rest_or_none(not missing, at_rest),
    )
    report.row("  counted twice or more (a handler's effect repeated)", len(twice), not twice)
    report.row("  never counted", len(missing), rest_or_none(not missing, at_rest))
    report.must(not twice, f"effects counted twice{of}: {_examples(twice)}")
    report.must(not stray, f"effects counted for no stored event{of}: {_examples(stray)}")
    if at_rest:
        report.must(not missing, f"effects never counted{of}: {_examples(missing)}")


def hung_during(
    sent: list[float],
    windows: list[tuple[float, float]],
    timeout: float,
    excused: list[tuple[float, float]] = (),
) -> list[float]:
    """The timed-out requests (sent at these moments) that were in flight during one of
    ``windows`` and during none of ``excused``."""

    def during(t: float, spans) -> bool:
        return any(t < end and t + timeout > start for start, end in spans)

    return [t for t in sent if during(t, windows) and not during(t, excused)]


def check_http(
    *,
    report: Report,
    stats: LoadStats,
    timeout: float,
    database_faults: list[tuple[float, float]] = (),
    web_restarts: list[tuple[float, float]] = (),
) -> None:
    """While the database is away the web answers 503 with Retry-After, fast: never a 500
    (nor any other 5xx), never a request left hanging until the client gives up on it.

    ``database_faults``, ``web_restarts``: (start, end) of each, in time.monotonic(), a web
    restart ending when the new web process answers. A request that hung while no database
    fault was under way, or while the web process was restarting (loading the app on a starved
    machine, requests waiting in its listen queue), is reported, not judged: it is not the
    database's doing."""
    report.row(
        "  answers by status",
        ", ".join(f"{status} x{n}" for status, n in sorted(stats.statuses.items())) or "none",
    )
    report.row("  503 answers (the database away: Retry-After)", stats.statuses[503])
    crashes = sum(n for status, n in stats.statuses.items() if status >= 500 and status != 503)
    report.row("  other 5xx answers (a 500 is a crash)", crashes, crashes == 0)
    report.row(
        f"  requests that hung past the client's {timeout:.0f}s timeout", len(stats.timeouts)
    )
    during = hung_during(stats.timeouts, database_faults, timeout, web_restarts)
    report.row(
        "    of them in flight during a database fault (no web restart)", len(during), not during
    )


def rest_or_none(ok: bool, at_rest: bool) -> bool | None:
    """A completion verdict: judged at rest only."""
    return ok if at_rest else None


def _per_order(event_type: str) -> Counter:
    """How many events of this type each order has in the event store."""
    return Counter(
        Event.objects.filter(type=event_type).values_list("payload__order_id", flat=True)
    )


def check_api(
    *, report: Report, acks: list[Ack], http: Http, sample_size: int, rng: random.Random
) -> None:
    """The API tells a sample of customers what the database says, and the catalogue's
    availability is the stock at rest."""
    orders = Order.objects.in_bulk([ack.order_id for ack in acks], field_name="reference")
    levels = {level.product.sku: level for level in StockLevel.objects.select_related("product")}
    sample = rng.sample(acks, min(sample_size, len(acks)))
    disagree = []
    for ack in sample:
        try:
            status, body = http.request(
                "GET", f"/api/orders/{ack.order_id}/", token=ack.request.customer.token
            )
        except OSError as exc:
            disagree.append(f"{ack.order_id}: {exc}")
            continue
        order = orders.get(ack.order_id)
        if (
            status != 200
            or order is None
            or not isinstance(body, dict)
            or body.get("status") != order.status
            or body.get("cancellation_reason") != order.cancellation_reason
        ):
            disagree.append(f"{ack.order_id}: {status} {str(body)[:120]}")
    status, products = http.request("GET", "/api/products/")
    if status != 200 or not isinstance(products, list):
        disagree.append(f"GET /api/products/: {status}")
    else:
        for product in products:
            level = levels.get(product["sku"])
            if level is None or product["available"] != level.on_hand - level.reserved:
                disagree.append(f"product {product['sku']}: available {product['available']}")
    report.row(
        f"API disagrees with the database (of {len(sample)} orders + catalogue)",
        len(disagree),
        not disagree,
    )
    for line in disagree[:5]:
        report.violations.append(f"API: {line}")
