"""Celery tasks, and the one outbox module that talks to Celery: it hands the rest of the
outbox what it sends with (outbox/transport.py). Tasks take ids, never objects, and are safe to
run twice."""

import logging
from types import SimpleNamespace

from celery import bootsteps, shared_task
from celery.signals import worker_init, worker_shutdown

from outbox.bus.relaying import relay_publisher_start, relay_publisher_stop
from outbox.continuation import deliveries_run, queues_served_set
from outbox.relay import RELAY_QUEUE, heartbeat, relay_run
from outbox.retention import events_purge
from outbox.transport import Transport, transport_set
from outbox.wake import RelayListener, relay_listener_wanted

logger = logging.getLogger(__name__)


@shared_task(name="outbox.relay", queue=RELAY_QUEUE, ignore_result=True)
def relay(woken_at: float | None = None, source: str | None = None) -> int:
    """Dispatch due deliveries. Sent by beat every second and by publishers after commit."""
    if source == "beat":
        heartbeat("beat")
    return relay_run(woken_at=woken_at)


@shared_task(name="outbox.deliver", ignore_result=True)
def deliver(delivery_ids: list[int]) -> None:
    """Handle deliveries, each in its own transaction and independently: one that cannot be
    handled (the database failed under it) leaves the others of its message to run, and is
    dispatched again when its lease runs out. After each, the deliveries its run committed for
    this worker's queues run here too (outbox/continuation.py). The relay routes this task to
    the subscriber's queue."""
    deliveries_run(delivery_ids)


@worker_init.connect
def _worker_queues_note(sender, **kwargs) -> None:
    # The queues the worker consumes from (its --queues, or every declared queue), which its
    # pool processes inherit: continuation runs only deliveries of these queues.
    queues = sender.app.amqp.queues
    queues_served_set(queues.consume_from or queues)


@worker_shutdown.connect
def _worker_queues_forget(sender, **kwargs) -> None:
    queues_served_set(())


class RelayListening(bootsteps.StartStopStep):
    """The relay's worker listens for its commits' notifications (outbox/wake.py) from the
    worker's start to its stop, warm or cold. shop/celery.py adds this step to the worker."""

    requires = ("celery.worker.components:Pool",)

    def include_if(self, worker) -> bool:
        queues = worker.app.amqp.queues
        return RELAY_QUEUE in (queues.consume_from or queues) and relay_listener_wanted(
            worker.pool_cls
        )

    def create(self, worker) -> RelayListener:
        return RelayListener(_relay_woken)


class RelayPublishing(bootsteps.StartStopStep):
    """The relay's worker publishes small bus claims itself, in a thread of its own
    (outbox/bus/relaying.py), from the worker's start to its stop. shop/celery.py adds this step
    to the worker."""

    requires = ("celery.worker.components:Pool",)

    def include_if(self, worker) -> bool:
        queues = worker.app.amqp.queues
        return RELAY_QUEUE in (queues.consume_from or queues)

    def create(self, worker) -> SimpleNamespace:
        return SimpleNamespace(start=relay_publisher_start, stop=relay_publisher_stop)


def _relay_woken(woken_at: float) -> int:
    return relay_run(woken_at=woken_at)


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


def _deliveries_send(
    messages: list[tuple[str, list[int]]], bus_messages: list[list[int]] | None = None
) -> None:
    from outbox.bus.target import BUS_QUEUE

    with deliver.app.producer_or_acquire() as producer:
        for ids in bus_messages or ():
            bus_publish.apply_async(args=[ids], queue=BUS_QUEUE, producer=producer)
        for queue, ids in messages:
            deliver.apply_async(args=[ids], queue=queue, producer=producer)


def _relay_wake_send(woken_at: float) -> None:
    relay.apply_async(kwargs={"woken_at": woken_at}, retry=False)


def _broker() -> tuple[str, dict]:
    conf = relay.app.conf
    return conf.broker_url or "", dict(conf.broker_transport_options or {})


transport_set(
    Transport(deliveries_send=_deliveries_send, relay_wake_send=_relay_wake_send, broker=_broker)
)
