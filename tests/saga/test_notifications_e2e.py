"""Notifications through the real worker, over real SMTP: a customer hears of their order exactly
once per event, and a notifications app deployed after the orders catches up by backfill."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from notifications.models import Notification
from orders.models import Order
from outbox.models import Delivery
from outbox.registry import _by_type
from tests.saga.conftest import place
from tests.saga.test_saga_e2e import settle
from tests.support import wait_until

pytestmark = pytest.mark.e2e

ALICE = "alice@example.com"
NOTIFIED = ("orders.OrderPlaced", "orders.OrderCompleted", "orders.OrderCancelled")
REPLAY = ("outbox_replay", "--to-service", "notifications", "--since", "2000-01-01")


def test_a_completed_order_is_two_emails_placed_and_completed(
    api, operator_api, customer, catalogue, smtp_server
):
    """One email per event. Not in the events' order: the three handlers are subscribers of
    their own, unordered (docs/architecture.md, "Notifications"), and with continuation the
    worker running the saga can send "on its way" before another process sends "we received"
    (seen in a clean-clone run on SQLite, 2026-12-01)."""
    customer.email = ALICE
    customer.save(update_fields=["email"])
    reference = place(api, [("MUG", 2)])
    settle([reference])
    assert Order.objects.get(reference=reference).status == "completed"
    assert len(smtp_server.messages) == 2
    by_subject = {message["Subject"]: message for message in smtp_server.to(ALICE)}
    assert set(by_subject) == {
        f"We received your order {reference}",
        f"Your order {reference} is on its way",
    }
    placed = by_subject[f"We received your order {reference}"]
    completed = by_subject[f"Your order {reference} is on its way"]
    assert placed["Message-ID"] != completed["Message-ID"]
    # The order's timeline shows notifications' deliveries beside the saga's.
    timeline = operator_api.get(f"/api/orders/{reference}/events/").json()
    heard = {
        (event["type"], delivery["subscriber"], delivery["status"])
        for event in timeline
        for delivery in event["deliveries"]
        if delivery["subscriber"].startswith("notifications.")
    }
    assert heard == {
        ("orders.OrderPlaced", "notifications.notification_on_order_placed", "done"),
        ("orders.OrderCompleted", "notifications.notification_on_order_completed", "done"),
    }


def test_backfill_sends_each_customer_of_past_orders_one_email_per_event_and_nothing_more(
    api, customer, catalogue, smtp_server, monkeypatch, django_user_model
):
    """Orders placed while no notifications subscriber was deployed (their events have no
    delivery for it), then one command: each customer gets their emails, once; nobody else
    hears the events again."""
    customer.email = ALICE
    customer.save(update_fields=["email"])
    bob = django_user_model.objects.create_user("bob", email="bob@example.com")
    with monkeypatch.context() as undeployed:
        for event_type in NOTIFIED:
            undeployed.setitem(
                _by_type,
                event_type,
                [s for s in _by_type[event_type] if not s.name.startswith("notifications.")],
            )
        completed = place(api, [("MUG", 1)])
        api.force_authenticate(bob)
        declined = place(api, [("TEE", 1)], token="tok_chargeDeclined")
        settle([completed, declined])
    assert not Delivery.objects.filter(subscriber__startswith="notifications.").exists()
    assert smtp_server.messages == []
    before = sorted(Delivery.objects.values_list("id", "subscriber", "status", "attempts"))

    out = io.StringIO()
    # The documented command (docs/operations.md): to the notifications service, locally here.
    call_command(*REPLAY, stdout=out)
    assert "to service notifications locally" in out.getvalue()
    assert "notifications.notification_on_order_placed: 2 new deliveries" in out.getvalue()
    assert "notifications.notification_on_order_completed: 1 new deliveries" in out.getvalue()
    assert "notifications.notification_on_order_cancelled: 1 new deliveries" in out.getvalue()
    wait_until(lambda: Notification.objects.count() == 4, timeout=60, what="4 notifications")
    settle([completed, declined])
    # Backfilled deliveries run in any order: the set of subjects, each once.
    assert sorted(m["Subject"] for m in smtp_server.to(ALICE)) == sorted(
        [f"We received your order {completed}", f"Your order {completed} is on its way"]
    )
    assert sorted(m["Subject"] for m in smtp_server.to("bob@example.com")) == sorted(
        [f"We received your order {declined}", f"Your order {declined} is cancelled"]
    )
    # No other subscriber saw a replayed event: their deliveries are as they were.
    after = Delivery.objects.exclude(subscriber__startswith="notifications.")
    assert sorted(after.values_list("id", "subscriber", "status", "attempts")) == before

    # Again: nothing new is created, nothing is sent.
    out = io.StringIO()
    call_command(*REPLAY, stdout=out)
    assert out.getvalue().count(": 0 new deliveries (backfill), 0 made due again") == 3
    settle([completed, declined])
    assert len(smtp_server.messages) == 4
