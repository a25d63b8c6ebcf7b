"""Scenario ``bus_latency``: commit on service A to the handler on service B, across the bus.

Two services, each with its own PostgreSQL database, its own Celery broker and its own
processes (the Procfile's, through harness/):

- **A, the publisher**: the bench's database and Redis, ``EVENT_BUS_URL`` set. Its producer
  publishes ``bench.RemotePing`` (externalised; A has no subscriber for it, so its one delivery
  is the bus's), its relay claims it and its worker's ``bus`` queue publishes it to the broker.
- **B, the consumer**: a database of its own, a Redis database of its own as Celery broker
  (``BENCH_BUS_CONSUMER_REDIS_URL``; default: the bench's Redis server, the next database
  number), ``EVENT_BUS_SERVICE=benchb``, the shop's apps as ``EVENT_BUS_LOCAL_APPS`` (so the
  bench's events come from the bus) and ``SHOP_BENCH_BUS_CONSUMER=1``, which installs the only
  subscriber of ``RemotePing`` (bench/busconsumer/). Its ``bus_consume`` stores each event, its
  relay and worker run the subscriber, which notes its start in the bench's Redis.

Measured as the same-database ``latency`` scenario measures (bench/scenarios.py): the producer
notes each transaction's commit time, the handler its start; at ``Sizes.latency_rate`` for
``Sizes.latency_seconds``, once per broker, each in a namespace of its own, deleted afterwards
with B's database and broker.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from urllib.parse import urlparse, urlunparse

from bench import bus_scenarios
from bench.measure import BenchError, handler_latencies, latency_figures, ms, percentile
from bench.system import BENCH_QUEUE, Bench, ProducerBatch, ServiceSide, redis_client
from harness.processes import Logs, Supervisor
from harness.procfile import Procfile, release_run
from harness.services import Database, PostgresServer

SERVICE_B = "benchb"
SHOP_APPS = "orders,payments,inventory,shipping"


def consumer_redis_url(bench_redis_url: str) -> str:
    import os

    if os.environ.get("BENCH_BUS_CONSUMER_REDIS_URL"):
        return os.environ["BENCH_BUS_CONSUMER_REDIS_URL"]
    parts = urlparse(bench_redis_url)
    db = int((parts.path or "/0").strip("/") or 0)
    return urlunparse(parts._replace(path=f"/{(db + 1) % 16}"))


def _supervisor(bench: Bench, env: dict, logs: str, celery_app) -> Supervisor:
    procfile = Procfile.read(bus_scenarios.ROOT / "Procfile")
    procfile = procfile.replace(procfile["worker"].with_queues([BENCH_QUEUE]))
    folder = bench.run_dir / logs
    folder.mkdir(parents=True, exist_ok=True)
    return Supervisor(
        procfile=procfile,
        env=env,
        # --ab: B's settings module for every process of both services while B runs (until
        # 2026-12-01 they kept A's, and only the producers changed).
        env_for=lambda name: {
            "WORKER_CONCURRENCY": str(bench.concurrency),
            **({"DJANGO_SETTINGS_MODULE": bench.settings_module} if bench.settings_module else {}),
        },
        cwd=bus_scenarios.ROOT,
        logs=Logs(folder, combined=False),
        stop_grace=20.0,
        die_with_parent=True,
        celery_app=celery_app,
    )


def topology_delete(url: str, namespace: str, services: list[str]) -> None:
    """The namespace's exchanges, queues and streams on the broker, these services' included."""
    from outbox.bus.adapters import adapter_for

    adapter = adapter_for(url, namespace=namespace)
    try:
        adapter.topology_delete(services=services)
    finally:
        adapter.close()


def _one_broker(bench: Bench, run: int, broker: str, url: str) -> dict:
    from celery import Celery

    from shop.celery import app as celery_a

    s = bench.sizes
    namespace = f"bench-lat-{secrets.token_hex(3)}"
    bus = {"EVENT_BUS_URL": url, "EVENT_BUS_NAMESPACE": namespace}
    env_a = {**bench.env, **bus}
    b_redis = consumer_redis_url(bench.env["CELERY_BROKER_URL"])
    server = PostgresServer.from_url(bench.env["DATABASE_URL"])
    database_b = Database(server, f"{urlparse(bench.env['DATABASE_URL']).path[1:]}_b")
    env_b = {
        **bench.env,
        **bus,
        "DATABASE_URL": database_b.url,
        "CELERY_BROKER_URL": b_redis,
        "EVENT_BUS_SERVICE": SERVICE_B,
        "EVENT_BUS_LOCAL_APPS": SHOP_APPS,
        "SHOP_BENCH_BUS_CONSUMER": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(bench.run_dir / "prometheus-b"),
    }
    b_client = redis_client(b_redis)
    if b_client.dbsize():
        raise BenchError(
            f"service B's broker {b_redis} is not empty; set BENCH_BUS_CONSUMER_REDIS_URL"
        )
    # Celery prefers the CELERY_BROKER_URL environment variable (A's broker, in this process)
    # to broker_url; the read and write URLs win over both.
    celery_b = Celery("bench-service-b")
    celery_b.conf.broker_read_url = celery_b.conf.broker_write_url = b_redis
    a = _supervisor(bench, env_a, f"logs/{broker}-a", celery_a)
    b = _supervisor(bench, env_b, f"logs/{broker}-b", celery_b)
    side = ServiceSide(bench, env_a, [a, b])
    database_b.create()
    try:
        release_run(
            b.procfile, env=env_b, cwd=bus_scenarios.ROOT, log=bench.log_dir / "migrate-b.log"
        )
        # B first: its consumer declares its queue and bindings (or durable consumer) before
        # A publishes anything.
        for supervisor, names in ((b, ("consumer", "relay", "worker")), (a, ("relay", "worker"))):
            for name in names:
                supervisor.wait_ready(supervisor.start(name))
        # Warm-up: every process has its connections, and B's queue exists.
        warm = f"{broker}-warm-{run}"
        warm_up = ProducerBatch(side, "ping_tx", total=s.warmup, n=1, tag=warm, event="remote")
        warm_up.go()
        warm_up.results(timeout=120)
        _wait_starts(side, warm, s.warmup)
        tag = f"{broker}-steady-{run}"
        count = round(s.latency_rate * s.latency_seconds)
        producers = ProducerBatch(
            side,
            "ping_tx",
            total=count,
            n=1,
            tag=tag,
            rate=s.latency_rate,
            stamps_key=f"bench:commit:{tag}",
            event="remote",
        )
        commits_before = _b_store_commits(env_b["PROMETHEUS_MULTIPROC_DIR"])
        producers.go()
        (result,) = producers.results(timeout=60 + s.latency_seconds * 3)
        latencies = handler_latencies(side, tag, count)
        commits, stored_events = (
            after - before
            for after, before in zip(
                _b_store_commits(env_b["PROMETHEUS_MULTIPROC_DIR"]), commits_before, strict=True
            )
        )
        figures = latency_figures(broker, latencies)
        confirmed = _confirmed_after_commit(bench, tag)
        stored, stored_per_second = _stored_on_b_after_commit(bench, database_b.url, tag)
        details = {
            "events": count,
            "rate_target": s.latency_rate,
            "rate_achieved": count / max(result["t_last"] - result["t_first"], 1e-9),
            "producer_lag_max_ms": ms(result["lag_max"]),
            "max_ms": max(latencies),
            # A's share: from the commit to A's bus delivery marked done (broker confirmed);
            # the rest is the broker's delivery to B's consumer and B's outbox path.
            "a_confirmed_p50_ms": percentile(confirmed, 50),
            "a_confirmed_p99_ms": percentile(confirmed, 99),
            # To B's consumer's commit (the event and its delivery stored in B's database):
            # from there to the handler is B's relay, its Celery hop and its worker.
            "b_stored_p50_ms": percentile(stored, 50),
            "b_stored_p99_ms": percentile(stored, 99),
            # Events B's consumer stored in each second from the first commit: below the
            # producer's rate while it runs, a backlog grows (and drains once A is quiet).
            "b_stored_per_second": stored_per_second,
            # From B's store on: its relay's claim, then the Celery hop and its worker.
            **_b_after_store(bench, database_b.url, tag),
            # B's consumer's storing transactions in the steady run, and events per transaction
            # (outbox_bus_stored_batch_events: the batch it had in hand each time).
            "b_store_commits": commits,
            "b_events_per_store_commit": stored_events / commits if commits else None,
            "namespace": namespace,
            "consumer_broker": b_redis,
            "handler_runs": bench.runs(tag),
        }
        ok = bench.runs(tag) == count
        # Then one event at a time on the otherwise idle pair of services, as scenario 5 does.
        time.sleep(2.0)
        tag = f"{broker}-idle-{run}"
        idle = ProducerBatch(
            side,
            "ping_idle",
            total=s.idle_events,
            n=1,
            tag=tag,
            gap=0.25,
            stamps_key=f"bench:commit:{tag}",
            event="remote",
        )
        idle.go()
        idle.results(timeout=60 + s.idle_events * 2)
        latencies = handler_latencies(side, tag, s.idle_events)
        figures.update(latency_figures(f"{broker}_idle", latencies))
        details["idle"] = {"events": s.idle_events, "max_ms": max(latencies)}
        return {"figures": figures, "details": details, "checks_ok": ok}
    finally:
        with contextlib.suppress(Exception):
            a.shutdown()
        with contextlib.suppress(Exception):
            b.shutdown()
        database_b.drop()
        b_client.flushdb()
        topology_delete(url, namespace, [SERVICE_B])


def _b_store_commits(folder: str) -> tuple[float, float]:
    """B's consumer's storing transactions so far and the events they stored."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=folder)
    found = {
        sample.name: sample.value
        for family in registry.collect()
        if family.name == "outbox_bus_stored_batch_events"
        for sample in family.samples
        if sample.labels.get("service") == SERVICE_B
    }
    return (
        found.get("outbox_bus_stored_batch_events_count", 0.0),
        found.get("outbox_bus_stored_batch_events_sum", 0.0),
    )


def _confirmed_after_commit(bench: Bench, tag: str) -> list[float]:
    """Per event of ``tag``: ms from its commit on A to its bus delivery done on A."""
    from outbox.models import Delivery

    commits = bench.stamps(f"bench:commit:{tag}")
    rows = Delivery.objects.filter(
        subscriber="bus", status="done", event__type="bench.RemotePing", event__payload__tag=tag
    ).values_list("event__payload__ping_id", "completed_at")
    return [1000.0 * (done.timestamp() - commits[seq]) for seq, done in rows if seq in commits]


def _stored_on_b_after_commit(
    bench: Bench, database_url: str, tag: str
) -> tuple[list[float], list[int]]:
    """Per event of ``tag``: ms from its commit on A to its delivery created on B (the
    consumer's transaction; ``created_at`` is the consumer's clock, the same machine's); and
    how many B stored in each whole second since the first commit."""
    import psycopg

    commits = bench.stamps(f"bench:commit:{tag}")
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT (e.payload->>'ping_id')::int, d.created_at FROM outbox_delivery d "
            "JOIN outbox_event e ON e.position = d.event_id "
            "WHERE e.type = 'bench.RemotePing' AND e.payload->>'tag' = %s",
            [tag],
        ).fetchall()
    latencies = [1000.0 * (at.timestamp() - commits[seq]) for seq, at in rows if seq in commits]
    if not commits or not rows:
        return latencies, []
    first = min(commits.values())
    seconds = [max(0, int(at.timestamp() - first)) for _, at in rows]
    return latencies, [seconds.count(n) for n in range(max(seconds) + 1)]


def _b_after_store(bench: Bench, database_url: str, tag: str) -> dict:
    """B's own outbox path, per event of ``tag``: ms from its delivery's creation (the
    consumer's store) to the relay's claim of it (``dispatched_at``), from that claim to its
    handler's start, and how many handlers started in each whole second since A's first
    commit (below the producer's rate while it runs: B's relay and worker fall behind)."""
    import psycopg

    commits = bench.stamps(f"bench:commit:{tag}")
    starts = bench.starts(tag)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT (e.payload->>'ping_id')::int, d.created_at, d.dispatched_at "
            "FROM outbox_delivery d JOIN outbox_event e ON e.position = d.event_id "
            "WHERE e.type = 'bench.RemotePing' AND e.payload->>'tag' = %s",
            [tag],
        ).fetchall()
    claimed = [1000.0 * (at.timestamp() - created.timestamp()) for _, created, at in rows if at]
    to_start = [
        1000.0 * (starts[seq] - at.timestamp()) for seq, _, at in rows if at and seq in starts
    ]
    per_second: list[int] = []
    if commits and starts:
        first = min(commits.values())
        seconds = [max(0, int(t - first)) for t in starts.values()]
        per_second = [seconds.count(n) for n in range(max(seconds) + 1)]
    return {
        "b_store_to_claim_p50_ms": percentile(claimed, 50) if claimed else None,
        "b_store_to_claim_p99_ms": percentile(claimed, 99) if claimed else None,
        "b_claim_to_handler_p50_ms": percentile(to_start, 50) if to_start else None,
        "b_claim_to_handler_p99_ms": percentile(to_start, 99) if to_start else None,
        "b_handled_per_second": per_second,
    }


def _wait_starts(side: ServiceSide, tag: str, count: int) -> None:
    from bench.measure import wait_for

    wait_for(
        lambda: side.r.hlen(f"bench:start:{tag}") >= count,
        timeout=120,
        what=f"{count} handler starts on service B ({tag})",
        alive=side.check_alive,
    )


def cross_database_latency(bench: Bench, run: int) -> dict:
    """Scenario ``bus_latency``: p50/p95/p99 from A's commit to B's handler, on each broker.
    A broker that is not reachable is an error of its own; the other is still measured."""
    import os

    figures, details, errors = {}, {}, {}
    ok = True
    for broker, url in bus_scenarios.BROKERS.items():
        url = os.environ.get(f"BENCH_{broker.upper()}_URL", url)
        bench.reset()
        if not bus_scenarios.broker_reachable(url):
            errors[broker] = f"{url} not reachable"
            for p in (50, 95, 99):
                figures[f"{broker}_p{p}"] = figures[f"{broker}_idle_p{p}"] = None
            ok = False
            continue
        outcome = _one_broker(bench, run, broker, url)
        figures.update(outcome["figures"])
        details[broker] = outcome["details"]
        ok = ok and outcome["checks_ok"]
    if errors:
        details["errors"] = errors
    return {"figures": figures, "details": details, "checks_ok": ok}
