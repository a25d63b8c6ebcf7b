from django.core.management.base import BaseCommand, CommandError

from outbox.queues import RELAY_QUEUE
from outbox.registry import subscriber_queues


class Command(BaseCommand):
    help = (
        "Print the queues a worker consumes, comma-separated: every subscriber's queue, or with "
        "--relay the relay's. The Procfile's worker and relay start with these."
    )

    def add_arguments(self, parser):
        parser.add_argument("--relay", action="store_true", help="the relay's queue instead")

    def handle(self, *args, **options):
        if options["relay"]:
            self.stdout.write(RELAY_QUEUE)
            return
        queues = subscriber_queues()
        if not queues:
            raise CommandError("no subscriber is registered: is any app's handlers module found?")
        self.stdout.write(",".join(queues))
