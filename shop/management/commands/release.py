"""The release step of the split deployment (Procfile.split): every service's database migrated,
then every service's queue on the bus declared, before any process of any service starts.

Each step runs in the shape of the service it prepares (``SHOP_SERVICE=<name>``, a process of
its own): that service's settings pick its database, and its own subscriber registry gives the
event types its queue is bound to, exactly as its consumer computes them when it starts
(``manage.py bus_consume --declare-only``). So a publisher's first event already finds every
other service's queue, or JetStream durable consumer, waiting for it.
"""

from __future__ import annotations

import os
import subprocess
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from shop.services import SERVICES


class Command(BaseCommand):
    help = (
        "Prepare the split deployment: migrate every service's database, then declare every "
        "service's queue and bindings (RabbitMQ) or durable consumer (NATS) on EVENT_BUS_URL; "
        "then exit. Procfile.split's release entry."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--service",
            action="append",
            choices=list(SERVICES),
            help="only this service (repeatable); default: every service of shop/services.py",
        )
        parser.add_argument(
            "--skip-bus", action="store_true", help="migrate only; declare nothing on the bus"
        )

    def handle(self, *args, **options):
        services = options["service"] or list(SERVICES)
        bus = not options["skip_bus"]
        if bus and not os.environ.get("EVENT_BUS_URL"):
            raise CommandError(
                "the split deployment's services reach each other through the bus: set "
                "EVENT_BUS_URL (amqp://... or nats://...), or pass --skip-bus"
            )
        for service in services:
            self._step(service, "migrate", "--noinput")
        if bus:
            for service in services:
                self._step(service, "bus_consume", "--declare-only", "--require-externalised")
        self.stdout.write(f"released: {', '.join(services)}")

    def _step(self, service: str, *command: str) -> None:
        self.stdout.write(f"[{service}] manage.py {' '.join(command)}")
        self.stdout.flush()
        env = {**os.environ, "SHOP_SERVICE": service}
        manage = str(settings.BASE_DIR / "manage.py")
        done = subprocess.run(
            [sys.executable, manage, *command],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        for line in (done.stdout + done.stderr).splitlines():
            self.stdout.write(f"[{service}] {line}")
        if done.returncode:
            raise CommandError(
                f"[{service}] manage.py {' '.join(command)} exited with {done.returncode}"
            )
