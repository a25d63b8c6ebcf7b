"""Cancelling an order on request (customer, operator, deadline): orders' side of the saga."""

import datetime as dt

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from orders.models import Order, OrderDeadline
from orders.services import (
    OrderNotCancellable,
    order_cancel_compensated,
    order_cancellation_refuse,
    order_cancellation_request,
    order_complete,
    order_deadlines_fire,
    order_deadlines_purge,
    order_mark_paid,
    order_shipment_progress,
)
from outbox.models import Event
from tests.security.credentials import grant

pytestmark = pytest.mark.django_db


def requested(order) -> list[dict]:
    return list(
        Event.objects.filter(
            type="orders.OrderCancellationRequested", correlation_id=order.correlation_id
        ).values_list("payload", flat=True)
    )


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def cancel_url(order) -> str:
    return f"/api/orders/{order.reference}/cancel/"


# --- the API ------------------------------------------------------------------------------------


def test_the_owner_cancels_202_and_a_second_cancel_answers_the_same(order, customer):
    client = client_for(customer)
    first = client.post(cancel_url(order))
    assert first.status_code == 202, first.content
    assert first.json()["status"] == "placed"
    assert first.json()["cancellation_requested_at"] is not None
    second = client.post(cancel_url(order))
    assert second.status_code == 202
    assert second.json() == first.json()
    assert requested(order) == [{"order_id": order.pk, "reason": "customer_cancelled"}]


def test_an_operator_with_the_permission_cancels_as_an_operator(order, operator):
    operator = grant(operator, "orders.change_order")
    assert client_for(operator).post(cancel_url(order)).status_code == 202
    assert requested(order) == [{"order_id": order.pk, "reason": "operator_cancelled"}]


def test_seeing_someone_elses_order_is_not_cancelling_it_403_and_nothing_changes(order, staff):
    """Staff with orders.view_any_order (support) read the order; cancelling it needs
    orders.change_order."""
    response = client_for(staff).post(cancel_url(order))
    assert response.status_code == 403
    assert "orders.change_order" in response.json()["detail"]
    assert requested(order) == []
    assert Order.objects.get(pk=order.pk).cancellation_requested_at is None


def test_another_customer_gets_404_and_anonymous_401_and_nothing_changes(order, other_customer):
    assert client_for(other_customer).post(cancel_url(order)).status_code == 404
    assert APIClient().post(cancel_url(order)).status_code in (401, 403)
    assert client_for(other_customer).post("/api/orders/999999/cancel/").status_code == 404
    assert requested(order) == []
    assert Order.objects.get(pk=order.pk).cancellation_requested_at is None


def test_after_the_handover_it_is_409_with_the_reason(order, customer):
    order_complete(order_id=order.pk, carrier="UPS", tracking_number="1Z1")
    order_shipment_progress(order_id=order.pk, shipment_status="handed_to_carrier")
    response = client_for(customer).post(cancel_url(order))
    assert response.status_code == 409
    assert "handed to the carrier" in response.json()["detail"]
    assert requested(order) == []


def test_an_order_already_cancelled_answers_202_as_it_is(order, customer):
    order_cancel_compensated(order_id=order.pk, reason="out_of_stock")
    response = client_for(customer).post(cancel_url(order))
    assert response.status_code == 202
    assert response.json()["cancellation_reason"] == "out_of_stock"
    assert requested(order) == []


def test_the_endpoint_is_in_the_schema(client):
    schema = client.get("/api/schema/", {"format": "json"}).json()
    operation = schema["paths"]["/api/orders/{reference}/cancel/"]["post"]
    assert operation["operationId"] == "orders_cancel"
    assert {"202", "403", "404", "409"} <= set(operation["responses"])


# --- the services -------------------------------------------------------------------------------


def test_a_shipment_cancelled_ends_even_a_completed_order_cancelled(order):
    order_complete(order_id=order.pk, carrier="UPS", tracking_number="1Z1")
    order_cancellation_request(order_id=order.pk, reason="customer_cancelled")
    order_cancel_compensated(order_id=order.pk, reason="customer_cancelled")
    order_complete(order_id=order.pk, carrier="UPS", tracking_number="1Z1")  # late, redelivered
    order.refresh_from_db()
    assert (order.status, order.cancellation_reason) == ("cancelled", "customer_cancelled")
    assert order.shipment_status == "cancelled"
    assert Event.objects.filter(type="orders.OrderCancelled").count() == 1


def test_a_late_payment_never_moves_a_cancelled_order(order):
    order_cancellation_request(order_id=order.pk, reason="customer_cancelled")
    order_cancel_compensated(order_id=order.pk, reason="customer_cancelled")
    order_mark_paid(order_id=order.pk, amount=order.total)
    order.refresh_from_db()
    assert order.status == "cancelled"


def test_a_refused_cancellation_is_withdrawn_and_a_new_one_is_409(order):
    order_complete(order_id=order.pk, carrier="UPS", tracking_number="1Z1")
    order_cancellation_request(order_id=order.pk, reason="customer_cancelled")
    order_cancellation_refuse(order_id=order.pk, shipment_status="handed_to_carrier")
    order.refresh_from_db()
    assert order.status == "completed"
    assert order.cancellation_requested_at is None
    with pytest.raises(OrderNotCancellable):
        order_cancellation_request(order_id=order.pk, reason="customer_cancelled")


def test_a_refund_after_a_request_cancels_with_the_request_reason(order):
    from orders.services import order_cancel

    order_cancellation_request(order_id=order.pk, reason="timed_out")
    order_cancel(order_id=order.pk, reason="out_of_stock", payment_status="refunded")
    order.refresh_from_db()
    assert order.cancellation_reason == "timed_out"


# --- deadlines ----------------------------------------------------------------------------------


def overdue(order, step: str) -> OrderDeadline:
    deadline = OrderDeadline.objects.get(order=order, step=step)
    deadline.due_at = timezone.now() - dt.timedelta(seconds=1)
    deadline.save()
    return deadline


def test_each_waiting_step_gets_a_deadline_from_the_settings(order, settings):
    placed = OrderDeadline.objects.get(order=order, step="placed")
    expected = order.created_at + dt.timedelta(seconds=settings.ORDERS_DEADLINES["placed"])
    assert abs((placed.due_at - expected).total_seconds()) < 5
    order_mark_paid(order_id=order.pk, amount=order.total)
    order_mark_paid(order_id=order.pk, amount=order.total)
    assert sorted(OrderDeadline.objects.filter(order=order).values_list("step", flat=True)) == [
        "paid",
        "placed",
    ]


def test_a_due_deadline_requests_the_cancellation_once(order):
    assert order_deadlines_fire() == 0  # not due yet
    deadline = overdue(order, "placed")
    assert order_deadlines_fire() == 1
    assert order_deadlines_fire() == 0
    deadline.refresh_from_db()
    assert deadline.fired_at is not None and deadline.outcome == "cancelled"
    assert requested(order) == [{"order_id": order.pk, "reason": "timed_out"}]


def test_a_deadline_of_a_step_the_order_left_does_nothing(order):
    overdue(order, "placed")
    order_mark_paid(order_id=order.pk, amount=order.total)
    assert order_deadlines_fire() == 0
    assert OrderDeadline.objects.get(order=order, step="placed").outcome == "moved_on"
    assert requested(order) == []


def test_an_order_with_a_pending_cancellation_does_not_complete_until_shipping_answers(order):
    order_cancellation_request(order_id=order.pk, reason="customer_cancelled")
    order_complete(order_id=order.pk, carrier="UPS", tracking_number="1Z1")
    order.refresh_from_db()
    assert order.status == "placed" and order.shipment_status == "scheduled"
    assert not Event.objects.filter(type="orders.OrderCompleted").exists()
    # Shipping refuses (the parcel left): the order completes then, once.
    order_cancellation_refuse(order_id=order.pk, shipment_status="handed_to_carrier")
    order_cancellation_refuse(order_id=order.pk, shipment_status="handed_to_carrier")
    order.refresh_from_db()
    assert order.status == "completed" and order.shipment_status == "handed_to_carrier"
    assert Event.objects.filter(type="orders.OrderCompleted").count() == 1


def test_beat_fires_the_deadlines_through_the_orders_task(order):
    from django_celery_beat.models import PeriodicTask

    from orders.tasks import deadlines_fire
    from shop.celery import app

    scheduled = PeriodicTask.objects.get(task="orders.deadlines_fire")
    assert scheduled.enabled and scheduled.queue == "orders"
    assert "orders.deadlines_fire" in app.tasks
    overdue(order, "placed")
    assert deadlines_fire.run() == 1
    assert deadlines_fire.run() == 0


def test_many_deadlines_of_steps_left_behind_are_retired_at_once(order, customer):
    order_mark_paid(order_id=order.pk, amount=order.total)
    overdue(order, "placed")
    overdue(order, "paid")
    assert order_deadlines_fire() == 1  # the paid one: the order still waits for its stock
    outcomes = dict(OrderDeadline.objects.filter(order=order).values_list("step", "outcome"))
    assert outcomes == {"placed": "moved_on", "paid": "cancelled"}


# --- deadline retention -------------------------------------------------------------------------


def days_later(days: float) -> dt.datetime:
    return timezone.now() + dt.timedelta(days=days)


def test_deadlines_of_orders_ended_longer_ago_than_the_window_are_purged(order, settings):
    settings.ORDERS_DEADLINE_RETENTION_DAYS = 30
    order_mark_paid(order_id=order.pk, amount=order.total)
    order_cancel_compensated(order_id=order.pk, reason="customer_cancelled")
    assert OrderDeadline.objects.filter(order=order).count() == 2
    # Within the window the ended order keeps its deadlines...
    assert order_deadlines_purge(now=days_later(29)) == 0
    assert OrderDeadline.objects.filter(order=order).count() == 2
    # ...past it they go, once; the order and its events stay (their own retention).
    assert order_deadlines_purge(now=days_later(31)) == 2
    assert order_deadlines_purge(now=days_later(31)) == 0
    assert not OrderDeadline.objects.filter(order=order).exists()
    assert Order.objects.filter(pk=order.pk).exists()


def test_deadlines_of_a_completed_order_are_purged_too(order, settings):
    settings.ORDERS_DEADLINE_RETENTION_DAYS = 30
    order_mark_paid(order_id=order.pk, amount=order.total)
    order_complete(order_id=order.pk, carrier="UPS", tracking_number="1Z1")
    assert Order.objects.get(pk=order.pk).status == "completed"
    assert order_deadlines_purge(now=days_later(31)) == 2


def test_an_order_still_waiting_keeps_its_deadlines_however_old(order, settings):
    settings.ORDERS_DEADLINE_RETENTION_DAYS = 30
    order_mark_paid(order_id=order.pk, amount=order.total)
    assert order_deadlines_purge(now=days_later(365)) == 0
    assert OrderDeadline.objects.filter(order=order).count() == 2


def test_a_retention_of_zero_days_keeps_every_deadline(order, settings):
    settings.ORDERS_DEADLINE_RETENTION_DAYS = 0
    order_cancel_compensated(order_id=order.pk, reason="customer_cancelled")
    assert order_deadlines_purge(now=days_later(3650)) == 0
    assert OrderDeadline.objects.filter(order=order).count() == 1


def test_beat_purges_the_deadlines_hourly_through_the_orders_task(order, settings):
    from django_celery_beat.models import PeriodicTask

    from orders.tasks import deadlines_purge
    from shop.celery import app

    scheduled = PeriodicTask.objects.get(task="orders.deadlines_purge")
    assert scheduled.enabled and scheduled.queue == "orders"
    assert (scheduled.interval.every, scheduled.interval.period) == (1, "hours")
    assert "orders.deadlines_purge" in app.tasks
    settings.ORDERS_DEADLINE_RETENTION_DAYS = 30
    order_cancel_compensated(order_id=order.pk, reason="customer_cancelled")
    Order.objects.filter(pk=order.pk).update(updated_at=days_later(-31))
    assert deadlines_purge.run() == 1
    assert not OrderDeadline.objects.filter(order=order).exists()
