"""Notifications emails the customer once per order event, over a real SMTP server, whatever
is redelivered or replayed; a mail server that refuses delays the email and loses nothing."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import transaction

from notifications.models import Notification
from orders.events import OrderCancelled, OrderCompleted, OrderPlaced, PlacedLine
from outbox import publish
from outbox.crypto import payload_open
from outbox.handling import delivery_handle
from outbox.models import Delivery, Event
from tests.support import event_deliver

ON_PLACED = "notifications.notification_on_order_placed"
ON_COMPLETED = "notifications.notification_on_order_completed"
ON_CANCELLED = "notifications.notification_on_order_cancelled"
REFERENCE = "ORD-7KQ2M9XPT3BZ"
ALICE = "alice@example.com"


def placed(order_id=7, email=ALICE, reference=REFERENCE) -> OrderPlaced:
    return OrderPlaced(
        order_id=order_id,
        order_reference=reference,
        customer_email=email,
        customer_id=3,
        lines=(PlacedLine(sku="MUG", quantity=2, unit_price="9.50"),),
        total="19.00",
        currency="EUR",
        payment_token="tok_visa",
    )


def test_an_order_placed_is_one_email_to_the_customer_naming_the_order(db, smtp_server):
    assert event_deliver(placed(), subscriber=ON_PLACED) == "done"
    [message] = smtp_server.to(ALICE)
    assert REFERENCE in message["Subject"] and REFERENCE in message.get_content()
    assert message["To"] == ALICE
    assert message["From"] == "Shop <shop@localhost>"
    notification = Notification.objects.get()
    event = Event.objects.get(type="orders.OrderPlaced")
    assert (notification.event_id, notification.kind, notification.status) == (
        event.event_id,
        "order_placed",
        "sent",
    )
    assert (notification.order_id, notification.order_reference) == (7, REFERENCE)
    assert (
        message["Message-ID"]
        == notification.message_id
        == f"<{event.event_id}.notification@localhost>"
    )


def test_completed_and_cancelled_say_what_happened(db, smtp_server):
    facts = {"order_id": 7, "order_reference": REFERENCE, "customer_email": ALICE}
    assert event_deliver(OrderCompleted(**facts), subscriber=ON_COMPLETED) == "done"
    assert event_deliver(
        OrderCancelled(**facts, reason="out_of_stock"), subscriber=ON_CANCELLED
    ) == ("done")
    completed, cancelled = smtp_server.to(ALICE)
    assert completed["Subject"] == f"Your order {REFERENCE} is on its way"
    assert cancelled["Subject"] == f"Your order {REFERENCE} is cancelled"
    assert "out of stock" in cancelled.get_content() and "refunded" in cancelled.get_content()


def test_a_redelivered_or_replayed_event_sends_nothing_more(db, smtp_server):
    assert event_deliver(placed(), subscriber=ON_PLACED) == "done"
    delivery = Delivery.objects.get(subscriber=ON_PLACED)
    assert delivery_handle(delivery_id=delivery.pk) == "skipped"  # a duplicate message
    # A replay that runs the handler again (--include-done) finds the event answered.
    call_command(
        "outbox_replay",
        "--app",
        "notifications",
        "--type",
        "orders.OrderPlaced",
        "--since",
        "2000-01-01",
        "--include-done",
    )
    delivery.refresh_from_db()
    assert delivery.status == "pending"
    assert delivery_handle(delivery_id=delivery.pk) == "done"
    assert len(smtp_server.to(ALICE)) == 1
    assert Notification.objects.count() == 1


def test_a_customer_without_an_address_gets_nothing_and_the_delivery_is_done(db, smtp_server):
    assert event_deliver(placed(email=""), subscriber=ON_PLACED) == "done"
    assert smtp_server.messages == []
    assert Notification.objects.get().status == "no_address"


def test_a_mail_server_that_refuses_delays_the_email_and_records_nothing(db, smtp_server):
    smtp_server.refuse = True
    assert event_deliver(placed(), subscriber=ON_PLACED) == "retry"
    delivery = Delivery.objects.get(subscriber=ON_PLACED)
    assert "451" in delivery.last_error
    assert not Notification.objects.exists()  # rolled back with the attempt
    smtp_server.refuse = False
    Delivery.objects.filter(pk=delivery.pk).update(backoff_until=None)  # the backoff is over
    assert delivery_handle(delivery_id=delivery.pk) == "done"
    assert len(smtp_server.to(ALICE)) == 1
    assert Notification.objects.get().status == "sent"


def test_an_event_stored_at_v1_reaches_the_handler_upcast_and_sends_nothing(db, smtp_server):
    """Version 1 did not carry the address: the upcaster says unknown, nobody is written to."""
    with transaction.atomic():
        stored = publish(
            OrderCompleted(order_id=7, order_reference=REFERENCE, customer_email=ALICE)
        )
    Event.objects.filter(pk=stored.pk).update(version=1, payload={"order_id": 7})
    delivery = stored.deliveries.get(subscriber=ON_COMPLETED)
    assert delivery_handle(delivery_id=delivery.pk) == "done"
    assert smtp_server.messages == []
    notification = Notification.objects.get()
    assert (notification.status, notification.order_id, notification.order_reference) == (
        "no_address",
        7,
        "",
    )


@pytest.mark.parametrize("address", ["", ALICE])
def test_the_order_events_carry_the_reference_and_the_address(
    db, address, django_user_model, settings
):
    """Orders publishes what notifications needs, so notifications never reads its tables."""
    from decimal import Decimal

    from inventory.services import product_create
    from orders.services import order_place
    from tests.flow.conftest import deliveries_drain

    settings.SHOP_CURRENCY = "EUR"
    product_create(sku="MUG", name="Mug", price=Decimal("9.50"), stock=10)
    deliveries_drain()
    customer = django_user_model.objects.create_user("alice", email=address)
    order, _ = order_place(
        customer=customer, lines=[{"sku": "MUG", "quantity": 1}], payment_token="tok_visa"
    )
    deliveries_drain()
    for type_ in ("orders.OrderPlaced", "orders.OrderCompleted"):
        payload = payload_open(Event.objects.get(type=type_).payload, event_type=type_)
        assert (payload["order_reference"], payload["customer_email"]) == (order.reference, address)
