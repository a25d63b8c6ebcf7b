"""The consumer runs what it stored, on a real RabbitMQ and a real NATS JetStream, with a
consumer process on a second database (tests/bus/test_consumer_run.py: the rules, without a
broker).

With no relay and no worker in the consuming service, a small batch's handlers still run: the
consumer ran them, once each, after acknowledging the broker. Killed in the middle of a handler,
it leaves the broker acknowledged, the handler's writes rolled back and the deliveries leased:
the service's relay dispatches them again when the lease runs out, and its worker runs each
exactly once.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import uuid

import pytest

from outbox.models import Event
from tests.bus.conftest import ROOT, fault_test
from tests.bus.test_batch_store import broker, declared, message, send, unsettled, url_of
from tests.support import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

__all__ = ["broker"]  # the fixture, imported


def event(type: str, aggregate: str, **payload) -> Event:
    return Event(
        event_id=uuid.uuid4(),
        type=type,
        version=1,
        aggregate_type="thing",
        aggregate_id=aggregate,
        payload={"thing_id": aggregate, **payload},
        correlation_id=uuid.uuid4(),
        headers={},
        occurred_at=dt.datetime.now(dt.UTC),
    )


def deliveries(other) -> list[tuple[str, str, int]]:
    return other.query("SELECT subscriber, status, dispatches FROM outbox_delivery ORDER BY id")


def test_the_consumer_runs_a_small_batch_itself_with_no_relay_or_worker(
    broker, bus_namespace, other_service
):
    other = other_service(url_of(broker))
    declared(other)
    other.start()  # and nothing else of that service: no relay, no worker, no beat
    rows = [event("tests.ThingHappened", "agg-1", seq=n) for n in range(2)]
    send([message(row) for row in rows])

    wait_until(
        lambda: len(other.query("SELECT id FROM testapp_effect")) == 6,
        timeout=60,
        what="six handler runs downstream",
    )
    wait_until(
        lambda: {status for _, status, _ in deliveries(other)} == {"done"},
        timeout=30,
        what="every delivery done",
    )
    other.stop()

    assert sorted(other.query("SELECT subscriber, seq FROM testapp_effect")) == sorted(
        (name, seq) for seq in range(2) for name in "abc"
    )
    assert {dispatches for _, _, dispatches in deliveries(other)} == {1}  # its claim, once
    assert unsettled(broker, bus_namespace) == 0


@fault_test
def test_a_consumer_killed_in_a_handler_leaves_its_leased_deliveries_to_the_relay(
    broker, bus_namespace, other_service
):
    other = other_service(url_of(broker))
    other.env |= {
        "OUTBOX_LEASE_SECONDS": "2",
        # Killed (SIGKILL) once a Counted handler has written its row, before its commit.
        "SHOP_TEST_FAULT": "kill@after_handler_writes",
    }
    declared(other)
    consumer = other.start()
    counted = event("tests.Counted", "c-1")
    send([message(counted)])

    assert consumer.wait(60) == -9, other.log.read_text()
    # Stored, acknowledged, claimed by the consumer; the handler's writes died with it.
    assert len(other.events()) == 1
    assert other.query("SELECT id FROM testapp_handlerrun") == []
    assert sorted(deliveries(other)) == [
        ("tests.count_one", "pending", 1),
        ("tests.count_two", "pending", 1),
    ]
    assert unsettled(broker, bus_namespace) == 0  # nothing comes back from the broker

    # The service's relay and worker (the Procfile's, on its own broker), no consumer.
    env = {key: value for key, value in other.env.items() if key != "SHOP_TEST_FAULT"}
    logs = open(other.folder / "relay-worker.log", "ab")  # noqa: SIM115
    processes = [
        subprocess.Popen(
            [sys.executable, "manage.py", "outbox_relay", "--interval", "0.2"],
            cwd=ROOT,
            env=env,
            stdout=logs,
            stderr=subprocess.STDOUT,
        ),
        subprocess.Popen(
            [
                *(sys.executable, "-m", "celery", "-A", "shop", "worker"),
                *("--queues", "outbox,tests", "--pool", "solo", "--loglevel", "WARNING"),
            ],
            cwd=ROOT,
            env=env,
            stdout=logs,
            stderr=subprocess.STDOUT,
        ),
    ]
    try:
        wait_until(
            lambda: {status for _, status, _ in deliveries(other)} == {"done"},
            timeout=90,
            what="the relay's dispatch after the lease, the worker's run",
        )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        logs.close()

    runs = other.query("SELECT subscriber, event_id FROM testapp_handlerrun ORDER BY subscriber")
    assert runs == [
        ("tests.count_one", counted.event_id.hex),
        ("tests.count_two", counted.event_id.hex),
    ]  # exactly once each, although the killed consumer had begun them
    assert sorted(deliveries(other)) == [
        ("tests.count_one", "done", 2),
        ("tests.count_two", "done", 2),
    ]
