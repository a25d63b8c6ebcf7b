"""What the benchmark measures with: CPU and memory of processes and of the machine, PostgreSQL's
own counters, waiting for a count, percentiles, the JSON file.

Nothing here imports Django at module level: run.py creates the database and sets the
environment first, then sets Django up.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from harness.processes import Process

# application_name of the bench's own connections to the service databases of the split
# deployment (bench/saga_split.py), which PgBackendCpu leaves out.
BENCH_APPLICATION = "shop-bench"


class BenchError(Exception):
    """A scenario could not produce its figures (a timeout, a process that died, lost work)."""


# --- processes and the machine ----------------------------------------------------------------


def rss_kb(pid: int) -> int:
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).memory_info().rss // 1024
    return 0


def pss_kb(pid: int) -> int | None:
    with contextlib.suppress(psutil.Error, AttributeError):
        return psutil.Process(pid).memory_full_info().pss // 1024
    return None


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (not of their reaped children)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, for the CPU share used during a run."""
    times = psutil.cpu_times()
    total = sum(times)
    return total - times.idle - times.iowait, total


@dataclass
class CpuWindow:
    """Machine-wide CPU use and our processes' CPU time over one measured window, by process
    type (``worker``, ``relay``, ...)."""

    processes: list[Process]
    _start_machine: tuple[float, float] = (0.0, 0.0)
    _start_processes: dict = field(default_factory=dict)

    def __enter__(self) -> CpuWindow:
        self._start_machine = machine_busy()
        self._start_processes = {p.type: cpu_seconds(p.tree()) for p in self.processes}
        self.load_start = os.getloadavg()[0]
        return self

    def __exit__(self, *exc) -> None:
        busy, total = machine_busy()
        db, dt = busy - self._start_machine[0], total - self._start_machine[1]
        self.machine_busy_pct = 100.0 * db / dt if dt else 0.0
        self.proc_cpu_s = {
            p.type: cpu_seconds(p.tree()) - self._start_processes[p.type] for p in self.processes
        }
        self.load_end = os.getloadavg()[0]

    def describe(self) -> dict:
        return {
            "machine_cpu_busy_pct": round(self.machine_busy_pct, 1),
            "process_cpu_seconds": {k: round(v, 3) for k, v in self.proc_cpu_s.items()},
            "loadavg_1m": [round(self.load_start, 2), round(self.load_end, 2)],
        }


def _databases_clause(databases: list[str] | None) -> tuple[str, list]:
    """``datname = ...`` for the benchmark's database, or for each of ``databases`` (the split
    deployment's services: the views are the server's, readable from any database)."""
    if databases is None:
        return "datname = current_database()", []
    return "datname = ANY(%s)", [list(databases)]


class PgWindow:
    """PostgreSQL's own counters for the benchmark database (or ``databases``, summed) over a
    window: new sessions (connections opened) and commits. Read a moment after the window,
    since backends report their counters at most once a second."""

    QUERY = (
        "SELECT sum(sessions), sum(xact_commit), sum(xact_rollback) FROM pg_stat_database "
        "WHERE {where}"
    )

    def __init__(self, databases: list[str] | None = None):
        self.databases = databases

    def __enter__(self) -> PgWindow:
        self.start = self._read()
        return self

    def __exit__(self, *exc) -> None:
        self.ended = time.monotonic()

    def _read(self) -> tuple:
        from django.db import connection

        where, params = _databases_clause(self.databases)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(self.QUERY.format(where=where), params)
            return tuple(int(v or 0) for v in cursor.fetchone())

    def per_item(self, items: int) -> dict:
        time.sleep(max(0.0, 1.2 - (time.monotonic() - self.ended)))
        end = self._read()
        sessions, commits, rollbacks = (e - s for e, s in zip(end, self.start, strict=True))
        return {
            "pg_sessions_per_item": round(sessions / items, 3),
            "pg_commits_per_item": round(commits / items, 3),
            "pg_rollbacks": rollbacks,
        }


class PgBackendCpu:
    """CPU time of the PostgreSQL backends serving the benchmark database (or each of
    ``databases``) over a window, read
    from their pids (pg_stat_activity) with psutil: sampled every ``interval`` seconds by a
    thread of its own, so that a backend that ends inside the window (a producer's) still
    counts up to its last sample. A backend first seen inside the window counts from 0 (its
    whole life). The bench's own connections (this sampler's and the caller's) are left out.
    Only meaningful when PostgreSQL runs on this machine."""

    QUERY = (
        "SELECT pid FROM pg_stat_activity WHERE {where} "
        "AND backend_type = 'client backend' AND pid <> pg_backend_pid() AND pid <> %s "
        f"AND application_name <> '{BENCH_APPLICATION}'"
    )

    def __init__(self, interval: float = 0.25, databases: list[str] | None = None):
        self.interval = interval
        self.databases = databases
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._pids: set[int] = set()

    def __enter__(self) -> PgBackendCpu:
        import threading

        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            self._own = cursor.fetchone()[0]
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-backend-cpu", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def _sample(self, cursor, *, first: bool) -> None:
        where, params = _databases_clause(self.databases)
        cursor.execute(self.QUERY.format(where=where), [*params, self._own])
        pids = {pid for (pid,) in cursor.fetchall()}
        for pid in pids | self._pids:
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(pid).cpu_times()
                value = times.user + times.system
                if pid not in self._first:
                    self._first[pid] = value if first else 0.0
                self._last[pid] = value
        self._pids = pids

    def _run(self) -> None:
        from django.db import connection

        try:
            with connection.cursor() as cursor:
                self._sample(cursor, first=True)
                self._ready.set()
                while not self._stop.wait(self.interval):
                    self._sample(cursor, first=False)
                self._sample(cursor, first=False)
        finally:
            self._ready.set()
            connection.close()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)
        self.cpu_s = sum(self._last[pid] - self._first[pid] for pid in self._last)
        self.backends = len(self._last)


# --- waiting ----------------------------------------------------------------------------------


def wait_for(
    predicate: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    alive: Callable[[], None] = lambda: None,
) -> None:
    """Until ``predicate()``; ``alive()`` raises when a process of the system died."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        alive()
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
    alive: Callable[[], None] = lambda: None,
) -> None:
    """Until ``count()`` reaches ``target``; fails only when it stops moving for ``stall``
    seconds, so a slow system is measured, not cut off."""
    last, moved = -1, time.monotonic()
    while True:
        value = count()
        if value >= target:
            return
        if value != last:
            last, moved = value, time.monotonic()
        elif time.monotonic() - moved > stall:
            raise BenchError(f"{what}: stuck at {value}/{target} for {stall:.0f}s")
        alive()
        time.sleep(interval)


# --- statistics and output --------------------------------------------------------------------


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
    clean = [v for v in values if v is not None and not math.isnan(v)]
    if not clean:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(clean), "min": min(clean), "max": max(clean)}


def json_dump(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


def ms(seconds: float) -> float:
    return seconds * 1000.0


def latency_figures(prefix: str, latencies_ms: list[float]) -> dict:
    return {
        f"{prefix}_p50": percentile(latencies_ms, 50),
        f"{prefix}_p95": percentile(latencies_ms, 95),
        f"{prefix}_p99": percentile(latencies_ms, 99),
    }


def handler_latencies(bench, tag: str, count: int) -> list[float]:
    """Milliseconds from each event's commit to its handler's start, once ``count`` handlers of
    ``tag`` have started (the commit and start times the producers and handlers record)."""
    wait_for(
        lambda: bench.r.hlen(f"bench:start:{tag}") >= count,
        timeout=60,
        what=f"{count} handler starts ({tag})",
        alive=bench.check_alive,
    )
    commits = bench.stamps(f"bench:commit:{tag}")
    starts = bench.starts(tag)
    if len(commits) != count:
        raise BenchError(f"{tag}: {len(commits)} commit times for {count} events")
    return [ms(starts[seq] - commits[seq]) for seq in commits]
