"""Fixtures of the payments tests: a quiet relay, a clean simulated gateway, a gateway spy."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal

import pytest

from payments.gateway import (
    ChargeResult,
    PaymentGateway,
    RefundResult,
    SimulatedGateway,
    simulated_gateway_reset,
)


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    monkeypatch.setattr("outbox.publisher.relay_wake", lambda: None)


@pytest.fixture(autouse=True)
def simulated_gateway(settings):
    """The default gateway with no transient failures, and no calls remembered from before."""
    settings.PAYMENTS = {
        "GATEWAY": "payments.gateway.SimulatedGateway",
        "TIMEOUT_RATE": 0.0,
        "TIMEOUTS_PER_CHARGE": 0,
    }
    simulated_gateway_reset()
    yield
    simulated_gateway_reset()


@dataclass
class GatewaySpy(PaymentGateway):
    """The simulated gateway, with every call (and its result or error) written down."""

    inner: PaymentGateway = field(default_factory=SimulatedGateway)
    delay: float = 0.0  # seconds each call takes, to widen race windows
    calls: list[tuple[str, dict, object]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def charge(
        self, *, amount: Decimal, currency: str, token: str, idempotency_key: str
    ) -> ChargeResult:
        kwargs = dict(
            amount=amount, currency=currency, token=token, idempotency_key=idempotency_key
        )
        return self._call("charge", kwargs)

    def refund(
        self, *, charge_id: str, amount: Decimal, currency: str, idempotency_key: str
    ) -> RefundResult:
        kwargs = dict(
            charge_id=charge_id, amount=amount, currency=currency, idempotency_key=idempotency_key
        )
        return self._call("refund", kwargs)

    def charge_lookup(self, *, idempotency_key: str) -> ChargeResult | None:
        return self._call("charge_lookup", dict(idempotency_key=idempotency_key))

    def refund_lookup(self, *, idempotency_key: str) -> RefundResult | None:
        return self._call("refund_lookup", dict(idempotency_key=idempotency_key))

    @property
    def key_retention(self):
        return self.inner.key_retention

    def _call(self, method: str, kwargs: dict):
        time.sleep(self.delay)
        try:
            result = getattr(self.inner, method)(**kwargs)
        except Exception as exc:
            with self.lock:
                self.calls.append((method, kwargs, exc))
            raise
        with self.lock:
            self.calls.append((method, kwargs, result))
        return result

    def calls_of(self, method: str) -> list[tuple[dict, object]]:
        return [(kwargs, outcome) for m, kwargs, outcome in self.calls if m == method]


@pytest.fixture
def gateway(monkeypatch) -> GatewaySpy:
    """Every gateway the payments services get is this spy."""
    spy = GatewaySpy()
    monkeypatch.setattr("payments.services.gateway_get", lambda: spy)
    return spy
