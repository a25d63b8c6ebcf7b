import logging
import signal
import threading
import time

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from outbox.bus import metrics
from outbox.bus.adapters import adapter_for
from outbox.bus.conf import bus_settings
from outbox.bus.consuming import (
    bus_messages_receive,
    bus_types_consumed,
    bus_types_unpublished,
    consumer_run,
)
from outbox.continuation import queues_served_set

logger = logging.getLogger("outbox.bus.consume")
STATS_EVERY_SECONDS = 15.0


class Command(BaseCommand):
    help = (
        "Take this service's events in from the bus (EVENT_BUS_URL): declare its queue or "
        "durable consumer from the subscriber registry, store the events it holds with their "
        "local deliveries, one transaction per batch, acknowledge after the commit, then run a "
        "small batch's deliveries here (EVENT_BUS RUN). Runs until SIGTERM or SIGINT."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--declare-only",
            action="store_true",
            help="declare the topology (exchanges, queue, bindings / streams, consumer) and exit",
        )
        parser.add_argument(
            "--require-externalised",
            action="store_true",
            help="fail (instead of warning) when a type this service takes from the bus is not "
            "declared externalised by its publisher (the split deployment's release step)",
        )

    def handle(self, *args, **options):
        conf = bus_settings()
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        if not conf.enabled:
            # One Procfile for both shapes: without a bus this process has nothing to do, and
            # exiting would stop every other process honcho runs.
            self.stdout.write("EVENT_BUS_URL is not set: no bus to consume; idle")
            stop.wait()
            return
        types = bus_types_consumed()
        unpublished = bus_types_unpublished(types)
        if unpublished:
            problem = (
                f"service {conf.SERVICE} subscribes to {', '.join(unpublished)}, published by "
                "another service but not declared externalised: unless its publisher "
                "externalises every event (EVENT_BUS_EXTERNALISE_ALL), it never arrives. Declare "
                "`externalised: ClassVar[bool] = True` on the event class (docs/bus.md)"
            )
            if options["require_externalised"]:
                raise CommandError(problem)
            logger.warning(problem)
            self.stderr.write(f"warning: {problem}")
        adapter = adapter_for(conf.url, namespace=conf.NAMESPACE, ack_wait=conf.ACK_WAIT_SECONDS)
        if options["declare_only"]:
            adapter.topology_declare(service=conf.SERVICE, event_types=types)
            self.stdout.write(f"declared {conf.SERVICE}: {', '.join(types) or 'no types'}")
            return
        if not types:
            self.stdout.write(
                f"service {conf.SERVICE}: every event its subscribers handle is published "
                "here; nothing to take from the bus; idle"
            )
            adapter.topology_declare(service=None, event_types=())
            stop.wait()
            return
        try:
            run = consumer_run()
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        if run is not None:
            # Its runs continue, as a worker's, into what their handlers publish for its queues.
            queues_served_set(run.queues)
        self.stdout.write(
            f"service {conf.SERVICE} consuming {', '.join(types)}"
            + (f"; running {', '.join(sorted(run.queues))} itself" if run else "")
        )
        last_stats = [0.0]

        def idle() -> None:
            if time.monotonic() - last_stats[0] < STATS_EVERY_SECONDS:
                return
            last_stats[0] = time.monotonic()
            try:
                stats = adapter.stats(service=conf.SERVICE)
            except Exception as exc:
                logger.debug("bus stats unavailable: %s", exc)
                return
            if metrics.enabled:
                metrics.bus_consumer_stats(
                    service=conf.SERVICE,
                    namespace=conf.NAMESPACE,
                    lag=stats.lag,
                    unroutable=stats.unroutable,
                )

        adapter.consume(
            service=conf.SERVICE,
            event_types=types,
            on_batch=lambda messages: bus_messages_receive(
                messages=messages, adapter=adapter, run=run
            ),
            stop=stop,
            prefetch=conf.PREFETCH,
            on_idle=idle,
            on_settled=run.run if run is not None else None,
        )
        adapter.close()
