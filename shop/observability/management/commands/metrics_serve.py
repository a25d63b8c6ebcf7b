import threading

from django.core.management.base import BaseCommand, CommandError
from prometheus_client import CollectorRegistry, start_wsgi_server
from prometheus_client.multiprocess import MultiProcessCollector

from shop.observability.metrics import multiproc_dir


class Command(BaseCommand):
    help = (
        "Serve this machine's process counters (the multiprocess directory) on /metrics, for "
        "a machine that runs workers or relays but no web process. Database gauges (backlog, "
        "lag, dead letters, sagas) are left to the web's /metrics, so they are scraped once."
    )

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=9102, help="default 9102")
        # Localhost only unless told otherwise: these counters are not for the public, and
        # this server has no token check of its own (an agent on the machine scrapes it).
        parser.add_argument("--addr", default="127.0.0.1", help="default 127.0.0.1")

    def handle(self, *args, **options):
        path = multiproc_dir()
        if path is None or not path.is_dir():
            raise CommandError("PROMETHEUS_MULTIPROC_DIR is not a directory")
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(path))
        start_wsgi_server(options["port"], addr=options["addr"], registry=registry)
        self.stdout.write(
            f"serving the counters in {path} on http://{options['addr']}:{options['port']}/"
        )
        threading.Event().wait()
