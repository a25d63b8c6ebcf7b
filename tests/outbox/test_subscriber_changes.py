"""Issue 16, suspected: deploying a subscriber change. A backfill during a rolling deploy, and
switching a subscriber to ordered=True (docs/outbox.md, "Ordered subscribers" and "Replay and
backfill", say what the engine does and what the operator does)."""

from __future__ import annotations

import pytest

from outbox.models import Delivery, Event
from outbox.relay import deliveries_claim
from outbox.replay import events_replay
from tests.outbox.defects import PRICES, DefectPriced
from tests.outbox.test_defects_ordering import SUBSCRIBER, priced, quiet, run  # noqa: F401
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db


def delivery_of(event: Event) -> Delivery:
    return Delivery.objects.get(event=event, subscriber=SUBSCRIBER)


def published_by_old_code(defect_id: str, price: str) -> Event:
    """An event published by a process still on the code before the subscriber existed: the
    publisher knew no such subscriber, so the event has no delivery for it."""
    event = priced(defect_id, price)
    Delivery.objects.filter(event=event, subscriber=SUBSCRIBER).delete()
    return event


def backfill() -> tuple[int, int]:
    result = events_replay(
        subscriber=SUBSCRIBER, events=Event.objects.filter(type=DefectPriced.event_type)
    )
    return result.created, result.skipped


def test_a_delivery_stored_before_the_switch_to_ordered_still_comes_first():
    first = priced("sku-switch", "10.00")
    second = priced("sku-switch", "20.00")
    # The first was stored while the subscriber was unordered: its row says so.
    Delivery.objects.filter(pk=delivery_of(first).pk).update(ordered=False)

    claimed = {pk for pk, _ in deliveries_claim(limit=100)}
    assert delivery_of(first).pk in claimed
    assert delivery_of(second).pk not in claimed, "the later event overtook an earlier one"
    assert run(second) == "waiting"

    assert [run(first), run(second)] == ["done", "done"]
    assert PRICES["sku-switch"] == "20.00"


def test_a_backfill_run_again_after_the_last_old_process_stopped_delivers_what_it_missed():
    before = published_by_old_code("sku-deploy", "10.00")
    assert backfill() == (1, 0)
    assert run(before) == "done"

    # An old process, still running, publishes after the backfill looked: the hazard.
    after = published_by_old_code("sku-deploy", "20.00")
    assert not Delivery.objects.filter(event=after, subscriber=SUBSCRIBER).exists()

    # The procedure: run the backfill again once every process runs the new code. It creates
    # only what is missing and leaves the done delivery alone.
    assert backfill() == (1, 1)
    assert run(after) == "done"
    assert PRICES["sku-deploy"] == "20.00"
    handled = Effect.objects.filter(subscriber="defect_priced", aggregate_id="sku-deploy")
    assert sorted(handled.values_list("event_id", flat=True)) == sorted(
        [before.event_id, after.event_id]
    )
