"""The consumer stores what the broker already handed it as one batch, one transaction: on a
real RabbitMQ and a real NATS JetStream, with a consumer process on a second database.

A burst of messages waiting for the consumer is stored in fewer transactions than messages
(``outbox_bus_stored_batch_events``: its count is the storing commits, its sum the events);
a duplicate, a republished event and a malformed message among good ones each get their own
verdict; a database that fails while a batch is stored costs a redelivery, never an event.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import uuid

import pytest

from outbox.bus.adapters.base import OutgoingMessage
from outbox.bus.publishing import bus_adapter
from outbox.bus.wire import row_attributes
from outbox.models import Event
from tests.bus.conftest import CONSUME, NATS_URL, RABBITMQ_URL, ROOT
from tests.bus.test_nats import stream_messages
from tests.bus.test_rabbitmq import dead_letters, pika_channel
from tests.support import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

# The consumer process, with a database that fails every statement for its first seconds of
# work (from its first statement on): as PostgreSQL restarting, or SQLite's file locked.
DATABASE_DOWN_AT_FIRST = """
import os, time, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
django.setup()
from django.core.management import call_command
from django.db import OperationalError, connection

down_until = []

def database(execute, sql, params, many, context):
    if not down_until:
        down_until.append(time.monotonic() + 2.5)
    if time.monotonic() < down_until[0]:
        raise OperationalError("the database is down (a test's fault)")
    return execute(sql, params, many, context)

with connection.execute_wrapper(database):
    call_command("bus_consume")
"""


@pytest.fixture(params=["rabbitmq", "nats"])
def broker(request):
    """The bus on each real broker, in a namespace of this test's own."""
    request.getfixturevalue(f"{request.param}_bus")
    return request.param


def url_of(broker: str) -> str:
    return RABBITMQ_URL if broker == "rabbitmq" else NATS_URL


def thing(aggregate: str, seq: int, event_id=None) -> Event:
    return Event(
        event_id=event_id or uuid.uuid4(),
        type="tests.ThingHappened",
        version=1,
        aggregate_type="thing",
        aggregate_id=aggregate,
        payload={"thing_id": aggregate, "seq": seq},
        correlation_id=uuid.uuid4(),
        headers={},
        occurred_at=dt.datetime.now(dt.UTC),
    )


def message(row: Event, *, to_service: str | None = None) -> OutgoingMessage:
    """The event as its publisher sends it; ``to_service``: a replay addressed to that service
    (another message of the same event: on NATS a different ``Nats-Msg-Id``, which JetStream's
    duplicate window does not drop)."""
    headers, content_type, body = bus_adapter().encode(
        row_attributes(row, service="shop"), row.payload
    )
    return OutgoingMessage(
        event_id=str(row.event_id),
        event_type=row.type,
        partition_key=row.aggregate_key,
        headers=headers,
        content_type=content_type,
        body=body,
        service=to_service,
    )


def garbage() -> OutgoingMessage:
    return OutgoingMessage(
        event_id=str(uuid.uuid4()),
        event_type="tests.ThingHappened",
        partition_key="thing:garbage",
        headers={},
        content_type="application/json",
        body=b"{not json",
    )


def send(messages: list[OutgoingMessage]) -> None:
    """Published in one batch, every message confirmed by the broker."""
    assert bus_adapter().publish_batch(messages, timeout=10) == [None] * len(messages)


def stored_batches(other) -> tuple[float, float]:
    """The consumer's storing transactions and the events they stored."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=other.env["PROMETHEUS_MULTIPROC_DIR"])
    found = {
        sample.name: sample.value
        for family in registry.collect()
        if family.name == "outbox_bus_stored_batch_events"
        for sample in family.samples
        if sample.labels.get("service") == other.name
    }
    return (
        found.get("outbox_bus_stored_batch_events_count", 0.0),
        found.get("outbox_bus_stored_batch_events_sum", 0.0),
    )


def unsettled(broker: str, namespace: str, service: str = "downstream") -> int:
    """Messages of the service's queue or durable consumer not acknowledged yet."""
    if broker == "rabbitmq":
        connection, channel = pika_channel()
        try:
            queue = channel.queue_declare(f"{namespace}.{service}", passive=True).method
            return queue.message_count  # ready ones; a stopped consumer's unacked are back
        finally:
            connection.close()
    adapter = bus_adapter()

    async def info():
        js = await adapter._connect()
        consumer = await js.consumer_info(adapter.stream, adapter.durable(service))
        return consumer.num_pending + consumer.num_ack_pending

    return adapter._run(info())


def dead_lettered(broker: str, namespace: str) -> int:
    if broker == "rabbitmq":
        return dead_letters(namespace)
    return len(
        asyncio.run(
            stream_messages(NATS_URL, bus_adapter().dead_stream, f"{namespace}.dead.downstream")
        )
    )


def declared(other) -> None:
    subprocess.run(
        [sys.executable, *CONSUME, "--declare-only"], cwd=ROOT, env=other.env, check=True
    )


def seqs_downstream(other, aggregate_id: str) -> list[int]:
    return [
        seq
        for (seq,) in other.query(
            "SELECT json_extract(payload, '$.seq') FROM outbox_event "
            "WHERE aggregate_id = ? ORDER BY position",
            (aggregate_id,),
        )
    ]


def test_a_burst_waiting_for_the_consumer_is_stored_in_fewer_transactions_than_messages(
    broker, bus_namespace, other_service
):
    other = other_service(url_of(broker))
    declared(other)
    rows = [thing(f"agg-{n}", seq) for seq in range(20) for n in range(3)]
    send([message(row) for row in rows])  # all waiting before the consumer starts

    other.start()
    wait_until(lambda: len(other.events()) == 60, timeout=60, what="60 events downstream")
    wait_until(lambda: other.received().get("stored") == 60, timeout=30, what="60 counted stored")
    if broker == "nats":  # acknowledged while the consumer runs (RabbitMQ: checked stopped)
        wait_until(lambda: unsettled(broker, bus_namespace) == 0, timeout=30, what="every ack")
    other.stop()

    assert unsettled(broker, bus_namespace) == 0
    transactions, events = stored_batches(other)
    assert events == 60
    assert 1 <= transactions < 60, "one transaction per message: nothing was batched"
    assert sorted(event_id for event_id, _, _ in other.events()) == sorted(
        str(row.event_id).replace("-", "") for row in rows
    )
    assert other.query("SELECT count(*) FROM outbox_delivery") == [(180,)]
    for n in range(3):  # the broker's order within each aggregate, across batches
        assert seqs_downstream(other, f"agg-{n}") == list(range(20))
    assert other.received() == {"stored": 60.0}


def test_a_duplicate_a_republished_event_and_a_malformed_message_among_good_ones(
    broker, bus_namespace, other_service
):
    other = other_service(url_of(broker))
    declared(other)
    earlier = thing("agg-0", 0)
    send([message(earlier)])
    other.start()
    wait_until(lambda: len(other.events()) == 1, timeout=60, what="the earlier event downstream")
    other.stop()

    good = [thing(f"agg-{n % 2}", 1 + n // 2) for n in range(10)]
    burst = [message(row) for row in good[:4]]
    burst.append(message(earlier, to_service="downstream"))  # republished: stored before
    burst.append(message(good[2], to_service="downstream"))  # twice in the same batch
    burst.append(garbage())
    burst += [message(row) for row in good[4:]]
    send(burst)
    other.start()
    wait_until(lambda: len(other.events()) == 11, timeout=60, what="11 events downstream")
    # The restarted consumer's own counts (a process's start clears the dead ones' metrics).
    wait_until(
        lambda: sum(other.received().values()) == len(burst),
        timeout=30,
        what="every message settled",
    )
    wait_until(lambda: dead_lettered(broker, bus_namespace) == 1, timeout=30, what="a dead one")
    if broker == "nats":
        wait_until(lambda: unsettled(broker, bus_namespace) == 0, timeout=30, what="every ack")
    other.stop()

    assert unsettled(broker, bus_namespace) == 0
    assert other.received() == {"stored": 10.0, "duplicate": 2.0, "dead": 1.0}
    stored = other.events()
    assert sorted(event_id for event_id, _, _ in stored) == sorted(
        str(row.event_id).replace("-", "") for row in [earlier, *good]
    )
    assert other.query("SELECT count(*) FROM outbox_delivery") == [(33,)]
    assert seqs_downstream(other, "agg-0") == list(range(6))
    assert seqs_downstream(other, "agg-1") == list(range(1, 6))


def test_a_database_failing_during_a_batch_costs_a_redelivery_not_an_event(
    broker, bus_namespace, other_service
):
    other = other_service(url_of(broker))
    declared(other)
    rows = [thing(f"agg-{n}", seq) for seq in range(10) for n in range(3)]
    send([message(row) for row in rows])

    other.start(script=DATABASE_DOWN_AT_FIRST)
    wait_until(lambda: len(other.events()) == 30, timeout=90, what="30 events downstream")
    wait_until(lambda: other.received().get("stored") == 30, timeout=30, what="30 counted stored")
    if broker == "nats":
        wait_until(lambda: unsettled(broker, bus_namespace) == 0, timeout=30, what="every ack")
    other.stop()

    assert unsettled(broker, bus_namespace) == 0
    received = other.received()
    assert received.get("retry", 0) >= 1, "the database never failed: nothing was tested"
    assert received.get("dead", 0) == 0
    assert len({event_id for event_id, _, _ in other.events()}) == len(other.events()) == 30
    assert other.query("SELECT count(*) FROM outbox_delivery") == [(90,)]
