"""The command line and the order of things: set up, storm, wait for quiet, check, clean up."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from chaos.clock import say, since_start
from chaos.faults import KINDS, RESTART_POSTGRES, FaultThread, Injector, fault_plan
from chaos.load import Customer, Http, Load, catalogue_plan, requests_plan
from chaos.procs import Logs, Supervisor, procfile_queues, procfile_read
from chaos.services import (
    DEFAULT_POSTGRES_RESTART,
    DEFAULT_POSTGRES_URL,
    Database,
    PostgresServer,
    RedisServer,
    free_port,
)

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
ROLES = ("web", "worker", "relay", "beat")
DEFAULT_FAULTS = tuple(kind for kind in KINDS if kind != RESTART_POSTGRES)


class RunTimeout(Exception):
    """The overall --timeout ran out."""


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/chaos.py",
        description="Fault injection against the Procfile's processes on PostgreSQL + Redis "
        "(docs/chaos.md). Exits 1 on any violation.",
    )
    parser.add_argument("--orders", type=int, default=3000, help="orders to place (3000)")
    parser.add_argument(
        "--load-seconds",
        type=float,
        help="spread the orders over at least this long (longer when --max-in-flight holds "
        "the clients); faults happen while the load runs (default: max(45, orders / 8))",
    )
    parser.add_argument("--clients", type=int, default=8, help="client threads (8)")
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=100,
        help="clients wait while this many acknowledged orders have not ended: the load follows "
        "what the system can do (100; 0: open loop, the pace alone)",
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    parser.add_argument(
        "--worker-concurrency", type=int, default=2, help="pool processes per worker (2)"
    )
    parser.add_argument(
        "--web-concurrency", type=int, default=2, help="gunicorn worker processes (2)"
    )
    parser.add_argument(
        "--decline-share", type=float, default=0.15, help="share of tok_chargeDeclined (0.15)"
    )
    parser.add_argument(
        "--gateway-timeout-rate",
        type=float,
        default=0.1,
        help="PAYMENTS_GATEWAY_TIMEOUT_RATE of the workers (0.1)",
    )
    parser.add_argument(
        "--faults",
        default=",".join(DEFAULT_FAULTS),
        help=f"fault kinds, comma-separated, each happens at least once (default: all of "
        f"{', '.join(DEFAULT_FAULTS)})",
    )
    parser.add_argument(
        "--fault-every",
        type=float,
        default=10.0,
        help="one fault per this many seconds of load, on average, once each kind had its "
        "turn (10)",
    )
    parser.add_argument(
        "--restart-postgres",
        action="store_true",
        help="also restart PostgreSQL once: THE MACHINE'S SERVER, everyone's connections",
    )
    parser.add_argument(
        "--postgres-restart-command",
        default=DEFAULT_POSTGRES_RESTART,
        help=f"shell line for --restart-postgres ({DEFAULT_POSTGRES_RESTART})",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("CHAOS_POSTGRES_URL") or _postgres_from_env(),
        help="the server to create the run's database on (CHAOS_POSTGRES_URL, else "
        f"DATABASE_URL when it is PostgreSQL, else {DEFAULT_POSTGRES_URL})",
    )
    parser.add_argument("--lease-seconds", type=float, default=3.0, help="OUTBOX_LEASE_SECONDS")
    parser.add_argument(
        "--quiet-timeout", type=float, default=600.0, help="longest wait for quiet (600 s)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        help="the whole run at most, set-up and clean-up included "
        "(default: 2 x load seconds + quiet timeout + 600)",
    )
    parser.add_argument("--api-sample", type=int, default=100, help="orders read back via API")
    parser.add_argument("--seed", type=int, help="random seed (printed; repeat a run's plan)")
    parser.add_argument(
        "--run-dir", type=Path, help="logs and summary.json (default var/chaos/<run id>)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args(argv)
    args.faults = [kind.strip() for kind in args.faults.split(",") if kind.strip()]
    unknown = set(args.faults) - set(KINDS)
    if unknown:
        parser.error(f"unknown fault kinds: {', '.join(sorted(unknown))}")
    if args.restart_postgres and RESTART_POSTGRES not in args.faults:
        args.faults.append(RESTART_POSTGRES)
    if args.orders < 1 or args.clients < 1 or args.workers < 1:
        parser.error("--orders, --clients and --workers must be at least 1")
    if args.load_seconds is None:
        args.load_seconds = max(45.0, args.orders / 8)
    if args.timeout is None:
        args.timeout = 2 * args.load_seconds + args.quiet_timeout + 600
    return args


def _postgres_from_env() -> str:
    url = os.environ.get("DATABASE_URL", "")
    return url if url.startswith(("postgres://", "postgresql://")) else DEFAULT_POSTGRES_URL


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    run_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
    var = Path(os.environ.get("SHOP_VAR_DIR") or REPO / "var")
    run_dir = (args.run_dir or var / "chaos" / run_id).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    seed = args.seed if args.seed is not None else random.randrange(2**31)

    def interrupted(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    def timed_out(signum, frame):
        raise RunTimeout(f"the run took longer than --timeout {args.timeout:.0f}s")

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGALRM, timed_out)
    signal.alarm(max(1, int(args.timeout)))
    say(f"chaos run {run_id}: {args.orders} orders, seed {seed}, folder {run_dir}")
    summary: dict = {"run_id": run_id, "seed": seed, "run_dir": str(run_dir)}
    code = 2
    try:
        with contextlib.ExitStack() as cleanup:
            try:
                code = Run(args, run_id, run_dir, seed, cleanup, summary).go()
            finally:
                # Nothing interrupts the clean-up: half of it would leave processes behind.
                signal.alarm(0)
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                say("cleaning up (processes, Redis, database)")
    except KeyboardInterrupt as exc:
        say(f"interrupted ({exc or 'SIGINT'}); cleaned up")
        summary.setdefault("violations", []).append("interrupted")
        code = 130
    except RunTimeout as exc:
        say(f"FAILED: {exc}; cleaned up")
        summary.setdefault("violations", []).append(str(exc))
        code = 2
    except Exception as exc:
        say(f"FAILED: {type(exc).__name__}: {exc}")
        summary.setdefault("violations", []).append(f"{type(exc).__name__}: {exc}")
        code = 2
        import traceback

        traceback.print_exc()
    finally:
        signal.alarm(0)
    summary["exit_code"] = code
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    say(f"logs and summary.json: {run_dir}")
    return code


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
        args = self.args
        if not shutil.which("redis-server"):
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.postgres = PostgresServer.from_url(args.postgres_url)
        self.postgres.wait_ready(10)
        self.database = Database(self.postgres, f"shop_chaos_{secrets.token_hex(4)}")
        if args.keep:
            self.cleanup.callback(say, f"database {self.database.name} is kept (--keep)")
        else:
            self.cleanup.callback(self._database_drop)
        self.database.create()
        self.summary["database"] = self.database.name
        say(f"created database {self.database.name} on {self.postgres.host}:{self.postgres.port}")

        self.redis = RedisServer(port=free_port(), log_folder=self.logs_dir)
        self.cleanup.callback(self.redis.stop)
        self.redis.start()
        say(f"started redis-server pid {self.redis.pid} on port {self.redis.port}")

        self.web_port = free_port()
        self.env = self._environment()
        self._migrate()
        self._django_setup()
        staff_token, customers = self._users_create()

        logs = Logs(self.logs_dir)
        self.cleanup.callback(logs.close)
        self.supervisor = Supervisor(
            commands=procfile_read(REPO / "Procfile"),
            env_for=self._environment_for,
            cwd=REPO,
            logs=logs,
        )
        self.cleanup.callback(self.supervisor.shutdown)
        missing = set(ROLES) - set(self.supervisor.commands)
        if missing:
            raise RuntimeError(f"the Procfile has no {', '.join(sorted(missing))}")
        started = [self.supervisor.start("web")]
        started += [self.supervisor.start("worker") for _ in range(args.workers)]
        started += [self.supervisor.start("relay"), self.supervisor.start("beat")]
        self.supervisor.watch()
        say("started " + ", ".join(map(repr, started)) + f"; web on port {self.web_port}")

        self.http = Http(self.web_port)
        self._web_wait()
        initial_stock = self._catalogue_create(staff_token)
        return self._storm_and_check(customers, initial_stock)

    def _environment(self) -> dict:
        env = dict(os.environ)
        # The suite's own settings (pytest-env) are not the processes' business.
        for name in ("SHOP_TEST_APPS", "DJANGO_SETTINGS_MODULE", "PROMETHEUS_MULTIPROC_DIR"):
            env.pop(name, None)
        var = self.run_dir / "var"
        env.update(
            {
                "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
                "PYTHONUNBUFFERED": "1",
                "DJANGO_SETTINGS_MODULE": "shop.settings",
                "DATABASE_URL": self.database.url,
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
            }
        )
        return env

    def _environment_for(self, role: str) -> dict:
        env = dict(self.env)
        if role == "worker":
            env["PAYMENTS_GATEWAY_TIMEOUT_RATE"] = str(self.args.gateway_timeout_rate)
        return env

    def _migrate(self) -> None:
        with (self.logs_dir / "migrate.log").open("wb") as log:
            subprocess.run(
                [str(VENV_BIN / "python"), "manage.py", "migrate", "--noinput"],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=600,
            )
        say("migrated")

    def _django_setup(self) -> None:
        """This process reads the run's database through the ORM, as the processes see it."""
        for name in ("SHOP_TEST_APPS", "DJANGO_SETTINGS_MODULE"):
            os.environ.pop(name, None)
        os.environ.update({k: v for k, v in self.env.items() if k != "PATH"})
        os.environ["DATABASE_CONN_MAX_AGE"] = "0"
        import django

        django.setup()

    def _database_drop(self) -> None:
        from django.conf import settings
        from django.db import connections

        if settings.configured:
            connections.close_all()
        self.database.drop()
        say(f"dropped database {self.database.name}")

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
        users = User.objects.bulk_create(
            User(username=f"chaos-customer-{n}", password=unusable)
            for n in range(max(5, min(50, self.args.orders // 20)))
        )
        tokens = [AuthToken.objects.create(user=user)[1] for user in [staff, *users]]
        customers = [
            Customer(user_id=user.pk, username=user.username, token=token)
            for user, token in zip(users, tokens[1:], strict=True)
        ]
        say(f"created a staff user and {len(customers)} customers with API tokens")
        return tokens[0], customers

    def _web_wait(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                if self.http.request("GET", "/api/products/")[0] == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the web process did not answer in {timeout:.0f}s")
            time.sleep(0.3)

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
        from chaos.checks import Report, check, check_api, wait_quiet

        args = self.args
        plan = requests_plan(
            count=args.orders,
            customers=customers,
            skus=sorted(initial_stock),
            decline_share=args.decline_share,
            rng=self.rng,
            run_id=self.run_id,
        )
        stop = threading.Event()
        self.cleanup.callback(stop.set)
        watch = Watch(self.redis, procfile_queues(self.supervisor.commands), stop)
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
                kinds=args.faults, window=args.load_seconds, every=args.fault_every, rng=self.rng
            ),
            injector=Injector(
                supervisor=self.supervisor,
                redis=self.redis,
                postgres=self.postgres,
                postgres_restart_command=args.postgres_restart_command,
                rng=self.rng,
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
        load_start = time.monotonic()
        faults.start()
        load.run()
        say(
            f"load done: {len(load.acks)} acknowledged, {len(load.stats.rejected)} rejected, "
            f"{len(load.stats.gave_up)} given up"
        )
        faults.join()
        last_fault = faults.last_fault_end or load_start

        acked_ids = {ack.order_id for ack in load.acks.values()}
        say(f"waiting for quiet (at most {args.quiet_timeout:.0f}s)")
        quiet = wait_quiet(acked_ids, timeout=args.quiet_timeout, describe=watch.describe)

        report = Report()
        report.row("quiet reached", "yes" if quiet.reached else f"NO: {quiet.state}", quiet.reached)
        report.row("time from the last fault to quiet", f"{quiet.at - last_fault:.1f} s")
        report.row(
            "time from the end of the load to quiet",
            f"{quiet.at - (load.stats.finished_at or quiet.at):.1f} s",
        )
        acks = list(load.acks.values())
        check(report=report, acks=acks, initial_stock=initial_stock, at_rest=quiet.reached)
        check_api(
            report=report, acks=acks, http=self.http, sample_size=args.api_sample, rng=self.rng
        )
        report.row(
            "broker messages queued: peak / at the end",
            f"{watch.peak} (at {watch.peak_at:.0f}s) / {self.redis.queued(watch.queues)}",
        )
        seconds = (load.stats.finished_at or quiet.at) - load_start
        report.row(
            "load: seconds / orders per second / clients held by --max-in-flight",
            f"{seconds:.0f} / {len(load.acks) / max(seconds, 0.001):.1f} / "
            f"{load.stats.held_seconds:.0f} client-seconds",
        )
        self._load_rows(report, load)
        self._fault_rows(report, faults)
        for note in self.supervisor.unexpected_exits:
            report.notes.append(note)
        self._print(report)
        self.summary.update(
            {
                "orders": args.orders,
                "acknowledged": len(load.acks),
                "faults": [fault.as_dict() for fault in faults.plan],
                "faults_injected": sorted({f.kind for f in faults.plan if f.ended and not f.error}),
                "quiet": quiet.reached,
                "seconds_last_fault_to_quiet": round(quiet.at - last_fault, 1),
                "seconds_total": round(time.monotonic() - self.started, 1),
                "rows": [[label, str(value), ok] for label, value, ok in report.rows],
                "violations": report.violations,
                "notes": report.notes,
                "unexpected_exits": self.supervisor.unexpected_exits,
            }
        )
        return 1 if report.violations else 0

    def _load_rows(self, report, load: Load) -> None:
        stats = load.stats
        report.row("HTTP requests sent", stats.requests)
        report.row(
            "  answered only after a retry (same Idempotency-Key)", stats.acknowledged_after_retry
        )
        report.row(
            "  connection errors / 5xx answers",
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
