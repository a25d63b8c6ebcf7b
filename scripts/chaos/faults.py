"""The faults: a plan of random moments in the load, and a thread that carries it out.

Every kind in the plan happens at least once (FLUSHALL exactly once, and a restart of an
existing PostgreSQL server too); longer windows add more of the repeatable kinds, about one per
``--fault-every`` seconds. The database faults: ``restart-postgres`` and ``crash-postgres``
restart the run's private cluster (``pg_ctl restart -m fast`` / ``-m immediate``), or an
existing server with ``--postgres-restart-command``; ``slow-postgres`` turns on the latency of
the proxy every process reaches PostgreSQL through, for a few seconds.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from chaos.clock import say, since_start
from harness.latency_proxy import LatencyProxy
from harness.processes import Supervisor
from harness.services import (
    PostgresCluster,
    PostgresServer,
    RabbitMQNode,
    RedisServer,
    postgres_restart,
)

KILL_WORKER = "kill-worker"
KILL_WORKER_CHILD = "kill-worker-child"
KILL_RELAY_BEAT = "kill-relay-beat"
RESTART_REDIS = "restart-redis"
FLUSH_REDIS = "flush-redis"
RESTART_WEB = "restart-web"
RESTART_POSTGRES = "restart-postgres"
CRASH_POSTGRES = "crash-postgres"
SLOW_POSTGRES = "slow-postgres"
KINDS = (
    KILL_WORKER,
    KILL_WORKER_CHILD,
    KILL_RELAY_BEAT,
    RESTART_REDIS,
    FLUSH_REDIS,
    RESTART_WEB,
    RESTART_POSTGRES,
    CRASH_POSTGRES,
    SLOW_POSTGRES,
)
DATABASE_KINDS = (RESTART_POSTGRES, CRASH_POSTGRES, SLOW_POSTGRES)
# The split deployment's (--split): the payments service's consumer and worker killed, the
# run's RabbitMQ node restarted. Its default plan is these and kill-relay-beat (the shop's relay
# and beat); every kind above works there too.
KILL_PAYMENTS = "kill-payments"
RESTART_RABBITMQ = "restart-rabbitmq"
SPLIT_KINDS = (KILL_PAYMENTS, RESTART_RABBITMQ)
SPLIT_DEFAULT = (KILL_PAYMENTS, RESTART_RABBITMQ, KILL_RELAY_BEAT)
# Only the run's private cluster may crash, or restart more than once.
NEEDS_PRIVATE_CLUSTER = frozenset({CRASH_POSTGRES})
ONCE = frozenset({FLUSH_REDIS})
ONCE_ON_A_SHARED_SERVER = ONCE | {RESTART_POSTGRES}
# slow-postgres: this latency per forwarded chunk, both directions, for this long.
SLOW_LATENCY_SECONDS = (0.05, 0.2)
SLOW_FOR_SECONDS = (3.0, 6.0)


@dataclass
class Fault:
    kind: str
    at: float  # when this share of the load's requests has been sent (0..1)
    started: float | None = None  # time.monotonic()
    ended: float | None = None
    detail: str = ""
    error: str | None = None

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "at_load_share": round(self.at, 3),
            "at": round(since_start(self.started), 2) if self.started else None,
            "seconds": round(self.ended - self.started, 2) if self.ended and self.started else None,
            "detail": self.detail,
            "error": self.error,
        }


def fault_plan(
    *,
    kinds: list[str],
    window: float,
    every: float,
    rng: random.Random,
    once: frozenset[str] = ONCE,
) -> list[Fault]:
    """Each kind once, plus repeatable ones up to one per ``every`` seconds of a ``window``
    seconds long load, shuffled, one in each equal slot of the load's 5%..95% (so they are
    apart, and the last comes near the end: "time from the last fault to quiet" measures
    recovery more than the rest of the load)."""
    repeatable = [kind for kind in kinds if kind not in once]
    extra = max(0, int(window // every) - len(kinds)) if repeatable else 0
    chosen = list(kinds) + [rng.choice(repeatable) for _ in range(extra)]
    rng.shuffle(chosen)
    first, last = 0.05, 0.95
    slot = (last - first) / max(1, len(chosen))
    return [
        Fault(kind=kind, at=first + slot * (n + rng.uniform(0.1, 0.9)))
        for n, kind in enumerate(chosen)
    ]


class Injector:
    """What each fault does. Each returns a line saying exactly what happened."""

    def __init__(
        self,
        *,
        supervisor: Supervisor,
        redis: RedisServer,
        postgres: PostgresServer,
        postgres_restart_command: str,
        rng: random.Random,
        cluster: PostgresCluster | None = None,
        proxy: LatencyProxy | None = None,
        rabbitmq: RabbitMQNode | None = None,
    ):
        self.supervisor = supervisor
        self.rabbitmq = rabbitmq
        self.rabbitmq_restarts = 0
        self.redis = redis
        self.postgres = postgres
        self.postgres_restart_command = postgres_restart_command
        self.rng = rng
        self.cluster = cluster
        self.proxy = proxy
        self.actions: dict[str, Callable[[], str]] = {
            KILL_WORKER: self.kill_worker,
            KILL_WORKER_CHILD: self.kill_worker_child,
            KILL_RELAY_BEAT: self.kill_relay_beat,
            RESTART_REDIS: self.restart_redis,
            FLUSH_REDIS: self.flush_redis,
            RESTART_WEB: self.restart_web,
            RESTART_POSTGRES: self.restart_postgres,
            CRASH_POSTGRES: self.crash_postgres,
            SLOW_POSTGRES: self.slow_postgres,
            KILL_PAYMENTS: self.kill_payments,
            RESTART_RABBITMQ: self.restart_rabbitmq,
        }

    def _pause(self, low: float, high: float) -> float:
        pause = self.rng.uniform(low, high)
        time.sleep(pause)
        return pause

    def kill_worker(self) -> str:
        victim = self.rng.choice(self.supervisor.current["worker"])
        self.supervisor.kill(victim)
        pause = self._pause(0.0, 2.0)
        new = self.supervisor.start("worker")
        return f"SIGKILL to {victim}'s process group; {pause:.1f}s later started {new}"

    def kill_worker_child(self) -> str:
        victim = self.rng.choice(self.supervisor.current["worker"])
        children = victim.children()
        if not children:
            return self.kill_worker() + f" ({victim} had no pool process yet)"
        child = self.rng.choice(children)
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            return f"pool process {child} of {victim} was already gone"
        return f"SIGKILL to pool process {child} of {victim}; the worker forks another"

    def kill_relay_beat(self) -> str:
        relay, beat = self.supervisor.one("relay"), self.supervisor.one("beat")
        self.supervisor.kill(relay)
        self.supervisor.kill(beat)
        pause = self._pause(0.5, 3.0)
        new_relay, new_beat = self.supervisor.start("relay"), self.supervisor.start("beat")
        return (
            f"SIGKILL to {relay} and {beat}; {pause:.1f}s later started {new_relay} and {new_beat}"
        )

    def kill_payments(self) -> str:
        """The payments service loses its bus consumer and its worker at once (SIGKILL to both
        process groups, the worker's pool with it); 0.5-3 s later both start again."""
        consumer = self.supervisor.one("payments-consumer")
        worker = self.rng.choice(self.supervisor.current["payments-worker"])
        self.supervisor.kill(consumer)
        self.supervisor.kill(worker)
        pause = self._pause(0.5, 3.0)
        new_consumer = self.supervisor.start("payments-consumer")
        new_worker = self.supervisor.start("payments-worker")
        return (
            f"SIGKILL to {consumer} and {worker}; {pause:.1f}s later started {new_consumer} and "
            f"{new_worker}"
        )

    def restart_rabbitmq(self) -> str:
        """The run's own RabbitMQ node (never the machine's) stopped, as in a crash (SIGKILL) or
        cleanly (SIGTERM), in turn, the crash first; 0.5-3 s later started again on the same
        port and data.
        The fault lasts until it accepts connections again."""
        if self.rabbitmq is None:
            raise RuntimeError("restart-rabbitmq needs the run's own RabbitMQ node (--split)")
        old = self.rabbitmq.pid
        self.rabbitmq_restarts += 1
        if self.rabbitmq_restarts % 2:  # the first a crash, so that a short run has one
            self.rabbitmq.kill()
            how = "SIGKILL to"
        else:
            self.rabbitmq.terminate()
            how = "SIGTERM (clean shutdown) to"
        pause = self._pause(0.5, 3.0)
        started = time.monotonic()
        self.rabbitmq.start()
        return (
            f"{how} the RabbitMQ node (pid {old}); {pause:.1f}s later started pid "
            f"{self.rabbitmq.pid}, accepting connections after {time.monotonic() - started:.1f}s"
        )

    def restart_redis(self) -> str:
        old = self.redis.pid
        keys = self.redis.command("DBSIZE")
        self.redis.kill()
        pause = self._pause(0.5, 3.0)
        self.redis.start()
        return (
            f"SIGKILL to redis-server (pid {old}, {_keys(keys)} keys lost); {pause:.1f}s later "
            f"started pid {self.redis.pid}"
        )

    def flush_redis(self) -> str:
        keys = self.redis.command("DBSIZE")
        reply = self.redis.flushall()
        return f"FLUSHALL ({_keys(keys)} keys, every queued message lost): {reply}"

    def restart_web(self) -> str:
        web = self.supervisor.one("web")
        if self.rng.random() < 0.5:
            self.supervisor.kill(web)
            how = "SIGKILL to"
        else:
            self.supervisor.stop(web)
            how = "SIGTERM (graceful) to"
        new = self.supervisor.start("web")
        # The fault lasts until the new one answers: a request that hangs meanwhile waits in
        # its listen queue while it loads the app, which is no database fault's doing.
        started = time.monotonic()
        self.supervisor.wait_ready(new, timeout=120)
        return (
            f"{how} {web}'s process group; started {new}, answering after "
            f"{time.monotonic() - started:.1f}s"
        )

    def restart_postgres(self) -> str:
        started = time.monotonic()
        if self.cluster is not None:
            self.cluster.restart("fast")
            took = time.monotonic() - started
            return (
                f"pg_ctl restart -m fast of the private cluster (sessions ended), answering "
                f"again after {took:.1f}s"
            )
        output = postgres_restart(self.postgres_restart_command, self.postgres)
        took = time.monotonic() - started
        said = f": {output}" if output else ""
        return f"`{self.postgres_restart_command}`, answering again after {took:.1f}s{said}"

    def crash_postgres(self) -> str:
        if self.cluster is None:
            raise RuntimeError("crash-postgres needs the run's private cluster")
        started = time.monotonic()
        self.cluster.restart("immediate")
        took = time.monotonic() - started
        return (
            f"pg_ctl restart -m immediate of the private cluster (every backend killed, WAL "
            f"replayed), answering again after {took:.1f}s"
        )

    def slow_postgres(self) -> str:
        if self.proxy is None:
            raise RuntimeError("slow-postgres needs the latency proxy")
        low, high = SLOW_LATENCY_SECONDS
        before = self.proxy.stats.delayed_chunks
        self.proxy.slow(low, high)
        try:
            seconds = self._pause(*SLOW_FOR_SECONDS)
        finally:
            self.proxy.fast()
        delayed = self.proxy.stats.delayed_chunks - before
        return (
            f"latency {low * 1000:.0f}-{high * 1000:.0f} ms per chunk, both directions, for "
            f"{seconds:.1f}s: {delayed} chunks delayed; then off"
        )


def _keys(reply: str | None) -> str:
    return reply.lstrip(":") if reply and reply.startswith(":") else "?"


class FaultThread(threading.Thread):
    """Carries out the plan as the load gets to each fault's moment, one fault at a time, at
    least ``gap`` seconds apart, until done or stopped."""

    def __init__(
        self,
        *,
        plan: list[Fault],
        injector: Injector,
        progress: Callable[[], float],
        stop: threading.Event,
        gap: float = 2.0,
    ):
        super().__init__(name="faults", daemon=True)
        self.plan = plan
        self.injector = injector
        self.progress = progress
        self.stop = stop
        self.gap = gap

    def run(self) -> None:
        previous_end = 0.0
        for fault in self.plan:
            while self.progress() < fault.at or time.monotonic() < previous_end + self.gap:
                if self.stop.wait(0.1):
                    return
            fault.started = time.monotonic()
            try:
                fault.detail = self.injector.actions[fault.kind]()
            except Exception as exc:  # reported in the summary; the run goes on
                fault.error = f"{type(exc).__name__}: {exc}"
            fault.ended = previous_end = time.monotonic()
            outcome = f"FAILED: {fault.error}" if fault.error else fault.detail
            say(f"FAULT {fault.kind}: {outcome}")

    @property
    def last_fault_end(self) -> float | None:
        ends = [fault.ended for fault in self.plan if fault.ended is not None]
        return max(ends) if ends else None
