"""``make chaos ARGS="--split"``: the split deployment under fire (docs/chaos.md, "The split
deployment").

The run of ``chaos.run`` with Procfile.split's processes instead of the Procfile's: the shop,
payments and notifications services, each with its own PostgreSQL database on the run's
cluster (through the latency proxy) and its own Redis database for Celery, events between them
over a RabbitMQ node of the run's own, and the notifications service's mail sent over SMTP to a
server in this process. Faults added: ``kill-payments`` (its consumer and worker),
``restart-rabbitmq`` (the run's node). Checks added: every order event's email arrived exactly
once, to its customer; the bus's queues are empty at rest, none dead-lettered or unroutable;
every service's outbox (and counting subscribers) at rest; captures counted at their source.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter

from chaos.clock import say
from chaos.run import Run
from harness.services import RabbitMQNode
from harness.smtp import SmtpInbox
from shop.services import SERVICES

ORDER_EVENTS = ("orders.OrderPlaced", "orders.OrderCompleted", "orders.OrderCancelled")
# The bus's namespace on the run's node: its exchanges and queues are "chaos.*".
NAMESPACE = "chaos"


class SplitRun(Run):
    PROCFILE = "Procfile.split"
    PREFIXES = ("", "payments-", "notifications-")  # the shop's processes, then each service's
    ROLES = (
        "web",
        *(f"{prefix}{role}" for prefix in PREFIXES for role in ("worker", "relay", "beat")),
        *(f"{prefix}consumer" for prefix in PREFIXES),
    )
    # rabbitmqctl's queue lengths are a few seconds old: quiet must last longer than that.
    QUIET_SETTLE = 6.0
    OBSERVER_SETTINGS = "chaos.split_settings"

    # --- set-up ---------------------------------------------------------------------------------

    def _databases_create(self) -> None:
        name = f"shop_chaos_split_{os.urandom(3).hex()}"
        self.databases = {
            service: self._database_create(name if service == "shop" else f"{name}_{service}")
            for service in SERVICES
        }
        self.database = self.databases["shop"]
        self.summary["database"] = {s: d.name for s, d in self.databases.items()}

    def _postgres_start(self) -> None:
        # The RabbitMQ node boots (seconds of Erlang) while the PostgreSQL cluster is made.
        self.rabbitmq = RabbitMQNode(log_folder=self.logs_dir)
        self._rabbitmq_failed: list[BaseException] = []

        def boot() -> None:
            try:
                self.rabbitmq.create()
            except BaseException as exc:  # re-raised by _services_start
                self._rabbitmq_failed.append(exc)

        self._rabbitmq_boot = threading.Thread(target=boot, name="rabbitmq", daemon=True)
        self.cleanup.callback(self._rabbitmq_close)
        self._rabbitmq_boot.start()
        super()._postgres_start()

    def _services_start(self) -> None:
        self._rabbitmq_boot.join()
        if self._rabbitmq_failed:
            raise self._rabbitmq_failed[0]
        say(
            f"started a private RabbitMQ node {self.rabbitmq.node} (pid {self.rabbitmq.pid}) on "
            f"port {self.rabbitmq.port} in {self.rabbitmq.folder}"
        )
        self.inbox = SmtpInbox()
        self.inbox.__enter__()
        self.cleanup.callback(self.inbox.__exit__)
        say(f"SMTP server (aiosmtpd) in this process on port {self.inbox.port}")

    def _rabbitmq_close(self) -> None:
        self._rabbitmq_boot.join()  # a node half started is stopped too
        self.rabbitmq.close()
        say("stopped and removed the private RabbitMQ node (its log: logs/rabbitmq-server.*)")

    def _environment(self) -> dict:
        env = super()._environment()
        redis = self.redis.url.removesuffix("/0")
        for name, service in SERVICES.items():
            env[service.database_env] = self.proxied.url(self.databases[name].name)
        env.update(
            {
                "CELERY_BROKER_URL": f"{redis}/0",
                "PAYMENTS_CELERY_BROKER_URL": f"{redis}/1",
                "NOTIFICATIONS_CELERY_BROKER_URL": f"{redis}/2",
                "EVENT_BUS_URL": self.rabbitmq.url,
                "EVENT_BUS_NAMESPACE": NAMESPACE,
                "EMAIL_URL": f"smtp://127.0.0.1:{self.inbox.port}",
            }
        )
        return env

    def _environment_for(self, role: str) -> dict:
        env = dict(self.env)
        if role == "payments-worker":  # the gateway's transient failures, as in the monolith
            env["PAYMENTS_GATEWAY_TIMEOUT_RATE"] = str(self.args.gateway_timeout_rate)
        return env

    def _django_setup(self) -> None:
        """The observer: every app's models, each read from its own service's database."""
        os.environ["CHAOS_SPLIT_DATABASES"] = json.dumps(
            {name: database.url for name, database in self.databases.items()}
        )
        super()._django_setup()

    def _processes_start(self) -> list:
        started = [self.supervisor.start("web")]
        for prefix in self.PREFIXES:
            workers = self.args.workers if prefix == "" else 1
            started += [self.supervisor.start(f"{prefix}worker") for _ in range(workers)]
            started += [self.supervisor.start(f"{prefix}{role}") for role in ("relay", "beat")]
            started.append(self.supervisor.start(f"{prefix}consumer"))
        return started

    # --- quiet and the checks -------------------------------------------------------------------

    def _bus_queues(self) -> dict[str, int] | None:
        return self.rabbitmq.queues()

    def _quiet_more(self) -> dict:
        from outbox.models import Delivery

        more = {
            f"pending deliveries ({name})": Delivery.objects.using(name)
            .filter(status=Delivery.Status.PENDING)
            .count()
            for name in SERVICES
            if name != "shop"
        }
        queues = self._bus_queues()
        if queues is None:
            more["bus: RabbitMQ not answering"] = 1
        else:
            more["bus messages queued"] = sum(
                n for queue, n in queues.items() if not _parked(queue)
            )
        return more

    def _outboxes(self) -> dict[str, str]:
        return {("default" if name == "shop" else name): name for name in SERVICES}

    def _check_counting(self, report, *, at_rest: bool) -> None:
        from chaos.checks import check_counting
        from outbox.registry import subscribers_all

        counted_apps = {
            s.event_type.split(".")[0] for s in subscribers_all() if s.name.startswith("chaos.")
        }
        for name, service in SERVICES.items():
            if counted_apps & set(service.apps):  # notifications publishes no event
                check_counting(
                    report=report,
                    at_rest=at_rest,
                    using="default" if name == "shop" else name,
                    apps=service.apps,
                    name=name,
                )

    def _judge_more(self, report, storm, quiet) -> None:
        self._check_captures_at_source(report)
        self._check_bus(report, at_rest=quiet.reached)
        self._check_emails(report, at_rest=quiet.reached)

    def _check_captures_at_source(self, report) -> None:
        """Charged twice, counted where the money is: the payments service's own event store
        (the shop's rows above count the copies it received)."""
        from outbox.models import Event

        captures = Counter(
            Event.objects.using("payments")
            .filter(type="payments.PaymentCompleted")
            .values_list("payload__order_id", flat=True)
        )
        twice = sorted(order for order, n in captures.items() if n > 1)
        report.row("captures at the source (payments' event store): orders", len(captures))
        report.row("  orders captured twice (payments' event store)", len(twice), not twice)

    def _check_bus(self, report, *, at_rest: bool) -> None:
        """At rest the services' queues are empty and nothing was dead-lettered. The unroutable
        queue keeps the externalised events no service binds (the shop's StockUpdated and
        ShippingScheduled, handled inside it): none of a type a service does bind."""
        queues = self._bus_queues()
        bound = self.rabbitmq.bindings(f"{NAMESPACE}.events")
        if queues is None or bound is None:
            report.row("bus queues (RabbitMQ)", "the node does not answer", False)
            return
        waiting = {q: n for q, n in queues.items() if not _parked(q) and n}
        dead = {q: n for q, n in queues.items() if q.endswith(".dead") and n}
        unroutable = self._unroutable()
        lost = {kind: n for kind, n in unroutable.items() if kind in bound}
        report.row(
            "bus messages left in the services' queues",
            sum(waiting.values()),
            (not waiting) if at_rest else None,
        )
        report.row(
            "bus messages dead-lettered",
            ", ".join(f"{q} x{n}" for q, n in sorted(dead.items())) or 0,
            not dead,
        )
        report.row(
            "bus messages unroutable: of types no service binds / of a bound type",
            (", ".join(f"{k} x{n}" for k, n in sorted(unroutable.items()) if k not in bound) or "0")
            + f" / {sum(lost.values())}",
            not lost,
        )
        self.summary["bus_queues"] = queues

    def _unroutable(self) -> Counter:
        """The event types of the messages the unroutable queue keeps (read, and left there)."""
        from kombu import Connection

        found: Counter = Counter()
        with Connection(self.rabbitmq.url, connect_timeout=5) as conn:
            channel = conn.channel()
            try:
                while True:
                    message = channel.basic_get(f"{NAMESPACE}.unroutable", no_ack=False)
                    if message is None:
                        break
                    headers = message.headers or {}
                    found[str(headers.get("cloudEvents_type", "?"))] += 1
            finally:
                channel.close()  # nothing acknowledged: every message stays
        return found

    def _check_emails(self, report, *, at_rest: bool) -> None:
        """Every order event (placed, completed, cancelled) in the shop's event store: exactly
        one email, with the Message-ID the notifications app gives that event, to the order's
        customer, naming the order; and no other email."""
        from django.contrib.auth import get_user_model

        from notifications.services import message_id_for
        from orders.models import Order
        from outbox.models import Event

        emails = dict(get_user_model().objects.values_list("pk", "email"))
        orders = {o.pk: o for o in Order.objects.only("pk", "reference", "customer_id")}
        expected = {}
        for event_id, order_id in Event.objects.filter(type__in=ORDER_EVENTS).values_list(
            "event_id", "payload__order_id"
        ):
            order = orders.get(order_id)
            if order is not None:
                expected[message_id_for(event_id)] = (emails.get(order.customer_id), order)
        received = self.inbox.received()
        by_id = Counter(str(message["Message-ID"]) for _, message in received)
        twice = sorted(mid for mid, n in by_id.items() if n > 1)
        missing = sorted(set(expected) - set(by_id))
        stray = sorted(set(by_id) - set(expected))
        wrong = sorted(
            str(message["Message-ID"])
            for recipients, message in received
            if str(message["Message-ID"]) in expected
            and (
                list(recipients) != [expected[str(message["Message-ID"])][0]]
                or expected[str(message["Message-ID"])][1].reference not in message["Subject"]
            )
        )
        once = sum(1 for mid in expected if by_id[mid] == 1)
        report.row(
            "emails: order events (placed/completed/cancelled) with exactly one email",
            f"{once} of {len(expected)} ({len(received)} emails received over SMTP)",
            not twice and not stray and not wrong and (not missing if at_rest else None),
        )
        report.row("  order events emailed twice or more", len(twice), not twice)
        report.row("  order events never emailed", len(missing), (not missing) if at_rest else None)
        report.row("  emails of no order event", len(stray), not stray)
        report.row("  emails to another address, or not naming the order", len(wrong), not wrong)
        for label, items in (("twice", twice), ("never", missing), ("stray", stray)):
            if items and (label != "never" or at_rest):
                report.violations.append(f"emails {label}: {', '.join(items[:3])}")
        self.summary["emails"] = {
            "order_events": len(expected),
            "received": len(received),
            "exactly_once": once,
            "twice": len(twice),
            "missing": len(missing),
            "stray": len(stray),
            "wrong": len(wrong),
        }


def _parked(queue: str) -> bool:
    """A queue of messages nobody will consume: dead letters, unroutable messages."""
    return queue.endswith(".dead") or queue.endswith(".unroutable")
