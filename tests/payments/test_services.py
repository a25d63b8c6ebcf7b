"""payment_charge and payment_refund: outcomes, events, idempotency, bad input."""

import threading
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, close_old_connections, connection, transaction

from orders.events import PlacedLine
from outbox.models import Event
from payments.errors import PaymentNotRefundable
from payments.events import PaidLine
from payments.gateway import GatewayUnavailable
from payments.models import Payment, Refund
from payments.services import payment_charge, payment_refund

pytestmark = pytest.mark.django_db

LINES = (
    PlacedLine(sku="MUG", quantity=2, unit_price="9.50"),
    PlacedLine(sku="TEE", quantity=1, unit_price="15.00"),
)


def charged(order_id=1, token="tok_visa", amount="34.00", lines=LINES, currency="EUR"):
    return payment_charge(
        order_id=order_id, amount=Decimal(amount), currency=currency, token=token, lines=lines
    )


def published(type_: str) -> list[dict]:
    return list(Event.objects.filter(type=type_).values_list("payload", flat=True))


# --- charging ---------------------------------------------------------------------------------


def test_a_captured_charge_is_recorded_and_announced_with_its_lines(gateway):
    payment = charged()
    payment.refresh_from_db()
    assert payment.status == Payment.Status.CAPTURED
    assert (payment.order_id, payment.amount, payment.currency) == (1, Decimal("34.00"), "EUR")
    assert payment.gateway_charge_id.startswith("ch_sim_")
    assert payment.decline_code == ""
    assert payment.idempotency_key == "order-1-charge"
    [(kwargs, _)] = gateway.calls_of("charge")
    assert kwargs["idempotency_key"] == "order-1-charge"
    assert published("payments.PaymentCompleted") == [
        {
            "payment_id": payment.pk,
            "order_id": 1,
            "amount": "34.00",
            "currency": "EUR",
            "lines": [{"sku": "MUG", "quantity": 2}, {"sku": "TEE", "quantity": 1}],
        }
    ]
    assert published("payments.PaymentFailed") == []


def test_lines_may_be_any_objects_with_sku_and_quantity():
    charged(lines=[PaidLine(sku="MUG", quantity=3)])
    assert published("payments.PaymentCompleted")[0]["lines"] == [{"sku": "MUG", "quantity": 3}]


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("tok_chargeDeclined", "card_declined"),
        ("tok_chargeDeclinedInsufficientFunds", "insufficient_funds"),
        ("tok_chargeDeclinedExpiredCard", "expired_card"),
        ("tok_nonsense", "invalid_token"),
    ],
)
def test_a_declined_charge_is_a_failed_payment_with_no_capture(token, code):
    payment = charged(token=token)
    payment.refresh_from_db()
    assert (payment.status, payment.decline_code, payment.gateway_charge_id) == ("failed", code, "")
    assert published("payments.PaymentFailed") == [
        {"payment_id": payment.pk, "order_id": 1, "reason": code}
    ]
    assert published("payments.PaymentCompleted") == []


@pytest.mark.parametrize("token", ["tok_visa", "tok_chargeDeclined"])
def test_charging_an_order_again_returns_its_payment_and_does_nothing_else(gateway, token):
    first = charged(token=token)
    again = charged(token="tok_visa", amount="99.00")
    assert again.pk == first.pk
    assert again.status == first.status
    assert Payment.objects.count() == 1
    assert len(gateway.calls_of("charge")) == 1
    assert Event.objects.count() == 1


def test_a_gateway_timeout_propagates_and_writes_nothing(settings):
    settings.PAYMENTS = {**settings.PAYMENTS, "TIMEOUTS_PER_CHARGE": 1}
    with pytest.raises(GatewayUnavailable):
        charged()
    assert not Payment.objects.exists()
    assert not Event.objects.exists()
    assert charged().status == "captured"  # the retry


def test_a_capture_whose_transaction_rolled_back_is_not_captured_again_on_retry(gateway):
    class Crash(Exception):
        pass

    with pytest.raises(Crash), transaction.atomic():
        charged()
        raise Crash  # e.g. the worker dies before the delivery is marked done
    assert not Payment.objects.exists()

    payment = charged()  # the retried delivery
    charges = gateway.calls_of("charge")
    assert len(charges) == 2
    # The gateway answered the repeated idempotency key with the charge it already made.
    assert {result.charge_id for _, result in charges} == {payment.gateway_charge_id}
    assert len(published("payments.PaymentCompleted")) == 1


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"order_id": 0}, "order_id"),
        ({"order_id": "7"}, "order_id"),
        ({"amount": Decimal("-0.01")}, "amount"),
        ({"amount": Decimal("1.001")}, "amount"),
        ({"amount": Decimal("NaN")}, "amount"),
        ({"amount": Decimal("1E+10")}, "amount"),
        ({"amount": 19.0}, "amount"),
        ({"currency": "eur"}, "currency"),
        ({"currency": "EURO"}, "currency"),
        ({"currency": ""}, "currency"),
        ({"lines": ()}, "lines"),
        ({"lines": (PaidLine(sku="", quantity=1),)}, "lines"),
        ({"lines": (PaidLine(sku="MUG", quantity=0),)}, "lines"),
        ({"lines": ({"sku": "MUG", "quantity": 1},)}, "lines"),
    ],
)
def test_bad_input_is_refused_clearly_and_changes_nothing(gateway, changes, field):
    kwargs = {
        "order_id": 1,
        "amount": Decimal("19.00"),
        "currency": "EUR",
        "token": "tok_visa",
        "lines": LINES,
        **changes,
    }
    with pytest.raises(ValidationError) as raised:
        payment_charge(**kwargs)
    assert list(raised.value.message_dict) == [field]
    assert not Payment.objects.exists()
    assert not Event.objects.exists()
    assert gateway.calls == []


def test_a_zero_amount_order_is_captured():
    assert charged(amount="0.00").status == "captured"


@pytest.mark.django_db(transaction=True)
def test_concurrent_charges_of_one_order_make_one_payment(gateway):
    gateway.delay = 0.3  # both are inside the gateway call at once
    start = threading.Barrier(2)
    payments, errors = [], []

    def work():
        try:
            start.wait()
            payments.append(charged().pk)
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(payments) == 2
    assert len(set(payments)) == 1
    assert Payment.objects.count() == 1
    assert len(published("payments.PaymentCompleted")) == 1
    assert len({result.charge_id for _, result in gateway.calls_of("charge")}) == 1


# --- refunding --------------------------------------------------------------------------------


def test_a_captured_payment_is_refunded_in_full_and_announced(gateway):
    payment = charged()
    refund = payment_refund(order_id=1)
    payment.refresh_from_db()
    assert payment.status == Payment.Status.REFUNDED
    assert payment.gateway_charge_id  # the capture is still on record
    assert (refund.payment_id, refund.amount, refund.currency) == (
        payment.pk,
        Decimal("34.00"),
        "EUR",
    )
    assert refund.gateway_refund_id.startswith("re_sim_")
    [(kwargs, _)] = gateway.calls_of("refund")
    assert kwargs == {
        "charge_id": payment.gateway_charge_id,
        "amount": Decimal("34.00"),
        "currency": "EUR",
        "idempotency_key": "order-1-refund",
    }
    assert published("payments.PaymentRefunded") == [
        {
            "payment_id": payment.pk,
            "refund_id": refund.pk,
            "order_id": 1,
            "amount": "34.00",
            "currency": "EUR",
        }
    ]


def test_refunding_again_returns_the_refund_and_does_nothing_else(gateway):
    charged()
    first = payment_refund(order_id=1)
    again = payment_refund(order_id=1)
    assert again.pk == first.pk
    assert Refund.objects.count() == 1
    assert len(gateway.calls_of("refund")) == 1
    assert len(published("payments.PaymentRefunded")) == 1


def test_refunding_an_order_with_no_payment_is_a_clear_error(gateway):
    with pytest.raises(PaymentNotRefundable, match="order 404 has no payment to refund"):
        payment_refund(order_id=404)
    assert gateway.calls == []


def test_refunding_a_failed_payment_is_a_clear_error_and_changes_nothing(gateway):
    payment = charged(token="tok_chargeDeclined")
    with pytest.raises(PaymentNotRefundable, match="is failed, not captured"):
        payment_refund(order_id=1)
    payment.refresh_from_db()
    assert payment.status == "failed"
    assert not Refund.objects.exists()
    assert published("payments.PaymentRefunded") == []
    assert gateway.calls_of("refund") == []


def test_a_refund_timeout_propagates_and_leaves_the_payment_captured(settings):
    charged()
    settings.PAYMENTS = {**settings.PAYMENTS, "TIMEOUTS_PER_CHARGE": 1}
    with pytest.raises(GatewayUnavailable):
        payment_refund(order_id=1)
    assert Payment.objects.get(order_id=1).status == "captured"
    assert not Refund.objects.exists()
    assert payment_refund(order_id=1).payment.status == "refunded"  # the retry


@pytest.mark.django_db(transaction=True)
def test_concurrent_refunds_of_one_order_refund_once(gateway):
    charged()
    gateway.delay = 0.3
    start = threading.Barrier(2)
    refunds, errors = [], []

    def work():
        try:
            start.wait()
            refunds.append(payment_refund(order_id=1).pk)
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(refunds) == 2
    assert len(set(refunds)) == 1
    assert Refund.objects.count() == 1
    assert len(gateway.calls_of("refund")) == 1
    assert len(published("payments.PaymentRefunded")) == 1


# --- the database's own guard rails -----------------------------------------------------------


def test_the_database_refuses_a_second_refund_of_a_payment():
    charged()
    refund = payment_refund(order_id=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        Refund.objects.create(
            payment=refund.payment, amount=Decimal("1"), currency="EUR", gateway_refund_id="x"
        )


def test_the_database_refuses_a_failed_payment_with_a_capture():
    with pytest.raises(IntegrityError), transaction.atomic():
        Payment.objects.create(
            order_id=1,
            amount=Decimal("1"),
            currency="EUR",
            status="failed",
            gateway_charge_id="ch_x",
            idempotency_key="k",
        )


def test_the_database_refuses_a_negative_amount():
    with pytest.raises(IntegrityError), transaction.atomic():
        Payment.objects.create(
            order_id=1,
            amount=Decimal("-1"),
            currency="EUR",
            status="captured",
            gateway_charge_id="ch_x",
            idempotency_key="k",
        )


@pytest.mark.parametrize(
    ("changes", "errors"),
    [
        ({"lines": ()}, {"lines": ["an order has at least one line"]}),
        (
            {"lines": (PaidLine(sku="MUG", quantity=0),)},
            {"lines": ["line 0: quantity must be a positive integer, got 0"]},
        ),
        (
            {"lines": (PaidLine(sku="", quantity=1),)},
            {"lines": ["line 0: sku must be a non-empty string"]},
        ),
        (
            {"currency": "eur"},
            {"currency": ["must be a 3-letter ISO code such as 'EUR', got 'eur'"]},
        ),
    ],
)
def test_bad_input_says_what_is_wrong_with_it(gateway, changes, errors):
    kwargs = {"order_id": 1, "amount": Decimal("19.00"), "currency": "EUR", "lines": LINES}
    with pytest.raises(ValidationError) as raised:
        payment_charge(**{**kwargs, "token": "tok_visa", **changes})
    assert raised.value.message_dict == errors
    assert gateway.calls == []


def test_the_largest_amount_the_column_holds_is_charged(gateway):
    """The limit is inclusive: 9,999,999,999.99 fits DecimalField(max_digits=12) and is charged
    (a `>=` in the check would refuse the largest amount the database can store)."""
    payment = charged(amount="9999999999.99")
    assert (payment.status, payment.amount) == ("captured", Decimal("9999999999.99"))
