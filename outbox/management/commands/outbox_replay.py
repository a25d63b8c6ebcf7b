import uuid

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from outbox.bus.target import NoBus, bus_delivery, bus_replay_target
from outbox.errors import UnknownSubscriber
from outbox.models import Delivery, Event
from outbox.registry import subscriber_get
from outbox.replay import deliveries_replay, events_replay


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise CommandError(f"--event {value!r} is not an event id (a UUID)") from None


def _when(value: str | None, flag: str):
    if value is None:
        return None
    parsed = parse_datetime(value)
    if parsed is None:
        raise CommandError(f"{flag} {value!r} is not an ISO 8601 date-time")
    return parsed


class Command(BaseCommand):
    help = (
        "Deliver events again. --dead replays dead letters (optionally of one --subscriber). "
        "With --subscriber and --event/--type/--since/--until, events are delivered to that "
        "subscriber: backfill for events it never received, a fresh start for dead ones; done "
        "deliveries are left alone unless --include-done. --subscriber bus sends externalised "
        "events to the event bus (EVENT_BUS_URL) again, e.g. for a service that joins late."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dead", action="store_true", help="replay dead letters")
        parser.add_argument("--subscriber", help="the subscriber to deliver to")
        parser.add_argument("--event", action="append", default=[], help="event id (repeatable)")
        parser.add_argument("--type", help="event type, e.g. orders.OrderPlaced")
        parser.add_argument("--since", help="events that occurred at or after (ISO 8601)")
        parser.add_argument("--until", help="events that occurred before (ISO 8601)")
        parser.add_argument(
            "--include-done", action="store_true", help="also run done deliveries again"
        )

    def handle(self, *args, **opts):
        name = opts["subscriber"]
        if name:
            try:
                if bus_delivery(name):
                    bus_replay_target()
                else:
                    subscriber_get(name)
            except (UnknownSubscriber, NoBus) as exc:
                raise CommandError(str(exc)) from None
        if opts["dead"]:
            dead = Delivery.objects.filter(status=Delivery.Status.DEAD)
            if name:
                dead = dead.filter(subscriber=name)
            count = deliveries_replay(dead)
            self.stdout.write(f"replaying {count} dead letters")
            return
        if not name:
            raise CommandError("give --dead, or --subscriber with the events to deliver")
        since, until = _when(opts["since"], "--since"), _when(opts["until"], "--until")
        if not (opts["event"] or opts["type"] or since or until):
            raise CommandError("choose events with --event, --type, --since or --until")
        events = Event.objects.all()
        if opts["event"]:
            events = events.filter(event_id__in=[_uuid(e) for e in opts["event"]])
        if opts["type"]:
            events = events.filter(type=opts["type"])
        if since:
            events = events.filter(occurred_at__gte=since)
        if until:
            events = events.filter(occurred_at__lt=until)
        result = events_replay(subscriber=name, events=events, include_done=opts["include_done"])
        self.stdout.write(
            f"{name}: {result.created} new deliveries (backfill), {result.reset} made due again, "
            f"{result.skipped} already done and left alone"
        )
