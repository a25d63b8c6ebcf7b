"""The operator's actions end to end: a step dead-letters, then is retried or the order is
cancelled with compensation, through the console API and a real worker."""

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from orders.models import Order
from outbox.models import Delivery
from payments.models import Payment
from shipping.models import Shipment
from tests.saga.conftest import place
from tests.security.credentials import grant
from tests.support import wait_until

pytestmark = pytest.mark.e2e

CHARGE = "payments.payment_charge_on_order_placed"


@pytest.fixture
def operator(transactional_db):
    """An operator: the saga's machinery to read the console, orders.change_order to act."""
    user = get_user_model().objects.create_user("olga", password="olga-pass-123", is_staff=True)
    client = APIClient()
    client.force_authenticate(grant(user, "orders.view_order_machinery", "orders.change_order"))
    return client


@pytest.fixture
def gateway_down(settings):
    """Every charge times out, and a delivery dead-letters after two attempts."""
    settings.OUTBOX = {**settings.OUTBOX, "MAX_ATTEMPTS": 2}
    settings.PAYMENTS = {**settings.PAYMENTS, "TIMEOUT_RATE": 1.0, "TIMEOUTS_PER_CHARGE": 0}
    return settings


def dead_lettered(order_id: int):
    return lambda: Delivery.objects.filter(
        subscriber=CHARGE,
        status="dead",
        event__correlation_id=Order.objects.get(pk=order_id).correlation_id,
    ).exists()


def test_the_operator_retries_a_dead_lettered_step(api, catalogue, operator, gateway_down):
    reference = place(api, [("MUG", 1)])
    order_id = Order.objects.get(reference=reference).pk
    wait_until(dead_lettered(order_id), what="the charge dead-lettered")
    listed = operator.get("/api/sagas/", {"state": "dead"}).json()
    assert [(s["order_id"], s["waiting_on"]["subscriber"]) for s in listed] == [(reference, CHARGE)]

    gateway_down.PAYMENTS = {**gateway_down.PAYMENTS, "TIMEOUT_RATE": 0.0}
    response = operator.post(
        f"/api/sagas/{reference}/retry/", {"reason": "gateway is back"}, format="json"
    )
    assert response.json()["retried"] == 1
    wait_until(lambda: Order.objects.get(pk=order_id).status == "completed", what="order completed")
    assert operator.get("/api/sagas/").json() == []
    assert LogEntry.objects.get(object_id=str(order_id)).change_message.endswith("gateway is back")


def test_the_operator_cancels_a_stuck_saga_with_compensation(
    api, catalogue, operator, gateway_down
):
    reference = place(api, [("MUG", 1)])
    order_id = Order.objects.get(reference=reference).pk
    wait_until(dead_lettered(order_id), what="the charge dead-lettered")
    response = operator.post(
        f"/api/sagas/{reference}/cancel/", {"reason": "card provider outage"}, format="json"
    )
    assert response.status_code == 202
    wait_until(lambda: Order.objects.get(pk=order_id).status == "cancelled", what="order cancelled")
    order = Order.objects.get(pk=order_id)
    assert order.cancellation_reason == "operator_cancelled"
    wait_until(
        lambda: Payment.objects.filter(order_id=order_id, status="voided").exists(),
        what="payments to void the order's payment",
    )
    assert Shipment.objects.get(order_id=order_id).status == "cancelled"
    # The dead charge, replayed after the cancellation, charges nothing.
    gateway_down.PAYMENTS = {**gateway_down.PAYMENTS, "TIMEOUT_RATE": 0.0}
    operator.post(f"/api/sagas/{reference}/retry/", {"reason": "tidy up"}, format="json")
    wait_until(
        lambda: not Delivery.objects.filter(status__in=["pending", "dead"]).exists(),
        what="every delivery done",
    )
    assert Payment.objects.get(order_id=order_id).status == "voided"
