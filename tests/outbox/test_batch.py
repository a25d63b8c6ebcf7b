"""Several deliveries per transaction (``OUTBOX["DELIVERY_BATCH_SIZE"]``): a message's
deliveries run in one transaction, each handler in a savepoint; a handler that raises costs its
own delivery an attempt and no other; a deadlock or a serialization failure rolls the batch
back and its deliveries run one per transaction, each once.

The worker's task body (``deliveries_run``, what ``outbox.deliver`` does with a message) runs
here on the real database; the counting subscribers of tests/testapp add a row per committed
run, so a second effect of one delivery shows.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from decimal import Decimal

import psycopg.errors
import pytest
from django.db import OperationalError, close_old_connections, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from outbox import publish
from outbox.continuation import deliveries_run
from outbox.models import Delivery
from tests.outbox.crashing import counted_publish, exactly_once, runs_per_event
from tests.testapp import handlers
from tests.testapp.events import FlakyThing
from tests.testapp.models import Effect

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def batches(monkeypatch, settings):
    monkeypatch.setattr("outbox.publisher.relay_wake", lambda: None)
    # Outside a worker: nothing continues (an earlier test may have left queues set).
    monkeypatch.setattr("outbox.continuation._queues", frozenset())
    settings.OUTBOX = {**settings.OUTBOX, "DELIVERY_BATCH_SIZE": 50}


@pytest.fixture
def commits(monkeypatch):
    """The transactions the database connection commits, counted."""
    counted = []
    commit = connection.commit

    def counting():
        counted.append(1)
        return commit()

    monkeypatch.setattr(connection, "commit", counting)
    return counted


def ids_of(events) -> list[int]:
    return list(
        Delivery.objects.filter(event__in=events).order_by("pk").values_list("pk", flat=True)
    )


def test_a_messages_deliveries_are_handled_in_one_transaction(commits):
    events = counted_publish(5)
    ids = ids_of(events)
    assert len(ids) == 10

    commits.clear()
    deliveries_run(ids)

    assert len(commits) == 1
    assert runs_per_event(events) == exactly_once(events)
    assert set(Delivery.objects.filter(pk__in=ids).values_list("status", "attempts")) == {
        ("done", 1)
    }


def test_the_setting_at_one_handles_each_delivery_in_its_own_transaction(commits, settings):
    settings.OUTBOX = {**settings.OUTBOX, "DELIVERY_BATCH_SIZE": 1}
    events = counted_publish(3)

    commits.clear()
    deliveries_run(ids_of(events))

    assert len(commits) == 6
    assert runs_per_event(events) == exactly_once(events)


def test_a_batch_is_at_most_the_settings_size(commits, settings):
    settings.OUTBOX = {**settings.OUTBOX, "DELIVERY_BATCH_SIZE": 4}
    events = counted_publish(5)

    commits.clear()
    deliveries_run(ids_of(events))

    assert len(commits) == 3  # 10 deliveries: 4 + 4 + 2
    assert runs_per_event(events) == exactly_once(events)


def test_a_failing_handler_among_them_is_retried_and_the_others_are_done_once(commits, settings):
    # A backoff long enough that the duplicate message below surely comes during it.
    settings.OUTBOX = {**settings.OUTBOX, "BACKOFF_BASE_SECONDS": 60.0, "BACKOFF_CAP_SECONDS": 60.0}
    counted = counted_publish(2)
    with transaction.atomic():
        flaky_event = publish(FlakyThing(thing_id="f", fail_times=1))
    ids = sorted([*ids_of(counted), flaky_event.deliveries.get().pk])
    flaky = flaky_event.deliveries.get()

    commits.clear()
    deliveries_run(ids)

    assert len(commits) == 1
    assert runs_per_event(counted) == exactly_once(counted)
    flaky.refresh_from_db()
    assert (flaky.status, flaky.attempts) == ("pending", 1)
    assert "planned failure on attempt 1" in flaky.last_error
    assert flaky.backoff_until is not None
    # Its savepoint took its write back; the others' writes stayed.
    assert not Effect.objects.filter(subscriber="flaky").exists()

    # A duplicate message during the backoff does nothing; after it, the retry succeeds.
    deliveries_run(ids)
    flaky.refresh_from_db()
    assert (flaky.status, flaky.attempts) == ("pending", 1)
    Delivery.objects.filter(pk=flaky.pk).update(
        backoff_until=timezone.now() - dt.timedelta(seconds=1)
    )
    deliveries_run(ids)
    flaky.refresh_from_db()
    assert (flaky.status, flaky.attempts) == ("done", 2)
    assert Effect.objects.filter(subscriber="flaky").count() == 1
    assert runs_per_event(counted) == exactly_once(counted)


def test_a_failed_attempt_in_a_batch_is_recorded_as_one_alone_and_the_last_is_dead(settings):
    """On PostgreSQL a batch's lock marks its deliveries done before their handlers run (one
    statement for both): a handler that raises has its attempt recorded over that mark, as the
    same failure is recorded for a delivery handled alone, up to its dead letter."""
    settings.OUTBOX = {**settings.OUTBOX, "BACKOFF_BASE_SECONDS": 0.0, "BACKOFF_CAP_SECONDS": 0.0}
    counted = counted_publish(1)
    with transaction.atomic():
        in_batch = publish(FlakyThing(thing_id="b", fail_times=5)).deliveries.get()
        alone = publish(FlakyThing(thing_id="a", fail_times=5)).deliveries.get()
    ids = sorted([*ids_of(counted), in_batch.pk])

    def record(delivery):
        delivery.refresh_from_db()
        return (delivery.status, delivery.attempts, delivery.completed_at, delivery.dispatches)

    for attempt, status in ((1, "pending"), (2, "pending"), (3, "dead")):
        deliveries_run(ids)
        deliveries_run([alone.pk])
        assert record(in_batch) == (status, attempt, None, 0)
        assert record(alone) == (status, attempt, None, 0)
        assert f"planned failure on attempt {attempt}" in in_batch.last_error
    assert not Effect.objects.filter(subscriber="flaky").exists()
    assert runs_per_event(counted) == exactly_once(counted)
    assert set(Delivery.objects.filter(pk__in=ids_of(counted)).values_list("status")) == {("done",)}


def _handler_writes_in_savepoints(queries) -> list[str]:
    """The handlers' writes (testapp's tables) made inside an open savepoint. Other savepoints
    (on PostgreSQL, the wait for a lock the first statement skipped) do not count."""
    open_savepoints: list[str] = []
    inside = []
    for query in queries.captured_queries:
        sql = query["sql"]
        if sql.startswith("SAVEPOINT"):
            open_savepoints.append(sql.split()[1])
        elif sql.startswith("RELEASE SAVEPOINT"):
            # Django releases a savepoint after rolling back to it: released once.
            name = sql.split()[-1]
            if name in open_savepoints:
                del open_savepoints[open_savepoints.index(name) :]
        elif open_savepoints and "testapp_" in sql and sql.startswith("INSERT"):
            inside.append(sql)
    return inside


def test_a_batchs_only_runnable_delivery_runs_without_a_savepoint(commits):
    """Beside deliveries it skips (done already, or to run alone), a batch that runs one
    handler needs no savepoint: its writes and its done mark commit together, once."""
    done_before = counted_publish(1)
    deliveries_run(ids_of(done_before))
    events = counted_publish(1)
    first = Delivery.objects.filter(event__in=events).order_by("pk").first()
    ids = sorted([*ids_of(done_before), first.pk])

    commits.clear()
    with CaptureQueriesContext(connection) as queries:
        deliveries_run(ids)

    assert _handler_writes_in_savepoints(queries) == []
    assert len(commits) == 1
    first.refresh_from_db()
    assert (first.status, first.attempts) == ("done", 1)
    assert runs_per_event(done_before) == exactly_once(done_before)


def test_a_batchs_only_runnable_delivery_that_fails_leaves_nothing_and_is_retried(
    commits, settings
):
    """Without a savepoint, the failing handler's writes go with the batch's rollback; its
    attempt is recorded in a transaction of its own, as alone, and the retry runs it once."""
    settings.OUTBOX = {**settings.OUTBOX, "BACKOFF_BASE_SECONDS": 0.0, "BACKOFF_CAP_SECONDS": 0.0}
    done_before = counted_publish(1)
    deliveries_run(ids_of(done_before))
    with transaction.atomic():
        flaky = publish(FlakyThing(thing_id="s", fail_times=1)).deliveries.get()
    ids = sorted([*ids_of(done_before), flaky.pk])

    commits.clear()
    with CaptureQueriesContext(connection) as queries:
        deliveries_run(ids)

    assert _handler_writes_in_savepoints(queries) == []
    assert len(commits) == 1  # the failure's record; the batch rolled back
    flaky.refresh_from_db()
    assert (flaky.status, flaky.attempts, flaky.completed_at) == ("pending", 1, None)
    assert "planned failure on attempt 1" in flaky.last_error
    assert not Effect.objects.filter(subscriber="flaky").exists()

    deliveries_run(ids)
    flaky.refresh_from_db()
    assert (flaky.status, flaky.attempts) == ("done", 2)
    assert Effect.objects.filter(subscriber="flaky").count() == 1
    assert runs_per_event(done_before) == exactly_once(done_before)


def test_a_serialization_failure_rolls_the_batch_back_and_each_runs_once_alone(
    commits, monkeypatch, caplog
):
    """The database answers a handler of the batch with a serialization failure (40001): the
    batch is rolled back whole, and every delivery is then handled in a transaction of its own,
    each once, none with an attempt counted against it."""
    counted = counted_publish(2)
    with transaction.atomic():
        flaky_event = publish(FlakyThing(thing_id="f", fail_times=0))
    ids = sorted([*ids_of(counted), flaky_event.deliveries.get().pk])
    record = handlers._record
    failures = []

    def serialization_failure_once(event, name, **data):
        record(event, name, **data)
        if not failures:
            failures.append(name)
            raise OperationalError("could not serialize access") from (
                psycopg.errors.SerializationFailure("could not serialize access")
            )

    monkeypatch.setattr(handlers, "_record", serialization_failure_once)

    commits.clear()
    with caplog.at_level(logging.WARNING, logger="outbox.continuation"):
        deliveries_run(ids)

    assert failures == ["flaky"]
    assert any("rolled back" in r.getMessage() for r in caplog.records)
    assert len(commits) == len(ids)  # the batch rolled back (no commit), then one each
    assert runs_per_event(counted) == exactly_once(counted)
    assert Effect.objects.filter(subscriber="flaky").count() == 1
    assert set(Delivery.objects.filter(pk__in=ids).values_list("status", "attempts")) == {
        ("done", 1)
    }


def test_two_batches_deadlocking_on_stock_rows_fall_back_and_reserve_each_order_once(
    monkeypatch, caplog
):
    """The known hazard: each reservation locks its order's stock rows in sku order, but two
    batches' orders interleave (batch 1 reserves MUG then TEE, batch 2 TEE then MUG). PostgreSQL
    breaks the deadlock by failing one batch's handler; that batch is rolled back and its
    deliveries run one per transaction: every order reserved once, every delivery done once."""
    if connection.vendor != "postgresql":
        pytest.skip("a deadlock of row locks: SQLite serialises every writer at BEGIN")
    from inventory import handlers as inventory_handlers
    from inventory.models import StockLevel, StockReservation
    from inventory.services import product_create
    from payments.events import PaidLine, PaymentCompleted

    for sku in ("MUG", "TEE"):
        product_create(sku=sku, name=sku, price=Decimal("5.00"), stock=10)
    Delivery.objects.update(status="done")  # the catalogue's own events are not this test's

    def paid(order_id: int, sku: str):
        return PaymentCompleted(
            payment_id=order_id,
            order_id=order_id,
            amount="5.00",
            currency="EUR",
            lines=(PaidLine(sku=sku, quantity=1),),
        )

    with transaction.atomic():
        first = [publish(paid(1, "MUG")), publish(paid(2, "TEE"))]
        second = [publish(paid(3, "TEE")), publish(paid(4, "MUG"))]
    subscriber = "inventory.stock_reserve_on_payment_completed"

    def batch_of(events):
        return sorted(
            Delivery.objects.filter(event__in=events, subscriber=subscriber).values_list(
                "pk", flat=True
            )
        )

    batches = [batch_of(first), batch_of(second)]
    # Each batch's first reservation holds its row until both have one: then each asks for the
    # other's.
    both_hold_one = threading.Barrier(2, timeout=10)
    reserve = inventory_handlers.stock_reserve
    seen = threading.local()

    def reserve_then_meet(**kwargs):
        result = reserve(**kwargs)
        if not getattr(seen, "met", False):
            seen.met = True
            both_hold_one.wait()
        return result

    monkeypatch.setattr(inventory_handlers, "stock_reserve", reserve_then_meet)
    errors = []

    def worker(ids):
        try:
            deliveries_run(ids)
        except BaseException as exc:
            errors.append(exc)
        finally:
            close_old_connections()
            connection.close()

    with caplog.at_level(logging.WARNING, logger="outbox.continuation"):
        threads = [threading.Thread(target=worker, args=(ids,)) for ids in batches]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

    assert errors == []
    assert any("rolled back" in r.getMessage() for r in caplog.records)
    reserved = Delivery.objects.filter(pk__in=batches[0] + batches[1])
    assert set(reserved.values_list("status", "attempts")) == {("done", 1)}
    assert sorted(StockReservation.objects.values_list("order_id", "status")) == [
        (order_id, "reserved") for order_id in (1, 2, 3, 4)
    ]
    assert sorted(StockLevel.objects.values_list("product__sku", "reserved")) == [
        ("MUG", 2),
        ("TEE", 2),
    ]


def test_a_worker_killed_mid_batch_leaves_every_delivery_to_run_once_after_the_lease():
    """Guarantee 2 and 3 for a batch: a worker killed after a handler of the batch wrote, or as
    it marks the batch done, commits nothing of it; the deliveries run again (as the lease
    running out would have it) each have one effect."""
    from tests.outbox.crashing import KILLED, child_run

    for fault in ("kill@after_handler_writes", "kill@done_mark"):
        events = counted_publish(3)
        ids = ids_of(events)

        code, _ = child_run("run", ",".join(map(str, ids)), fault=fault)

        assert code == KILLED, fault
        assert sum(runs_per_event(events).values()) == 0, fault
        assert set(Delivery.objects.filter(pk__in=ids).values_list("status", "attempts")) == {
            ("pending", 0)
        }
        _run_until_done(ids)
        assert runs_per_event(events) == exactly_once(events), fault


def _run_until_done(ids: list[int]) -> None:
    # On PostgreSQL the server may take a moment to notice the killed session and free its row
    # locks; until then the deliveries are (rightly) skipped.
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        deliveries_run(ids)
        if not Delivery.objects.filter(pk__in=ids).exclude(status="done").exists():
            return
        time.sleep(0.05)


def test_prepare_subscribers_run_one_by_one_and_their_batch_commits_nothing(commits):
    """A ``prepare=`` step must commit before its handler's transaction begins, so such
    deliveries are not run in the batch: each runs alone (its prepare's commit, then its
    handler's), and the batch that only locked them commits nothing."""
    from django.contrib.auth import get_user_model

    from inventory.services import product_create
    from orders.services import order_place
    from payments.models import Payment

    product_create(sku="MUG", name="Mug", price=Decimal("9.50"), stock=10)
    deliveries_run(list(Delivery.objects.filter(status="pending").values_list("pk", flat=True)))
    customer = get_user_model().objects.create_user("alice")
    orders = [
        order_place(
            customer=customer, lines=[{"sku": "MUG", "quantity": 1}], payment_token="tok_visa"
        )[0]
        for _ in range(2)
    ]
    charges = list(
        Delivery.objects.filter(subscriber="payments.payment_charge_on_order_placed")
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    assert len(charges) == 2

    commits.clear()
    deliveries_run(charges)

    assert len(commits) == 4  # per charge: its prepare's, its handler's
    assert set(Delivery.objects.filter(pk__in=charges).values_list("status", "attempts")) == {
        ("done", 1)
    }
    assert sorted(Payment.objects.values_list("order_id", flat=True)) == sorted(
        order.pk for order in orders
    )
