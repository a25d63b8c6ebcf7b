"""Which events get a bus delivery: declared ones, only with a bus, in the publishing
transaction. No broker needed."""

from io import StringIO
from unittest import mock

import pytest
from django.core.management import CommandError, call_command
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


def test_the_release_step_refuses_a_type_nobody_publishes_to_the_bus(settings):
    """A service whose subscribers handle another service's event that is not declared
    externalised would wait for ever: the split deployment's release step (bus_consume
    --require-externalised) refuses, naming it, before it touches the broker. (Without the flag
    the consumer warns: a publisher may externalise everything with EXTERNALISE_ALL.)"""
    from django.core.management import CommandError, call_command

    settings.EVENT_BUS_URL = "amqp://guest:guest@127.0.0.1:1/%2F"  # never reached
    settings.EVENT_BUS = {
        **settings.EVENT_BUS,
        "LOCAL_APPS": ["orders", "payments", "inventory", "shipping"],
    }
    with pytest.raises(CommandError, match=r"tests\.ThingHappened.*not declared externalised"):
        call_command("bus_consume", "--declare-only", "--require-externalised")


def test_a_replay_to_the_bus_backfills_only_the_externalised_events(settings):
    settings.EVENT_BUS_URL = ""
    with transaction.atomic():
        publish(
            OrderCancelled(
                order_id=7, order_reference="", customer_email="", reason="payment_failed"
            )
        )
        publish(ThingHappened(thing_id="x"))  # not declared externalised
    assert bus_deliveries() == []
    settings.EVENT_BUS_URL = "amqp://guest:guest@127.0.0.1:5672//"
    out = StringIO()
    call_command("outbox_replay", "--subscriber", "bus", "--since", "2000-01-01T00:00Z", stdout=out)
    assert "bus: 1 new deliveries (backfill), 0 made due again" in out.getvalue()
    [delivery] = bus_deliveries()
    assert delivery.event.type == "orders.OrderCancelled"
    assert delivery.status == "pending" and delivery.ordered
    assert delivery.aggregate_key == "order:7"
    # With the switch on, every event type is the bus's.
    settings.EVENT_BUS = {**settings.EVENT_BUS, "EXTERNALISE_ALL": True}
    call_command("outbox_replay", "--subscriber", "bus", "--since", "2000-01-01T00:00Z", stdout=out)
    assert sorted(d.event.type for d in bus_deliveries()) == [
        "orders.OrderCancelled",
        "tests.ThingHappened",
    ]


def test_a_replay_to_the_bus_without_a_bus_is_a_clear_error_and_changes_nothing(settings):
    settings.EVENT_BUS_URL = ""
    with transaction.atomic():
        publish(
            OrderCancelled(
                order_id=7, order_reference="", customer_email="", reason="payment_failed"
            )
        )
    for args in (["--since", "2000-01-01T00:00Z"], ["--dead"]):
        with pytest.raises(CommandError, match="EVENT_BUS_URL is not set"):
            call_command("outbox_replay", "--subscriber", "bus", *args)
    assert bus_deliveries() == []
