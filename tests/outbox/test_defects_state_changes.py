"""Issue 16, defects 1, 5 and 6: every state change of a delivery is re-checked on its locked
row, whoever makes it (admin action, replay, purge, a duplicate message)."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable

import pytest
from django.db import connection, transaction
from django.utils import timezone

from outbox import publish
from outbox.handling import delivery_handle
from outbox.models import Delivery, Event
from outbox.relay import deliveries_claim
from outbox.replay import deliveries_replay, events_replay
from outbox.retention import events_purge
from tests.outbox.defects import HELD, DefectFailing, DefectHeld, Held
from tests.support import wait_until
from tests.testapp.models import Effect


@pytest.fixture(autouse=True)
def quiet(monkeypatch, outbox_fast):
    monkeypatch.setattr("outbox.publisher.relay_wake", lambda: None)
    monkeypatch.setattr("outbox.replay.relay_wake", lambda: None)


def published(event) -> Delivery:
    with transaction.atomic():
        return publish(event).deliveries.get()


class Background:
    """``call`` in a thread of its own (its own connection); ``result()`` joins it."""

    def __init__(self, call: Callable[[], object]) -> None:
        self.value: object = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self.thread.start()

    def _run(self, call) -> None:
        try:
            self.value = call()
        except BaseException as exc:  # surfaced by result()
            self.error = exc
        finally:
            connection.close()

    def result(self) -> object:
        self.thread.join(60)
        assert not self.thread.is_alive(), "the background call did not finish"
        if self.error is not None:
            raise self.error
        return self.value


def someone_waits_for_a_row_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


def postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("a race of row locks: SQLite serialises every writer at BEGIN")


@pytest.mark.django_db(transaction=True)
def test_admin_replay_filtered_by_event_type_does_not_resurrect_a_delivery_being_completed():
    # Defect 1: the changelist filtered by event type joins the event table; the replay's
    # UPDATE ... WHERE id IN (SELECT ... JOIN ...) waited for the worker's lock and then set
    # the delivery the worker had just marked done back to pending.
    postgres_only()
    HELD["current"] = held = Held()
    delivery = published(DefectHeld(defect_id="resurrect"))
    worker = Background(lambda: delivery_handle(delivery_id=delivery.pk))
    try:
        assert held.entered.wait(30), "the worker never ran the handler"
        selected = Delivery.objects.filter(event__type="tests.DefectHeld", pk__in=[delivery.pk])
        replay = Background(lambda: deliveries_replay(selected))
        wait_until(someone_waits_for_a_row_lock, what="the replay waiting for the worker's lock")
    finally:
        held.release.set()
    assert worker.result() == "done"
    assert replay.result() == 0
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("done", 1)
    assert delivery_handle(delivery_id=delivery.pk) == "skipped"
    assert Effect.objects.filter(subscriber="defect_held").count() == 1


@pytest.mark.django_db(transaction=True)
def test_purge_does_not_delete_an_event_whose_delivery_a_replay_just_made_due(settings):
    # Defect 5: the purge selected the event (every delivery done), a replay with
    # --include-done committed, and the purge's delete removed the now pending delivery.
    postgres_only()
    settings.OUTBOX = {**settings.OUTBOX, "RETENTION_DAYS": 1}
    HELD["current"] = held = Held()
    held.release.set()
    delivery = published(DefectHeld(defect_id="purged"))
    assert delivery_handle(delivery_id=delivery.pk) == "done"
    Event.objects.update(occurred_at=timezone.now() - dt.timedelta(days=3))
    replayed, commit = threading.Event(), threading.Event()

    def replay_committing_late():
        with transaction.atomic():
            result = events_replay(
                subscriber="tests.defect_held", events=Event.objects.all(), include_done=True
            )
            replayed.set()
            assert commit.wait(30)
        return result

    replay = Background(replay_committing_late)
    try:
        assert replayed.wait(30)
        purge = Background(events_purge)
        wait_until(someone_waits_for_a_row_lock, what="the purge waiting for the replay's lock")
    finally:
        commit.set()
    assert replay.result().reset == 1
    assert purge.result() == 0
    delivery.refresh_from_db()
    assert delivery.status == "pending"
    assert delivery_handle(delivery_id=delivery.pk) == "done"
    assert Effect.objects.filter(subscriber="defect_held").count() == 2


@pytest.mark.django_db
def test_duplicate_messages_for_a_delivery_not_yet_due_do_nothing(settings):
    # Defect 6: three messages for one delivery (a lease ran out twice while the first was
    # queued) ran three attempts within milliseconds and dead-lettered it, ignoring backoff.
    settings.OUTBOX = {**settings.OUTBOX, "BACKOFF_BASE_SECONDS": 60.0, "BACKOFF_CAP_SECONDS": 60.0}
    delivery = published(DefectFailing(defect_id="dup", message="down"))
    assert [pk for pk, _ in deliveries_claim(limit=10)] == [delivery.pk]  # leased, dispatched
    outcomes = [delivery_handle(delivery_id=delivery.pk) for _ in range(3)]
    assert outcomes == ["retry", "skipped", "skipped"]
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    assert delivery.next_attempt_at > timezone.now() + dt.timedelta(seconds=25)
    # Once due again the relay claims it and the next message runs it.
    Delivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now(), backoff_until=None
    )
    assert [pk for pk, _ in deliveries_claim(limit=10)] == [delivery.pk]
    assert delivery_handle(delivery_id=delivery.pk) == "retry"


@pytest.mark.django_db
def test_a_publishing_host_whose_clock_runs_ahead_does_not_delay_its_deliveries(monkeypatch):
    # Suspected (clock skew): next_attempt_at came from the publishing host's clock and the
    # relay compared it with its own. Every time the engine compares is the database's now.
    postgres_only()
    ahead = timezone.now() + dt.timedelta(hours=1)
    with monkeypatch.context() as patched:
        patched.setattr("django.utils.timezone.now", lambda: ahead)
        delivery = published(DefectFailing(defect_id="skew", message="down"))
    assert [pk for pk, _ in deliveries_claim(limit=10)] == [delivery.pk]
