"""The harness's plumbing: services, the benchmark database, real processes, clocks, RSS, stats.

Nothing here imports Django at module level: run.py creates the database and sets the
environment first, then sets Django up.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def worker_queues() -> str:
    """The Procfile worker's queues: every subscriber's (the bench app's ``bench`` among them
    when SHOP_BENCH_APPS is set). Call it once Django is set up."""
    from outbox.queues import subscriber_queues

    return ",".join(subscriber_queues())


class BenchError(Exception):
    """A scenario could not produce its figures (a timeout, a process that died, lost work)."""


class ServiceUnreachable(Exception):
    pass


# --- services ---------------------------------------------------------------------------------


def service_check(postgres_url: str, redis_url: str) -> dict:
    """Connect to both services for real; raise ServiceUnreachable with every problem found."""
    import psycopg
    import redis

    problems = []
    facts: dict = {}
    try:
        with psycopg.connect(_pg_admin_url(postgres_url), connect_timeout=3) as conn:
            facts["postgres_version"] = conn.execute("SHOW server_version").fetchone()[0]
    except Exception as exc:
        problems.append(f"PostgreSQL at {_where(postgres_url)} is not reachable: {exc}".strip())
    try:
        client = redis.Redis.from_url(redis_url, socket_connect_timeout=3, socket_timeout=3)
        client.ping()
        facts["redis_version"] = client.info("server")["redis_version"]
    except Exception as exc:
        problems.append(f"Redis at {_where(redis_url)} is not reachable: {exc}")
    if problems:
        raise ServiceUnreachable("\n".join(problems))
    return facts


def _where(url: str) -> str:
    parts = urlparse(url)
    return f"{parts.hostname}:{parts.port or ''}"


def _pg_admin_url(server_url: str) -> str:
    return urlunparse(urlparse(server_url)._replace(path="/postgres"))


def pg_database_url(server_url: str, name: str) -> str:
    return urlunparse(urlparse(server_url)._replace(path=f"/{name}"))


def pg_database_create(server_url: str) -> str:
    import psycopg

    name = f"shop_bench_{secrets.token_hex(4)}"
    with psycopg.connect(_pg_admin_url(server_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def pg_database_drop(server_url: str, name: str) -> None:
    import psycopg

    assert name.startswith("shop_bench_"), name
    with psycopg.connect(_pg_admin_url(server_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def redis_client(url: str):
    import redis

    # No read timeout: BLPOP waits longer than redis-py's default of 5 s.
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=None)


OWNER_KEY = "bench:owner"


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


# --- processes --------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGTERM when the harness dies, even by SIGKILL (a test
    timeout), so no worker, relay or producer outlives the run that started it."""
    import ctypes

    parent = os.getppid()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the harness died before prctl took effect
        os._exit(1)


@dataclass
class Proc:
    """A real process of the system (worker, relay, beat, web) started with the bench's env."""

    name: str
    cmd: list[str]
    env: dict
    log_path: Path
    popen: subprocess.Popen | None = None
    hostname: str | None = None

    def start(self) -> Proc:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        log.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(self.cmd)}\n".encode())
        log.flush()
        # A session of its own: stopping it reaches every process it forked, and only those.
        self.popen = subprocess.Popen(
            self.cmd,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            code = self.popen.returncode if self.popen else None
            raise BenchError(f"{self.name} exited (code {code}); see {self.log_path}")

    def pids(self) -> list[int]:
        """The process and its children (a prefork worker's pool)."""
        if not self.alive():
            return []
        return [self.pid, *children_of(self.pid)]

    def stop(self, timeout: float = 20.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait(10)
        # Pool children left behind by a hard stop share the session id.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)


def celery_worker(
    name: str, *, queues: str, pool: str, concurrency: int, env: dict, log_dir: Path
) -> Proc:
    hostname = f"{name}-{secrets.token_hex(3)}@{socket.gethostname()}"
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "shop",
        "worker",
        "--queues",
        queues,
        "--pool",
        pool,
        "--hostname",
        hostname,
        "--loglevel",
        "INFO",
    ]
    if pool != "solo":
        cmd += ["--concurrency", str(concurrency)]
    proc = Proc(name=name, cmd=cmd, env=env, log_path=log_dir / f"{name}.log")
    proc.hostname = hostname
    return proc


def celery_beat(env: dict, log_dir: Path) -> Proc:
    cmd = [sys.executable, "-m", "celery", "-A", "shop", "beat", "--loglevel", "INFO"]
    cmd.append("--pidfile=")
    return Proc(name="beat", cmd=cmd, env=env, log_path=log_dir / "beat.log")


def gunicorn_web(env: dict, log_dir: Path, port: int, workers: int) -> Proc:
    cmd = [
        sys.executable,
        "-m",
        "gunicorn",
        "shop.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--access-logfile",
        "-",
        "--graceful-timeout",
        "10",
    ]
    return Proc(name="web", cmd=cmd, env=env, log_path=log_dir / "web.log")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker_wait_ready(proc: Proc, *, timeout: float = 90.0) -> None:
    """Until the worker answers a control ping (its consumer, and so its pool, is up)."""
    from shop.celery import app

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.check_alive()
        with contextlib.suppress(Exception):
            if app.control.ping(destination=[proc.hostname], timeout=0.5):
                return
        time.sleep(0.2)
    raise BenchError(f"{proc.name} did not answer a ping in {timeout:.0f}s; see {proc.log_path}")


def web_wait_ready(proc: Proc, port: int, *, timeout: float = 60.0) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.check_alive()
        with contextlib.suppress(Exception):
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise BenchError(f"web did not answer /healthz within {timeout:.0f}s; see {proc.log_path}")


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _proc_stat(int(entry))
        if stat is not None and int(stat[1]) == pid:
            found.append(int(entry))
    return found


def _proc_stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat fields from the state on (state is [0], ppid [1], utime [11])."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    return raw.rsplit(")", 1)[1].split()


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_seconds(pids: Iterable[int]) -> float:
    total = 0
    for pid in pids:
        stat = _proc_stat(pid)
        if stat is not None:
            total += int(stat[11]) + int(stat[12])
    return total / CLOCK_TICKS


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, for the CPU share used during a run."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


@dataclass
class CpuWindow:
    """Machine-wide CPU use and our processes' CPU time over one measured window."""

    procs: list[Proc]
    _start_machine: tuple[int, int] = (0, 0)
    _start_procs: dict = field(default_factory=dict)

    def __enter__(self) -> CpuWindow:
        self._start_machine = machine_busy()
        self._start_procs = {p.name: cpu_seconds(p.pids()) for p in self.procs}
        self.load_start = os.getloadavg()[0]
        return self

    def __exit__(self, *exc) -> None:
        busy, total = machine_busy()
        db, dt = busy - self._start_machine[0], total - self._start_machine[1]
        self.machine_busy_pct = 100.0 * db / dt if dt else 0.0
        self.proc_cpu_s = {
            p.name: cpu_seconds(p.pids()) - self._start_procs[p.name] for p in self.procs
        }
        self.load_end = os.getloadavg()[0]

    def describe(self) -> dict:
        return {
            "machine_cpu_busy_pct": round(self.machine_busy_pct, 1),
            "process_cpu_seconds": {k: round(v, 3) for k, v in self.proc_cpu_s.items()},
            "loadavg_1m": [round(self.load_start, 2), round(self.load_end, 2)],
        }


# --- waiting and statistics -------------------------------------------------------------------


def wait_for(
    predicate: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    alive: Iterable[Proc] = (),
) -> None:
    deadline = time.monotonic() + timeout
    procs = list(alive)
    while True:
        if predicate():
            return
        for proc in procs:
            proc.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def wait_for_count(
    count: Callable[[], int],
    target: int,
    *,
    what: str,
    stall: float = 90.0,
    interval: float = 0.1,
    alive: Iterable[Proc] = (),
) -> None:
    """Until ``count()`` reaches ``target``; fails only when it stops moving for ``stall``
    seconds, so a slow system is measured, not cut off."""
    procs = list(alive)
    last, moved = -1, time.monotonic()
    while True:
        value = count()
        if value >= target:
            return
        if value != last:
            last, moved = value, time.monotonic()
        elif time.monotonic() - moved > stall:
            raise BenchError(f"{what}: stuck at {value}/{target} for {stall:.0f}s")
        for proc in procs:
            proc.check_alive()
        time.sleep(interval)


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); q in 0..100."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summary(values: list[float]) -> dict:
    import statistics

    clean = [v for v in values if v is not None and not math.isnan(v)]
    if not clean:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(clean), "min": min(clean), "max": max(clean)}


def json_dump(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)
