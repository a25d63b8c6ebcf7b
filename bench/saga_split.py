"""Scenario ``saga_split``: the saga on the split deployment, measured as the monolith's.

Every process of ``Procfile.split`` but the web (orders are placed through the service layer, as
the monolith's ``saga`` scenario places its burst and its paced run): the shop, payments and
notifications services, each with its own PostgreSQL database, its own Celery broker, its relay,
worker, beat and bus consumer, and events between them over the bus (RabbitMQ, then NATS
JetStream), through the shared process harness (harness/):

- **shop**: the bench's database and Redis (as the monolith), ``SHOP_SERVICE=shop``;
- **payments**: a database ``<bench database>_payments``; its broker the bench's second Redis
  database (``BENCH_BUS_CONSUMER_REDIS_URL``, default the next number, as ``bus_latency``'s
  service B: it must be empty and is flushed afterwards);
- **notifications**: a database ``<bench database>_notifications``; its broker a redis-server of
  the run's own on a free port (a third database number of the shared server is not the
  bench's to take), stopped afterwards. It sends mail as the monolith's does (``EMAIL_URL``).

The release step is ``Procfile.split``'s own (every database migrated, every queue declared).
The bench's app (its warm-up events and per-process counters) is installed in the shop
service's web, worker, relay and beat only: a service that installed it would take its events
from the bus, where nobody sends them, and its consumer would refuse to start. So statements and
Celery messages per order are counted in the shop service's processes alone (the JSON's
details); CPU per order is measured for every process of every service and for the PostgreSQL
backends of all three databases, and commits per order are the three databases' together. The
brokers' own CPU (Redis, RabbitMQ, NATS: shared with other users of this machine) is in neither
shape's figures.

Per broker, a fresh set of service databases and a namespace of its own on the bus (deleted
afterwards); warmed up by a few orders through the whole chain; then the burst and the paced run
of the monolith's scenario (bench/saga.py), with its figures, prefixed by the broker.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from pathlib import Path
from urllib.parse import urlparse

from bench import bus_scenarios
from bench.bus_latency import consumer_redis_url, topology_delete
from bench.measure import BENCH_APPLICATION, BenchError, wait_for
from bench.report import SPLIT_KEYS
from bench.saga import SAGA_SKUS, saga_measure, saga_service_runs, saga_setup
from bench.system import Bench, ServiceSide, redis_client
from harness.processes import Logs, Supervisor
from harness.procfile import Procfile, release_run
from harness.services import Database, PostgresServer, RedisServer, free_port
from shop.services import SERVICES

ROOT = Path(__file__).resolve().parent.parent
SPLIT_PROCFILE = ROOT / "Procfile.split"
# The process types started: every one of Procfile.split but the web.
NOT_STARTED = ("web",)
_SERVICE_OF = re.compile(r"^SHOP_SERVICE=(\S+)\s")
# Where the figures of one order are: the orders it placed and their events, in every service.
ORDER_EVENT_TYPES = ("orders.OrderPlaced", "orders.OrderCompleted", "orders.OrderCancelled")


def service_of(procfile: Procfile, name: str) -> str:
    """The service a process type of Procfile.split belongs to (its ``SHOP_SERVICE=``)."""
    match = _SERVICE_OF.match(procfile[name].command)
    if match is None:
        raise BenchError(f"{procfile.path.name}: {name} names no SHOP_SERVICE")
    return match[1]


class SplitSide(ServiceSide):
    """The split deployment as the saga's measurement sees it: every service's processes, and
    every service's database for the PostgreSQL counters and for settling."""

    def __init__(self, bench: Bench, env: dict, supervisors: list[Supervisor], urls: dict):
        super().__init__(bench, env, supervisors)
        self.urls = urls  # {service: database URL}
        self.databases = [urlparse(url).path[1:] for url in urls.values()]
        self._connections: dict = {}

    COUNTS = (
        "SELECT (SELECT count(*) FROM outbox_delivery WHERE status = 'pending'), "
        "(SELECT count(*) FROM outbox_delivery WHERE status = 'dead'), "
        "(SELECT count(*) FROM outbox_event WHERE type = 'orders.OrderPlaced'), "
        "(SELECT count(*) FROM outbox_event WHERE type = ANY(%s))"
    )

    def counts(self) -> dict:
        """What is in flight or done, per service: pending deliveries, dead letters, the order
        events each holds. Through one connection per database, kept open and named as the
        bench's own (PgBackendCpu leaves it out)."""
        out = {}
        for service, url in self.urls.items():
            conn = self._connections.get(service)
            if conn is None:
                conn = PostgresServer.from_url(url).connect(urlparse(url).path[1:])
                conn.autocommit = True
                conn.execute(f"SET application_name = '{BENCH_APPLICATION}'")
                self._connections[service] = conn
            pending, dead, placed, order_events = conn.execute(
                self.COUNTS, [list(ORDER_EVENT_TYPES)]
            ).fetchone()
            out[service] = {
                "pending": pending,
                "dead": dead,
                "placed": placed,
                "order_events": order_events,
            }
        return out

    def close(self) -> None:
        for conn in self._connections.values():
            with contextlib.suppress(Exception):
                conn.close()
        self._connections.clear()

    def settled(self) -> bool:
        """Nothing pending anywhere, and every order event the shop published stored by the
        services that take it (payments every OrderPlaced, notifications every order event):
        nothing left in the bus either."""
        counts = self.counts()
        shop = counts["shop"]
        return (
            all(c["pending"] == 0 for c in counts.values())
            and counts["payments"]["placed"] == shop["placed"]
            and counts["notifications"]["order_events"] == shop["order_events"]
        )

    def settle(self, timeout: float) -> None:
        wait_for(
            self.settled,
            timeout=timeout,
            what="every service settled",
            interval=0.5,
            alive=self.check_alive,
        )


def _supervisors(
    bench: Bench, procfile: Procfile, env: dict, log_dir: Path, brokers: dict
) -> dict[str, Supervisor]:
    """One supervisor per service: a Celery worker is ready when it answers a control ping,
    which goes through its own service's broker."""
    from celery import Celery

    from shop.celery import app as shop_app

    def env_for(name: str) -> dict:
        service = service_of(procfile, name)
        # The bench's app in the shop's processes only, never in a bus consumer (module doc).
        bench_app = service == "shop" and name != "consumer"
        return {
            "WORKER_CONCURRENCY": str(bench.concurrency),
            "BENCH_PROCESS": name,
            "SHOP_BENCH_APPS": "1" if bench_app else "0",
            "BENCH_COUNT": "1" if bench_app else "0",
            "PROMETHEUS_MULTIPROC_DIR": str(bench.run_dir / f"prometheus-{service}"),
            **({"DJANGO_SETTINGS_MODULE": bench.settings_module} if bench.settings_module else {}),
        }

    supervisors = {}
    for service, broker in brokers.items():
        if service == "shop":
            app = shop_app  # this process's broker is the bench's: the shop's
        else:
            # Celery prefers the CELERY_BROKER_URL environment variable (the shop's broker, in
            # this process) to broker_url; the read and write URLs win over both.
            app = Celery(f"bench-split-{service}")
            app.conf.broker_read_url = app.conf.broker_write_url = broker
        supervisors[service] = Supervisor(
            procfile=procfile,
            env=env,
            env_for=env_for,
            cwd=ROOT,
            logs=Logs(log_dir / service, combined=False),
            stop_grace=20.0,
            die_with_parent=True,
            celery_app=app,
        )
    return supervisors


def _by_service(figures: dict, procfile: Procfile) -> dict:
    """The saga's figures with CPU per order summed by service (``cpu_payments_ms``: its relay,
    worker, beat and consumer) beside each process type's; statements and messages, counted in
    the shop service alone, renamed to say so (``sql_per_order`` -> ``shop_sql_per_order``)."""
    out = {}
    for key, value in figures.items():
        for counted in ("sql_per_order", "messages_per_order"):
            if key.endswith(f"_{counted}"):
                key = key.replace(counted, f"shop_{counted}")
        out[key] = value
    for prefix in ("service", "paced"):
        for name in procfile.processes:
            value = figures.get(f"{prefix}_cpu_{name}_ms")
            if value is not None:
                key = f"{prefix}_cpu_{service_of(procfile, name)}_ms"
                out[key] = out.get(key, 0.0) + value
    return out


def _one_broker(bench: Bench, run: int, broker: str, url: str) -> dict:
    s = bench.sizes
    namespace = f"bench-split-{secrets.token_hex(3)}"
    server = PostgresServer.from_url(bench.env["DATABASE_URL"])
    shop_db = urlparse(bench.env["DATABASE_URL"]).path[1:]
    databases = {name: Database(server, f"{shop_db}_{name}") for name in SERVICES if name != "shop"}
    log_dir = bench.run_dir / "logs" / f"split-{broker}-{run}"
    log_dir.mkdir(parents=True, exist_ok=True)
    payments_broker = consumer_redis_url(bench.env["CELERY_BROKER_URL"])
    payments_client = redis_client(payments_broker)
    if payments_client.dbsize():
        raise BenchError(
            f"the payments service's broker {payments_broker} is not empty; "
            "set BENCH_BUS_CONSUMER_REDIS_URL"
        )
    notifications_redis = RedisServer(port=free_port(), log_folder=log_dir)
    brokers = {
        "shop": bench.env["CELERY_BROKER_URL"],
        "payments": payments_broker,
        "notifications": notifications_redis.url,
    }
    urls = {
        "shop": bench.env["DATABASE_URL"],
        **{name: database.url for name, database in databases.items()},
    }
    env = {
        **bench.env,
        "SHOP_BENCH_APPS": "0",
        "PAYMENTS_DATABASE_URL": urls["payments"],
        "NOTIFICATIONS_DATABASE_URL": urls["notifications"],
        "PAYMENTS_CELERY_BROKER_URL": brokers["payments"],
        "NOTIFICATIONS_CELERY_BROKER_URL": brokers["notifications"],
        "EVENT_BUS_URL": url,
        "EVENT_BUS_NAMESPACE": namespace,
    }
    procfile = Procfile.read(SPLIT_PROCFILE)
    supervisors: dict[str, Supervisor] = {}
    side = None
    try:
        notifications_redis.start()
        for database in databases.values():
            database.create()
        release_run(procfile, env=env, cwd=ROOT, log=log_dir / "release.log")
        supervisors = _supervisors(bench, procfile, env, log_dir, brokers)
        # The producers place orders in the shop service's shape, with the bench's app.
        side = SplitSide(
            bench,
            {**env, "SHOP_SERVICE": "shop", "SHOP_BENCH_APPS": "1"},
            list(supervisors.values()),
            urls,
        )
        started = []
        for name in procfile.processes:
            if name not in NOT_STARTED:
                supervisor = supervisors[service_of(procfile, name)]
                started.append((supervisor, supervisor.start(name)))
        for supervisor, process in started:
            supervisor.wait_ready(process)
        customer_id, _token = saga_setup(side, run)
        common = {"customer_id": customer_id, "skus": SAGA_SKUS, "count_sql": True}
        # Warm-up: a few orders through every process of every service (connections, caches,
        # the bus's channels and consumers).
        saga_measure(
            side,
            "order_service",
            total=max(4, s.warmup // 10),
            n=1,
            tag=f"warm-{broker}-{run}",
            timeout=300,
            **common,
        )
        figures, details = {}, {}
        saga_service_runs(side, run, common, figures, details)
        figures = _by_service(figures, procfile)
        counts = side.counts()
        details["services"] = counts
        details["processes"] = {
            service: [p.type for p in supervisor.running()]
            for service, supervisor in supervisors.items()
        }
        details["namespace"] = namespace
        details["brokers"] = brokers
        ok = (
            all(c["dead"] == 0 for c in counts.values())
            and all(
                set(v["statuses"]) == {"completed"}
                for v in details.values()
                if isinstance(v, dict) and "statuses" in v
            )
            and counts["payments"]["placed"] == counts["shop"]["placed"]
            and counts["notifications"]["order_events"] == counts["shop"]["order_events"]
        )
        return {"figures": figures, "details": details, "checks_ok": ok}
    finally:
        if side is not None:
            side.close()
        for supervisor in supervisors.values():
            with contextlib.suppress(Exception):
                supervisor.shutdown()
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        for database in databases.values():
            with contextlib.suppress(Exception):
                database.drop()
        payments_client.flushdb()
        notifications_redis.stop()
        with contextlib.suppress(Exception):
            topology_delete(url, namespace, list(SERVICES))


def split_saga_brokers() -> list[str]:
    """The brokers the scenario runs over: ``BENCH_SPLIT_BROKERS`` (``rabbitmq,nats`` unset)."""
    wanted = [b.strip() for b in os.environ.get("BENCH_SPLIT_BROKERS", "").split(",") if b.strip()]
    unknown = set(wanted) - set(bus_scenarios.BROKERS)
    if unknown:
        raise BenchError(
            f"BENCH_SPLIT_BROKERS: no broker {', '.join(sorted(unknown))}; "
            f"use some of {', '.join(bus_scenarios.BROKERS)}"
        )
    return wanted or list(bus_scenarios.BROKERS)


def split_saga(bench: Bench, run: int) -> dict:
    """Scenario ``saga_split``: the saga's burst and paced run on the split deployment, over
    each broker. A broker that is not reachable is an error of its own; the other is still
    measured."""
    figures, details, errors = {}, {}, {}
    ok = True
    for broker in split_saga_brokers():
        url = os.environ.get(f"BENCH_{broker.upper()}_URL", bus_scenarios.BROKERS[broker])
        bench.reset()
        if not bus_scenarios.broker_reachable(url):
            errors[broker] = f"{url} not reachable"
            figures.update({f"{broker}_{key}": None for key in SPLIT_KEYS})
            ok = False
            continue
        began = time.monotonic()
        outcome = _one_broker(bench, run, broker, url)
        figures.update({f"{broker}_{k}": v for k, v in outcome["figures"].items()})
        details[broker] = {**outcome["details"], "seconds": round(time.monotonic() - began, 1)}
        ok = ok and outcome["checks_ok"]
    if errors:
        details["errors"] = errors
    return {"figures": figures, "details": details, "checks_ok": ok}
