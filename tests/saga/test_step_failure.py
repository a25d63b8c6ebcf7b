"""A saga step that fails after its writes leaves none of them: its service's transaction is the
delivery's (``outbox.atomic`` takes no savepoint inside a handler's run), so the whole of it is
rolled back, and the retry does the step once. Run on the real delivery path; the failure is the
step's last act, its publish, after every row it writes."""

from __future__ import annotations

import pytest
from django.utils import timezone

from inventory.events import ReservedLine, StockUpdated
from inventory.models import StockReservation, StockReservationLine
from outbox.handling import delivery_handle
from outbox.models import Delivery, Event
from payments.events import PaidLine, PaymentCompleted
from shipping.models import Shipment
from tests.inventory.helpers import a_product, stock
from tests.support import event_deliver

pytestmark = pytest.mark.django_db


class PublishFailed(Exception):
    pass


def _failing_publish(*args, **kwargs):
    raise PublishFailed("the step's publish failed after its writes")


def _retry_now(subscriber: str) -> str:
    delivery = Delivery.objects.get(subscriber=subscriber)
    Delivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now(), backoff_until=None
    )
    return delivery_handle(delivery_id=delivery.pk)


def test_a_reservation_whose_publish_fails_leaves_no_reservation_and_no_stock_held(monkeypatch):
    a_product("MUG", stock=5)
    subscriber = "inventory.stock_reserve_on_payment_completed"
    paid = PaymentCompleted(
        payment_id=1,
        order_id=1,
        amount="19.00",
        currency="EUR",
        lines=(PaidLine(sku="MUG", quantity=2),),
    )
    with monkeypatch.context() as patch:
        patch.setattr("inventory.services.publish", _failing_publish)
        assert event_deliver(paid, subscriber=subscriber) == "retry"
    assert not StockReservation.objects.exists()
    assert not StockReservationLine.objects.exists()
    assert stock("MUG") == (5, 0)
    assert not Event.objects.filter(type="inventory.StockUpdated").exists()

    assert _retry_now(subscriber) == "done"
    assert StockReservation.objects.get().status == "reserved"
    assert stock("MUG") == (5, 2)
    assert Event.objects.filter(type="inventory.StockUpdated").count() == 1


def test_a_shipment_whose_publish_fails_is_not_kept(monkeypatch):
    subscriber = "shipping.shipment_schedule_on_stock_updated"
    updated = StockUpdated(
        reservation_id=1, order_id=1, lines=(ReservedLine(sku="MUG", quantity=2),)
    )
    with monkeypatch.context() as patch:
        patch.setattr("shipping.services.publish", _failing_publish)
        assert event_deliver(updated, subscriber=subscriber) == "retry"
    assert not Shipment.objects.exists()

    assert _retry_now(subscriber) == "done"
    assert Shipment.objects.get().status == "scheduled"
    assert Event.objects.filter(type="shipping.ShippingScheduled").count() == 1
