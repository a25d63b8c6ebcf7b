"""The system under measurement: the Procfile's processes (through the shared harness), the
benchmark's own Redis database, empty tables before each run, the load producers, py-spy.

Nothing here imports Django at module level: run.py creates the database and sets the
environment first, then sets Django up.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from cryptography.fernet import Fernet

from bench.measure import BenchError, wait_for_count
from harness.processes import Logs, Process, Supervisor, die_with_parent, venv_path
from harness.procfile import Procfile
from harness.services import PostgresServer, free_port

ROOT = Path(__file__).resolve().parent.parent
BENCH_QUEUE = "bench"
# The Procfile's processes the benchmark runs, in the order they start.
PROCESSES = ("relay", "worker", "beat", "web")
OWNER_KEY = "bench:owner"
# Tables a run empties: everything the shop and the bench write, never the migrations' rows
# (content types, permissions, beat's schedule).
RESET_PREFIXES = (
    "outbox_",
    "orders_",
    "payments_",
    "inventory_",
    "shipping_",
    "notifications_",
    "benchapp_",
    "knox_",
    "auth_user",
    "django_session",
    "django_admin_log",
)


class ServiceUnreachable(Exception):
    pass


def service_check(postgres: PostgresServer, redis_url: str) -> dict:
    """Connect to both services for real; raise ServiceUnreachable with every problem found."""
    problems = []
    facts: dict = {}
    try:
        facts["postgres_version"] = postgres.version()
    except Exception as exc:
        where = f"{postgres.host}:{postgres.port}"
        problems.append(f"PostgreSQL at {where} is not reachable: {exc}".strip())
    try:
        client = redis_client(redis_url, timeout=3)
        client.ping()
        facts["redis_version"] = client.info("server")["redis_version"]
    except Exception as exc:
        parts = urlparse(redis_url)
        problems.append(f"Redis at {parts.hostname}:{parts.port or ''} is not reachable: {exc}")
    if problems:
        raise ServiceUnreachable("\n".join(problems))
    return facts


def redis_client(url: str, timeout: float | None = None):
    import redis

    # No read timeout by default: BLPOP waits longer than redis-py's default of 5 s.
    return redis.Redis.from_url(
        url, decode_responses=True, socket_timeout=timeout, socket_connect_timeout=timeout
    )


class RedisDb:
    """The benchmark's own Redis database: locked against a second run on this machine,
    refused when it holds someone else's keys, flushed before each scenario."""

    def __init__(self, url: str, lock_dir: Path):
        self.url = url
        self.client = redis_client(url)
        parts = urlparse(url)
        db = (parts.path or "/0").strip("/") or "0"
        lock_dir.mkdir(parents=True, exist_ok=True)
        self._lock_path = lock_dir / f".redis-{parts.hostname}-{parts.port or 6379}-{db}.lock"
        self._lock = None

    def acquire(self) -> None:
        self._lock = open(self._lock_path, "w")  # noqa: SIM115 - held for the whole run
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BenchError(
                f"another benchmark run uses Redis {self.url} (lock {self._lock_path}); "
                "wait for it or pass --redis-url with another database number"
            ) from None
        keys = self.client.dbsize()
        if keys and not self.client.exists(OWNER_KEY):
            raise BenchError(
                f"Redis {self.url} holds {keys} keys that are not the benchmark's; it flushes "
                "its database, so pass --redis-url with a database number of its own"
            )

    def flush(self) -> None:
        self.client.flushdb()
        self.client.set(OWNER_KEY, f"shop bench, pid {os.getpid()}")

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def child_env(
    *, database_url: str, redis_url: str, run_dir: Path, settings: str = "shop.settings"
) -> dict:
    """What every process of the system gets: the bench's database, broker and app, and the
    production switches (debug off) unless the caller's environment says otherwise."""
    env = dict(os.environ)
    env.pop("SHOP_TEST_APPS", None)
    env.update(
        {
            "PATH": venv_path(env),
            "DJANGO_SETTINGS_MODULE": settings,
            "DATABASE_URL": database_url,
            "CELERY_BROKER_URL": redis_url,
            "SHOP_BENCH_APPS": "1",
            "BENCH_RECORD_REDIS_URL": redis_url,
            # Its own metrics folder: never another run's, never wiped under someone else.
            "PROMETHEUS_MULTIPROC_DIR": str(run_dir / "prometheus"),
            "PYTHONUNBUFFERED": "1",
            # The producers are a few customers placing orders as fast as they can.
            "THROTTLE_RATE_LOGIN": "off",
            "THROTTLE_RATE_ORDERS": "off",
        }
    )
    env.setdefault("DJANGO_DEBUG", "0")
    if env["DJANGO_DEBUG"] in ("0", "false", "no", "off"):
        env.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(60))
        env.setdefault("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost")
        env.setdefault("DJANGO_SECURE_SSL_REDIRECT", "0")
        # Production settings refuse to start without the sensitive fields' key; one of the
        # run's own, so the figures include sealing and opening them as production does.
        env.setdefault("EVENT_ENCRYPTION_KEYS", Fernet.generate_key().decode())
    return env


class Bench:
    """One benchmark invocation: environment, Redis database, the processes, producers."""

    def __init__(
        self,
        *,
        env: dict,
        run_dir: Path,
        redis_db: RedisDb,
        sizes,
        producers: int,
        concurrency: int,
        web_workers: int,
        profile_dir: Path | None = None,
    ):
        from shop.celery import app

        self.env = env
        self.run_dir = run_dir
        self.log_dir = run_dir / "logs"
        self.redis_db = redis_db
        self.r = redis_db.client
        self.sizes = sizes
        self.producers = producers
        self.web_port: int | None = None
        self.profile_dir = profile_dir
        self._profilers: list[tuple[subprocess.Popen, Path]] = []
        procfile = Procfile.read(ROOT / "Procfile")
        procfile.require(*PROCESSES)
        # The Procfile's worker as written, also consuming the benchmark's own queue.
        procfile = procfile.replace(procfile["worker"].with_queues([BENCH_QUEUE]))
        self.supervisor = Supervisor(
            procfile=procfile,
            env=env,
            env_for=self._env_for,
            cwd=ROOT,
            # Straight to files: no thread of this process copies logs while CPU is measured.
            logs=Logs(self.log_dir, combined=False),
            stop_grace=20.0,
            die_with_parent=True,
            celery_app=app,
        )
        self.concurrency = concurrency
        self.web_workers = web_workers
        self.counting = False
        self.settings_module: str | None = None  # --ab: the B settings, while B runs
        # The databases whose PostgreSQL counters and backends a measurement reads: None, the
        # bench's own (the split deployment's side names its services' databases).
        self.databases: list[str] | None = None

    def _env_for(self, name: str) -> dict:
        return {
            "WORKER_CONCURRENCY": str(self.concurrency),
            "WEB_CONCURRENCY": str(self.web_workers),
            "PORT": str(self.web_port or 8000),
            # Per-process statement and task counts (bench/benchapp/counting.py), when a
            # scenario asks for them.
            "BENCH_PROCESS": name,
            **({"DJANGO_SETTINGS_MODULE": self.settings_module} if self.settings_module else {}),
            "BENCH_COUNT": "1" if self.counting else "0",
        }

    # --- state ---------------------------------------------------------------------------------

    def reset(self) -> None:
        """Empty Redis and the shop's tables (no process of the system may be running)."""
        from django.db import connection

        assert not self.supervisor.running(), "reset with processes running"
        self.redis_db.flush()
        with connection.cursor() as cursor:
            cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            tables = [t for (t,) in cursor.fetchall() if t.startswith(RESET_PREFIXES)]
            if tables:
                names = ", ".join(f'"{t}"' for t in tables)
                cursor.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")

    def settle(self, timeout: float) -> None:
        """Until no delivery is pending: the work an order caused is all done."""
        from outbox.models import Delivery

        wait_for_count(
            lambda: -Delivery.objects.filter(status="pending").count(),
            0,
            what="every delivery done (pending count)",
            stall=timeout,
            interval=0.2,
            alive=self.check_alive,
        )

    # --- processes -----------------------------------------------------------------------------

    @property
    def procs(self) -> dict[str, Process]:
        """The running instance of each process type, by type."""
        return {process.type: process for process in self.supervisor.running()}

    def start(self, *, relay=True, worker=True, beat=True, web=False) -> None:
        wanted = {"relay": relay, "worker": worker, "beat": beat, "web": web}
        if web:
            self.web_port = free_port()
        started = {
            name: self.supervisor.start(name) for name in ("relay", "worker") if wanted[name]
        }
        for process in started.values():
            self.supervisor.wait_ready(process)
        for name in ("beat", "web"):
            if wanted[name]:
                self.supervisor.wait_ready(self.supervisor.start(name))

    def stop(self) -> None:
        self.profile_stop()
        self.supervisor.stop_all()

    @contextlib.contextmanager
    def system(self, **kwargs):
        try:
            self.start(**kwargs)
            yield self.procs
        finally:
            self.stop()

    def alive(self) -> list[Process]:
        return self.supervisor.running()

    def check_alive(self) -> None:
        try:
            self.supervisor.check_alive()
        except Exception as exc:
            raise BenchError(str(exc)) from None

    # --- profiling (py-spy) --------------------------------------------------------------------

    def profile_start(self, label: str, names: list[str]) -> None:
        if self.profile_dir is None:
            return
        for name in names:
            process = self.procs[name]
            out = self.profile_dir / f"{label}-{name}.txt"
            cmd = [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(process.pid),
                "--format",
                "raw",
                "--rate",
                "100",
                "--idle",
                "--nonblocking",
                "--output",
                str(out),
            ]
            if name == "worker":
                cmd.append("--subprocesses")
            log = open(self.profile_dir / f"{label}-{name}.log", "wb")  # noqa: SIM115
            self._profilers.append(
                (
                    subprocess.Popen(
                        cmd, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
                    ),
                    out,
                )
            )
            log.close()
        time.sleep(1.0)  # py-spy attaches

    def profile_stop(self) -> None:
        for popen, _ in self._profilers:
            if popen.poll() is None:
                popen.send_signal(signal.SIGINT)
        for popen, _ in self._profilers:
            try:
                popen.wait(30)
            except subprocess.TimeoutExpired:
                popen.kill()
        self._profilers.clear()

    # --- producers -----------------------------------------------------------------------------

    def producers_run(self, kind: str, *, total: int, n: int, tag: str, **spec) -> ProducerBatch:
        return ProducerBatch(self, kind, total=total, n=n, tag=tag, **spec)

    def producer_env(self) -> dict:
        if self.settings_module:
            return {**self.env, "DJANGO_SETTINGS_MODULE": self.settings_module}
        return self.env

    # --- observations --------------------------------------------------------------------------

    def starts(self, tag: str) -> dict[int, float]:
        return {int(k): float(v) for k, v in self.r.hgetall(f"bench:start:{tag}").items()}

    def runs(self, tag: str) -> int:
        return int(self.r.get(f"bench:runs:{tag}") or 0)

    def stamps(self, key: str) -> dict[int, float]:
        # Sequence numbers and order ids are whole numbers; an order placed over HTTP is
        # known by its public reference (ORD-...), which the scenario maps to its id.
        return {int(k) if k.isdigit() else k: float(v) for k, v in self.r.hgetall(key).items()}


class ServiceSide:
    """What the scenarios' helpers need of the bench (producers, the records in its Redis,
    processes' CPU and liveness), for processes that run with an environment other than the
    bench's: another service's (bench/bus_latency.py) or the split deployment's
    (bench/saga_split.py), each started by a supervisor of its own."""

    def __init__(self, bench: Bench, env: dict, supervisors: list[Supervisor]):
        self.env = env
        self.log_dir = bench.log_dir
        self.r = bench.r
        self.sizes = bench.sizes
        self.producers = bench.producers
        self.databases = bench.databases
        self._bench = bench
        self.supervisors = supervisors

    def producer_env(self) -> dict:
        """This side's environment, with the bench's settings module when it has one."""
        if self._bench.settings_module:
            return {**self.env, "DJANGO_SETTINGS_MODULE": self._bench.settings_module}
        return self.env

    def producers_run(self, kind: str, *, total: int, n: int, tag: str, **spec) -> ProducerBatch:
        return ProducerBatch(self, kind, total=total, n=n, tag=tag, **spec)

    def starts(self, tag: str) -> dict[int, float]:
        return self._bench.starts(tag)

    def runs(self, tag: str) -> int:
        return self._bench.runs(tag)

    def stamps(self, key: str) -> dict[int, float]:
        return self._bench.stamps(key)

    def alive(self) -> list[Process]:
        return [process for supervisor in self.supervisors for process in supervisor.running()]

    def check_alive(self) -> None:
        try:
            for supervisor in self.supervisors:
                supervisor.check_alive()
        except Exception as exc:
            raise BenchError(str(exc)) from None


class ProducerBatch:
    """``n`` producer processes sharing ``total`` items; started and ready before go()."""

    def __init__(self, bench: Bench, kind: str, *, total: int, n: int, tag: str, **spec):
        self.bench = bench
        self.token = secrets.token_hex(4)
        self.n = n
        self.procs: list[subprocess.Popen] = []
        self.stamps_key = spec.pop("stamps_key", None)
        share, extra = divmod(total, n)
        seq = 0
        for index in range(n):
            count = share + (1 if index < extra else 0)
            item = {
                "kind": kind,
                "token": self.token,
                "index": index,
                "count": count,
                "seq_start": seq,
                "tag": tag,
                "stamps_key": self.stamps_key,
                **spec,
            }
            seq += count
            log = open(bench.log_dir / f"producer-{kind}.log", "ab")  # noqa: SIM115
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "bench.producer", json.dumps(item)],
                    cwd=ROOT,
                    env=bench.producer_env(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    preexec_fn=die_with_parent,
                )
            )
            log.close()
        try:
            for _ in range(n):
                if bench.r.blpop([f"bench:ready:{self.token}"], timeout=120) is None:
                    raise BenchError(f"{kind} producers did not start; see logs/producer-*.log")
        except BaseException:
            self.kill()
            raise

    def go(self) -> float:
        started = time.time()
        self.bench.r.rpush(f"bench:go:{self.token}", *range(self.n))
        return started

    def results(self, timeout: float) -> list[dict]:
        out = []
        try:
            deadline = time.monotonic() + timeout
            while len(out) < self.n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(f"producers did not finish within {timeout:.0f}s")
                item = self.bench.r.blpop([f"bench:result:{self.token}"], timeout=min(5, left))
                if item is not None:
                    out.append(json.loads(item[1]))
                self.bench.check_alive()
            for proc in self.procs:
                proc.wait(30)
        finally:
            self.kill()
        errors = sum(r["error_count"] for r in out)
        if errors:
            first = next(e for r in out for e in r["errors"])
            raise BenchError(f"{errors} producer errors; first: {first}")
        return out

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
