import datetime as dt
import uuid

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from outbox.bus.target import NoBus, bus_delivery, bus_replay_target
from outbox.errors import UnknownEventType, UnknownSubscriber
from outbox.events import event_type_get
from outbox.models import Delivery, Event
from outbox.registry import subscriber_get
from outbox.replay import (
    ReplayRefused,
    app_backfill,
    deliveries_replay,
    events_replay,
    service_replay,
    subscribers_of_app,
)


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise CommandError(f"--event {value!r} is not an event id (a UUID)") from None


def _when(value: str | None, flag: str):
    if value is None:
        return None
    try:
        parsed = parse_datetime(value)
        if parsed is None and (day := parse_date(value)) is not None:
            parsed = dt.datetime.combine(day, dt.time())  # a date: from its midnight
    except ValueError:
        parsed = None
    if parsed is None:
        raise CommandError(f"{flag} {value!r} is not an ISO 8601 date or date-time")
    if timezone.is_naive(parsed):  # no offset given: UTC
        parsed = timezone.make_aware(parsed, dt.UTC)
    return parsed


class Command(BaseCommand):
    help = (
        "Deliver events again. --dead replays dead letters (optionally of one --subscriber). "
        "With --subscriber and --event/--type/--since/--until, events are delivered to that "
        "subscriber: backfill for events it never received, a fresh start for dead ones; done "
        "deliveries are left alone unless --include-done. --subscriber bus sends externalised "
        "events to the event bus (EVENT_BUS_URL) again, e.g. for a service that joins late. "
        "--app instead of --subscriber: every subscriber of that app (backfill of an app "
        "deployed after the events), no other. --to-service: to one service of the deployment "
        "and no other (a service that joins late): locally when its apps are installed here "
        "(the monolith), else through the bus to its queue or durable consumer alone."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dead", action="store_true", help="replay dead letters")
        parser.add_argument("--subscriber", help="the subscriber to deliver to")
        parser.add_argument(
            "--app", help="deliver to every subscriber of this app (e.g. notifications)"
        )
        parser.add_argument(
            "--to-service",
            help="deliver to this service alone (e.g. notifications): locally in the monolith, "
            "through the bus in the split deployment",
        )
        parser.add_argument("--event", action="append", default=[], help="event id (repeatable)")
        parser.add_argument(
            "--type",
            action="append",
            default=[],
            help="event type, e.g. orders.OrderPlaced (repeatable)",
        )
        parser.add_argument("--since", help="events that occurred at or after (ISO 8601)")
        parser.add_argument("--until", help="events that occurred before (ISO 8601)")
        parser.add_argument(
            "--include-done", action="store_true", help="also run done deliveries again"
        )

    def handle(self, *args, **opts):
        name, app, service = opts["subscriber"], opts["app"], opts["to_service"]
        if len([given for given in (name, app, service) if given]) > 1:
            raise CommandError("give one of --subscriber, --app or --to-service")
        if service and opts["dead"]:
            raise CommandError(
                "--to-service chooses events to send; for the dead letters of a replay to a "
                f"service, use --dead --subscriber bus:{service}"
            )
        try:
            if name:
                if bus_delivery(name):
                    bus_replay_target()
                else:
                    subscriber_get(name)
            if app:
                subscribers_of_app(app)
        except (UnknownSubscriber, NoBus) as exc:
            raise CommandError(str(exc)) from None
        if opts["dead"]:
            dead = Delivery.objects.filter(status=Delivery.Status.DEAD)
            if name:
                dead = dead.filter(subscriber=name)
            if app:
                dead = dead.filter(subscriber__in=[s.name for s in subscribers_of_app(app)])
            count = deliveries_replay(dead)
            self.stdout.write(f"replaying {count} dead letters")
            return
        if not (name or app or service):
            raise CommandError(
                "give --dead, or --subscriber, --app or --to-service with the events to deliver"
            )
        since, until = _when(opts["since"], "--since"), _when(opts["until"], "--until")
        if not (opts["event"] or opts["type"] or since or until):
            raise CommandError("choose events with --event, --type, --since or --until")
        events = Event.objects.all()
        if opts["event"]:
            events = events.filter(event_id__in=[_uuid(e) for e in opts["event"]])
        if opts["type"]:
            for event_type in opts["type"]:
                try:
                    event_type_get(event_type)
                except UnknownEventType as exc:
                    raise CommandError(str(exc)) from None
            events = events.filter(type__in=opts["type"])
        if since:
            events = events.filter(occurred_at__gte=since)
        if until:
            events = events.filter(occurred_at__lt=until)
        if service:
            self._to_service(service, events, opts)
            return
        if app:
            results = app_backfill(app=app, events=events, include_done=opts["include_done"])
        else:
            results = {
                name: events_replay(
                    subscriber=name, events=events, include_done=opts["include_done"]
                )
            }
        for subscriber, result in results.items():
            self.stdout.write(
                f"{subscriber}: {result.created} new deliveries (backfill), {result.reset} made "
                f"due again, {result.skipped} already done and left alone"
            )

    def _to_service(self, service: str, events, opts) -> None:
        types = opts["type"] or None
        try:
            done = service_replay(
                service=service, events=events, types=types, include_done=opts["include_done"]
            )
        except ReplayRefused as exc:
            raise CommandError(str(exc)) from None
        where = "locally" if done.route == "local" else "through the bus, to it alone"
        self.stdout.write(f"replaying {', '.join(done.types)} to service {service} {where}")
        if done.left_out:
            self.stdout.write(
                f"left out (service {service} does not take them): {', '.join(done.left_out)}"
            )
        for subscriber, result in done.results.items():
            self.stdout.write(
                f"{subscriber}: {result.created} new deliveries (backfill), {result.reset} made "
                f"due again, {result.skipped} already done and left alone"
            )
