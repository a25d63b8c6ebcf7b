import pytest
from django.urls import reverse

from shipping.services import shipment_schedule

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:shipping_shipment_changelist")


def test_shipments_are_searchable_filterable_and_read_only(admin_client):
    shipment = shipment_schedule(order_id=4711, lines=[{"sku": "MUG", "quantity": 1}])
    other = shipment_schedule(order_id=4712, lines=[{"sku": "MUG", "quantity": 1}])
    for query in ({"q": "4711"}, {"q": shipment.tracking_number}):
        body = admin_client.get(CHANGELIST, query).content.decode()
        assert shipment.tracking_number in body
        assert other.tracking_number not in body
    assert admin_client.get(CHANGELIST, {"q": "no such thing"}).status_code == 200
    filtered = admin_client.get(CHANGELIST, {"carrier": shipment.carrier, "status": "scheduled"})
    assert filtered.status_code == 200
    assert shipment.tracking_number in filtered.content.decode()

    detail = admin_client.get(reverse("admin:shipping_shipment_change", args=[shipment.pk]))
    assert detail.status_code == 200
    assert "Save" not in detail.content.decode()
    assert admin_client.get(reverse("admin:shipping_shipment_add")).status_code == 403
    delete = reverse("admin:shipping_shipment_delete", args=[shipment.pk])
    assert admin_client.get(delete).status_code == 403
