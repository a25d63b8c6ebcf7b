"""The lease stall with two claims at once (docs/outbox.md, "A row locked by a claim that does
not take it"), on PostgreSQL.

A claim whose statement began before another claim leased a row still reaches that row: its
``SKIP LOCKED`` only skips rows locked *now*, so it locks the newest version, finds it no
longer due, leaves it out of its result, and keeps the lock until its transaction ends. The
task sent for the row by the claim that did lease it must not take that lock for a duplicate
at work and skip the row: it would then wait a whole lease (``OUTBOX_LEASE_SECONDS``) before
being claimed again.

The first claim is paused inside its statement, after its snapshot and its first row, by a
trigger of this test's own on the delivery table (an advisory lock the test holds), while the
second claim leases the other rows and commits; then it runs on and reaches them. Its
transaction is kept open a moment longer than its statement would (the window the real one
leaves is its statement's remaining time, milliseconds), so the task for the second claim's
rows meets the lock every time.
"""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, transaction

from outbox import publish
from outbox.bus import publishing
from outbox.bus.target import BUS_SUBSCRIBER
from outbox.handling import delivery_handle
from outbox.models import Delivery
from outbox.relay import deliveries_claim
from tests.bus.conftest import fault_test
from tests.outbox.crashing import COUNTERS, counted_publish, exactly_once, runs_per_event
from tests.races.helpers import delivery_row_locked, skip_unless_postgres
from tests.testapp.events import ThingHappened

pytestmark = [pytest.mark.django_db(transaction=True), skip_unless_postgres()]

PAUSE_KEY = 7_310_042  # the advisory lock the paused claim waits on
HOLD_SECONDS = 0.3  # how long the first claim's transaction outlives its statement

_PAUSE_SQL = f"""
CREATE FUNCTION shop_test_claim_pause() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('shop_test.pause_claim', true) = 'on' THEN
        PERFORM pg_advisory_xact_lock({PAUSE_KEY});
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER shop_test_claim_pause BEFORE UPDATE ON outbox_delivery
    FOR EACH ROW EXECUTE FUNCTION shop_test_claim_pause();
"""
_UNPAUSE_SQL = """
DROP TRIGGER IF EXISTS shop_test_claim_pause ON outbox_delivery;
DROP FUNCTION IF EXISTS shop_test_claim_pause();
"""


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    monkeypatch.setattr("outbox.publisher.relay_wake", lambda: None)


@pytest.fixture
def pausable_claims():
    with connection.cursor() as cursor:
        cursor.execute(_PAUSE_SQL)
    yield
    with connection.cursor() as cursor:
        cursor.execute(_UNPAUSE_SQL)


class PausedClaim:
    """A relay's claim in a thread of its own (its own connection), stopped at its first row
    until ``resume()``; its transaction ends ``HOLD_SECONDS`` after its statement."""

    def __init__(self, *, limit: int):
        self.limit = limit
        self.claimed: list[tuple[int, str]] | None = None
        self.error: BaseException | None = None
        self.statement_done = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        try:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL shop_test.pause_claim = 'on'")
                self.claimed = deliveries_claim(limit=self.limit)
                self.statement_done.set()
                time.sleep(HOLD_SECONDS)
        except BaseException as exc:
            self.error = exc
        finally:
            self.statement_done.set()
            connection.close()

    def start(self) -> PausedClaim:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [PAUSE_KEY])
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self._waiting():
            assert time.monotonic() < deadline, "the first claim never reached its pause"
            assert self.thread.is_alive(), f"the first claim ended early: {self.error!r}"
            time.sleep(0.01)
        return self

    def _waiting(self) -> bool:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND objid = %s",
                [PAUSE_KEY],
            )
            return cursor.fetchone()[0] > 0

    def resume(self) -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [PAUSE_KEY])
        assert self.statement_done.wait(30), "the first claim did not finish its statement"

    def join(self) -> list[tuple[int, str]]:
        self.thread.join(30)
        assert not self.thread.is_alive()
        if self.error:
            raise self.error
        return self.claimed or []


def _two_claims(count: int) -> tuple[list[int], list[int]]:
    """The first claim paused after its first row, a second claim meanwhile; returns the ids
    each leased. The first one's transaction is still open when this returns."""
    first = PausedClaim(limit=count).start()
    second = [pk for pk, _ in deliveries_claim(limit=count)]
    first.resume()
    return first, second


def _unroutable_count(url: str, namespace: str) -> int:
    from kombu import Connection

    with Connection(url, connect_timeout=5) as conn:
        _, messages, _ = conn.default_channel.queue_declare(f"{namespace}.unroutable", passive=True)
    return messages


@fault_test
def test_a_bus_task_meeting_another_claims_stale_lock_publishes_its_batch_without_waiting_a_lease(
    rabbitmq_bus, bus_namespace, pausable_claims, settings
):
    settings.OUTBOX = {**settings.OUTBOX, "LEASE_SECONDS": 60, "LOCK_WAIT_SECONDS": 5}
    with transaction.atomic():
        for n in range(6):
            publish(ThingHappened(thing_id=f"stall-{n}"))
    # Only the bus deliveries (the test app's own subscribers are not this test's subject).
    Delivery.objects.exclude(subscriber=BUS_SUBSCRIBER).delete()
    ids = set(Delivery.objects.filter(subscriber=BUS_SUBSCRIBER).values_list("id", flat=True))
    assert len(ids) == 6

    first, second = _two_claims(len(ids))
    # The second claim leased every row the first had not locked yet.
    assert len(second) == 5
    outcome = publishing.bus_deliveries_publish(delivery_ids=second)
    leased_first = [pk for pk, _ in first.join()]

    # Each row leased once, by one of the two claims.
    assert sorted(leased_first + second) == sorted(ids)
    # The task for the second claim's rows published them all, instead of stepping aside for
    # the first claim's lock and leaving them to wait out their 60 s lease.
    assert outcome["done"] == 5, outcome
    assert set(
        Delivery.objects.filter(id__in=second, status="done").values_list("id", flat=True)
    ) == set(second)

    publishing.bus_deliveries_publish(delivery_ids=leased_first)
    assert Delivery.objects.filter(subscriber=BUS_SUBSCRIBER, status="done").count() == 6
    # Nothing lost, nothing doubled: the broker holds each event once.
    publishing.bus_adapter().close()
    deadline = time.monotonic() + 10
    while _unroutable_count(rabbitmq_bus, bus_namespace) < 6 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _unroutable_count(rabbitmq_bus, bus_namespace) == 6


@pytest.mark.postgres
def test_a_worker_meeting_another_claims_stale_lock_runs_its_delivery_without_waiting_a_lease(
    pausable_claims, settings
):
    settings.OUTBOX = {**settings.OUTBOX, "LEASE_SECONDS": 60, "LOCK_WAIT_SECONDS": 5}
    events = counted_publish(3)
    ids = set(Delivery.objects.filter(subscriber__in=COUNTERS).values_list("id", flat=True))
    assert len(ids) == 6

    first, second = _two_claims(len(ids))
    assert len(second) == 5
    outcomes = [delivery_handle(delivery_id=pk) for pk in second]
    leased_first = [pk for pk, _ in first.join()]

    assert sorted(leased_first + second) == sorted(ids)
    # Each worker ran its delivery instead of stepping aside for the first claim's lock.
    assert outcomes == ["done"] * 5
    for pk in leased_first:
        assert delivery_handle(delivery_id=pk) == "done"
    assert runs_per_event(events) == exactly_once(events)


@fault_test
def test_a_bus_task_steps_aside_for_a_lock_held_past_the_wait_and_publishes_the_rest(
    rabbitmq_bus, bus_namespace, settings
):
    """A duplicate at work (a lock held longer than LOCK_WAIT_SECONDS) keeps its row: the task
    gives up on it after the wait, publishes the others of its batch, and the skipped row is
    still pending for whoever holds it."""
    settings.OUTBOX = {**settings.OUTBOX, "LOCK_WAIT_SECONDS": 0.2}
    with transaction.atomic():
        for n in range(3):
            publish(ThingHappened(thing_id=f"held-{n}"))
    Delivery.objects.exclude(subscriber=BUS_SUBSCRIBER).delete()
    ids = sorted(Delivery.objects.filter(subscriber=BUS_SUBSCRIBER).values_list("id", flat=True))
    with delivery_row_locked(ids[0], timeout=30):  # a duplicate at work
        outcome = publishing.bus_deliveries_publish(delivery_ids=ids)
    assert outcome == {"done": 2, "retry": 0, "dead": 0, "skipped": 1}
    assert Delivery.objects.get(pk=ids[0]).status == "pending"
    assert set(Delivery.objects.filter(status="done").values_list("id", flat=True)) == set(ids[1:])
