"""The relay publishes small bus claims itself (outbox/bus/relaying.py), on both real brokers:
done only once the broker holds the message, with no worker on the ``bus`` queue; a slow broker
never holds up the local deliveries of the same claim; a broker that is down means retries and
nothing lost."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from urllib.parse import urlparse

import nats
import pika
import pytest
from django.conf import settings

from harness.latency_proxy import LatencyProxy
from outbox.bus import publishing
from outbox.bus.target import BUS_SUBSCRIBER
from outbox.models import Delivery
from outbox.queues import RELAY_QUEUE
from tests.bus.conftest import (
    CONSUME,
    ROOT,
    _nats_bus,
    fault_test,
    publish_things,
)
from tests.bus.test_nats import private_nats, seqs_downstream  # noqa: F401 (a fixture)
from tests.bus.test_rabbitmq import rabbitmq_node  # noqa: F401 (a fixture)
from tests.support import all_queues, relay_ticker, running_worker, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["rabbitmq", "nats"])
def broker(request):
    """Each real broker in a namespace of this test's own (tests/bus/conftest.py)."""
    request.getfixturevalue(f"{request.param}_bus")
    return request.param


def held_by_broker(broker: str, url: str, namespace: str) -> int:
    """Messages the broker holds for the namespace, read with a plain client: RabbitMQ's
    alternate exchange queue (nothing is bound), NATS's stream."""
    if broker == "rabbitmq":
        connection = pika.BlockingConnection(pika.URLParameters(url))
        try:
            queue = connection.channel().queue_declare(f"{namespace}.unroutable", passive=True)
            return queue.method.message_count
        finally:
            connection.close()

    async def count() -> int:
        from outbox.bus.adapters.nats import NatsAdapter

        nc = await nats.connect(url)
        try:
            info = await nc.jetstream().stream_info(NatsAdapter(url, namespace=namespace).stream)
            return info.state.messages
        finally:
            await nc.close()

    return asyncio.run(count())


def bus_deliveries(status: str | None = None):
    rows = Delivery.objects.filter(subscriber=BUS_SUBSCRIBER)
    return rows.filter(status=status) if status else rows


def local_deliveries(status: str | None = None):
    rows = Delivery.objects.exclude(subscriber=BUS_SUBSCRIBER)
    return rows.filter(status=status) if status else rows


def test_the_relay_publishes_a_small_claim_itself_and_marks_it_done_after_the_confirm(
    broker, settings, bus_namespace
):
    """No worker takes the ``bus`` queue: the bus deliveries are done because the relay's
    process published them, and the broker holds every one of them, once."""
    queues = [q for q in all_queues() if q != "bus"]
    assert RELAY_QUEUE in queues
    with running_worker(queues=queues), relay_ticker():
        publish_things(aggregates=3, seqs=range(2))
        wait_until(
            lambda: bus_deliveries("done").count() == 6,
            timeout=30,
            what="6 bus deliveries done",
        )
        wait_until(lambda: not local_deliveries().exclude(status="done").exists(), timeout=30)
    url = settings.EVENT_BUS_URL
    assert held_by_broker(broker, url, bus_namespace) == 6
    assert {d.attempts for d in bus_deliveries()} == {1}


def test_with_relay_publishing_off_every_claim_goes_to_the_bus_queue(
    broker, settings, bus_namespace
):
    """``RELAY_PUBLISH_MAX`` 0: with no worker on the ``bus`` queue nothing is published, while
    the local deliveries run; a worker on the ``bus`` queue then publishes them."""
    settings.EVENT_BUS = {**settings.EVENT_BUS, "RELAY_PUBLISH_MAX": 0}
    queues = [q for q in all_queues() if q != "bus"]
    with running_worker(queues=queues), relay_ticker():
        publish_things(aggregates=2, seqs=range(1))
        wait_until(lambda: not local_deliveries().exclude(status="done").exists(), timeout=30)
        assert not bus_deliveries("done").exists()
    with running_worker(queues=["bus"]):
        wait_until(lambda: bus_deliveries("done").count() == 2, timeout=30)
    assert held_by_broker(broker, settings.EVENT_BUS_URL, bus_namespace) == 2


@pytest.mark.skipif(
    not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
    reason="on SQLite a bus batch's transaction holds the database's one write lock (IMMEDIATE) "
    "until the broker confirmed, whichever process publishes it: every writer waits (docs/bus.md)",
)
def test_a_slow_broker_does_not_hold_up_the_local_deliveries_of_the_same_claim(
    broker, settings, bus_namespace
):
    """The broker is reached through a proxy that delays every packet by 3 s once warmed up: a
    confirm takes 6 s or more (the default lease, 30 s, outlasts it: no second publish). The
    event's local deliveries, claimed with its bus delivery, run while the relay's thread still
    waits for the confirm; the bus delivery is done after it."""
    url = settings.EVENT_BUS_URL
    parts = urlparse(url)
    proxy = LatencyProxy(upstream_host=parts.hostname, upstream_port=parts.port)
    port = proxy.start()
    settings.EVENT_BUS_URL = url.replace(f":{parts.port}", f":{port}", 1)
    settings.EVENT_BUS = {**settings.EVENT_BUS, "CONFIRM_TIMEOUT": 30.0}
    publishing.bus_adapter().close()
    publishing._adapter.cache_clear()
    try:
        with running_worker(), relay_ticker():
            publish_things(aggregates=1, seqs=range(1))  # the relay's connection, warm
            wait_until(lambda: bus_deliveries("done").count() == 1, timeout=60)
            proxy.slow(3.0, 3.0)
            publish_things(aggregates=1, seqs=range(1, 2))
            wait_until(
                lambda: not local_deliveries().exclude(status="done").exists(),
                timeout=30,
                what="the second event's local deliveries done",
            )
            # Every local delivery ran while the broker had not yet answered.
            assert bus_deliveries("done").count() == 1
            wait_until(lambda: bus_deliveries("done").count() == 2, timeout=60)
        assert held_by_broker(broker, url, bus_namespace) == 2
    finally:
        proxy.fast()
        publishing.bus_adapter().close()
        publishing._adapter.cache_clear()
        settings.EVENT_BUS_URL = url
        proxy.stop()


def _outage(broker_node, url: str, other_service, stop, start) -> None:
    """Events published before, during and after the broker is down; the relay's worker on
    every queue, the bus queue included (where claims go while the relay's thread is off)."""
    other = other_service(url)
    subprocess.run(
        [sys.executable, *CONSUME, "--declare-only"], cwd=ROOT, env=other.env, check=True
    )
    other.start()
    with running_worker(queues=sorted({*all_queues(), "bus"})), relay_ticker():
        publish_things(aggregates=2, seqs=range(2))
        wait_until(lambda: bus_deliveries("done").count() == 4, timeout=60)
        stop()
        try:
            publish_things(aggregates=2, seqs=range(2, 4))
            wait_until(
                lambda: bus_deliveries().filter(attempts__gt=0).exclude(status="done").exists(),
                timeout=60,
                what="a failed publish attempt",
            )
            # The local deliveries of the events published while the broker is down have run.
            wait_until(lambda: not local_deliveries().exclude(status="done").exists(), timeout=30)
        finally:
            start()
        wait_until(lambda: len(other.events()) == 8, timeout=120, what="8 events downstream")
    other.stop()
    assert len({event_id for event_id, _, _ in other.events()}) == 8
    assert not bus_deliveries().exclude(status="done").exists()
    for n in range(2):
        assert seqs_downstream(other, f"agg-{n}") == list(range(4))


@pytest.mark.timeout(400)
@fault_test
def test_rabbitmq_down_under_the_relay_means_retries_and_nothing_lost(
    rabbitmq_node,  # noqa: F811
    other_service,
    outbox_fast,
):
    _outage(
        rabbitmq_node,
        rabbitmq_node.url,
        other_service,
        rabbitmq_node.terminate,
        rabbitmq_node.start,
    )


@pytest.mark.timeout(300)
@fault_test
def test_nats_down_under_the_relay_means_retries_and_nothing_lost(
    settings,
    bus_namespace,
    private_nats,  # noqa: F811
    other_service,
    outbox_fast,
):
    bus = _nats_bus(settings, bus_namespace, private_nats.url)
    next(bus)
    try:
        _outage(
            private_nats, private_nats.url, other_service, private_nats.stop, private_nats.start
        )
    finally:
        next(bus, None)
