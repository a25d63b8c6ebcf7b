"""The operator's saga console: the admin's "Sagas in flight" and the console API."""

import datetime as dt

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from orders.models import Order
from orders.services import order_complete, order_place
from outbox.models import Delivery, Event
from tests.security.credentials import grant

pytestmark = pytest.mark.django_db

CHARGE = "payments.payment_charge_on_order_placed"
CONSOLE = reverse("admin:orders_sagainflight_changelist")


@pytest.fixture
def console(operator):
    """An operator: the saga's machinery to read the console, orders.change_order to act."""
    return grant(operator, "orders.view_order", "orders.change_order")


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def a_second_order(customer) -> Order:
    placed, _ = order_place(
        customer=customer, lines=[{"sku": "TEE", "quantity": 1}], payment_token="tok_visa"
    )
    return placed


def dead_letter(order) -> Delivery:
    delivery = Delivery.objects.get(event__correlation_id=order.correlation_id, subscriber=CHARGE)
    Delivery.objects.filter(pk=delivery.pk).update(
        status="dead", attempts=8, last_error="GatewayUnavailable: timed out\nTraceback ..."
    )
    return delivery


def test_the_list_holds_sagas_in_flight_oldest_first_with_the_step_each_waits_on(
    order, customer, console
):
    newer = a_second_order(customer)
    done = a_second_order(customer)
    order_complete(order_id=done.pk, carrier="UPS", tracking_number="1Z9")
    dead_letter(order)
    body = client_for(console).get("/api/sagas/").json()
    assert [s["order_id"] for s in body] == [order.reference, newer.reference]
    assert body[0]["dead"] is True
    assert body[0]["waiting_on"] == {
        "event_type": "orders.OrderPlaced",
        "subscriber": CHARGE,
        "status": "dead",
        "attempts": 8,
        "last_error": "GatewayUnavailable: timed out",
    }
    assert body[1]["waiting_on"]["status"] == "pending"


def test_the_filters(order, customer, console):
    newer = a_second_order(customer)
    dead_letter(order)
    api = client_for(console)
    assert [s["order_id"] for s in api.get("/api/sagas/", {"state": "dead"}).json()] == [
        order.reference
    ]
    assert api.get("/api/sagas/", {"state": "compensating"}).json() == []
    assert api.get("/api/sagas/", {"state": "stuck"}).json() == []
    # No progress for longer than ORDERS_STUCK_AFTER_SECONDS: neither the order nor a delivery.
    long_ago = timezone.now() - dt.timedelta(hours=1)
    Order.objects.filter(pk=newer.pk).update(updated_at=long_ago)
    Delivery.objects.filter(event__correlation_id=newer.correlation_id).update(updated_at=long_ago)
    assert [s["order_id"] for s in api.get("/api/sagas/", {"state": "stuck"}).json()] == [
        newer.reference
    ]
    assert api.get("/api/sagas/", {"state": "nonsense"}).status_code == 400


def test_retry_replays_the_dead_steps_and_records_who_and_why(order, console):
    delivery = dead_letter(order)
    api = client_for(console)
    for no_reason in ({}, {"reason": 0}, {"reason": ["why"]}):
        refused = api.post(f"/api/sagas/{order.reference}/retry/", no_reason, format="json")
        assert refused.status_code == 400, no_reason
    assert Delivery.objects.get(pk=delivery.pk).status == "dead"  # nothing changed
    response = api.post(
        f"/api/sagas/{order.reference}/retry/", {"reason": "gateway is back"}, format="json"
    )
    assert response.status_code == 200
    assert response.json() == {"order_id": order.reference, "retried": 1}
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("pending", 0)
    entry = LogEntry.objects.get(object_id=str(order.pk))
    assert entry.user_id == console.pk
    assert entry.get_change_message() == "Retried 1 dead-lettered step(s): gateway is back"


def test_cancel_requests_the_compensation_and_records_who_and_why(order, console):
    response = client_for(console).post(
        f"/api/sagas/{order.reference}/cancel/", {"reason": "customer called"}, format="json"
    )
    assert response.status_code == 202
    assert response.json()["compensating"] is True
    requested = Event.objects.get(type="orders.OrderCancellationRequested")
    assert requested.payload["reason"] == "operator_cancelled"
    entry = LogEntry.objects.get(object_id=str(order.pk))
    assert (entry.user_id, entry.get_change_message()) == (
        console.pk,
        "Cancelled with compensation: customer called",
    )
    listed = client_for(console).get("/api/sagas/", {"state": "compensating"}).json()
    assert [s["order_id"] for s in listed] == [order.reference]


def test_a_customer_cannot_reach_the_console_or_its_api(order, customer, client):
    api = client_for(customer)
    assert api.get("/api/sagas/").status_code == 403
    assert (
        api.post(
            f"/api/sagas/{order.reference}/cancel/", {"reason": "x"}, format="json"
        ).status_code
        == 403
    )
    assert APIClient().get("/api/sagas/").status_code in (401, 403)
    assert Order.objects.get(pk=order.pk).cancellation_requested_at is None
    client.force_login(customer)
    assert client.get(CONSOLE).status_code == 302  # to the admin's login


def test_staff_need_the_machinery_to_read_it_and_change_order_to_act(order, staff, operator):
    """Support (orders.view_any_order) does not see the console; an operator without
    orders.change_order reads it but neither retries nor cancels, and nothing changes."""
    dead_letter(order)
    assert client_for(staff).get("/api/sagas/").status_code == 403
    reader = client_for(operator)
    assert [s["order_id"] for s in reader.get("/api/sagas/").json()] == [order.reference]
    for action in ("retry", "cancel"):
        url = f"/api/sagas/{order.reference}/{action}/"
        assert reader.post(url, {"reason": "x"}, format="json").status_code == 403
    assert Delivery.objects.get(subscriber=CHARGE).status == "dead"
    assert Order.objects.get(pk=order.pk).cancellation_requested_at is None
    assert not LogEntry.objects.exists()


def test_the_admin_console_lists_and_acts_with_a_reason(order, admin_client, admin_user):
    dead_letter(order)
    page = admin_client.get(CONSOLE).content.decode()
    assert order.reference in page and "DEAD LETTER" in page and CHARGE in page
    assert reverse("order_pages:order-flow", args=[order.reference]) in page
    assert order.reference in admin_client.get(CONSOLE, {"state": "dead"}).content.decode()

    action = {"action": "retry_dead", "_selected_action": [order.pk]}
    asking = admin_client.post(CONSOLE, action)
    assert asking.status_code == 200 and 'name="reason"' in asking.content.decode()
    assert not LogEntry.objects.exists()
    admin_client.post(CONSOLE, {**action, "apply": "1", "reason": "fixed the gateway"})
    assert Delivery.objects.get(subscriber=CHARGE).status == "pending"
    admin_client.post(
        CONSOLE,
        {
            "action": "cancel_with_compensation",
            "_selected_action": [order.pk],
            "apply": "1",
            "reason": "fraud suspected",
        },
    )
    assert Order.objects.get(pk=order.pk).cancellation_requested_reason == "operator_cancelled"
    messages = [
        e.get_change_message() for e in LogEntry.objects.filter(user=admin_user).order_by("pk")
    ]
    assert messages == [
        "Retried 1 dead-lettered step(s): fixed the gateway",
        "Cancelled with compensation: fraud suspected",
    ]


def test_a_cancelled_order_leaves_the_list_unless_a_delivery_of_it_is_dead(order, console):
    from orders.services import order_cancel_compensated, order_cancellation_request

    order_cancellation_request(order_id=order.pk, reason="customer_cancelled")
    order_cancel_compensated(order_id=order.pk, reason="customer_cancelled")
    order.refresh_from_db()
    assert order.cancellation_requested_at is None
    api = client_for(console)
    # The OrderPlaced charge is still pending: nothing dead, the saga is over for orders.
    assert api.get("/api/sagas/").json() == []
    dead_letter(order)
    listed = api.get("/api/sagas/", {"state": "dead"}).json()
    assert [(s["order_id"], s["status"]) for s in listed] == [(order.reference, "cancelled")]
