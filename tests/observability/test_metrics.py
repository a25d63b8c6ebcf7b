"""/metrics: counters from every process (multiprocess files), gauges read at scrape time."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from pathlib import Path

import pytest
from django.db import transaction
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from outbox import publish
from outbox.handling import delivery_handle
from outbox.models import Delivery, Event
from outbox.relay import relay_run
from shop.observability.metrics import multiproc_dir_prepare
from tests.testapp.events import FlakyThing, ThingHappened

FAMILIES = {
    "outbox_events_published",
    "outbox_deliveries",
    "outbox_handler_duration_seconds",
    "outbox_relay_runs",
    "outbox_relay_batch_size",
    "outbox_deliveries_continued",
    "outbox_lag_seconds",
    "outbox_backlog",
    "outbox_dead_letters",
    "outbox_heartbeat_age_seconds",
    "outbox_scrape_success",
    "shop_orders_placed",
    "shop_orders_completed",
    "shop_orders_cancelled",
    "shop_sagas_in_flight",
    "shop_saga_deadlines_fired",
}


class Scrape:
    def __init__(self, client):
        response = client.get("/metrics")
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/plain")
        self.families = {}
        self.samples = {}
        for family in text_string_to_metric_families(response.content.decode()):
            self.families[family.name] = family
            for s in family.samples:
                self.samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def value(self, name: str, **labels) -> float:
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.django_db(transaction=True)
def test_publish_and_delivery_are_counted_once_committed(client, monkeypatch):
    monkeypatch.setattr("outbox.relay.deliveries_dispatch", lambda claimed: 1)
    before = Scrape(client)

    with transaction.atomic():
        stored = publish(ThingHappened(thing_id="m"))
    with pytest.raises(RuntimeError), transaction.atomic():
        publish(ThingHappened(thing_id="rolled back"))
        raise RuntimeError("the caller's transaction fails")
    assert relay_run() == 3
    for delivery in stored.deliveries.all():
        assert delivery_handle(delivery_id=delivery.pk) == "done"
    with transaction.atomic():
        flaky = publish(FlakyThing(thing_id="f", fail_times=1)).deliveries.get()
    assert delivery_handle(delivery_id=flaky.pk) == "retry"

    after = Scrape(client)
    assert set(after.families) >= FAMILIES

    def delta(name, **labels):
        return after.value(name, **labels) - before.value(name, **labels)

    # Published once committed; the rolled-back event is not counted.
    assert delta("outbox_events_published_total", event_type="tests.ThingHappened") == 1
    assert delta("outbox_events_published_total", event_type="tests.FlakyThing") == 1
    assert delta("outbox_deliveries_total", subscriber="tests.record_a", outcome="done") == 1
    assert delta("outbox_deliveries_total", subscriber="tests.flaky", outcome="retry") == 1
    assert delta("outbox_handler_duration_seconds_count", subscriber="tests.record_b") == 1
    assert delta("outbox_relay_runs_total", result="drained") == 1
    assert delta("outbox_relay_batch_size_count") == 1
    assert delta("outbox_relay_batch_size_sum") == 3
    # The flaky delivery waits for its retry: one pending.
    assert after.value("outbox_backlog", subscriber="tests.flaky") == 1
    assert after.value("outbox_backlog", subscriber="tests.record_a") == 0
    assert after.value("outbox_scrape_success") == 1

    # Counters live in this process's files of the multiprocess directory.
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    assert (folder / f"counter_{os.getpid()}.db").is_file()
    assert (folder / f"histogram_{os.getpid()}.db").is_file()


@pytest.mark.django_db
def test_lag_backlog_and_dead_letters_are_read_at_scrape_time(client):
    with transaction.atomic():
        event = publish(ThingHappened(thing_id="lagging"))
    now = timezone.now()
    Delivery.objects.filter(event=event, subscriber="tests.record_a").update(
        next_attempt_at=now - dt.timedelta(seconds=42)
    )
    Delivery.objects.filter(event=event, subscriber="tests.record_b").update(status="dead")
    # Leased to a worker (not due): pending, but no lag.
    Delivery.objects.filter(event=event, subscriber="tests.record_c").update(
        next_attempt_at=now + dt.timedelta(seconds=30)
    )

    scrape = Scrape(client)
    assert 42 <= scrape.value("outbox_lag_seconds") < 60
    assert scrape.value("outbox_backlog", subscriber="tests.record_a") == 1
    assert scrape.value("outbox_backlog", subscriber="tests.record_c") == 1
    assert scrape.value("outbox_dead_letters", subscriber="tests.record_b") == 1
    assert scrape.value("outbox_dead_letters", subscriber="tests.record_a") == 0


@pytest.mark.django_db
def test_saga_outcomes_are_counted_in_the_event_store(client):
    def stored(type_name: str, **payload) -> None:
        Event.objects.create(
            type=type_name,
            version=1,
            aggregate_type="order",
            aggregate_id=str(payload["order_id"]),
            payload=payload,
            correlation_id=uuid.uuid4(),
            occurred_at=timezone.now(),
        )

    for order_id in range(1, 6):
        stored("orders.OrderPlaced", order_id=order_id)
    stored("orders.OrderCompleted", order_id=1)
    stored("orders.OrderCompleted", order_id=2)
    stored("orders.OrderCancelled", order_id=3, reason="payment_failed")
    stored("orders.OrderCancelled", order_id=4, reason="out_of_stock")
    stored("orders.OrderCancelled", order_id=5, reason="out_of_stock")

    scrape = Scrape(client)
    assert scrape.value("shop_orders_placed") == 5
    assert scrape.value("shop_orders_completed") == 2
    assert scrape.value("shop_orders_cancelled", reason="payment_failed") == 1
    assert scrape.value("shop_orders_cancelled", reason="out_of_stock") == 2


def test_the_multiprocess_directory_is_wiped_only_when_no_owner_runs(tmp_path):
    dead_pid = _a_dead_pid()
    (tmp_path / f"counter_{dead_pid}.db").write_bytes(b"")
    (tmp_path / f"histogram_{dead_pid}.db").write_bytes(b"")
    # A file of a process that still runs (the parent of this one) keeps everything.
    (tmp_path / f"counter_{os.getppid()}.db").write_bytes(b"")
    assert multiproc_dir_prepare(tmp_path) == 0
    assert len(list(tmp_path.glob("*.db"))) == 3
    # Once that process is gone too (here: its file), a new run starts from nothing.
    (tmp_path / f"counter_{os.getppid()}.db").unlink()
    # Files with this process's own pid come from an earlier process that had it.
    (tmp_path / f"gauge_livesum_{os.getpid()}.db").write_bytes(b"")
    assert multiproc_dir_prepare(tmp_path) == 3
    assert list(tmp_path.glob("*.db")) == []


def _a_dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(child.stdout)


@pytest.mark.django_db
def test_sagas_in_flight_by_step_and_deadlines_fired(client):
    from django.contrib.auth import get_user_model

    from orders.models import Order, OrderDeadline

    customer = get_user_model().objects.create_user("dora", password="pw-dora-12345")

    def an_order(status: str, **fields) -> Order:
        return Order.objects.create(
            customer=customer, status=status, currency="EUR", total=1, **fields
        )

    an_order("placed")
    an_order("placed")
    paid = an_order("paid", cancellation_requested_at=timezone.now())
    an_order("completed")
    OrderDeadline.objects.create(
        order=paid,
        step="placed",
        due_at=timezone.now(),
        fired_at=timezone.now(),
        outcome="cancelled",
    )
    scrape = Scrape(client)
    assert scrape.value("shop_sagas_in_flight", step="placed") == 2
    assert scrape.value("shop_sagas_in_flight", step="paid") == 0
    assert scrape.value("shop_sagas_in_flight", step="cancelling") == 1
    assert scrape.value("shop_saga_deadlines_fired", step="placed", outcome="cancelled") == 1
    for reason in ("customer_cancelled", "timed_out", "operator_cancelled"):
        assert ("shop_orders_cancelled", (("reason", reason),)) in scrape.samples
