import json

from django.core.management.base import BaseCommand

from outbox.conf import outbox_settings
from outbox.models import Delivery
from outbox.selectors import HEARTBEAT_ROLES, heartbeat_problems, outbox_status


class Command(BaseCommand):
    help = "Deliveries by subscriber and status, the oldest pending age, dead letters, heartbeats."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print one JSON object")
        parser.add_argument(
            "--dead", type=int, default=10, metavar="N", help="list up to N dead letters"
        )

    def handle(self, *args, **options):
        status = outbox_status()
        stale_after = outbox_settings().HEARTBEAT_STALE_SECONDS
        problems = heartbeat_problems(status.heartbeats, stale_after=stale_after)
        if options["json"]:
            stale = sorted(name for name, problem in problems.items() if problem)
            data = {**status.__dict__, "heartbeats_stale": stale}
            self.stdout.write(json.dumps(data, indent=2, sort_keys=True))
            return
        w = self.stdout.write
        w(f"events stored: {status.events}")
        w("deliveries:    " + ", ".join(f"{k} {v}" for k, v in status.totals.items()))
        age = status.oldest_pending_age_seconds
        w(f"oldest pending: {'none' if age is None else f'{age:.1f}s old'}")
        w(f"dead letters:  {status.dead_letters}")
        w(f"heartbeats (stale after {stale_after:g}s):")
        others = sorted(set(status.heartbeats) - set(HEARTBEAT_ROLES))
        for name in [*HEARTBEAT_ROLES, *others]:
            seconds = status.heartbeats.get(name)
            seen = "never seen" if seconds is None else f"{seconds:.1f}s ago"
            verdict = "STALE: " + HEARTBEAT_ROLES[name] if problems.get(name) else "ok"
            w(f"  {name:<6} {seen:<14} {verdict}")
        if status.counts:
            w("")
            w(f"{'subscriber':<50} {'pending':>8} {'done':>8} {'dead':>6}")
            for name, c in sorted(status.counts.items()):
                w(f"{name:<50} {c['pending']:>8} {c['done']:>8} {c['dead']:>6}")
        dead = (
            Delivery.objects.filter(status=Delivery.Status.DEAD)
            .select_related("event")
            .order_by("-updated_at")[: options["dead"]]
        )
        if dead:
            w("")
            w("dead letters (newest first; replay: manage.py outbox_replay --dead):")
            for d in dead:
                w(
                    f"  #{d.pk} {d.subscriber} <- {d.event.type} {d.event.event_id}: "
                    f"{d.last_error.splitlines()[0] if d.last_error else ''}"
                )
