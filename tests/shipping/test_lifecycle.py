"""A shipment's life (scheduled -> handed to the carrier -> delivered) and its cancellation."""

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from outbox.models import Event
from shipping.models import Shipment
from shipping.services import (
    ShipmentTransitionRefused,
    shipment_cancel,
    shipment_deliver,
    shipment_hand_to_carrier,
    shipment_schedule,
)

pytestmark = pytest.mark.django_db

LINES = [{"sku": "MUG", "quantity": 1}]


def types() -> list[str]:
    return list(Event.objects.order_by("position").values_list("type", flat=True))


def test_cancel_before_scheduling_leaves_a_row_that_makes_a_late_schedule_do_nothing():
    cancelled = shipment_cancel(order_id=7, reason="customer_cancelled")
    assert cancelled.status == "cancelled" and cancelled.tracking_number is None
    assert types() == ["shipping.ShipmentCancelled"]

    late = shipment_schedule(order_id=7, lines=LINES)
    assert late.pk == cancelled.pk and late.status == "cancelled"
    assert shipment_cancel(order_id=7, reason="customer_cancelled").status == "cancelled"
    assert types() == ["shipping.ShipmentCancelled"]  # nothing scheduled, nothing again


def test_a_scheduled_shipment_is_cancelled_once():
    shipment_schedule(order_id=8, lines=LINES)
    shipment_cancel(order_id=8, reason="timed_out")
    shipment_cancel(order_id=8, reason="timed_out")
    assert Shipment.objects.get(order_id=8).status == "cancelled"
    assert types() == ["shipping.ShippingScheduled", "shipping.ShipmentCancelled"]
    assert Event.objects.get(type="shipping.ShipmentCancelled").payload["reason"] == "timed_out"


def test_after_handing_to_the_carrier_a_cancellation_is_refused():
    shipment = shipment_schedule(order_id=9, lines=LINES)
    shipment_hand_to_carrier(shipment_id=shipment.pk)
    assert shipment_cancel(order_id=9, reason="customer_cancelled").status == "handed_to_carrier"
    refused = Event.objects.get(type="shipping.ShipmentCancellationRefused")
    assert refused.payload["status"] == "handed_to_carrier"
    shipment_deliver(shipment_id=shipment.pk)
    assert Shipment.objects.get(pk=shipment.pk).status == "delivered"
    assert types() == [
        "shipping.ShippingScheduled",
        "shipping.ShipmentHandedToCarrier",
        "shipping.ShipmentCancellationRefused",
        "shipping.ShipmentDelivered",
    ]


def test_steps_only_move_forward_and_a_cancelled_shipment_never_leaves():
    shipment = shipment_schedule(order_id=10, lines=LINES)
    with pytest.raises(ShipmentTransitionRefused):
        shipment_deliver(shipment_id=shipment.pk)  # not with the carrier yet
    shipment_cancel(order_id=10, reason="customer_cancelled")
    with pytest.raises(ShipmentTransitionRefused):
        shipment_hand_to_carrier(shipment_id=shipment.pk)
    assert Shipment.objects.get(pk=shipment.pk).status == "cancelled"
    assert "shipping.ShipmentHandedToCarrier" not in types()


def test_operator_steps_join_the_order_saga():
    import uuid

    saga = uuid.uuid4()
    shipment = shipment_schedule(order_id=11, lines=LINES, correlation_id=saga)
    shipment_hand_to_carrier(shipment_id=shipment.pk)
    handed = Event.objects.get(type="shipping.ShipmentHandedToCarrier")
    assert handed.correlation_id == saga
    assert handed.payload["tracking_number"] == shipment.tracking_number


def test_the_operator_drives_the_lifecycle_from_the_admin(admin_client, admin_user):
    shipment = shipment_schedule(order_id=12, lines=LINES)
    changelist = reverse("admin:shipping_shipment_changelist")
    post = {"action": "hand_to_carrier", "_selected_action": [shipment.pk]}
    assert admin_client.post(changelist, post).status_code == 302
    assert Shipment.objects.get(pk=shipment.pk).status == "handed_to_carrier"
    # Again: refused with a message, nothing changes.
    response = admin_client.post(changelist, post, follow=True)
    assert "Not changed" in response.content.decode()
    admin_client.post(changelist, {"action": "mark_delivered", "_selected_action": [shipment.pk]})
    assert Shipment.objects.get(pk=shipment.pk).status == "delivered"
    history = LogEntry.objects.filter(object_id=str(shipment.pk)).order_by("action_time")
    assert [(e.user_id, e.get_change_message()) for e in history] == [
        (admin_user.pk, "Shipment handed to the carrier."),
        (admin_user.pk, "Shipment delivered."),
    ]
