import time

from django.core.management.base import BaseCommand

from outbox.relay import relay_run


class Command(BaseCommand):
    help = (
        "Run the relay in this process: once, or as a loop. The Procfile's relay is a Celery "
        "worker on the 'outbox' queue; this loop is for hosts without beat, or for debugging."
    )

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="one drain, then exit")
        parser.add_argument(
            "--interval", type=float, default=0.5, help="seconds between drains (default 0.5)"
        )

    def handle(self, *args, **options):
        if options["interval"] <= 0:
            from django.core.management.base import CommandError

            raise CommandError("--interval must be positive")
        while True:
            sent = relay_run()
            if options["once"]:
                self.stdout.write(f"dispatched {sent} deliveries")
                return
            if sent == 0:
                time.sleep(options["interval"])
