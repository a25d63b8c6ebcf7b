"""Poison events: stored events no handler can read (as an old or buggy producer might have
written them) are dead-lettered with a clear error after their attempts, and block neither
other events nor other subscribers, through a real worker and relay."""

import datetime as dt
import uuid
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from inventory.services import product_create
from orders.models import CatalogItem, Order
from outbox.models import Delivery, Event
from outbox.registry import subscribers_for
from payments.models import Payment
from tests.support import wait_until

pytestmark = pytest.mark.e2e

MAX_ATTEMPTS = 3
POISON_ORDER_ID = 987_654

# (event type, version, payload, what last_error must name)
POISONS = {
    "not-an-object": (
        "orders.OrderPlaced",
        1,
        "garbage",
        "EventPayloadError: orders.OrderPlaced: payload must be an object",
    ),
    "wrong-shape": (
        "orders.OrderPlaced",
        1,
        {"order": POISON_ORDER_ID, "sum": "9.99"},
        "EventPayloadError: orders.OrderPlaced: missing",
    ),
    "wrong-field-type": (
        "orders.OrderPlaced",
        1,
        {
            "order_id": "not-a-number",
            "customer_id": 1,
            "lines": [],
            "total": "9.99",
            "currency": "EUR",
            "payment_token": "tok_visa",
        },
        "EventPayloadError: orders.OrderPlaced.order_id",
    ),
    "bad-value": (
        "orders.OrderPlaced",
        1,
        {
            "order_id": POISON_ORDER_ID,
            "customer_id": 1,
            "lines": [{"sku": "MUG", "quantity": 1, "unit_price": "9.50"}],
            "total": "nine euros",
            "currency": "EUR",
            "payment_token": "tok_visa",
        },
        "total 'nine euros' is not a decimal",
    ),
    "unknown-version": (
        "orders.OrderPlaced",
        99,
        {"order_id": POISON_ORDER_ID},
        "UpcastError",
    ),
    # PaymentCompleted has two subscribers (orders and inventory): both dead-letter it.
    "two-subscribers": (
        "payments.PaymentCompleted",
        1,
        [1, 2, 3],
        "EventPayloadError: payments.PaymentCompleted: payload must be an object",
    ),
}


# "bad-value" is poison for payments only (the total is its business): every other subscriber
# of OrderPlaced reads it fine (notifications: no address in a v1 event, so nothing is sent),
# and its delivery to them must end done like any other.
POISONED_ONLY_FOR = {"bad-value": "payments."}


@pytest.fixture(autouse=True)
def quiet():
    """The real relay wake-ups here (overrides the package's no-broker fixture)."""


@pytest.fixture
def few_attempts(outbox_fast, settings):
    settings.OUTBOX = {**settings.OUTBOX, "MAX_ATTEMPTS": MAX_ATTEMPTS}
    return settings.OUTBOX


def poison_store(event_type: str, version: int, payload) -> list[Delivery]:
    """A stored event and a delivery to each of its type's subscribers, written as publish()
    would have, but with a payload publish() would refuse."""
    now = timezone.now()
    event = Event.objects.create(
        type=event_type,
        version=version,
        aggregate_type="order",
        aggregate_id=str(POISON_ORDER_ID),
        payload=payload,
        correlation_id=uuid.uuid4(),
        occurred_at=now - dt.timedelta(seconds=1),  # older than everything the test places
    )
    subscribers = subscribers_for(event_type)
    assert subscribers, event_type
    return [
        Delivery.objects.create(
            event=event,
            subscriber=sub.name,
            next_attempt_at=now,
            ordered=sub.ordered,
            aggregate_key=f"order:{POISON_ORDER_ID}",
        )
        for sub in subscribers
    ]


def test_poison_events_are_dead_lettered_and_block_nothing(
    transactional_db, few_attempts, worker, settings
):
    settings.SHOP_CURRENCY = "EUR"
    product_create(sku="MUG", name="Mug", price=Decimal("9.50"), stock=10)
    wait_until(lambda: CatalogItem.objects.filter(sku="MUG").exists(), what="the catalogue")

    poisoned = {name: poison_store(*spec[:3]) for name, spec in POISONS.items()}
    assert len(poisoned["two-subscribers"]) == 2
    poisoned = {
        name: [d for d in ds if d.subscriber.startswith(POISONED_ONLY_FOR.get(name, ""))]
        for name, ds in poisoned.items()
    }
    assert [d.subscriber for d in poisoned["bad-value"]] == [
        "payments.payment_charge_on_order_placed"
    ]

    customer = get_user_model().objects.create_user("dora", password="pw-dora-123")
    api = APIClient()
    api.force_authenticate(customer)
    body = {"lines": [{"sku": "MUG", "quantity": 1}], "payment_token": "tok_visa"}
    order_ids = [api.post("/api/orders/", body, format="json").json()["id"] for _ in range(2)]

    poison_ids = [d.pk for deliveries in poisoned.values() for d in deliveries]
    wait_until(
        lambda: Order.objects.filter(reference__in=order_ids, status="completed").count() == 2,
        timeout=120,
        what="the normal orders to complete",
    )
    wait_until(
        lambda: (
            Delivery.objects.filter(pk__in=poison_ids, status="dead").count() == len(poison_ids)
        ),
        timeout=120,
        what="every poison delivery dead-lettered",
    )

    for name, deliveries in poisoned.items():
        for delivery in deliveries:
            delivery.refresh_from_db()
            first_line = delivery.last_error.split("\n", 1)[0]
            assert delivery.status == "dead", name
            assert delivery.attempts == MAX_ATTEMPTS, name
            assert POISONS[name][3] in first_line, (name, first_line)
            assert "Traceback" in delivery.last_error  # the whole story, for the operator

    # Nothing happened for the poison: no charge, no follow-up event.
    assert not Payment.objects.filter(order_id=POISON_ORDER_ID).exists()
    poison_events = {d.event_id for deliveries in poisoned.values() for d in deliveries}
    assert not Event.objects.filter(causation_id__in=poison_events).exists()
    # Every other delivery finishes, with the same subscribers as the poison. An order is
    # completed by one subscriber of ShippingScheduled while another (inventory's
    # fulfilment) may still be running, so this waits for them rather than sampling once.
    others = Delivery.objects.exclude(pk__in=poison_ids)
    wait_until(
        lambda: set(others.values_list("status", flat=True)) == {"done"},
        timeout=60,
        what="every other delivery done",
    )
    assert {d.subscriber for ds in poisoned.values() for d in ds} <= set(
        others.values_list("subscriber", flat=True)
    )
    order_pks = Order.objects.filter(reference__in=order_ids).values_list("pk", flat=True)
    assert Payment.objects.filter(order_id__in=list(order_pks), status="captured").count() == 2
