"""Issue 16, defects 2, 3 and 7: what a run records whatever fails, and publish_many([])."""

from __future__ import annotations

import pytest
from django.db import transaction
from django.utils import timezone

from outbox import publish, publish_many
from outbox.handling import delivery_handle
from outbox.models import Delivery, Event
from outbox.tasks import deliver
from tests.outbox.defects import DefectDeferred, DefectFailing
from tests.testapp.models import Effect


@pytest.fixture(autouse=True)
def quiet(monkeypatch, outbox_fast):
    monkeypatch.setattr("outbox.publisher.relay_wake", lambda: None)


def published(event) -> Delivery:
    with transaction.atomic():
        return publish(event).deliveries.get()


def run_due(delivery: Delivery) -> str:
    Delivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now(), backoff_until=None
    )
    return delivery_handle(delivery_id=delivery.pk)


@pytest.mark.django_db
def test_publish_many_of_nothing_is_a_no_op_in_the_callers_transaction():
    # Defect 7: on PostgreSQL the empty INSERT ... RETURNING aborted the caller's transaction.
    with transaction.atomic():
        assert publish_many([]) == []
        assert Event.objects.count() == 0  # the transaction is still usable
    assert Event.objects.count() == 0


@pytest.mark.django_db
def test_an_error_text_with_nul_is_recorded_and_dead_lettered_on_every_backend():
    # Defect 3: PostgreSQL text cannot hold NUL; the bookkeeping itself failed.
    delivery = published(DefectFailing(defect_id="nul", message="bad reply: HTTP 502{NUL}tail"))
    assert [run_due(delivery) for _ in range(3)] == ["retry", "retry", "dead"]
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("dead", 3)
    assert delivery.last_error.startswith("RuntimeError: bad reply: HTTP 502")
    assert "\x00" not in delivery.last_error
    assert "tail" in delivery.last_error


@pytest.mark.django_db(transaction=True)
def test_a_failure_at_commit_is_counted_and_dead_letters_after_max_attempts():
    # Defect 2: a deferred foreign key fails at COMMIT, after the handler returned.
    delivery = published(DefectDeferred(defect_id="fk"))
    outcomes = [run_due(delivery) for _ in range(2)]
    assert outcomes == ["retry", "dead"]
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("dead", 2)
    assert "IntegrityError" in delivery.last_error.split("\n", 1)[0]
    # The handler's writes went with the failed transaction.
    assert not Effect.objects.filter(subscriber="defect_deferred").exists()


@pytest.mark.django_db(transaction=True)
def test_one_poisoned_delivery_does_not_stop_its_batch_mates():
    # Defect 2: the relay sends several ids per message; one failing must not stop the rest.
    poison = published(DefectDeferred(defect_id="poison"))
    healthy = published(DefectDeferred(defect_id="healthy", poison=False))
    deliver.run([poison.pk, healthy.pk])
    poison.refresh_from_db()
    healthy.refresh_from_db()
    assert (poison.status, poison.attempts) == ("pending", 1)
    assert poison.last_error
    assert (healthy.status, healthy.attempts) == ("done", 1)
    assert Effect.objects.filter(subscriber="defect_deferred").count() == 1
