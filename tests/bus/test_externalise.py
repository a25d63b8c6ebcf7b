"""Which events get a bus delivery: declared ones, only with a bus, in the publishing
transaction. No broker needed."""

from unittest import mock

import pytest
from django.db import transaction

from orders.events import OrderCancelled
from outbox import publish
from outbox.bus.target import BUS_QUEUE, BUS_SUBSCRIBER
from outbox.models import Delivery
from outbox.relay import deliveries_claim, deliveries_dispatch
from tests.testapp.events import ThingHappened

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_wake():
    with mock.patch("outbox.publisher.relay_wake"):
        yield


def bus_deliveries():
    return list(Delivery.objects.filter(subscriber=BUS_SUBSCRIBER))


def test_without_a_bus_nothing_changes(settings):
    settings.EVENT_BUS_URL = ""
    with transaction.atomic():
        publish(
            OrderCancelled(
                order_id=1, order_reference="", customer_email="", reason="payment_failed"
            )
        )
    assert bus_deliveries() == []


def test_a_declared_event_gets_an_ordered_bus_delivery_with_a_bus(settings):
    settings.EVENT_BUS_URL = "amqp://guest:guest@127.0.0.1:5672//"
    with transaction.atomic():
        publish(
            OrderCancelled(
                order_id=7, order_reference="", customer_email="", reason="payment_failed"
            )
        )
        publish(ThingHappened(thing_id="x"))  # not declared externalised
    [delivery] = bus_deliveries()
    assert delivery.event.type == "orders.OrderCancelled"
    assert delivery.ordered and delivery.aggregate_key == "order:7"


def test_the_switch_externalises_every_event(settings):
    settings.EVENT_BUS_URL = "nats://127.0.0.1:4222"
    settings.EVENT_BUS = {**settings.EVENT_BUS, "EXTERNALISE_ALL": True}
    with transaction.atomic():
        publish(ThingHappened(thing_id="x"))
    assert len(bus_deliveries()) == 1


def test_a_rolled_back_event_has_no_bus_delivery(settings):
    settings.EVENT_BUS_URL = "amqp://guest:guest@127.0.0.1:5672//"
    with pytest.raises(RuntimeError), transaction.atomic():
        publish(
            OrderCancelled(
                order_id=7, order_reference="", customer_email="", reason="payment_failed"
            )
        )
        raise RuntimeError("rolled back")
    assert bus_deliveries() == []


def test_the_relay_sends_the_bus_deliveries_to_the_bus_queue_in_one_message(settings):
    settings.EVENT_BUS_URL = "amqp://guest:guest@127.0.0.1:5672//"
    with transaction.atomic():
        for n in range(5):
            publish(
                OrderCancelled(
                    order_id=n, order_reference="", customer_email="", reason="payment_failed"
                )
            )
    claimed = deliveries_claim(limit=100)
    bus_ids = sorted(pk for pk, name in claimed if name == BUS_SUBSCRIBER)
    assert len(bus_ids) == 5
    with mock.patch("outbox.tasks.bus_publish.apply_async") as send:
        deliveries_dispatch(claimed)
    [call] = send.call_args_list
    assert sorted(call.kwargs["args"][0]) == bus_ids
    assert call.kwargs["queue"] == BUS_QUEUE
