"""``outbox_replay --subscriber bus``: a service that joins late is sent, through the bus, the
events published before there was one; on each real broker, with a real worker and a consumer
process on a second database."""

from __future__ import annotations

import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction

from outbox import publish
from outbox.bus.publishing import bus_adapter
from outbox.bus.target import BUS_SUBSCRIBER
from outbox.models import Delivery
from tests.bus.conftest import CONSUME, NATS_URL, RABBITMQ_URL, ROOT, publish_things
from tests.support import wait_until
from tests.testapp.events import ThingHappened

pytestmark = pytest.mark.django_db(transaction=True)

SINCE = "2000-01-01T00:00Z"


def bus_done() -> bool:
    deliveries = Delivery.objects.filter(subscriber=BUS_SUBSCRIBER)
    return deliveries.exists() and not deliveries.exclude(status="done").exists()


def stored_once_in_order(service, count: int) -> None:
    """``service`` stored ``count`` events, each once, and agg-0's and agg-1's in order."""
    stored = service.events()
    assert len(stored) == len({event_id for event_id, _, _ in stored}) == count
    for n in range(2):
        assert [
            seq
            for (seq,) in service.query(
                "SELECT json_extract(payload, '$.seq') FROM outbox_event "
                "WHERE aggregate_id = ? ORDER BY position",
                (f"agg-{n}",),
            )
        ] == [0, 1, 2]


def replay(*args: str) -> str:
    out = StringIO()
    call_command("outbox_replay", "--subscriber", "bus", *args, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("broker", "url"), [("rabbitmq_bus", RABBITMQ_URL), ("nats_bus", NATS_URL)]
)
def test_a_service_that_joins_late_is_sent_the_earlier_events_once_in_order(
    request, settings, broker, url, other_service, bus_worker
):
    request.getfixturevalue(broker)
    bus_url = settings.EVENT_BUS_URL
    # Before there was a bus: no bus deliveries at all.
    settings.EVENT_BUS_URL = ""
    publish_things(aggregates=2, seqs=range(3))
    assert not Delivery.objects.filter(subscriber=BUS_SUBSCRIBER).exists()

    # The bus arrives, and with it a consuming service.
    settings.EVENT_BUS_URL = bus_url
    other = other_service(url)
    subprocess.run(
        [sys.executable, *CONSUME, "--declare-only"], cwd=ROOT, env=other.env, check=True
    )
    other.start()
    with transaction.atomic():
        publish(ThingHappened(thing_id="agg-late", seq=0))
    wait_until(lambda: len(other.events()) == 1, timeout=60, what="the event published live")
    wait_until(bus_done, timeout=30, what="the live bus delivery done")

    out = replay("--type", "tests.ThingHappened")
    assert "bus: 6 new deliveries (backfill), 0 made due again, 1 already done" in out
    wait_until(lambda: len(other.events()) == 7, timeout=60, what="7 events downstream")
    wait_until(bus_done, timeout=30, what="every bus delivery done")

    # Again, done ones included: published a second time, stored once downstream.
    assert "0 new deliveries (backfill), 7 made due again" in replay(
        "--since", SINCE, "--include-done"
    )
    wait_until(bus_done, timeout=60, what="the republished bus deliveries")
    # One more event behind them: once it is downstream, so were they (the queue and the stream
    # deliver in publish order).
    with transaction.atomic():
        publish(ThingHappened(thing_id="agg-last", seq=0))
    wait_until(lambda: len(other.events()) == 8, timeout=60, what="the last event downstream")
    other.stop()
    stored_once_in_order(other, 8)
    assert other.query("SELECT count(*) FROM outbox_delivery") == [(8 * 3,)]


def replay_to(service: str, *args: str) -> str:
    out = StringIO()
    call_command("outbox_replay", "--to-service", service, *args, stdout=out)
    return out.getvalue()


def declared(service) -> None:
    subprocess.run(
        [sys.executable, *CONSUME, "--declare-only"], cwd=ROOT, env=service.env, check=True
    )


@pytest.mark.parametrize(
    ("broker", "url"), [("rabbitmq_bus", RABBITMQ_URL), ("nats_bus", NATS_URL)]
)
def test_a_replay_to_one_service_reaches_it_alone(
    request, settings, broker, url, other_service, bus_worker
):
    """``outbox_replay --to-service downstream``: the earlier events reach that service's queue
    or durable consumer, and the consumer of another service of the same types (bystander)
    receives none of them; run again, nothing new is sent."""
    request.getfixturevalue(broker)
    bus_url = settings.EVENT_BUS_URL
    settings.EVENT_BUS_URL = ""  # before there was a bus
    publish_things(aggregates=2, seqs=range(3))

    settings.EVENT_BUS_URL = bus_url
    target, bystander = other_service(url), other_service(url, "bystander")
    for service in (target, bystander):
        declared(service)
        service.start()
    with transaction.atomic():
        publish(ThingHappened(thing_id="agg-live", seq=0))
    for service in (target, bystander):
        wait_until(lambda s=service: len(s.events()) == 1, timeout=60, what="the live event")

    out = replay_to("downstream", "--type", "tests.ThingHappened", "--since", SINCE)
    assert "replaying tests.ThingHappened to service downstream through the bus" in out, out
    # Every event, the live one included: the bus carried it to every service, not this replay.
    assert "bus:downstream: 7 new deliveries (backfill), 0 made due again, 0 already" in out
    wait_until(lambda: len(target.events()) == 7, timeout=60, what="7 events at downstream")
    wait_until(
        lambda: Delivery.objects.filter(subscriber="bus:downstream", status="done").count() == 7,
        timeout=30,
        what="the replay's deliveries confirmed",
    )
    # Again: nothing new is sent.
    assert "0 new deliveries (backfill), 0 made due again, 7 already done" in replay_to(
        "downstream", "--since", SINCE
    )
    # One more live event: once both services have it, each has taken in everything before it.
    with transaction.atomic():
        publish(ThingHappened(thing_id="agg-last", seq=0))
    wait_until(lambda: len(target.events()) == 8, timeout=60, what="the last event downstream")
    wait_until(lambda: len(bystander.events()) == 2, timeout=60, what="the last event, bystander")
    target.stop()
    bystander.stop()
    # The bystander's consumer was handed the two live events and nothing else.
    assert bystander.received() == {"stored": 2.0}
    # Downstream's got the live event twice (live, then replayed), stored once.
    assert target.received() == {"stored": 8.0, "duplicate": 1.0}
    stored_once_in_order(target, 8)


@pytest.mark.parametrize("broker", ["rabbitmq_bus", "nats_bus"])
def test_a_replay_to_a_service_the_bus_does_not_know_or_of_types_it_does_not_take_is_refused(
    request, broker
):
    request.getfixturevalue(broker)
    publish_things(aggregates=1, seqs=range(1))
    bus_adapter().topology_declare(service="downstream", event_types=["tests.ThingHappened"])
    before = sorted(Delivery.objects.values_list("id", "subscriber", "status"))
    for args, message in (
        (["nobody"], "no service 'nobody' on the bus: nothing is declared under that name"),
        (
            ["downstream", "--type", "orders.OrderPlaced"],
            "service 'downstream' takes none of orders.OrderPlaced from the bus",
        ),
    ):
        with pytest.raises(CommandError, match=message):
            replay_to(*args, "--since", SINCE)
    assert sorted(Delivery.objects.values_list("id", "subscriber", "status")) == before
    # What it takes, it is sent; a type it does not take is left out, and said so.
    out = replay_to(
        "downstream",
        "--type",
        "tests.ThingHappened",
        "--type",
        "orders.OrderPlaced",
        "--since",
        SINCE,
    )
    assert "left out (service downstream does not take them): orders.OrderPlaced" in out
    assert "bus:downstream: 1 new deliveries (backfill)" in out


def test_a_replay_no_queue_takes_is_a_failed_attempt_retried_not_lost(rabbitmq_bus, bus_namespace):
    """RabbitMQ: the service's queue deleted after the replay was planned (its replay exchange
    still there): the broker returns the mandatory message, and the delivery is a failed
    attempt with the reason, pending for a retry, never marked done."""
    from kombu import Connection

    from outbox.bus.publishing import bus_deliveries_publish

    publish_things(aggregates=1, seqs=range(1))
    bus_adapter().topology_declare(service="downstream", event_types=["tests.ThingHappened"])
    assert "bus:downstream: 1 new deliveries" in replay_to("downstream", "--since", SINCE)
    with Connection(rabbitmq_bus, connect_timeout=5) as conn:
        conn.default_channel.queue_delete(f"{bus_namespace}.downstream")
    [delivery] = Delivery.objects.filter(subscriber="bus:downstream")
    assert bus_deliveries_publish(delivery_ids=[delivery.pk])["retry"] == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    assert delivery.last_error.startswith("Unroutable: no queue of service downstream took it")
