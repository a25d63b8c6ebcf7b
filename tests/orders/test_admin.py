"""Orders in the admin: lists, search, filters and the read-only order page with its timeline."""

import pytest
from django.urls import reverse

from shipping.events import ShippingScheduled
from tests.support import event_deliver

pytestmark = pytest.mark.django_db


@pytest.fixture
def completed_order(order):
    event_deliver(
        ShippingScheduled(shipment_id=7, order_id=order.id, carrier="DHL", tracking_number="T1"),
        subscriber="orders.order_complete_on_shipping_scheduled",
        correlation_id=order.correlation_id,
    )
    order.refresh_from_db()
    return order


def test_the_order_list_loads_searches_and_filters(admin_client, completed_order):
    url = reverse("admin:orders_order_changelist")
    for params in (
        {},
        {"q": str(completed_order.id)},
        {"q": "alice"},
        {"q": str(completed_order.correlation_id)},
        {"q": "not-a-number-nor-a-uuid"},
        {"status__exact": "completed"},
        {"cancellation_reason__exact": "payment_failed"},
    ):
        page = admin_client.get(url, params)
        assert page.status_code == 200, params
    assert "alice" in admin_client.get(url, {"q": "alice"}).content.decode()


def test_the_order_page_is_read_only_and_shows_the_timeline(admin_client, completed_order):
    page = admin_client.get(reverse("admin:orders_order_change", args=[completed_order.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    for text in (
        "orders.OrderPlaced",
        "shipping.ShippingScheduled",
        "orders.OrderCompleted",
        "orders.order_complete_on_shipping_scheduled: done (1 attempts)",
        "MUG",
    ):
        assert text in html, text
    assert 'name="_save"' not in html
    assert admin_client.get(reverse("admin:orders_order_add")).status_code == 403
    delete = reverse("admin:orders_order_delete", args=[completed_order.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403


def test_the_catalogue_pages_load_read_only(admin_client, catalogue):
    assert admin_client.get(reverse("admin:orders_catalogitem_changelist")).status_code == 200
    page = admin_client.get(reverse("admin:orders_catalogitem_change", args=["MUG"]))
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert admin_client.get(reverse("admin:orders_catalogitem_add")).status_code == 403
