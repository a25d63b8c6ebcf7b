"""The relay's claims: leases, ordering, and relays running side by side."""

import dataclasses
import datetime as dt
import threading
from types import SimpleNamespace
from unittest import mock

import pytest
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from outbox import publish_many
from outbox.bus.target import BUS_SUBSCRIBER
from outbox.models import Delivery
from outbox.registry import subscriber_get
from outbox.relay import FALLBACK_QUEUE, deliveries_claim, deliveries_dispatch
from outbox.transport import transport_get
from tests.races.helpers import delivery_row_locked
from tests.testapp.events import FlakyThing, OrderedThing, RoutedThing, ThingHappened


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    monkeypatch.setattr("outbox.publisher.relay_wake", lambda: None)


def publish_now(events):
    with transaction.atomic():
        return publish_many(events)


@pytest.mark.django_db
def test_a_claim_leases_deliveries_until_the_lease_runs_out(outbox_fast):
    publish_now([ThingHappened(thing_id="t")])
    first = deliveries_claim(limit=10)
    assert sorted(name for _, name in first) == [
        "tests.record_a",
        "tests.record_b",
        "tests.record_c",
    ]
    assert deliveries_claim(limit=10) == []  # leased: nobody else takes them
    # The lease runs out (the message was lost, the worker died...): claimable again.
    Delivery.objects.update(next_attempt_at=timezone.now() - dt.timedelta(seconds=1))
    assert sorted(deliveries_claim(limit=10)) == sorted(first)


@pytest.mark.django_db
def test_a_claim_respects_its_limit_and_takes_the_most_overdue_first():
    publish_now([ThingHappened(thing_id=str(i)) for i in range(4)])
    oldest = Delivery.objects.order_by("-id").first()
    Delivery.objects.filter(pk=oldest.pk).update(
        next_attempt_at=timezone.now() - dt.timedelta(minutes=5)
    )
    claimed = deliveries_claim(limit=5)
    assert len(claimed) == 5
    assert claimed[0][0] == oldest.pk


@pytest.mark.django_db
def test_an_ordered_subscriber_gets_only_the_head_of_each_aggregate():
    publish_now([OrderedThing(thing_id="t", seq=s) for s in (1, 2, 3)])
    publish_now([OrderedThing(thing_id="u", seq=1)])
    claimed = deliveries_claim(limit=10)
    heads = Delivery.objects.filter(pk__in=[pk for pk, _ in claimed]).select_related("event")
    assert sorted((d.event.aggregate_id, d.event.payload["seq"]) for d in heads) == [
        ("t", 1),
        ("u", 1),
    ]


@pytest.mark.django_db
def test_dispatch_sends_each_subscriber_to_its_own_queue():
    publish_now([RoutedThing(thing_id=str(i)) for i in range(20)])
    claimed = deliveries_claim(limit=100)
    with mock.patch("outbox.tasks.deliver.apply_async") as send:
        messages = deliveries_dispatch(claimed)
    sent: dict[str, list[int]] = {}
    for call in send.call_args_list:
        sent.setdefault(call.kwargs["queue"], []).extend(call.kwargs["args"][0])
    by_sub = dict(Delivery.objects.values_list("id", "subscriber"))
    assert {by_sub[i] for i in sent["payments"]} == {"tests.routed_payments"}
    assert {by_sub[i] for i in sent["inventory"]} == {"tests.routed_inventory"}
    assert sorted(sent["payments"] + sent["inventory"]) == sorted(pk for pk, _ in claimed)
    assert messages == len(send.call_args_list) < len(claimed)  # several ids per message


@pytest.mark.django_db(transaction=True)
def test_relays_claiming_at_once_never_take_the_same_delivery():
    publish_now([ThingHappened(thing_id=str(i)) for i in range(400)])  # 1,200 deliveries
    start = threading.Barrier(3)
    claims: list[list[int]] = [[], [], []]
    errors = []

    def relay(n):
        try:
            start.wait()
            while batch := deliveries_claim(limit=50):
                claims[n].extend(pk for pk, _ in batch)
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=relay, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    everything = claims[0] + claims[1] + claims[2]
    assert len(everything) == len(set(everything)) == 1200
    if connection.vendor == "postgresql":
        assert all(claims), "SKIP LOCKED lets every relay claim a share"


@pytest.mark.django_db
def test_a_delivery_sent_again_unrun_gets_a_doubling_lease_so_backlogs_do_not_snowball(
    outbox_fast, settings
):
    settings.OUTBOX = {**settings.OUTBOX, "LEASE_MAX_DOUBLINGS": 2}
    publish_now([FlakyThing(thing_id="slow queue", fail_times=1)])
    delivery = Delivery.objects.get()
    leases = []
    for _ in range(4):
        before = timezone.now()
        assert deliveries_claim(limit=10) == [(delivery.pk, "tests.flaky")]
        delivery.refresh_from_db()
        leases.append(round((delivery.next_attempt_at - before).total_seconds()))
        # The lease runs out with the message still queued behind a backlog.
        Delivery.objects.update(next_attempt_at=timezone.now() - dt.timedelta(seconds=1))
    assert leases == [1, 2, 4, 4]  # LEASE_SECONDS=1, doubling, capped at 2**2
    # A worker finally runs it (and it fails): its retry starts from a plain lease again.
    from outbox.handling import delivery_handle

    assert delivery_handle(delivery_id=delivery.pk) == "retry"
    Delivery.objects.update(next_attempt_at=timezone.now(), backoff_until=None)
    before = timezone.now()
    deliveries_claim(limit=10)
    delivery.refresh_from_db()
    assert round((delivery.next_attempt_at - before).total_seconds()) == 1


@pytest.mark.django_db
def test_an_ordered_delivery_waits_only_for_its_own_aggregate():
    # thing:t has handled its first event; thing:u's first one is still undone. t's second
    # event has no undone predecessor of its own aggregate, so u's delivery holds nothing back.
    first_t = publish_now([OrderedThing(thing_id="own-t", seq=1)])[0].deliveries.get()
    Delivery.objects.filter(pk=first_t.pk).update(status=Delivery.Status.DONE)
    publish_now([OrderedThing(thing_id="own-u", seq=1), OrderedThing(thing_id="own-t", seq=2)])
    claimed = Delivery.objects.filter(
        pk__in=[pk for pk, _ in deliveries_claim(limit=100)],
        event__aggregate_id__in=["own-t", "own-u"],
    )
    assert sorted((d.event.aggregate_id, d.event.payload["seq"]) for d in claimed) == [
        ("own-t", 2),
        ("own-u", 1),
    ]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SKIP LOCKED is PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_a_claim_skips_rows_another_relay_holds_instead_of_waiting_for_them():
    held, free = (
        e.deliveries.get() for e in publish_now([FlakyThing(thing_id=str(i)) for i in (1, 2)])
    )
    try:
        with delivery_row_locked(held.pk):  # another relay's claim, still open
            with connection.cursor() as cursor:
                # Were the claim to wait for the held row, it would fail here instead of hanging.
                cursor.execute("SET lock_timeout = '5s'")
            assert deliveries_claim(limit=10) == [(free.pk, "tests.flaky")]
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")


@pytest.fixture
def sent(monkeypatch):
    """What the relay hands to the transport: (queue, ids) messages and bus batches."""
    out = SimpleNamespace(messages=[], bus=[])

    def deliveries_send(messages, bus_messages):
        out.messages.extend(messages)
        out.bus.extend(bus_messages)

    monkeypatch.setattr(
        "outbox.transport._transport",
        dataclasses.replace(transport_get(), deliveries_send=deliveries_send),
    )
    return out


def test_dispatch_sends_bus_deliveries_to_the_bus_and_unknown_subscribers_to_the_relay(sent):
    claimed = [
        (1, "tests.record_a"),
        (2, BUS_SUBSCRIBER),
        (3, "tests.routed_payments"),
        (4, "tests.removed_since"),
        (5, BUS_SUBSCRIBER),
        (6, "tests.record_a"),
    ]
    assert deliveries_dispatch(claimed) == len(sent.messages) + len(sent.bus)
    assert sent.bus == [[2, 5]]
    queues = {pk: queue for queue, ids in sent.messages for pk in ids}
    assert sorted(queues) == [1, 3, 4, 6]  # each once, the bus's ones not among them
    assert queues[1] == queues[6] == subscriber_get("tests.record_a").queue
    assert queues[3] == "payments"
    # Dead-lettered there with a clear error, rather than left pending forever.
    assert queues[4] == FALLBACK_QUEUE


def test_dispatch_spreads_a_small_batch_and_caps_a_large_one(sent, settings):
    settings.OUTBOX = {**settings.OUTBOX, "DISPATCH_CHUNK_SIZE": 3}
    # Up to four ids: one message each, for as many of a worker's processes.
    assert deliveries_dispatch([(pk, "tests.record_a") for pk in (1, 2, 3)]) == 3
    assert sorted(ids for _, ids in sent.messages) == [[1], [2], [3]]
    sent.messages.clear()
    # More: spread over four messages at most, while the chunk size allows it ...
    deliveries_dispatch([(pk, "tests.record_a") for pk in range(1, 10)])
    assert len(sent.messages) <= 4
    assert sorted(pk for _, ids in sent.messages for pk in ids) == list(range(1, 10))
    sent.messages.clear()
    # ... and never more than DISPATCH_CHUNK_SIZE ids in one message.
    deliveries_dispatch([(pk, "tests.record_a") for pk in range(1, 31)])
    assert max(len(ids) for _, ids in sent.messages) == 3
    assert sorted(pk for _, ids in sent.messages for pk in ids) == list(range(1, 31))
