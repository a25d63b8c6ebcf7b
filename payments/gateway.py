"""The payment gateway adapter: what payments needs from a card processor, and a simulated one.

The saga calls the gateway from inside a handler's transaction. That transaction can roll back
after the gateway has captured (a crash, a lost connection, a timeout we saw but the gateway did
not), and the delivery is then retried. Every call therefore carries an idempotency key derived
from the order, and a gateway must answer a repeated key with the result of the first call:
that, not our database, alone keeps a payment from being captured twice while the gateway
remembers the key. Gateways forget keys (about a day for real ones), so payments also records
each attempt before the call and, when a run finds an attempt whose outcome it does not know,
asks the gateway (``charge_lookup``/``refund_lookup``) instead of calling again
(payments/services.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import threading
import time
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
    charge or refund, never a second one, for at least ``key_retention`` after its first use.
    The lookups answer what a key came to (None: the gateway does not know it, because no call
    with it reached the gateway, or because it has forgotten the key). Raise
    ``GatewayUnavailable`` for transient failures.
    """

    @property
    def key_retention(self) -> dt.timedelta:
        """How long the gateway remembers an idempotency key after its first use."""
        return dt.timedelta(hours=24)

    @abstractmethod
    def charge(
        self, *, amount: Decimal, currency: str, token: str, idempotency_key: str
    ) -> ChargeResult: ...

    @abstractmethod
    def refund(
        self, *, charge_id: str, amount: Decimal, currency: str, idempotency_key: str
    ) -> RefundResult: ...

    @abstractmethod
    def charge_lookup(self, *, idempotency_key: str) -> ChargeResult | None: ...

    @abstractmethod
    def refund_lookup(self, *, idempotency_key: str) -> RefundResult | None: ...


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

# What the simulated gateway remembers per idempotency key: when it was first used, and what it
# came to; and every charge and refund it made (a second one for a key it had forgotten shows
# here). Process memory: a restarted worker's gateway has forgotten every key.
_ledger: OrderedDict[str, tuple[float, ChargeResult | RefundResult]] = OrderedDict()
_made: list[tuple[str, str, Decimal]] = []  # (idempotency key, charge or refund id, amount)
_made_per_key: dict[str, int] = {}
_clock_offset = 0.0


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

    A key is remembered for ``settings.PAYMENTS["KEY_RETENTION_SECONDS"]`` (a day) after its
    first use, in this process's memory; a charge with a forgotten key is a new charge (its id
    gets a ``#n`` suffix in what is hashed), as a real gateway's would be.

    Transient failures, read from ``settings.PAYMENTS`` at each call:

    - ``TIMEOUT_RATE`` (0..1): the share of calls (lookups too) that raise
      ``GatewayUnavailable("timeout")``;
    - ``TIMEOUTS_PER_CHARGE`` = N: the first N charge or refund calls for each idempotency key
      raise it (counted in this process's memory, across threads).
    """

    @property
    def key_retention(self) -> dt.timedelta:
        return dt.timedelta(seconds=_key_retention_seconds())

    def charge(
        self, *, amount: Decimal, currency: str, token: str, idempotency_key: str
    ) -> ChargeResult:
        _check_request(amount=amount, currency=currency, idempotency_key=idempotency_key)
        _maybe_time_out(idempotency_key)
        with _calls_lock:
            known = _remembered(idempotency_key)
            if isinstance(known, ChargeResult):
                return known
            if token in CAPTURED_TOKENS:
                result = ChargeResult(
                    status="captured", charge_id=_new_id("ch", idempotency_key, amount)
                )
            else:
                result = ChargeResult(
                    status="declined", decline_code=DECLINED_TOKENS.get(token, INVALID_TOKEN)
                )
            _remember(idempotency_key, result)
            return result

    def refund(
        self, *, charge_id: str, amount: Decimal, currency: str, idempotency_key: str
    ) -> RefundResult:
        _check_request(amount=amount, currency=currency, idempotency_key=idempotency_key)
        if not charge_id.startswith("ch_sim_"):
            raise GatewayError(f"no such charge: {charge_id!r}")
        _maybe_time_out(idempotency_key)
        with _calls_lock:
            known = _remembered(idempotency_key)
            if isinstance(known, RefundResult):
                return known
            result = RefundResult(
                refund_id=_new_id("re", idempotency_key, amount), amount=amount, currency=currency
            )
            _remember(idempotency_key, result)
            return result

    def charge_lookup(self, *, idempotency_key: str) -> ChargeResult | None:
        _maybe_time_out_rate()
        with _calls_lock:
            known = _remembered(idempotency_key)
        return known if isinstance(known, ChargeResult) else None

    def refund_lookup(self, *, idempotency_key: str) -> RefundResult | None:
        _maybe_time_out_rate()
        with _calls_lock:
            known = _remembered(idempotency_key)
        return known if isinstance(known, RefundResult) else None


def simulated_gateway_made() -> list[tuple[str, str, Decimal]]:
    """Every charge and refund the simulated gateway made in this process, in order:
    (idempotency key, charge or refund id, amount). Answers repeated from memory are not in it."""
    with _calls_lock:
        return list(_made)


def simulated_gateway_advance(seconds: float) -> None:
    """Move the simulated gateway's clock on (tests: let it forget keys)."""
    global _clock_offset
    with _calls_lock:
        _clock_offset += seconds


def simulated_gateway_reset() -> None:
    """Forget the calls counted for TIMEOUTS_PER_CHARGE, every key and every charge made, and
    set the clock back (tests start from a clean slate)."""
    global _clock_offset
    with _calls_lock:
        _calls.clear()
        _ledger.clear()
        _made.clear()
        _made_per_key.clear()
        _clock_offset = 0.0


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


def _key_retention_seconds() -> float:
    return float(settings.PAYMENTS.get("KEY_RETENTION_SECONDS", 24 * 3600))


def _remembered(idempotency_key: str) -> ChargeResult | RefundResult | None:
    # Under _calls_lock.
    entry = _ledger.get(idempotency_key)
    if entry is None:
        return None
    first_used, result = entry
    if time.time() + _clock_offset - first_used >= _key_retention_seconds():
        del _ledger[idempotency_key]
        return None
    return result


def _remember(idempotency_key: str, result: ChargeResult | RefundResult) -> None:
    # Under _calls_lock.
    _ledger[idempotency_key] = (time.time() + _clock_offset, result)
    if len(_ledger) > _CALLS_KEPT:
        _ledger.popitem(last=False)


def _new_id(prefix: str, idempotency_key: str, amount: Decimal) -> str:
    # Under _calls_lock. The first charge (or refund) of a key gets the id derived from the key;
    # one made after the key was forgotten is another charge, with another id.
    before = _made_per_key.get(idempotency_key, 0)
    _made_per_key[idempotency_key] = before + 1
    new_id = _sim_id(prefix, idempotency_key if not before else f"{idempotency_key}#{before}")
    _made.append((idempotency_key, new_id, amount))
    if len(_made) > _CALLS_KEPT:
        del _made[: _CALLS_KEPT // 10]
    return new_id


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
    _maybe_time_out_rate()


def _maybe_time_out_rate() -> None:
    rate = float(settings.PAYMENTS.get("TIMEOUT_RATE", 0.0))
    if not 0.0 <= rate <= 1.0:
        raise ImproperlyConfigured(f'PAYMENTS["TIMEOUT_RATE"] must be between 0 and 1, got {rate}')
    if rate and random.random() < rate:
        raise GatewayUnavailable("timeout")
