"""Payments in the admin: listed, searchable, and read-only."""

from decimal import Decimal

import pytest
from django.urls import reverse

from orders.events import PlacedLine
from payments.services import payment_charge, payment_refund

pytestmark = pytest.mark.django_db


@pytest.fixture
def refunded():
    payment = payment_charge(
        order_id=4242,
        amount=Decimal("19.00"),
        currency="EUR",
        token="tok_visa",
        lines=(PlacedLine(sku="MUG", quantity=2, unit_price="9.50"),),
    )
    return payment_refund(order_id=payment.order_id)


@pytest.fixture
def failed():
    return payment_charge(
        order_id=5151,
        amount=Decimal("5.00"),
        currency="EUR",
        token="tok_chargeDeclinedInsufficientFunds",
        lines=(PlacedLine(sku="PEN", quantity=1, unit_price="5.00"),),
    )


def test_payments_are_listed_filtered_and_searchable(admin_client, refunded, failed):
    url = reverse("admin:payments_payment_changelist")
    page = admin_client.get(url)
    assert page.status_code == 200
    body = page.content.decode()
    assert "4242" in body
    assert "insufficient_funds" in body

    body = admin_client.get(url, {"status__exact": "failed"}).content.decode()
    assert "5151" in body
    assert "4242" not in body

    for term in ("4242", refunded.payment.gateway_charge_id, refunded.gateway_refund_id):
        body = admin_client.get(url, {"q": term}).content.decode()
        assert "4242" in body, term
        assert "5151" not in body, term


def test_a_payment_page_shows_its_refund_and_cannot_be_saved(admin_client, refunded):
    page = admin_client.get(reverse("admin:payments_payment_change", args=[refunded.payment_id]))
    assert page.status_code == 200
    body = page.content.decode()
    assert refunded.gateway_refund_id in body
    assert "Save" not in body


def test_refunds_are_listed(admin_client, refunded):
    page = admin_client.get(reverse("admin:payments_refund_changelist"))
    assert page.status_code == 200
    assert refunded.gateway_refund_id in page.content.decode()
    assert "4242" in page.content.decode()


@pytest.mark.parametrize("model", ["payment", "refund"])
def test_nothing_can_be_added_changed_or_deleted(admin_client, refunded, model):
    obj_id = refunded.payment_id if model == "payment" else refunded.pk
    assert admin_client.get(reverse(f"admin:payments_{model}_add")).status_code == 403
    assert (
        admin_client.get(reverse(f"admin:payments_{model}_delete", args=[obj_id])).status_code
        == 403
    )
    change = reverse(f"admin:payments_{model}_change", args=[obj_id])
    assert admin_client.post(change, {"amount": "0.00"}).status_code == 403
    refunded.refresh_from_db()
    assert refunded.amount == Decimal("19.00")
