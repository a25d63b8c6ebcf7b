"""Celery tasks. They take ids, never objects, and are safe to run twice."""

from celery import shared_task

from outbox.handling import delivery_handle
from outbox.relay import RELAY_QUEUE, heartbeat, relay_run
from outbox.retention import events_purge


@shared_task(name="outbox.relay", queue=RELAY_QUEUE, ignore_result=True)
def relay(woken_at: float | None = None, source: str | None = None) -> int:
    """Dispatch due deliveries. Sent by beat every second and by publishers after commit."""
    if source == "beat":
        heartbeat("beat")
    return relay_run(woken_at=woken_at)


@shared_task(name="outbox.deliver", ignore_result=True)
def deliver(delivery_ids: list[int]) -> None:
    """Handle deliveries, each in its own transaction. The relay routes this task to the
    subscriber's queue."""
    for delivery_id in delivery_ids:
        delivery_handle(delivery_id=delivery_id)


@shared_task(name="outbox.bus_publish", ignore_result=True)
def bus_publish(delivery_ids: list[int]) -> None:
    """Publish bus deliveries to the broker as one batch (outbox/bus/publishing.py). The relay
    routes this task to the ``bus`` queue."""
    from outbox.bus.publishing import bus_deliveries_publish

    bus_deliveries_publish(delivery_ids=delivery_ids)


@shared_task(name="outbox.purge", queue=RELAY_QUEUE, ignore_result=True)
def purge() -> int:
    """Delete events past retention whose deliveries are all done."""
    return events_purge()
