"""Operator commands: outbox_status, outbox_replay (dead letters and backfill), outbox_relay."""

import datetime as dt
import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from django.utils import timezone

from outbox import publish, subscribe
from outbox.handling import delivery_handle
from outbox.models import Delivery, Event
from outbox.registry import _by_type, _subscribers
from outbox.relay import deliveries_claim
from tests.testapp import handlers
from tests.testapp.events import FlakyThing, OrderedThing, ThingHappened

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def quiet(monkeypatch, outbox_fast):
    monkeypatch.setattr("outbox.publisher.relay_wake", lambda: None)


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def dead_letter() -> Delivery:
    handlers.BROKEN["flaky"] = True
    try:
        with transaction.atomic():
            delivery = publish(FlakyThing(thing_id="x")).deliveries.get()
        for _ in range(3):
            Delivery.objects.filter(pk=delivery.pk).update(
                next_attempt_at=timezone.now(), backoff_until=None
            )
            delivery_handle(delivery_id=delivery.pk)
    finally:
        handlers.BROKEN["flaky"] = False
    delivery.refresh_from_db()
    assert delivery.status == "dead"
    return delivery


@pytest.fixture
def late_subscriber():
    """A subscriber added after events were published (then removed again)."""
    seen = []

    def register():
        @subscribe(ThingHappened, name="tests.late_audit")
        def late_audit(event):
            seen.append(event.thing_id)

        return seen

    yield register
    del _subscribers["tests.late_audit"]
    _by_type["tests.ThingHappened"] = [
        s for s in _by_type["tests.ThingHappened"] if s.name != "tests.late_audit"
    ]


def test_status_counts_by_status_and_lists_dead_letters():
    with transaction.atomic():
        publish(ThingHappened(thing_id="t"))
    dead = dead_letter()
    out = run("outbox_status")
    assert "deliveries:    pending 3, done 0, dead 1" in out
    assert "dead letters:  1" in out
    assert f"#{dead.pk} tests.flaky <- tests.FlakyThing" in out
    assert "RuntimeError: the flaky handler is broken" in out
    data = json.loads(run("outbox_status", "--json"))
    assert data["totals"] == {"pending": 3, "done": 0, "dead": 1}
    assert data["oldest_pending_age_seconds"] >= 0


def test_replay_dead_letters():
    delivery = dead_letter()
    assert "replaying 1 dead letters" in run("outbox_replay", "--dead")
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("pending", 0)
    assert delivery_handle(delivery_id=delivery.pk) == "done"


def test_backfill_delivers_old_events_to_a_new_subscriber(late_subscriber):
    before = timezone.now() - dt.timedelta(seconds=1)
    with transaction.atomic():
        for i in range(3):
            publish(ThingHappened(thing_id=f"old-{i}"))
        publish(FlakyThing(thing_id="other type"))
    seen = late_subscriber()
    assert not Delivery.objects.filter(subscriber="tests.late_audit").exists()
    out = run("outbox_replay", "--subscriber", "tests.late_audit", "--since", before.isoformat())
    assert "tests.late_audit: 3 new deliveries (backfill)" in out
    for d in Delivery.objects.filter(subscriber="tests.late_audit"):
        assert delivery_handle(delivery_id=d.pk) == "done"
    assert sorted(seen) == ["old-0", "old-1", "old-2"]
    # Done deliveries are left alone the second time, unless asked.
    out = run("outbox_replay", "--subscriber", "tests.late_audit", "--type", "tests.ThingHappened")
    assert "0 new deliveries (backfill), 0 made due again, 3 already done" in out
    out = run(
        "outbox_replay",
        "--subscriber",
        "tests.late_audit",
        "--type",
        "tests.ThingHappened",
        "--include-done",
    )
    assert "3 made due again" in out


def test_replay_by_event_id():
    with transaction.atomic():
        event = publish(ThingHappened(thing_id="one"))
    Delivery.objects.filter(event=event).update(status="dead")
    out = run("outbox_replay", "--subscriber", "tests.record_a", "--event", str(event.event_id))
    assert "1 made due again" in out
    assert event.deliveries.get(subscriber="tests.record_a").status == "pending"
    assert event.deliveries.get(subscriber="tests.record_b").status == "dead"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give --dead, or --subscriber"),
        (["--subscriber", "nobody.here"], "no subscriber named 'nobody.here'"),
        (["--subscriber", "tests.record_a"], "choose events with"),
        (["--subscriber", "tests.record_a", "--event", "nope"], "is not an event id"),
        (["--subscriber", "tests.record_a", "--since", "yesterday"], "not an ISO 8601"),
        (["--to-service", "notifications", "--app", "orders"], "give one of"),
        (["--to-service", "notifications", "--dead"], "--dead --subscriber bus:notifications"),
        (["--to-service", "notifications"], "choose events with"),
    ],
)
def test_replay_bad_arguments_are_clear_errors(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("outbox_replay", *args)


def test_relay_once_dispatches(monkeypatch):
    sent = []
    monkeypatch.setattr("outbox.relay.deliveries_dispatch", lambda claimed: sent.extend(claimed))
    with transaction.atomic():
        publish(ThingHappened(thing_id="t"))
    assert "dispatched 3 deliveries" in run("outbox_relay", "--once")
    assert len(sent) == 3


def test_purge_deletes_only_finished_events_past_retention(settings):
    from outbox.retention import events_purge

    settings.OUTBOX = {**settings.OUTBOX, "RETENTION_DAYS": 7}
    with transaction.atomic():
        finished = publish(ThingHappened(thing_id="finished"))
        unfinished = publish(ThingHappened(thing_id="unfinished"))
        recent = publish(ThingHappened(thing_id="recent"))
    Delivery.objects.filter(event__in=[finished, recent]).update(status="done")
    Event.objects.filter(pk__in=[finished.pk, unfinished.pk]).update(
        occurred_at=timezone.now() - dt.timedelta(days=8)
    )
    assert events_purge() == 1
    remaining = set(Event.objects.values_list("aggregate_id", flat=True))
    assert remaining == {"unfinished", "recent"}


@pytest.fixture
def late_ordered_subscriber():
    """An ordered subscriber added after events were published (then removed again)."""

    def register() -> str:
        @subscribe(OrderedThing, ordered=True, name="tests.late_ordered")
        def late_ordered(event):
            pass

        return "tests.late_ordered"

    yield register
    _subscribers.pop("tests.late_ordered", None)
    _by_type["tests.OrderedThing"] = [
        s for s in _by_type["tests.OrderedThing"] if s.name != "tests.late_ordered"
    ]


def test_a_backfill_for_an_ordered_subscriber_keeps_each_aggregates_order(
    late_ordered_subscriber,
):
    with transaction.atomic():
        for thing_id, seq in (("late-t", 1), ("late-t", 2), ("late-u", 1)):
            publish(OrderedThing(thing_id=thing_id, seq=seq))
    subscriber = late_ordered_subscriber()
    out = run("outbox_replay", "--subscriber", subscriber, "--type", "tests.OrderedThing")
    assert f"{subscriber}: " in out and "new deliveries (backfill)" in out
    backfilled = Delivery.objects.filter(
        subscriber=subscriber, event__aggregate_id__in=["late-t", "late-u"]
    )
    assert backfilled.count() == 3

    def claim() -> list[tuple[str, int]]:
        claimed = backfilled.filter(pk__in=[pk for pk, _ in deliveries_claim(limit=100)])
        return sorted((d.event.aggregate_id, d.event.payload["seq"]) for d in claimed)

    assert claim() == [("late-t", 1), ("late-u", 1)]  # each aggregate's head, not t's second
    first_t = backfilled.get(event__aggregate_id="late-t", event__payload__seq=1)
    assert delivery_handle(delivery_id=first_t.pk) == "done"
    # t's second event now comes up, whatever u's first one (still leased) is doing.
    assert claim() == [("late-t", 2)]


def test_a_replay_to_one_service_in_the_monolith_is_local_and_reaches_its_subscribers_alone(
    settings,
):
    """``--to-service notifications`` where its app is installed (the monolith, no bus): its
    subscribers get the chosen events, no other subscriber (nor the bus) gets anything."""
    settings.EVENT_BUS_URL = ""
    with transaction.atomic():
        publish(ThingHappened(thing_id="one"))
    Delivery.objects.filter(subscriber__startswith="notifications.").delete()
    before = sorted(Delivery.objects.values_list("id", "status", "attempts"))
    out = run(
        "outbox_replay",
        "--to-service",
        "notifications",
        "--type",
        "orders.OrderPlaced",
        "--type",
        "tests.ThingHappened",
        "--since",
        "2000-01-01",
    )
    assert "replaying orders.OrderPlaced to service notifications locally" in out
    assert "left out (service notifications does not take them): tests.ThingHappened" in out
    assert "notifications.notification_on_order_placed: 0 new deliveries" in out
    assert sorted(Delivery.objects.values_list("id", "status", "attempts")) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to-service", "nobody"], "its apps are not installed here and there is no bus"),
        (
            ["--to-service", "notifications", "--type", "tests.ThingHappened"],
            "service 'notifications' takes none of tests.ThingHappened; it takes "
            "orders.OrderCancelled, orders.OrderCompleted, orders.OrderPlaced",
        ),
    ],
)
def test_a_replay_to_an_unknown_service_or_one_that_takes_none_of_the_types_changes_nothing(
    settings, args, message
):
    settings.EVENT_BUS_URL = ""
    with transaction.atomic():
        publish(ThingHappened(thing_id="one"))
    before = sorted(Delivery.objects.values_list("id", "subscriber", "status"))
    with pytest.raises(CommandError, match=message):
        call_command("outbox_replay", *args, "--since", "2000-01-01")
    assert sorted(Delivery.objects.values_list("id", "subscriber", "status")) == before
