"""The simulated gateway: outcomes by token, idempotent ids, transient failures, configuration."""

import re
import threading
from decimal import Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured

from payments.gateway import (
    GatewayError,
    GatewayUnavailable,
    PaymentGateway,
    SimulatedGateway,
    gateway_get,
)


def charge(token="tok_visa", key="order-1-charge", amount="19.00"):
    return SimulatedGateway().charge(
        amount=Decimal(amount), currency="EUR", token=token, idempotency_key=key
    )


def refund(charge_id, key="order-1-refund", amount="19.00"):
    return SimulatedGateway().refund(
        charge_id=charge_id, amount=Decimal(amount), currency="EUR", idempotency_key=key
    )


@pytest.mark.parametrize("token", ["tok_visa", "tok_mastercard", "tok_amex"])
def test_test_cards_are_captured(token):
    result = charge(token)
    assert result.captured
    assert result.status == "captured"
    assert re.fullmatch(r"ch_sim_[0-9a-f]{24}", result.charge_id)
    assert result.decline_code == ""


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("tok_chargeDeclined", "card_declined"),
        ("tok_chargeDeclinedInsufficientFunds", "insufficient_funds"),
        ("tok_chargeDeclinedExpiredCard", "expired_card"),
        ("tok_unheard_of", "invalid_token"),
        ("", "invalid_token"),
    ],
)
def test_declined_cards_say_why_and_capture_nothing(token, code):
    result = charge(token)
    assert not result.captured
    assert (result.status, result.decline_code, result.charge_id) == ("declined", code, "")


def test_the_same_idempotency_key_gives_the_same_charge_and_refund():
    first, again, other = charge(key="k1"), charge(key="k1"), charge(key="k2")
    assert first.charge_id == again.charge_id != other.charge_id
    assert refund(first.charge_id, key="r1") == refund(first.charge_id, key="r1")
    assert (
        refund(first.charge_id, key="r1").refund_id != refund(first.charge_id, key="r2").refund_id
    )


def test_a_refund_echoes_its_amount_and_has_a_refund_id():
    result = refund(charge().charge_id, amount="7.25")
    assert re.fullmatch(r"re_sim_[0-9a-f]{24}", result.refund_id)
    assert (result.amount, result.currency) == (Decimal("7.25"), "EUR")


def test_refunding_an_unknown_charge_is_refused():
    with pytest.raises(GatewayError, match="no such charge: 'ch_elsewhere'"):
        refund("ch_elsewhere")


def test_a_negative_amount_is_refused():
    with pytest.raises(GatewayError, match="non-negative"):
        charge(amount="-1.00")


def test_timeouts_per_charge_fail_the_first_calls_of_each_key_then_succeed(settings):
    settings.PAYMENTS = {**settings.PAYMENTS, "TIMEOUTS_PER_CHARGE": 2}
    for _ in range(2):
        with pytest.raises(GatewayUnavailable, match="timeout"):
            charge(key="a")
    assert charge(key="a").captured
    assert charge(key="a").captured
    with pytest.raises(GatewayUnavailable):
        charge(key="b")  # every key has its own count
    with pytest.raises(GatewayUnavailable):
        refund(charge(key="a").charge_id, key="a-refund")


def test_timeouts_per_charge_are_counted_exactly_across_threads(settings):
    settings.PAYMENTS = {**settings.PAYMENTS, "TIMEOUTS_PER_CHARGE": 5}
    start = threading.Barrier(20)
    outcomes = []

    def call():
        start.wait()
        try:
            charge(key="busy")
            outcomes.append("captured")
        except GatewayUnavailable:
            outcomes.append("timeout")

    threads = [threading.Thread(target=call) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(outcomes) == ["captured"] * 15 + ["timeout"] * 5


def test_timeout_rate_is_the_share_of_calls_that_time_out(settings):
    settings.PAYMENTS = {**settings.PAYMENTS, "TIMEOUT_RATE": 1.0}
    with pytest.raises(GatewayUnavailable, match="^timeout$"):
        charge()
    settings.PAYMENTS = {**settings.PAYMENTS, "TIMEOUT_RATE": 0.5}
    outcomes = set()
    for n in range(200):
        try:
            charge(key=f"k{n}")
            outcomes.add("captured")
        except GatewayUnavailable:
            outcomes.add("timeout")
    assert outcomes == {"captured", "timeout"}


def test_a_timeout_rate_out_of_range_is_a_configuration_error(settings):
    settings.PAYMENTS = {**settings.PAYMENTS, "TIMEOUT_RATE": 2}
    with pytest.raises(ImproperlyConfigured, match="between 0 and 1"):
        charge()


class AlwaysDeclines(SimulatedGateway):
    def charge(self, **kwargs):
        return super().charge(**{**kwargs, "token": "tok_chargeDeclined"})


def test_gateway_get_returns_the_configured_gateway(settings):
    assert isinstance(gateway_get(), SimulatedGateway)
    settings.PAYMENTS = {**settings.PAYMENTS, "GATEWAY": f"{__name__}.AlwaysDeclines"}
    gateway = gateway_get()
    assert isinstance(gateway, AlwaysDeclines)
    assert isinstance(gateway, PaymentGateway)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("payments.gateway.NoSuchGateway", "cannot be imported"),
        ("decimal.Decimal", "is not a subclass of payments.gateway.PaymentGateway"),
    ],
)
def test_a_misconfigured_gateway_is_a_clear_error(settings, path, message):
    settings.PAYMENTS = {**settings.PAYMENTS, "GATEWAY": path}
    with pytest.raises(ImproperlyConfigured, match=message):
        gateway_get()
