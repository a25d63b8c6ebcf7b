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
from chaos.load import DECLINED_TOKEN, Ack, Http, LoadStats
from inventory.models import StockLevel, StockReservation
from orders.models import Order, OrderLine
from outbox.models import Delivery, Event
from payments.models import Payment, Refund
from shipping.models import Shipment

TERMINAL = (Order.Status.COMPLETED, Order.Status.CANCELLED)
PAYMENT_FAILED = Order.CancellationReason.PAYMENT_FAILED
OUT_OF_STOCK = Order.CancellationReason.OUT_OF_STOCK


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
    acked_ids: set[str], *, timeout: float, describe: Callable[[], str] | None = None
) -> Quiet:
    """Until every order is completed or cancelled, every acknowledged order exists, and no
    delivery is pending (dead letters do not count: they wait for an operator)."""
    deadline = time.monotonic() + timeout
    next_report = time.monotonic() + 10
    state: dict = {}
    while True:
        try:
            state = _quiet_state(acked_ids)
        except DatabaseError as exc:  # PostgreSQL restarting: ask again
            state = {"database": str(exc).strip().splitlines()[0]}
            connection.close()
        else:
            if not any(state.values()):
                return Quiet(reached=True, at=time.monotonic(), state=state)
        if time.monotonic() > deadline:
            return Quiet(reached=False, at=time.monotonic(), state=state)
        if time.monotonic() > next_report:
            next_report += 10
            extra = f", {describe()}" if describe else ""
            say("waiting for quiet: " + ", ".join(f"{k} {v}" for k, v in state.items()) + extra)
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
    """What the checks read once: the acknowledged requests and every order, by id."""

    acks: list[Ack]
    orders: dict[int, Order]
    acked_ids: Counter
    terminal: set[int]
    at_rest: bool

    @classmethod
    def read(cls, acks: list[Ack], at_rest: bool) -> World:
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
        )

    def rest(self, ok: bool) -> bool | None:
        """A completion verdict: judged only at rest."""
        return ok if self.at_rest else None


def check(
    *, report: Report, acks: list[Ack], initial_stock: dict[str, int], at_rest: bool = True
) -> None:
    """Every invariant of the saga, from each app's own tables.

    Safety (nothing lost, nothing twice, stock never negative) must hold at any moment.
    Completion (every order ended, refunds match, stock adds up, no delivery pending) only
    holds at rest: when the run did not get quiet, those rows are shown but not judged, and the
    one violation is that it did not get quiet.
    """
    world = World.read(acks, at_rest)
    _check_acknowledged(report, world)
    _check_outcomes(report, world)
    _check_money(report, world)
    _check_event_store(report, world)
    _check_stock(report, world, initial_stock)
    _check_outbox(report, world)


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
    """Where every order ended."""
    acks, orders, terminal = w.acks, w.orders, w.terminal
    at_rest, rest = w.at_rest, w.rest
    statuses = Counter(order.status for order in orders.values())
    reasons = Counter(orders[pk].cancellation_reason for pk in terminal)
    report.row("completed", statuses[Order.Status.COMPLETED])
    report.row("cancelled: payment_failed", reasons[PAYMENT_FAILED])
    report.row("cancelled: out_of_stock", reasons[OUT_OF_STOCK])
    odd_reasons = sum(
        n
        for reason, n in reasons.items()
        if reason is not None and reason not in (PAYMENT_FAILED, OUT_OF_STOCK)
    )
    report.row("cancelled: other reason", odd_reasons, odd_reasons == 0)
    stuck = sorted(set(orders) - terminal)
    report.row("stuck in between (placed/paid/stock_reserved)", len(stuck), rest(not stuck))
    if at_rest:
        report.must(not stuck, f"stuck orders: {_examples(stuck)}")
    wrong_outcome = [
        ack.order_id
        for ack in acks
        if ack.order_id in terminal
        and (ack.request.payment_token == DECLINED_TOKEN)
        != (orders[ack.order_id].cancellation_reason == PAYMENT_FAILED)
    ]
    report.row(
        "outcome contradicts the card (declined <=> payment_failed)",
        len(wrong_outcome),
        not wrong_outcome,
    )


def _check_money(report: Report, w: World) -> None:
    """Money: one capture at most, a refund exactly for each out-of-stock order."""
    orders, terminal, rest = w.orders, w.terminal, w.rest
    captures = _per_order("payments.PaymentCompleted")
    refund_events = _per_order("payments.PaymentRefunded")
    payments = {payment.order_id: payment for payment in Payment.objects.all()}
    refunds = Counter(Refund.objects.values_list("payment__order_id", flat=True))
    most = max(captures.values(), default=0)
    report.row("max captures per order", most, most <= 1)
    refunded_twice = [
        pk for pk in set(refunds) | set(refund_events) if refunds[pk] > 1 or refund_events[pk] > 1
    ]
    report.row("orders refunded twice", len(refunded_twice), not refunded_twice)
    out_of_stock = {pk for pk in terminal if orders[pk].cancellation_reason == OUT_OF_STOCK}
    unrefunded = out_of_stock - set(refunds)
    refunded_otherwise = {pk for pk in refunds if pk in terminal} - out_of_stock
    report.row(
        "refunds (= out-of-stock cancellations)",
        sum(refunds.values()),
        not unrefunded and not refunded_otherwise and rest(set(refunds) == out_of_stock),
    )
    report.must(not unrefunded, f"out_of_stock, not refunded: {_examples(unrefunded)}")
    report.must(
        not refunded_otherwise, f"refunded, not out_of_stock: {_examples(refunded_otherwise)}"
    )
    expected_payment = {
        Order.Status.COMPLETED: (Payment.Status.CAPTURED, 1),
        PAYMENT_FAILED: (Payment.Status.FAILED, 0),
        OUT_OF_STOCK: (Payment.Status.REFUNDED, 1),
    }
    payment_wrong = []
    for pk in terminal:
        order = orders[pk]
        payment = payments.get(pk)
        found = (payment.status if payment else None, captures[pk])
        if found != expected_payment.get(order.cancellation_reason or order.status):
            payment_wrong.append(pk)
    report.row("ended orders whose payment does not match", len(payment_wrong), not payment_wrong)
    report.must(not payment_wrong, f"payment mismatch: {_examples(payment_wrong)}")


def _check_event_store(report: Report, w: World) -> None:
    """The event store: each saga event once per order, every end announced once."""
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


def _check_stock(report: Report, w: World, initial_stock: dict[str, int]) -> None:
    """Stock: never negative; at rest on hand = initial - completed, nothing reserved."""
    orders, terminal, at_rest, rest = w.orders, w.terminal, w.at_rest, w.rest
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
    open_reservations = StockReservation.objects.filter(
        status=StockReservation.Status.RESERVED
    ).count()
    report.row("reservations left open", open_reservations, rest(open_reservations == 0))
    shipments = Counter(Shipment.objects.values_list("order_id", flat=True))
    completed = {pk for pk in terminal if orders[pk].status == Order.Status.COMPLETED}
    report.row(
        "shipments (one per completed order)",
        sum(shipments.values()),
        completed <= set(shipments)
        and all(n == 1 for n in shipments.values())
        and rest(set(shipments) == completed),
    )


def _check_outbox(report: Report, w: World) -> None:
    """The outbox: nothing pending at rest, no dead letter; retries shown by error."""
    rest = w.rest
    by_status = Counter(Delivery.objects.values_list("status", flat=True))
    pending, dead = by_status[Delivery.Status.PENDING], by_status[Delivery.Status.DEAD]
    report.row(
        "deliveries done / pending / dead",
        f"{by_status[Delivery.Status.DONE]} / {pending} / {dead}",
        dead == 0 and rest(pending == 0),
    )
    for letter in Delivery.objects.filter(status=Delivery.Status.DEAD)[:5]:
        report.violations.append(
            f"dead letter {letter.pk} ({letter.subscriber}, {letter.attempts} attempts): "
            f"{letter.last_error.splitlines()[0] if letter.last_error else ''}"
        )
    retried = Delivery.objects.filter(attempts__gt=1)
    errors = Counter(
        (error.splitlines()[0][:70] if error else "(no error recorded)")
        for error in retried.values_list("last_error", flat=True)
    )
    report.row("deliveries that needed more than one attempt", retried.count())
    for error, n in errors.most_common(4):
        report.rows.append((f"  {n} x", error, None))


def check_counting(*, report: Report, at_rest: bool = True) -> None:
    """Exactly-once measured: each event in the store has exactly one counted effect per
    counting subscriber of its type (chaos/countingapp). Twice is a violation at any moment;
    none only at rest (the delivery may still be on its way)."""
    from outbox.registry import subscribers_all

    counting = {s.name: s.event_type for s in subscribers_all() if s.name.startswith("chaos.")}
    if not counting:  # a check that cannot fail proves nothing
        report.row("counting subscribers", "none installed (SHOP_CHAOS_APPS unset?)", False)
        return
    from chaos.countingapp.models import CountedRun  # installed, so importable

    by_type: dict[str, list[str]] = {}
    for name, event_type in counting.items():
        by_type.setdefault(event_type, []).append(name)
    expected = {
        (str(event_id), name)
        for event_id, event_type in Event.objects.values_list("event_id", "type")
        for name in by_type.get(event_type, ())
    }
    counted = Counter(
        (str(event_id), name)
        for event_id, name in CountedRun.objects.values_list("event_id", "subscriber")
    )
    counting_verdict(report=report, expected=expected, counted=counted, at_rest=at_rest)


def counting_verdict(
    *, report: Report, expected: set[tuple[str, str]], counted: Counter, at_rest: bool = True
) -> None:
    """The rows for ``check_counting``: ``expected`` (event id, subscriber) pairs against the
    ``counted`` runs of each pair."""
    twice = sorted(
        f"{name} x{n} for {event_id}" for (event_id, name), n in counted.items() if n > 1
    )
    missing = sorted(f"{name} for {event_id}" for event_id, name in expected - set(counted))
    stray = sorted(f"{name} for {event_id}" for event_id, name in set(counted) - expected)
    once = sum(1 for pair in expected if counted[pair] == 1)
    subscribers = len({name.rsplit(".", 2)[0] for _, name in expected})
    report.row(
        f"counted effects: (event, counting subscriber) pairs exactly once ({subscribers} "
        "subscribers)",
        f"{once} of {len(expected)}",
        not twice and not stray and rest_or_none(not missing, at_rest),
    )
    report.row("  counted twice or more (a handler's effect repeated)", len(twice), not twice)
    report.row("  never counted", len(missing), rest_or_none(not missing, at_rest))
    report.must(not twice, f"effects counted twice: {_examples(twice)}")
    report.must(not stray, f"effects counted for no stored event: {_examples(stray)}")
    if at_rest:
        report.must(not missing, f"effects never counted: {_examples(missing)}")


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
