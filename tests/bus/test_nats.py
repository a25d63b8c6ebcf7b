"""The bus on a real NATS JetStream: publish acks, CloudEvents headers, the duplicate window,
and a consumer process on a second database taking events in exactly once."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import uuid

import nats
import pytest
from django.db import transaction
from django.utils.timezone import now

from orders.events import OrderCancelled
from outbox import publish
from outbox.bus.publishing import bus_adapter, bus_deliveries_publish
from outbox.bus.target import BUS_SUBSCRIBER
from outbox.context import Handling, handling
from outbox.crypto import is_sealed, payload_open
from outbox.models import Delivery
from tests.bus.conftest import (
    CONSUME,
    CRASH_AFTER_COMMIT,
    NATS_URL,
    ROOT,
    _nats_bus,
    fault_test,
    publish_things,
)
from tests.support import IN_CI, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def bus_ids() -> list[int]:
    return list(Delivery.objects.filter(subscriber=BUS_SUBSCRIBER).values_list("id", flat=True))


async def stream_messages(url: str, stream: str, subject: str) -> list:
    """Every message of ``subject`` in ``stream``, read with nats-py alone."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(subject, stream=stream)
        try:
            return await sub.fetch(100, timeout=2)
        except nats.errors.TimeoutError:
            return []
    finally:
        await nc.close()


def test_a_plain_nats_client_finds_every_cloudevents_header(nats_bus, bus_namespace):
    cause, saga = uuid.uuid4(), uuid.uuid4()
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
    # Published a second time (a lease ran out after the confirm): the duplicate window drops it.
    Delivery.objects.filter(subscriber=BUS_SUBSCRIBER).update(status="pending")
    assert bus_deliveries_publish(delivery_ids=bus_ids())["done"] == 1

    stream = bus_adapter().stream
    [msg] = asyncio.run(
        stream_messages(NATS_URL, stream, f"{bus_namespace}.events.orders.OrderCancelled")
    )
    h = msg.headers
    assert h["ce-specversion"] == "1.0"
    assert h["ce-id"] == str(row.event_id)
    assert h["ce-source"] == "/shop/orders"
    assert h["ce-type"] == "orders.OrderCancelled"
    assert h["ce-subject"] == "order:7"
    assert h["ce-time"].startswith(row.occurred_at.strftime("%Y-%m-%dT%H:%M:%S"))
    assert h["ce-eventversion"] == "2"  # OrderCancelled v2: with the reference and address
    assert h["ce-correlationid"] == str(saga)
    assert h["ce-causationid"] == str(cause)
    assert h["ce-traceparent"] == TRACEPARENT
    assert h["content-type"] == "application/json"
    assert h["Nats-Msg-Id"] == str(row.event_id)
    data = json.loads(msg.data)
    assert is_sealed(data["customer_email"])  # the address crosses the bus sealed
    assert payload_open(data, event_type="orders.OrderCancelled") == {
        "order_id": 7,
        "order_reference": "",
        "customer_email": "",
        "reason": "payment_failed",
    }


def test_events_cross_to_a_second_database_once_in_order_and_a_bad_message_is_dead_lettered(
    nats_bus, bus_namespace, other_service, bus_worker
):
    other = other_service(NATS_URL)
    subprocess.run(
        [sys.executable, *CONSUME, "--declare-only"], cwd=ROOT, env=other.env, check=True
    )
    other.start()
    publish_things(aggregates=3, seqs=range(4))

    async def garbage():
        nc = await nats.connect(NATS_URL)
        try:
            await nc.jetstream().publish(
                f"{bus_namespace}.events.tests.ThingHappened",
                b"{not json",
                headers={"ce-type": "tests.ThingHappened"},
            )
        finally:
            await nc.close()

    asyncio.run(garbage())
    publish_things(aggregates=3, seqs=range(4, 6))

    wait_until(lambda: len(other.events()) == 18, timeout=60, what="18 events downstream")
    again = list(Delivery.objects.filter(subscriber=BUS_SUBSCRIBER).values_list("id", flat=True))
    Delivery.objects.filter(id__in=again[:5]).update(status="pending", next_attempt_at=now())
    wait_until(
        lambda: (
            not Delivery.objects.filter(subscriber=BUS_SUBSCRIBER).exclude(status="done").exists()
        ),
        timeout=60,
        what="the republished bus deliveries",
    )
    wait_until(
        lambda: (
            len(
                asyncio.run(
                    stream_messages(
                        NATS_URL, bus_adapter().dead_stream, f"{bus_namespace}.dead.downstream"
                    )
                )
            )
            == 1
        ),
        timeout=30,
        what="the dead-lettered message",
    )
    other.stop()

    stored = other.events()
    assert len({event_id for event_id, _, _ in stored}) == len(stored) == 18
    deliveries = other.query(
        "SELECT subscriber, count(*) FROM outbox_delivery GROUP BY subscriber ORDER BY 1"
    )
    assert deliveries == [("tests.record_a", 18), ("tests.record_b", 18), ("tests.record_c", 18)]
    for n in range(3):
        assert seqs_downstream(other, f"agg-{n}") == list(range(6))


def seqs_downstream(other, aggregate_id: str) -> list[int]:
    return [
        seq
        for (seq,) in other.query(
            "SELECT json_extract(payload, '$.seq') FROM outbox_event "
            "WHERE aggregate_id = ? ORDER BY position",
            (aggregate_id,),
        )
    ]


@fault_test
def test_a_consumer_killed_between_its_commit_and_its_ack_stores_nothing_twice(
    nats_bus, other_service, bus_worker
):
    other = other_service(NATS_URL)
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

    # JetStream redelivers the unacknowledged message after the consumer's ack wait.
    other.start()
    wait_until(lambda: len(other.events()) == 3, timeout=90, what="3 events downstream")
    other.stop()
    assert len({event_id for event_id, _, _ in other.events()}) == 3
    assert other.query("SELECT count(*) FROM outbox_delivery") == [(9,)]


@pytest.fixture
def private_nats(tmp_path):
    """A nats-server of this test's own, on a free port, that the test may stop and start."""
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not shutil.which(binary):
        if IN_CI:
            pytest.fail("nats-server is not installed")
        pytest.skip("nats-server is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(tmp_path / "js")]

    class Server:
        url = f"nats://127.0.0.1:{port}"
        process: subprocess.Popen | None = None

        def start(self):
            self.process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            wait_until(self.up, timeout=20, what="nats-server")

        def up(self) -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return True
            except OSError:
                return False

        def stop(self):
            self.process.terminate()
            self.process.wait(20)

    server = Server()
    server.start()
    yield server
    if server.process.poll() is None:
        server.stop()


@fault_test
def test_nats_restarted_mid_run_loses_nothing_and_doubles_nothing(
    settings, bus_namespace, private_nats, other_service, bus_worker
):
    bus = _nats_bus(settings, bus_namespace, private_nats.url)
    next(bus)
    try:
        other = other_service(private_nats.url)
        subprocess.run(
            [sys.executable, *CONSUME, "--declare-only"], cwd=ROOT, env=other.env, check=True
        )
        other.start()
        publish_things(aggregates=2, seqs=range(3))
        private_nats.stop()
        publish_things(aggregates=2, seqs=range(3, 6))
        wait_until(
            lambda: (
                Delivery.objects.filter(subscriber=BUS_SUBSCRIBER, attempts__gt=0)
                .exclude(status="done")
                .exists()
            ),
            timeout=60,
            what="a failed publish attempt",
        )
        private_nats.start()
        wait_until(lambda: len(other.events()) == 12, timeout=90, what="12 events downstream")
        other.stop()
        assert len({event_id for event_id, _, _ in other.events()}) == 12
        for n in range(2):
            assert seqs_downstream(other, f"agg-{n}") == list(range(6))
    finally:
        next(bus, None)
