"""shipment_schedule: one shipment per order, a stable carrier, a unique tracking number."""

import pytest
from django.core.exceptions import ValidationError

from inventory.events import ReservedLine
from outbox.models import Event
from shipping.models import Shipment
from shipping.services import CARRIERS, carrier_for, shipment_schedule

pytestmark = pytest.mark.django_db

LINES = (ReservedLine(sku="MUG", quantity=2), ReservedLine(sku="TEE", quantity=1))


def scheduled_payloads() -> list[dict]:
    return list(
        Event.objects.filter(type="shipping.ShippingScheduled").values_list("payload", flat=True)
    )


def test_scheduling_creates_the_shipment_and_publishes_shipping_scheduled():
    shipment = shipment_schedule(order_id=7, lines=LINES)
    assert shipment.status == Shipment.Status.SCHEDULED
    assert shipment.lines == [{"sku": "MUG", "quantity": 2}, {"sku": "TEE", "quantity": 1}]
    carrier, prefix = carrier_for(order_id=7)
    assert shipment.carrier == carrier
    assert shipment.tracking_number.startswith(prefix)
    assert shipment.tracking_number[len(prefix) :].isdigit()
    assert scheduled_payloads() == [
        {
            "shipment_id": shipment.pk,
            "order_id": 7,
            "carrier": carrier,
            "tracking_number": shipment.tracking_number,
        }
    ]
    assert list(Shipment.objects.filter(order_id__in=[7, 8])) == [shipment]


def test_scheduling_again_for_the_same_order_returns_the_shipment_and_publishes_nothing():
    first = shipment_schedule(order_id=7, lines=LINES)
    again = shipment_schedule(order_id=7, lines=[{"sku": "MUG", "quantity": 2}])
    assert (again.pk, again.tracking_number) == (first.pk, first.tracking_number)
    assert Shipment.objects.count() == 1
    assert len(scheduled_payloads()) == 1


def test_the_carrier_depends_only_on_the_order_and_all_carriers_get_work():
    assert carrier_for(order_id=7) == carrier_for(order_id=7)
    assert {carrier_for(order_id=i) for i in range(1, 10)} == set(CARRIERS)


def test_tracking_numbers_are_unique():
    shipments = [shipment_schedule(order_id=i, lines=LINES) for i in range(1, 31)]
    assert len({s.tracking_number for s in shipments}) == 30


def test_a_tracking_number_clash_is_retried_with_a_new_number(monkeypatch):
    taken = shipment_schedule(order_id=1, lines=LINES).tracking_number
    numbers = iter([taken, "DHL0000000000000042"])
    monkeypatch.setattr("shipping.services._tracking_number", lambda prefix: next(numbers))
    shipment = shipment_schedule(order_id=2, lines=LINES)
    assert shipment.tracking_number == "DHL0000000000000042"
    assert Shipment.objects.count() == 2
    assert len(scheduled_payloads()) == 2


@pytest.mark.parametrize(
    ("order_id", "lines"),
    [
        (7, []),
        (7, [{"sku": "MUG", "quantity": 0}]),
        (7, [{"sku": "", "quantity": 1}]),
        (0, LINES),
        (True, LINES),
    ],
)
def test_malformed_requests_are_refused_and_change_nothing(order_id, lines):
    with pytest.raises(ValidationError):
        shipment_schedule(order_id=order_id, lines=lines)
    assert not Shipment.objects.exists()
    assert scheduled_payloads() == []
