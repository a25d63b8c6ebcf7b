"""``outbox.atomic`` and ``outbox.insert_or_nothing``, the two helpers that let a saga step spend
fewer statements (outbox/transactions.py). What must hold: outside a handler ``atomic`` is
Django's (a failure inside rolls back to its savepoint and the caller goes on); inside a handler's
run it takes no savepoint, and a failure still leaves nothing, because the delivery's whole
transaction is rolled back. ``insert_or_nothing`` steps aside for a unique row only."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from outbox import atomic, insert_or_nothing
from outbox.context import Handling, handling
from payments.models import Payment
from tests.testapp.models import Effect


def _handling() -> Handling:
    return Handling(
        event_id=uuid.uuid4(),
        event_type="tests.ThingHappened",
        correlation_id=uuid.uuid4(),
        subscriber="tests.record_a",
        attempt=1,
    )


def _effect(name: str) -> Effect:
    return Effect.objects.create(subscriber=name, event_id=uuid.uuid4(), aggregate_id="x")


@atomic
def _service_that_fails(name: str) -> None:
    _effect(name)
    raise RuntimeError("the service failed after its write")


@pytest.mark.django_db
def test_outside_a_handler_it_is_a_savepoint_the_caller_goes_on_after():
    _effect("kept")
    with CaptureQueriesContext(connection) as queries:
        with pytest.raises(RuntimeError):
            _service_that_fails("rolled back")
    assert any(q["sql"].startswith("SAVEPOINT") for q in queries.captured_queries)
    # The caller's transaction is usable and lost only the service's write.
    assert list(Effect.objects.values_list("subscriber", flat=True)) == ["kept"]


@pytest.mark.django_db
def test_inside_a_handler_run_it_takes_no_savepoint():
    with transaction.atomic(), handling(_handling()):
        with CaptureQueriesContext(connection) as queries:
            with atomic():
                _effect("written")
    statements = [q["sql"] for q in queries.captured_queries]
    assert len(statements) == 1 and statements[0].startswith("INSERT"), statements
    assert Effect.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_inside_a_handler_run_a_failure_leaves_nothing_of_the_whole_transaction():
    # As the delivery's transaction: the handler's failure propagates and all of it rolls back,
    # the write before the service's included.
    with pytest.raises(RuntimeError):
        with transaction.atomic(), handling(_handling()):
            _effect("before the service")
            try:
                _service_that_fails("in the service")
            except RuntimeError:
                # Nothing may go on in a transaction whose service failed without a savepoint.
                assert transaction.get_rollback()
                raise
    assert Effect.objects.count() == 0


@pytest.mark.django_db
def test_insert_or_nothing_inserts_then_steps_aside_for_the_unique_row():
    first = Payment(
        order_id=7, amount=Decimal("1.00"), currency="EUR", status="failed", idempotency_key="k"
    )
    assert insert_or_nothing(first) is True
    assert first.pk is not None and first.created_at is not None
    assert Payment.objects.get(pk=first.pk).amount == Decimal("1.00")

    second = Payment(
        order_id=7, amount=Decimal("2.00"), currency="EUR", status="failed", idempotency_key="k"
    )
    assert insert_or_nothing(second) is False
    assert second.pk is None
    assert list(Payment.objects.values_list("amount", flat=True)) == [Decimal("1.00")]


@pytest.mark.django_db
def test_insert_or_nothing_still_refuses_a_row_that_breaks_a_check():
    # SQLite's INSERT OR IGNORE would skip this row silently; ON CONFLICT DO NOTHING does not.
    broken = Payment(
        order_id=8, amount=Decimal("-1.00"), currency="EUR", status="failed", idempotency_key="k"
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        insert_or_nothing(broken)
    assert not Payment.objects.exists()
