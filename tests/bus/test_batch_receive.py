"""The consumer's verdicts on a batch of messages, each its own: no broker needed (the
adapters' encode and decode alone), on this run's database, committing as the consumer does
(a failed store replaces the connection, which a test's surrounding transaction forbids)."""

from __future__ import annotations

import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from outbox.bus import consuming
from outbox.bus.adapters.base import Verdict
from outbox.bus.consuming import bus_event_store, bus_messages_receive
from outbox.models import Delivery, Event
from outbox.relay import deliveries_claim
from tests.bus.test_wire import ADAPTERS, received, spoil, stored

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def consuming_tests_events(settings):
    settings.EVENT_BUS = {**settings.EVENT_BUS, "LOCAL_APPS": ["orders"]}  # tests.* consumed


@pytest.fixture
def wakes(monkeypatch):
    """The relay wake-ups the consumer's commits sent."""
    sent: list[None] = []
    monkeypatch.setattr(consuming, "relay_wake", lambda: sent.append(None))
    return sent


def events_stored() -> list[tuple[str, int]]:
    return [(row.aggregate_id, row.payload["seq"]) for row in Event.objects.order_by("position")]


@pytest.mark.parametrize("adapter", ADAPTERS, ids=["amqp", "nats"])
def test_a_batch_is_stored_in_one_commit_each_message_with_its_own_verdict(adapter, wakes):
    earlier = stored(aggregate_id="t-1", payload={"thing_id": "t-1", "seq": 0})
    assert bus_event_store(event=adapter.decode(received(adapter, earlier))) == "stored"
    rows = [
        stored(aggregate_id=f"t-{n % 2}", payload={"thing_id": f"t-{n % 2}", "seq": 1 + n // 2})
        for n in range(6)
    ]
    messages = [received(adapter, row) for row in rows[:3]]
    messages.append(received(adapter, earlier))  # republished: already stored
    messages.append(spoil(adapter, received(adapter, rows[3]), body=b"{not json"))
    messages.append(received(adapter, rows[1]))  # twice in the batch
    messages += [received(adapter, row) for row in rows[3:]]

    wakes.clear()  # the earlier event's
    verdicts = bus_messages_receive(messages=messages, adapter=adapter)

    assert verdicts == [Verdict.ACK] * 4 + [Verdict.DEAD] + [Verdict.ACK] * 4
    assert len(wakes) == 1  # one commit, one relay wake-up, for the six stored
    assert events_stored() == [
        ("t-1", 0),
        ("t-0", 1),
        ("t-1", 1),
        ("t-0", 2),
        ("t-1", 2),
        ("t-0", 3),
        ("t-1", 3),
    ]
    assert Delivery.objects.count() == 7 * 3


@pytest.mark.parametrize("adapter", ADAPTERS, ids=["amqp", "nats"])
def test_a_failing_database_retries_the_batch_and_a_copy_is_never_acknowledged_alone(
    adapter, wakes
):
    rows = [stored(payload={"thing_id": "t-1", "seq": n}) for n in range(3)]
    messages = [received(adapter, row) for row in rows]
    messages.append(received(adapter, rows[0]))  # its first copy cannot be stored
    messages.append(spoil(adapter, received(adapter, rows[0]), body=b"{not json"))

    def down(execute, sql, params, many, context):
        raise OperationalError("the database is down (a test's fault)")

    with connection.execute_wrapper(down):
        verdicts = bus_messages_receive(messages=messages, adapter=adapter)

    assert verdicts == [Verdict.RETRY] * 4 + [Verdict.DEAD]
    assert not Event.objects.exists()
    assert wakes == []


@pytest.mark.parametrize("adapter", ADAPTERS, ids=["amqp", "nats"])
def test_an_insert_failing_mid_batch_falls_back_to_one_message_per_transaction(adapter, wakes):
    """As when another consumer inserted one of the batch's events between the batch's check
    and its insert: the batch rolls back, and each message is stored on its own."""
    rows = [stored(payload={"thing_id": "t-1", "seq": n}) for n in range(4)]
    messages = [received(adapter, row) for row in rows]
    failed = []

    def racing(execute, sql, params, many, context):
        if sql.startswith('INSERT INTO "outbox_event"') and not failed:
            failed.append(sql)
            # The racing consumer's row, in this transaction: the batch's insert collides.
            bus_event_store(event=adapter.decode(messages[2]))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(racing):
        verdicts = bus_messages_receive(messages=messages, adapter=adapter)

    assert failed, "the batch's insert never ran"
    assert verdicts == [Verdict.ACK] * 4
    assert events_stored() == [("t-1", n) for n in range(4)]
    assert Delivery.objects.count() == 4 * 3
    assert len(wakes) == 4  # one per transaction of the fallback


@pytest.mark.parametrize("batch", [1, 3], ids=["alone", "batch"])
def test_an_ordered_subscriber_takes_consumed_events_in_the_brokers_order(batch, wakes):
    """Events taken in from the bus are numbered within their aggregate, as a publisher numbers
    its own: the relay claims an ordered subscriber's next one only once the earlier is done."""
    adapter = ADAPTERS[0]
    rows = [
        stored(type="tests.OrderedThing", payload={"thing_id": "t-1", "seq": n}) for n in range(3)
    ]
    messages = [received(adapter, row) for row in rows]
    for start in range(0, 3, batch):
        assert bus_messages_receive(messages=messages[start : start + batch], adapter=adapter) == [
            Verdict.ACK
        ] * len(messages[start : start + batch])

    claimed = [
        Delivery.objects.get(id=pk).event.payload["seq"] for pk, _ in deliveries_claim(limit=10)
    ]
    assert claimed == [0]
    Delivery.objects.filter(event__payload__seq=0).update(status=Delivery.Status.DONE)
    Delivery.objects.update(next_attempt_at=timezone.now())
    claimed = [
        Delivery.objects.get(id=pk).event.payload["seq"] for pk, _ in deliveries_claim(limit=10)
    ]
    assert claimed == [1]
