"""The bus on a real RabbitMQ: confirms, CloudEvents on the wire, topology, and a consumer
process on a second database taking events in exactly once."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from urllib.parse import urlparse

import pika
import pytest
from django.db import transaction
from django.utils.timezone import now

from harness.latency_proxy import LatencyProxy
from harness.services import free_port
from orders.events import OrderCancelled
from outbox import publish
from outbox.bus import publishing
from outbox.bus.publishing import bus_adapter, bus_deliveries_publish
from outbox.bus.target import BUS_SUBSCRIBER
from outbox.context import Handling, handling
from outbox.crypto import is_sealed, payload_open
from outbox.models import Delivery
from tests.bus.conftest import (
    CONSUME,
    CRASH_AFTER_COMMIT,
    RABBITMQ_URL,
    ROOT,
    fault_test,
    publish_things,
)
from tests.observability.test_metrics import Scrape
from tests.support import wait_until
from tests.testapp.events import ThingHappened

pytestmark = pytest.mark.django_db(transaction=True)

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def pika_channel():
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    return connection, connection.channel()


def consumers_on(queue: str) -> int:
    """Consumers subscribed to ``queue`` on the machine's broker (0 while it does not exist)."""
    connection, channel = pika_channel()
    try:
        return channel.queue_declare(queue, passive=True).method.consumer_count
    except pika.exceptions.ChannelClosedByBroker:
        return 0
    finally:
        if connection.is_open:
            connection.close()


def bus_ids() -> list[int]:
    return list(Delivery.objects.filter(subscriber=BUS_SUBSCRIBER).values_list("id", flat=True))


def test_a_plain_amqp_client_finds_every_cloudevents_attribute(rabbitmq_bus, bus_namespace, client):
    before = Scrape(client)
    bus_adapter().topology_declare(service=None, event_types=())
    connection, channel = pika_channel()
    try:
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(queue, f"{bus_namespace}.events", routing_key="orders.OrderCancelled")
        cause = uuid.uuid4()
        saga = uuid.uuid4()
        with (
            handling(
                Handling(
                    event_id=cause,
                    event_type="payments.PaymentFailed",
                    correlation_id=saga,
                    subscriber="orders.x",
                    attempt=1,
                )
            ),
            transaction.atomic(),
        ):
            row = publish(
                OrderCancelled(
                    order_id=7, order_reference="", customer_email="", reason="payment_failed"
                ),
                headers={"traceparent": TRACEPARENT},
            )
        assert bus_deliveries_publish(delivery_ids=bus_ids())["done"] == 1

        method, properties, body = channel.basic_get(queue, auto_ack=True)
    finally:
        connection.close()
    assert method is not None, "no message reached the bound queue"
    h = properties.headers
    assert h["cloudEvents_specversion"] == "1.0"
    assert h["cloudEvents_id"] == str(row.event_id)
    assert h["cloudEvents_source"] == "/shop/orders"
    assert h["cloudEvents_type"] == "orders.OrderCancelled"
    assert h["cloudEvents_subject"] == "order:7"
    assert h["cloudEvents_time"].startswith(row.occurred_at.isoformat()[:19])
    assert h["cloudEvents_eventversion"] == 2  # OrderCancelled v2: with the reference and address
    assert h["cloudEvents_correlationid"] == str(saga)
    assert h["cloudEvents_causationid"] == str(cause)
    assert h["cloudEvents_traceparent"] == TRACEPARENT
    assert properties.content_type == "application/json"
    assert properties.delivery_mode == 2
    data = json.loads(body)
    assert is_sealed(data["customer_email"])  # the address crosses the bus sealed
    assert payload_open(data, event_type="orders.OrderCancelled") == {
        "order_id": 7,
        "order_reference": "",
        "customer_email": "",
        "reason": "payment_failed",
    }
    assert method.routing_key == "orders.OrderCancelled"
    assert Delivery.objects.get(subscriber=BUS_SUBSCRIBER).status == "done"

    after = Scrape(client)
    target = f"amqp:{bus_namespace}"
    for name, labels, delta in [
        ("outbox_bus_published_total", {"target": target, "outcome": "done"}, 1),
        ("outbox_bus_confirm_seconds_count", {"target": target}, 1),
    ]:
        assert after.value(name, **labels) - before.value(name, **labels) == delta


def test_an_unreachable_broker_leaves_the_delivery_pending_for_a_retry(settings):
    settings.EVENT_BUS_URL = "amqp://guest:guest@127.0.0.1:1//"  # nothing listens there
    from outbox.bus import publishing

    publishing._adapter.cache_clear()
    with transaction.atomic():
        publish(
            OrderCancelled(
                order_id=1, order_reference="", customer_email="", reason="payment_failed"
            )
        )
    assert bus_deliveries_publish(delivery_ids=bus_ids()) == {
        "done": 0,
        "retry": 1,
        "dead": 0,
        "skipped": 0,
    }
    delivery = Delivery.objects.get(subscriber=BUS_SUBSCRIBER)
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    assert delivery.last_error
    publishing._adapter.cache_clear()


def test_a_message_nobody_is_bound_for_is_kept_by_the_alternate_exchange(
    rabbitmq_bus, bus_namespace
):
    with transaction.atomic():
        publish(ThingHappened(thing_id="lonely"))
    assert bus_deliveries_publish(delivery_ids=bus_ids())["done"] == 1
    connection, channel = pika_channel()
    try:
        kept = channel.queue_declare(f"{bus_namespace}.unroutable", passive=True)
    finally:
        connection.close()
    assert kept.method.message_count == 1


def test_events_cross_to_a_second_database_once_in_order_and_a_bad_message_is_dead_lettered(
    rabbitmq_bus, bus_namespace, other_service, bus_worker
):
    other = other_service(RABBITMQ_URL)
    # The release step: the consumer's queue and bindings exist before anything is published.
    subprocess.run(
        [sys.executable, *CONSUME, "--declare-only"], cwd=ROOT, env=other.env, check=True
    )
    other.start()
    publish_things(aggregates=3, seqs=range(4))

    # Garbage sent straight to the exchange, as a misbehaving producer would.
    connection, channel = pika_channel()
    try:
        channel.confirm_delivery()
        channel.basic_publish(
            f"{bus_namespace}.events", "tests.ThingHappened", b"{not json", pika.BasicProperties()
        )
    finally:
        connection.close()
    publish_things(aggregates=3, seqs=range(4, 6))

    wait_until(lambda: len(other.events()) == 18, timeout=60, what="18 events downstream")
    # The same events published again (a replayed bus delivery): nothing changes downstream.
    again = list(Delivery.objects.filter(subscriber=BUS_SUBSCRIBER).values_list("id", flat=True))
    Delivery.objects.filter(id__in=again[:5]).update(status="pending", next_attempt_at=now())
    wait_until(
        lambda: (
            not Delivery.objects.filter(subscriber=BUS_SUBSCRIBER).exclude(status="done").exists()
        ),
        timeout=60,
        what="the replayed bus deliveries",
    )
    dead = dead_letters(bus_namespace)
    assert dead == 1
    other.stop()

    stored = other.events()
    assert len(stored) == 18
    assert len({event_id for event_id, _, _ in stored}) == 18
    deliveries = other.query(
        "SELECT subscriber, count(*) FROM outbox_delivery GROUP BY subscriber ORDER BY 1"
    )
    assert deliveries == [("tests.record_a", 18), ("tests.record_b", 18), ("tests.record_c", 18)]
    # Each aggregate's events arrived in the order they were published.
    seqs: dict[str, list[int]] = {}
    for _, _, aggregate_id in stored:
        seqs.setdefault(aggregate_id, [])
    for aggregate_id in seqs:
        seqs[aggregate_id] = [
            seq
            for (seq,) in other.query(
                "SELECT json_extract(payload, '$.seq') FROM outbox_event "
                "WHERE aggregate_id = ? ORDER BY position",
                (aggregate_id,),
            )
        ]
    assert seqs == {f"agg-{n}": list(range(6)) for n in range(3)}


def dead_letters(namespace: str) -> int:
    connection, channel = pika_channel()
    try:
        dead = channel.queue_declare(f"{namespace}.downstream.dead", passive=True)
        return dead.method.message_count
    finally:
        connection.close()


@fault_test
def test_a_consumer_killed_between_its_commit_and_its_ack_stores_nothing_twice(
    rabbitmq_bus, other_service, bus_worker
):
    other = other_service(RABBITMQ_URL)
    subprocess.run(
        [sys.executable, *CONSUME, "--declare-only"], cwd=ROOT, env=other.env, check=True
    )
    crashing = other.start(script=CRASH_AFTER_COMMIT)
    publish_things(aggregates=3, seqs=range(1))
    assert crashing.wait(60) == 17
    # Committed before the crash (the consumer's first batch: one or more), then redelivered.
    committed = int((other.folder / "stored-before-crash").read_text())
    assert committed >= 1
    assert len(other.events()) == committed

    other.start()
    wait_until(lambda: len(other.events()) == 3, timeout=60, what="3 events downstream")
    other.stop()
    assert len({event_id for event_id, _, _ in other.events()}) == 3
    assert other.query("SELECT count(*) FROM outbox_delivery") == [(9,)]


@pytest.fixture
def rabbitmq_node(rabbitmq_node_shared, rabbitmq_bus, settings):
    """A RabbitMQ node of this run's own (tests/bus/conftest.py), which the test may stop and
    start: the machine's broker is never stopped. EVENT_BUS_URL points at it. The node is the
    session's; a test leaves it running (a stopped one is started here again), and each test's
    topology lives in its own namespace on it."""
    node = rabbitmq_node_shared
    if node.popen is None or node.popen.poll() is not None:
        node.start()
    node.wait_ready(90)
    settings.EVENT_BUS_URL = node.url
    publishing._adapter.cache_clear()
    try:
        yield node
    finally:
        publishing.bus_adapter().close()
        publishing._adapter.cache_clear()


@pytest.mark.timeout(400)
@fault_test
def test_rabbitmq_stopped_mid_run_loses_nothing_and_doubles_nothing(
    rabbitmq_node, other_service, bus_worker
):
    other = other_service(rabbitmq_node.url)
    subprocess.run(
        [sys.executable, *CONSUME, "--declare-only"], cwd=ROOT, env=other.env, check=True
    )
    other.start()
    publish_things(aggregates=2, seqs=range(3))
    try:
        rabbitmq_node.terminate()  # a clean stop, as an operator's
        # Published while the broker is down: the bus deliveries fail and wait for a retry.
        publish_things(aggregates=2, seqs=range(3, 6))
        wait_until(
            lambda: (
                Delivery.objects.filter(subscriber=BUS_SUBSCRIBER, attempts__gt=0)
                .exclude(status="done")
                .exists()
            ),
            timeout=30,
            what="a failed publish attempt",
        )
    finally:
        rabbitmq_node.start()
    wait_until(lambda: len(other.events()) == 12, timeout=90, what="12 events downstream")
    other.stop()
    assert len({event_id for event_id, _, _ in other.events()}) == 12
    assert not Delivery.objects.filter(subscriber=BUS_SUBSCRIBER).exclude(status="done").exists()
    for n in range(2):
        seqs = [
            seq
            for (seq,) in other.query(
                "SELECT json_extract(payload, '$.seq') FROM outbox_event "
                "WHERE aggregate_id = ? ORDER BY position",
                (f"agg-{n}",),
            )
        ]
        assert seqs == list(range(6))


def test_a_consumer_started_while_the_broker_is_away_waits_for_it_and_then_consumes(
    rabbitmq_bus, other_service, bus_namespace
):
    """The consumer reaches RabbitMQ through a proxy whose upstream is away at first (every
    connection closed at once, as a broker that is down or restarting), then the real broker:
    it keeps trying instead of exiting, and once the broker is there it declares its queue and
    takes the events in. (The shared broker itself is never stopped.)"""

    broker = urlparse(RABBITMQ_URL)
    proxy = LatencyProxy(upstream_host="127.0.0.1", upstream_port=free_port())
    port = proxy.start()
    try:
        other = other_service(RABBITMQ_URL.replace(f":{broker.port}/", f":{port}/"))
        process = other.start()
        # Each round tries twice (kombu's one retry): four refusals are a second round, after
        # the first failed.
        wait_until(
            lambda: proxy.stats.refused >= 4, timeout=60, what="four attempts to connect refused"
        )
        assert process.poll() is None, other.log.read_text()
        proxy.upstream = (broker.hostname, broker.port)  # the broker is back
        # Consuming: its queue and bindings are declared before it subscribes (a queue alone
        # is not enough: an event published before its binding goes to the alternate exchange).
        wait_until(
            lambda: consumers_on(f"{bus_namespace}.downstream") > 0,
            timeout=60,
            what=f"the consumer subscribed to its queue; log in {other.log}",
        )
        with transaction.atomic():
            publish(ThingHappened(thing_id="after", seq=0))
        assert bus_deliveries_publish(delivery_ids=bus_ids())["done"] == 1
        wait_until(lambda: len(other.events()) == 1, timeout=60, what="the event downstream")
    finally:
        other.stop()
        proxy.stop()
