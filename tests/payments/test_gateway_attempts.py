"""Issue 16, suspected: a charge captured twice after the gateway forgets its idempotency key.

Each call that moves money is recorded (a GatewayAttempt) in a transaction that commits before
the call; a run that finds an attempt whose outcome is unknown asks the gateway instead of
calling again, and when the gateway has forgotten the key the attempt is ``unresolved`` until
an operator says what happened. These tests count what the simulated gateway made, through the
real delivery path, with each transaction committed as a worker's would be.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone

from outbox.handling import delivery_handle
from outbox.models import Delivery, Event
from outbox.replay import deliveries_replay
from payments.errors import PaymentAttemptNotResolvable
from payments.gateway import (
    GatewayUnavailable,
    SimulatedGateway,
    simulated_gateway_advance,
    simulated_gateway_made,
)
from payments.models import GatewayAttempt, Payment, Refund
from payments.services import payment_attempt_resolve
from tests.payments.test_handlers import CHARGE, REFUND, order_placed, stock_not_available
from tests.support import event_deliver

pytestmark = pytest.mark.django_db(transaction=True)

DAYS_LATER = dt.timedelta(days=3)


class FlakyGateway(SimulatedGateway):
    """The simulated gateway, with faults switched on and off by the test."""

    def __init__(self):
        self.lose_replies = False  # the call is made, its reply never reaches us
        self.crash_before_call = False  # the worker dies before the request leaves
        self.lookups_down = False

    def charge(self, **kwargs):
        if self.crash_before_call:
            raise RuntimeError("worker killed before the call")
        result = super().charge(**kwargs)
        if self.lose_replies:
            raise GatewayUnavailable("timeout (the charge was made)")
        return result

    def refund(self, **kwargs):
        result = super().refund(**kwargs)
        if self.lose_replies:
            raise GatewayUnavailable("timeout (the refund was made)")
        return result

    def charge_lookup(self, **kwargs):
        if self.lookups_down:
            raise GatewayUnavailable("timeout")
        return super().charge_lookup(**kwargs)

    def refund_lookup(self, **kwargs):
        if self.lookups_down:
            raise GatewayUnavailable("timeout")
        return super().refund_lookup(**kwargs)


@pytest.fixture
def flaky(monkeypatch, settings):
    settings.OUTBOX = {**settings.OUTBOX, "MAX_ATTEMPTS": 3}
    gateway = FlakyGateway()
    monkeypatch.setattr("payments.services.gateway_get", lambda: gateway)
    return gateway


def run_until_settled(delivery: Delivery) -> str:
    """Run the delivery again and again, each time once it is due, until it is done or dead."""
    for _ in range(10):
        Delivery.objects.filter(pk=delivery.pk).update(
            next_attempt_at=timezone.now(), backoff_until=None
        )
        outcome = delivery_handle(delivery_id=delivery.pk)
        if outcome in ("done", "dead"):
            return outcome
    raise AssertionError("the delivery neither finished nor died")


def days_pass() -> None:
    """The gateway forgets keys older than its retention; our rows age the same."""
    simulated_gateway_advance(DAYS_LATER.total_seconds())
    GatewayAttempt.objects.update(created_at=timezone.now() - DAYS_LATER)


def charges_made() -> list[str]:
    return [ref for key, ref, _ in simulated_gateway_made() if key.endswith("-charge")]


def refunds_made() -> list[str]:
    return [ref for key, ref, _ in simulated_gateway_made() if key.endswith("-refund")]


def published(type_: str) -> int:
    return Event.objects.filter(type=type_).count()


def test_a_lost_capture_dead_lettered_and_replayed_after_the_key_is_forgotten_is_not_charged_again(
    flaky,
):
    flaky.lose_replies = flaky.lookups_down = True
    assert event_deliver(order_placed(), subscriber=CHARGE) == "retry"
    delivery = Delivery.objects.get(subscriber=CHARGE)
    assert run_until_settled(delivery) == "dead"
    assert len(charges_made()) == 1
    assert GatewayAttempt.objects.get().state == "attempting"

    days_pass()
    flaky.lose_replies = flaky.lookups_down = False
    assert deliveries_replay(Delivery.objects.filter(pk=delivery.pk)) == 1
    assert run_until_settled(delivery) == "dead"

    assert len(charges_made()) == 1, "charged a second time"
    attempt = GatewayAttempt.objects.get()
    assert (attempt.kind, attempt.state) == ("charge", "unresolved")
    assert "does not know the key" in attempt.note
    delivery.refresh_from_db()
    assert "unresolved" in delivery.last_error
    assert "payments_attempt_resolve" in delivery.last_error
    assert not Payment.objects.exists()
    assert published("payments.PaymentCompleted") == published("payments.PaymentFailed") == 0


def unresolved_charge(flaky: FlakyGateway) -> Delivery:
    """A capture whose reply was lost, dead-lettered, replayed days later: its dead delivery."""
    flaky.lose_replies = flaky.lookups_down = True
    event_deliver(order_placed(), subscriber=CHARGE)
    delivery = Delivery.objects.get(subscriber=CHARGE)
    run_until_settled(delivery)
    days_pass()
    flaky.lose_replies = flaky.lookups_down = False
    deliveries_replay(Delivery.objects.filter(pk=delivery.pk))
    run_until_settled(delivery)
    return delivery


def test_an_operator_resolves_a_forgotten_capture_and_the_replay_completes_the_payment(flaky):
    delivery = unresolved_charge(flaky)
    [charge_id] = charges_made()

    call_command(
        "payments_attempt_resolve",
        "1",
        "--charge",
        "--reference",
        charge_id,
        "--note",
        "seen in the gateway's dashboard",
    )
    deliveries_replay(Delivery.objects.filter(pk=delivery.pk))
    assert run_until_settled(delivery) == "done"

    payment = Payment.objects.get()
    assert (payment.status, payment.gateway_charge_id) == ("captured", charge_id)
    assert published("payments.PaymentCompleted") == 1
    assert charges_made() == [charge_id]
    with pytest.raises(PaymentAttemptNotResolvable):
        payment_attempt_resolve(order_id=1, kind="charge", reference="", note="again")


def test_a_charge_not_made_by_the_operators_word_fails_the_payment_without_charging(flaky):
    delivery = unresolved_charge(flaky)
    payment_attempt_resolve(order_id=1, kind="charge", reference="", note="not in the dashboard")
    deliveries_replay(Delivery.objects.filter(pk=delivery.pk))
    assert run_until_settled(delivery) == "done"
    payment = Payment.objects.get()
    assert (payment.status, payment.decline_code) == ("failed", "not_charged")
    assert published("payments.PaymentFailed") == 1
    assert len(charges_made()) == 1


def test_a_lost_capture_retried_while_the_gateway_remembers_is_found_not_made_again(flaky):
    flaky.lose_replies = True
    assert event_deliver(order_placed(), subscriber=CHARGE) == "retry"
    flaky.lose_replies = False
    assert run_until_settled(Delivery.objects.get(subscriber=CHARGE)) == "done"

    [charge_id] = charges_made()
    assert Payment.objects.get().gateway_charge_id == charge_id
    assert published("payments.PaymentCompleted") == 1
    assert GatewayAttempt.objects.get().state == "succeeded"


def test_a_crash_between_the_attempt_record_and_the_call_is_reconciled_and_charged_once(flaky):
    flaky.crash_before_call = True
    assert event_deliver(order_placed(), subscriber=CHARGE) == "retry"
    attempt = GatewayAttempt.objects.get()
    assert (attempt.state, attempt.amount, attempt.idempotency_key) == (
        "attempting",
        Decimal("19.00"),
        "order-1-charge",
    )
    assert charges_made() == []

    flaky.crash_before_call = False
    assert run_until_settled(Delivery.objects.get(subscriber=CHARGE)) == "done"
    assert len(charges_made()) == 1
    assert Payment.objects.get().status == "captured"
    assert published("payments.PaymentCompleted") == 1
    attempt.refresh_from_db()
    assert (attempt.state, attempt.runs) == ("succeeded", 2)


def test_a_crash_before_the_call_days_ago_is_unresolved_not_charged(flaky):
    """Whether a call reached the gateway cannot be told once it forgets: never guess."""
    flaky.crash_before_call = True
    event_deliver(order_placed(), subscriber=CHARGE)
    days_pass()
    flaky.crash_before_call = False
    run_until_settled(Delivery.objects.get(subscriber=CHARGE))
    assert charges_made() == []
    assert GatewayAttempt.objects.get().state == "unresolved"


def test_a_lost_refund_replayed_after_the_key_is_forgotten_is_not_refunded_again(flaky):
    assert event_deliver(order_placed(), subscriber=CHARGE) == "done"
    flaky.lose_replies = flaky.lookups_down = True
    assert event_deliver(stock_not_available(), subscriber=REFUND) == "retry"
    delivery = Delivery.objects.get(subscriber=REFUND)
    assert run_until_settled(delivery) == "dead"
    days_pass()
    flaky.lose_replies = flaky.lookups_down = False
    deliveries_replay(Delivery.objects.filter(pk=delivery.pk))
    assert run_until_settled(delivery) == "dead"
    [refund_id] = refunds_made()
    assert GatewayAttempt.objects.get(kind="refund").state == "unresolved"
    assert not Refund.objects.exists()

    payment_attempt_resolve(order_id=1, kind="refund", reference=refund_id, note="dashboard")
    deliveries_replay(Delivery.objects.filter(pk=delivery.pk))
    assert run_until_settled(delivery) == "done"
    assert Refund.objects.get().gateway_refund_id == refund_id
    assert Payment.objects.get().status == "refunded"
    assert published("payments.PaymentRefunded") == 1
    assert refunds_made() == [refund_id]


def test_a_lost_refund_retried_while_the_gateway_remembers_is_found_not_made_again(flaky):
    event_deliver(order_placed(), subscriber=CHARGE)
    flaky.lose_replies = True
    assert event_deliver(stock_not_available(), subscriber=REFUND) == "retry"
    flaky.lose_replies = False
    assert run_until_settled(Delivery.objects.get(subscriber=REFUND)) == "done"
    assert len(refunds_made()) == 1
    assert published("payments.PaymentRefunded") == 1
