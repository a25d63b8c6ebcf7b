"""The payment gateway adapter: what payments needs from a card processor, and a simulated one.

The saga calls the gateway from inside a handler's transaction. That transaction can roll back
after the gateway has captured (a crash, a lost connection, a timeout we saw but the gateway did
not), and the delivery is then retried. Every call therefore carries an idempotency key derived
from the order, and a gateway must answer a repeated key with the result of the first call:
that, not our database, is what keeps a payment from being captured twice.
"""

from __future__ import annotations

import hashlib
import random
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string


class GatewayError(Exception):
    """The gateway refused a request it will keep refusing (an unknown charge, a bad amount)."""


class GatewayUnavailable(GatewayError):
    """A transient failure (timeout, connection reset): the same call may succeed later.

    The outcome of the call is unknown, so it must be repeated with the same idempotency key.
    """


@dataclass(frozen=True, kw_only=True)
class ChargeResult:
    status: Literal["captured", "declined"]
    charge_id: str = ""  # set when captured
    decline_code: str = ""  # set when declined, e.g. "card_declined"

    @property
    def captured(self) -> bool:
        return self.status == "captured"


@dataclass(frozen=True, kw_only=True)
class RefundResult:
    refund_id: str
    amount: Decimal
    currency: str


class PaymentGateway(ABC):
    """What the payments app needs from a card processor.

    Both calls must be idempotent per ``idempotency_key``: the same key returns the same
    charge or refund, never a second one. Raise ``GatewayUnavailable`` for transient failures.
    """

    @abstractmethod
    def charge(
        self, *, amount: Decimal, currency: str, token: str, idempotency_key: str
    ) -> ChargeResult: ...

    @abstractmethod
    def refund(
        self, *, charge_id: str, amount: Decimal, currency: str, idempotency_key: str
    ) -> RefundResult: ...


# Test card tokens, as Stripe names them.
CAPTURED_TOKENS = frozenset({"tok_visa", "tok_mastercard", "tok_amex"})
DECLINED_TOKENS = {
    "tok_chargeDeclined": "card_declined",
    "tok_chargeDeclinedInsufficientFunds": "insufficient_funds",
    "tok_chargeDeclinedExpiredCard": "expired_card",
}
INVALID_TOKEN = "invalid_token"

# Calls seen per idempotency key, for TIMEOUTS_PER_CHARGE. Bounded so that a long-running
# worker does not grow it forever; the oldest keys are forgotten first.
_calls_lock = threading.Lock()
_calls: OrderedDict[str, int] = OrderedDict()
_CALLS_KEPT = 100_000


class SimulatedGateway(PaymentGateway):
    """A gateway with no network, for development and tests.

    Outcomes follow the token: ``tok_visa``, ``tok_mastercard`` and ``tok_amex`` are captured;
    ``tok_chargeDeclined`` is declined with ``card_declined``,
    ``tok_chargeDeclinedInsufficientFunds`` with ``insufficient_funds``,
    ``tok_chargeDeclinedExpiredCard`` with ``expired_card``; any other token with
    ``invalid_token``.

    Ids are derived from the idempotency key (``ch_sim_<sha256(key)[:24]>``,
    ``re_sim_<...>``), just as a real gateway returns the same charge for the same key: a
    retried or duplicated handler gets the charge it already made, never a second one.

    Transient failures, read from ``settings.PAYMENTS`` at each call:

    - ``TIMEOUT_RATE`` (0..1): the share of calls that raise ``GatewayUnavailable("timeout")``;
    - ``TIMEOUTS_PER_CHARGE`` = N: the first N calls for each idempotency key raise it
      (counted in this process's memory, across threads).
    """

    def charge(
        self, *, amount: Decimal, currency: str, token: str, idempotency_key: str
    ) -> ChargeResult:
        _check_request(amount=amount, currency=currency, idempotency_key=idempotency_key)
        _maybe_time_out(idempotency_key)
        if token in CAPTURED_TOKENS:
            return ChargeResult(status="captured", charge_id=_sim_id("ch", idempotency_key))
        return ChargeResult(
            status="declined", decline_code=DECLINED_TOKENS.get(token, INVALID_TOKEN)
        )

    def refund(
        self, *, charge_id: str, amount: Decimal, currency: str, idempotency_key: str
    ) -> RefundResult:
        _check_request(amount=amount, currency=currency, idempotency_key=idempotency_key)
        if not charge_id.startswith("ch_sim_"):
            raise GatewayError(f"no such charge: {charge_id!r}")
        _maybe_time_out(idempotency_key)
        return RefundResult(
            refund_id=_sim_id("re", idempotency_key), amount=amount, currency=currency
        )


def simulated_gateway_reset() -> None:
    """Forget the calls counted for TIMEOUTS_PER_CHARGE (tests start from a clean slate)."""
    with _calls_lock:
        _calls.clear()


def gateway_get() -> PaymentGateway:
    """The gateway that ``settings.PAYMENTS["GATEWAY"]`` names (a dotted path to a class)."""
    path = settings.PAYMENTS["GATEWAY"]
    try:
        gateway_class = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f'PAYMENTS["GATEWAY"] = {path!r} cannot be imported: {exc}'
        ) from exc
    if not (isinstance(gateway_class, type) and issubclass(gateway_class, PaymentGateway)):
        raise ImproperlyConfigured(
            f'PAYMENTS["GATEWAY"] = {path!r} is not a subclass of payments.gateway.PaymentGateway'
        )
    return gateway_class()


def _sim_id(prefix: str, idempotency_key: str) -> str:
    return f"{prefix}_sim_{hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]}"


def _check_request(*, amount: Decimal, currency: str, idempotency_key: str) -> None:
    if not isinstance(amount, Decimal) or not amount.is_finite() or amount < 0:
        raise GatewayError(f"amount must be a non-negative Decimal, got {amount!r}")
    if not currency:
        raise GatewayError("currency is required")
    if not idempotency_key:
        raise GatewayError("idempotency_key is required")


def _maybe_time_out(idempotency_key: str) -> None:
    conf = settings.PAYMENTS
    timeouts_per_key = int(conf.get("TIMEOUTS_PER_CHARGE", 0))
    if timeouts_per_key > 0:
        with _calls_lock:
            calls = _calls.pop(idempotency_key, 0) + 1
            _calls[idempotency_key] = calls
            if len(_calls) > _CALLS_KEPT:
                _calls.popitem(last=False)
        if calls <= timeouts_per_key:
            raise GatewayUnavailable(
                f"timeout (simulated: call {calls} of the first {timeouts_per_key} "
                f"for {idempotency_key!r})"
            )
    rate = float(conf.get("TIMEOUT_RATE", 0.0))
    if not 0.0 <= rate <= 1.0:
        raise ImproperlyConfigured(f'PAYMENTS["TIMEOUT_RATE"] must be between 0 and 1, got {rate}')
    if rate and random.random() < rate:
        raise GatewayUnavailable("timeout")
