"""The order of things: set up, storm, wait for quiet, check, clean up (the command line:
chaos/cli.py)."""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from chaos.clock import say, since_start
from chaos.faults import (
    DATABASE_KINDS,
    KINDS,
    ONCE,
    ONCE_ON_A_SHARED_SERVER,
    RESTART_WEB,
    SLOW_POSTGRES,
    FaultThread,
    Injector,
    fault_plan,
)
from chaos.load import Customer, Http, Load, catalogue_plan, requests_plan
from harness.latency_proxy import LatencyProxy
from harness.processes import Logs, Supervisor, venv_path
from harness.procfile import Procfile, release_run
from harness.services import (
    Database,
    PostgresCluster,
    PostgresServer,
    RedisServer,
    free_port,
)

REPO = Path(__file__).resolve().parents[2]
ROLES = ("web", "worker", "relay", "beat")
# On an existing server (--postgres-url) the run restarts nothing of it unless asked.
SHARED_SERVER_FAULTS = tuple(
    kind for kind in KINDS if kind == SLOW_POSTGRES or kind not in DATABASE_KINDS
)


class Watch(threading.Thread):
    """Samples, every half second, how many orders ended (for ``--max-in-flight``), and every
    two seconds how many messages wait in the broker's queues."""

    def __init__(self, redis: RedisServer, queues: list[str], stop: threading.Event):
        super().__init__(name="watch", daemon=True)
        self.redis = redis
        self.queues = queues
        self.stop = stop
        self.ended = 0
        self.queued: int | None = None
        self.peak = 0
        self.peak_at = 0.0

    def run(self) -> None:
        from django.db import DatabaseError, connection

        from orders.models import Order

        ticks = 0
        try:
            while not self.stop.wait(0.5):
                try:
                    self.ended = Order.objects.filter(status__in=("completed", "cancelled")).count()
                except DatabaseError:  # PostgreSQL restarting
                    connection.close()
                ticks += 1
                if ticks % 4 == 0:
                    self.queued = self.redis.queued(self.queues)
                    if self.queued is not None and self.queued > self.peak:
                        self.peak, self.peak_at = self.queued, since_start()
        finally:
            connection.close()

    def describe(self) -> str:
        return f"broker messages queued {'?' if self.queued is None else self.queued}"


@dataclass
class Storm:
    """The load, the faults and the watch of one run, once the storm is over."""

    load: Load
    faults: FaultThread
    watch: Watch
    started: float  # time.monotonic() when the load began

    @property
    def acked_ids(self) -> set[int]:
        return {ack.order_id for ack in self.load.acks.values()}

    @property
    def last_fault(self) -> float:
        return self.faults.last_fault_end or self.started


class Run:
    def __init__(self, args, run_id: str, run_dir: Path, seed: int, cleanup, summary: dict):
        self.args = args
        self.run_id = run_id
        self.run_dir = run_dir
        self.rng = random.Random(seed)
        self.cleanup: contextlib.ExitStack = cleanup
        self.summary = summary
        self.logs_dir = run_dir / "logs"
        self.logs_dir.mkdir(exist_ok=True)
        self.started = time.monotonic()

    # --- set-up ---------------------------------------------------------------------------------

    def go(self) -> int:
        if not shutil.which("redis-server"):
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self._postgres_start()
        self._databases_create()
        self._proxy_start()
        self.redis = RedisServer(port=free_port(), log_folder=self.logs_dir)
        self.cleanup.callback(self.redis.stop)
        self.redis.start()
        say(f"started redis-server pid {self.redis.pid} on port {self.redis.port}")
        self._services_start()

        self.web_port = free_port()
        self.env = self._environment()
        self.procfile = Procfile.read(REPO / self.PROCFILE)
        self.procfile.require(*self.ROLES)
        release_run(self.procfile, env=self.env, cwd=REPO, log=self.logs_dir / "migrate.log")
        say("migrated")
        self._django_setup()
        staff_token, customers = self._users_create()

        logs = Logs(self.logs_dir)
        self.cleanup.callback(logs.close)
        self.supervisor = Supervisor(
            procfile=self.procfile,
            env=self.env,
            env_for=self._environment_for,
            cwd=REPO,
            logs=logs,
            say=say,
        )
        self.cleanup.callback(self.supervisor.shutdown)
        started = self._processes_start()
        self.supervisor.watch()
        say("started " + ", ".join(map(repr, started)) + f"; web on port {self.web_port}")

        self.http = Http(self.web_port)
        self.supervisor.wait_ready(self.supervisor.one("web"))
        initial_stock = self._catalogue_create(staff_token)
        return self._storm_and_check(customers, initial_stock)

    # Overridden by the split mode (chaos.split): the Procfile, its roles, the services.
    PROCFILE = "Procfile"
    ROLES = ROLES
    rabbitmq = None  # the split mode's RabbitMQ node
    OBSERVER_SETTINGS = "shop.settings"  # the driver's, to read the run's database(s)
    # How long quiet must last: 0 here, where every count is read from the database itself.
    QUIET_SETTLE = 0.0

    def _quiet_more(self) -> dict:
        """What else quiet waits for, beyond the database's orders and deliveries."""
        return {}

    def _postgres_start(self) -> None:
        self.cluster: PostgresCluster | None = None
        if self.args.postgres_url:
            self.postgres = PostgresServer.from_url(self.args.postgres_url)
            self.postgres.wait_ready(10)
        else:
            self.cluster = PostgresCluster(log_folder=self.logs_dir)
            self.cleanup.callback(self._cluster_close)
            self.cluster.create()
            self.postgres = self.cluster.server
            say(
                f"started a private PostgreSQL cluster ({self.cluster.bindir}) in "
                f"{self.cluster.folder} on port {self.cluster.port}"
            )

    def _database_create(self, name: str) -> Database:
        """A database of the run's own on the server, dropped at the end (unless --keep)."""
        database = Database(self.postgres, name)
        if self.args.keep:
            self.cleanup.callback(say, f"database {database.name} is kept (--keep)")
        else:
            self.cleanup.callback(self._database_drop, database)
        database.create()
        say(f"created database {database.name} on {self.postgres.host}:{self.postgres.port}")
        return database

    def _databases_create(self) -> None:
        self.database = self._database_create(f"shop_chaos_{secrets.token_hex(4)}")
        self.summary["database"] = self.database.name

    def _proxy_start(self) -> None:
        """Every process reaches PostgreSQL through the latency proxy (slow-postgres); this
        process, the observer, reads the databases directly."""
        self.proxy = LatencyProxy(
            upstream_host=self.postgres.host, upstream_port=self.postgres.port
        )
        self.proxy.start()
        self.cleanup.callback(self.proxy.stop)
        self.proxied = PostgresServer(
            host="127.0.0.1",
            port=self.proxy.port,
            user=self.postgres.user,
            password=self.postgres.password,
        )
        self.processes_database_url = self.proxied.url(self.database.name)
        say(f"latency proxy on port {self.proxy.port} for every process")

    def _services_start(self) -> None:
        """More services the processes need (the split mode's RabbitMQ node and mail server)."""

    def _processes_start(self) -> list:
        """Every process of the run, once (the web first)."""
        started = [self.supervisor.start("web")]
        started += [self.supervisor.start("worker") for _ in range(self.args.workers)]
        started += [self.supervisor.start("relay"), self.supervisor.start("beat")]
        return started

    def _environment(self) -> dict:
        env = dict(os.environ)
        # The suite's own settings (pytest-env) are not the processes' business.
        for name in ("SHOP_TEST_APPS", "DJANGO_SETTINGS_MODULE", "PROMETHEUS_MULTIPROC_DIR"):
            env.pop(name, None)
        var = self.run_dir / "var"
        env.update(
            {
                "PATH": venv_path(env),
                # The counting subscribers (chaos/countingapp): importable, and installed.
                "PYTHONPATH": os.pathsep.join(
                    p for p in (str(REPO / "scripts"), env.get("PYTHONPATH")) if p
                ),
                "SHOP_CHAOS_APPS": "1",
                "PYTHONUNBUFFERED": "1",
                "DJANGO_SETTINGS_MODULE": "shop.settings",
                "DATABASE_URL": self.processes_database_url,
                "CELERY_BROKER_URL": self.redis.url,
                "SHOP_VAR_DIR": str(var),
                "PROMETHEUS_MULTIPROC_DIR": str(var / "prometheus"),
                "DJANGO_DEBUG": "1",
                "LOG_FORMAT": env.get("LOG_FORMAT") or "console",
                "PORT": str(self.web_port),
                "WEB_CONCURRENCY": str(self.args.web_concurrency),
                "WORKER_CONCURRENCY": str(self.args.worker_concurrency),
                "OUTBOX_LEASE_SECONDS": str(self.args.lease_seconds),
                "OUTBOX_BACKOFF_BASE_SECONDS": "0.2",
                "OUTBOX_BACKOFF_CAP_SECONDS": "2",
                "OUTBOX_MAX_ATTEMPTS": "30",
                "PAYMENTS_GATEWAY_TIMEOUT_RATE": "0",
                # The load is a few customers placing thousands of orders: not an attack.
                "THROTTLE_RATE_LOGIN": "off",
                "THROTTLE_RATE_ORDERS": "off",
            }
        )
        return env

    def _environment_for(self, role: str) -> dict:
        env = dict(self.env)
        if role == "worker":
            env["PAYMENTS_GATEWAY_TIMEOUT_RATE"] = str(self.args.gateway_timeout_rate)
        return env

    def _django_setup(self) -> None:
        """This process reads the run's database through the ORM, as the processes see it."""
        for name in ("SHOP_TEST_APPS", "DJANGO_SETTINGS_MODULE"):
            os.environ.pop(name, None)
        os.environ.update({k: v for k, v in self.env.items() if k != "PATH"})
        os.environ["DATABASE_URL"] = self.database.url  # not through the proxy
        os.environ["DJANGO_SETTINGS_MODULE"] = self.OBSERVER_SETTINGS
        os.environ["DATABASE_CONN_MAX_AGE"] = "0"
        import django

        django.setup()

    def _database_drop(self, database: Database) -> None:
        from django.conf import settings
        from django.db import connections

        if settings.configured:
            connections.close_all()
        database.drop()
        say(f"dropped database {database.name}")

    def _cluster_close(self) -> None:
        self.cluster.close()
        say("stopped and removed the private PostgreSQL cluster (its log: logs/postgres.log)")

    def _users_create(self) -> tuple[str, list[Customer]]:
        """A staff user and customers with API tokens, written directly (no password hashing)."""
        from django.contrib.auth import get_user_model
        from django.contrib.auth.hashers import make_password
        from django.contrib.auth.models import Group
        from knox.models import AuthToken

        User = get_user_model()
        unusable = make_password(None)
        staff = User.objects.create(username="chaos-staff", password=unusable, is_staff=True)
        staff.groups.add(Group.objects.get(name="catalogue manager"))  # writes the catalogue
        # Each with an address: the notifications app writes to it (checked in --split).
        users = User.objects.bulk_create(
            User(
                username=f"chaos-customer-{n}",
                email=f"chaos-customer-{n}@example.com",
                password=unusable,
            )
            for n in range(max(5, min(50, self.args.orders // 20)))
        )
        tokens = [AuthToken.objects.create(user=user)[1] for user in [staff, *users]]
        customers = [
            Customer(user_id=user.pk, username=user.username, token=token)
            for user, token in zip(users, tokens[1:], strict=True)
        ]
        say(f"created a staff user and {len(customers)} customers with API tokens")
        return tokens[0], customers

    def _catalogue_create(self, staff_token: str) -> dict[str, int]:
        from orders.models import CatalogItem

        plan = catalogue_plan(self.args.orders)
        for sku, (price, stock) in plan.items():
            body = {"sku": sku, "name": sku.title(), "price": price, "stock": stock}
            status, answer = self.http.request(
                "POST", "/api/products/", token=staff_token, body=body
            )
            if status != 201:
                raise RuntimeError(f"POST /api/products/ {sku}: {status} {answer}")
        deadline = time.monotonic() + 120
        while CatalogItem.objects.filter(sku__in=plan).count() < len(plan):
            if time.monotonic() > deadline:
                raise RuntimeError("orders' catalogue did not hear of the products in 120s")
            time.sleep(0.3)
        say("catalogue: " + ", ".join(f"{sku} ({stock} units)" for sku, (_, stock) in plan.items()))
        return {sku: stock for sku, (_, stock) in plan.items()}

    # --- the storm ------------------------------------------------------------------------------

    def _storm_and_check(self, customers: list[Customer], initial_stock: dict[str, int]) -> int:
        from chaos.checks import wait_quiet  # the checks read the database through Django

        storm = self._storm(customers, initial_stock)
        say(f"waiting for quiet (at most {self.args.quiet_timeout:.0f}s)")
        quiet = wait_quiet(
            storm.acked_ids,
            timeout=self.args.quiet_timeout,
            describe=storm.watch.describe,
            state=self._quiet_more,
            settle=self.QUIET_SETTLE,
        )
        report = self._judge(storm, quiet, initial_stock)
        self._print(report)
        self._summarise(storm, quiet, report)
        return 1 if report.violations else 0

    def _storm(self, customers: list[Customer], initial_stock: dict[str, int]) -> Storm:
        """The load and the faults at once, until the load is done and the last fault too."""
        args = self.args
        plan = requests_plan(
            count=args.orders,
            customers=customers,
            skus=sorted(initial_stock),
            decline_share=args.decline_share,
            cancel_share=args.cancel_share,
            cancel_within=args.cancel_within,
            rng=self.rng,
            run_id=self.run_id,
        )
        stop = threading.Event()
        self.cleanup.callback(stop.set)
        watch = Watch(self.redis, self._queues(), stop)
        watch.start()
        load = Load(
            http=self.http,
            plan=plan,
            seconds=args.load_seconds,
            threads=args.clients,
            stop=stop,
            max_in_flight=args.max_in_flight,
            ended=lambda: watch.ended,
        )
        faults = FaultThread(
            plan=fault_plan(
                kinds=args.faults,
                window=args.load_seconds,
                every=args.fault_every,
                rng=self.rng,
                once=ONCE if self.cluster else ONCE_ON_A_SHARED_SERVER,
            ),
            injector=Injector(
                supervisor=self.supervisor,
                redis=self.redis,
                postgres=self.postgres,
                postgres_restart_command=args.postgres_restart_command,
                rng=self.rng,
                cluster=self.cluster,
                proxy=self.proxy,
                rabbitmq=self.rabbitmq,
            ),
            progress=load.progress,
            stop=stop,
        )
        limit = f"at most {args.max_in_flight} in flight" if args.max_in_flight else "open loop"
        say(
            f"load: {args.orders} orders over {args.load_seconds:.0f}s or more ({limit}) from "
            f"{args.clients} clients; {len(faults.plan)} faults planned, at shares of the load: "
            + ", ".join(f"{f.kind}@{f.at:.0%}" for f in faults.plan)
        )
        storm = Storm(load=load, faults=faults, watch=watch, started=time.monotonic())
        faults.start()
        load.run()
        say(
            f"load done: {len(load.acks)} acknowledged, {len(load.stats.rejected)} rejected, "
            f"{len(load.stats.gave_up)} given up; {len(load.cancels)} cancels sent"
        )
        faults.join()
        return storm

    def _queues(self) -> list[str]:
        """The broker queues to watch: those the Procfile's workers name, and every
        subscriber's (where a worker takes its queues from the registry instead)."""
        from outbox.queues import RELAY_QUEUE
        from outbox.registry import subscribers_all

        named = self.procfile.queues
        derived = {RELAY_QUEUE} | {s.queue for s in subscribers_all()}
        return named + sorted(derived - set(named))

    def _judge(self, storm: Storm, quiet, initial_stock: dict[str, int]):
        """Every check, as the summary's rows in order."""
        from chaos.checks import Report, check, check_api

        load, watch = storm.load, storm.watch
        report = Report()
        report.row("quiet reached", "yes" if quiet.reached else f"NO: {quiet.state}", quiet.reached)
        report.row("time from the last fault to quiet", f"{quiet.at - storm.last_fault:.1f} s")
        report.row(
            "time from the end of the load to quiet",
            f"{quiet.at - (load.stats.finished_at or quiet.at):.1f} s",
        )
        acks = list(load.acks.values())
        check(
            report=report,
            acks=acks,
            initial_stock=initial_stock,
            at_rest=quiet.reached,
            cancels=list(load.cancels.values()),
            outboxes=self._outboxes(),
        )
        self._check_counting(report, at_rest=quiet.reached)
        check_api(
            report=report, acks=acks, http=self.http, sample_size=self.args.api_sample, rng=self.rng
        )
        self._judge_more(report, storm, quiet)
        report.row(
            "broker messages queued: peak / at the end",
            f"{watch.peak} (at {watch.peak_at:.0f}s) / {self.redis.queued(watch.queues)}",
        )
        seconds = (load.stats.finished_at or quiet.at) - storm.started
        report.row(
            "load: seconds / orders per second / clients held by --max-in-flight",
            f"{seconds:.0f} / {len(load.acks) / max(seconds, 0.001):.1f} / "
            f"{load.stats.held_seconds:.0f} client-seconds",
        )
        self._load_rows(report, load, storm.faults)
        self._fault_rows(report, storm.faults)
        exits = self.supervisor.unexpected_exits
        report.row(
            "processes that exited by themselves (replaced by the supervisor)",
            f"{len(exits)}"
            + (": " + ", ".join(sorted({note.split(" ")[0] for note in exits})) if exits else ""),
        )
        for note in exits:
            report.notes.append(note)
        return report

    def _outboxes(self) -> dict[str, str] | None:
        """The databases whose outbox the checks read ({alias: name}; None: the one)."""
        return None

    def _check_counting(self, report, *, at_rest: bool) -> None:
        from chaos.checks import check_counting

        check_counting(report=report, at_rest=at_rest)

    def _judge_more(self, report, storm: Storm, quiet) -> None:
        """The split mode's own checks (its mail, its bus)."""

    def _summarise(self, storm: Storm, quiet, report) -> None:
        """summary.json's content (written by main, whatever happens)."""
        from chaos.checks import hung_during

        faults = storm.faults
        self.summary.update(
            {
                "orders": self.args.orders,
                "acknowledged": len(storm.load.acks),
                "cancels_sent": len(storm.load.cancels),
                "cancels_by_answer": dict(
                    Counter(str(c.status) for c in storm.load.cancels.values())
                ),
                "faults": [fault.as_dict() for fault in faults.plan],
                "faults_injected": sorted({f.kind for f in faults.plan if f.ended and not f.error}),
                "postgres": "private cluster" if self.cluster else self.args.postgres_url,
                "http_statuses": dict(sorted(storm.load.stats.statuses.items())),
                "answers_503": storm.load.stats.statuses[503],
                "requests_timed_out": len(storm.load.stats.timeouts),
                "requests_timed_out_during_database_faults": len(
                    hung_during(
                        storm.load.stats.timeouts,
                        self._windows(faults, DATABASE_KINDS),
                        self.http.timeout,
                        self._windows(faults, {RESTART_WEB}),
                    )
                ),
                "quiet": quiet.reached,
                "seconds_last_fault_to_quiet": round(quiet.at - storm.last_fault, 1),
                "seconds_total": round(time.monotonic() - self.started, 1),
                "rows": [[label, str(value), ok] for label, value, ok in report.rows],
                "violations": report.violations,
                "notes": report.notes,
                "unexpected_exits": self.supervisor.unexpected_exits,
            }
        )

    @staticmethod
    def _windows(faults: FaultThread, kinds) -> list[tuple[float, float]]:
        """(start, end) of every fault of these kinds that was carried out."""
        return [(f.started, f.ended) for f in faults.plan if f.kind in kinds and f.ended]

    def _load_rows(self, report, load: Load, faults: FaultThread) -> None:
        from chaos.checks import check_http

        stats = load.stats
        report.row("HTTP requests sent", stats.requests)
        report.row(
            "  answered only after a retry (same Idempotency-Key)", stats.acknowledged_after_retry
        )
        check_http(
            report=report,
            stats=stats,
            timeout=self.http.timeout,
            database_faults=self._windows(faults, DATABASE_KINDS),
            web_restarts=self._windows(faults, {RESTART_WEB}),
        )
        report.row(
            "  connection errors (refused, reset) / 5xx answers",
            f"{stats.connection_errors} / {stats.server_errors}",
        )
        report.row("requests rejected (4xx)", len(stats.rejected), not stats.rejected)
        for line in stats.rejected[:5]:
            report.violations.append(f"rejected: {line[:200]}")
        report.row("requests never acknowledged (given up)", len(stats.gave_up), not stats.gave_up)

    def _fault_rows(self, report, faults: FaultThread) -> None:
        done = Counter(f.kind for f in faults.plan if f.ended and not f.error)
        report.row(
            "faults injected",
            f"{sum(done.values())}: " + ", ".join(f"{k} x{n}" for k, n in sorted(done.items())),
        )
        database = [f for f in faults.plan if f.kind in DATABASE_KINDS and f.ended and not f.error]
        report.row(
            "database faults",
            "; ".join(
                f"{f.kind} at {since_start(f.started):.0f}s for {f.ended - f.started:.1f}s"
                for f in database
            )
            or "none",
        )
        for kind in self.args.faults:
            report.must(done[kind] > 0, f"fault {kind} was never injected")
        for fault in faults.plan:
            if fault.error:
                report.violations.append(f"fault {fault.kind} failed: {fault.error}")

    def _print(self, report) -> None:
        width = max(len(label) for label, _, _ in report.rows) + 2
        lines = ["", f"==== chaos summary: run {self.run_id}, seed {self.summary['seed']} ===="]
        for label, value, ok in report.rows:
            mark = "" if ok is None else ("  ok" if ok else "  VIOLATION")
            lines.append(f"{label:<{width}} {value}{mark}")
        for note in report.notes:
            lines.append(f"note: {note}")
        if report.violations:
            lines.append(f"VIOLATIONS ({len(report.violations)}):")
            lines += [f"  - {violation}" for violation in report.violations]
        else:
            lines.append("no violations")
        print("\n".join(lines) + "\n", file=sys.stdout, flush=True)
