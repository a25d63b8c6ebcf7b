"""What the benchmark prints and writes: the figures' table, the JSON's facts about the machine."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import subprocess
import sys
from importlib import metadata

from bench.measure import summary
from bench.system import ROOT

# (scenario, figure key, label, unit, target): target is (">=" | "<=", value) or None.
FIGURES = [
    ("publish", "tx_without_ms", "tx: create order", "ms", None),
    ("publish", "tx_with_ms", "tx: create order + publish()", "ms", None),
    ("publish", "overhead_ms", "publish() overhead per event", "ms", None),
    ("publish", "ratio", "with / without", "x", ("<=", 1.5)),
    ("relay", "rate", "dispatched/s, {backlog} backlog", "/s", (">=", 5000)),
    ("e2e", "outbox_rate", "outbox deliveries/s ({e2e})", "/s", (">=", 1000)),
    ("e2e", "delay_rate", "plain .delay() tasks/s", "/s", None),
    ("e2e", "delay_on_commit_rate", "plain delay_on_commit tasks/s", "/s", None),
    ("e2e", "ratio_delay", "outbox / .delay()", "x", (">=", 2.0)),
    ("e2e", "ratio_on_commit", "outbox / delay_on_commit", "x", None),
    ("e2e", "outbox_worker_cpu_ms", "worker CPU per delivery", "ms", None),
    ("e2e", "delay_worker_cpu_ms", "worker CPU per plain task", "ms", None),
    ("saga", "service_rate", "service: orders/s to terminal ({saga_service})", "/s", (">=", 100)),
    ("saga", "service_lat_p50", "service burst: place->terminal p50", "ms", None),
    ("saga", "service_lat_p95", "service burst: p95", "ms", None),
    ("saga", "service_lat_p99", "service burst: p99", "ms", None),
    ("saga", "service_cpu_total_ms", "service: CPU per order, all processes", "ms", None),
    ("saga", "service_cpu_producer_ms", "service: CPU per order, producers", "ms", None),
    ("saga", "service_cpu_relay_ms", "service: CPU per order, relay", "ms", None),
    ("saga", "service_cpu_worker_ms", "service: CPU per order, worker", "ms", None),
    ("saga", "service_cpu_beat_ms", "service: CPU per order, beat", "ms", None),
    ("saga", "service_cpu_postgres_ms", "service: CPU per order, PostgreSQL", "ms", None),
    ("saga", "service_sql_per_order", "service: SQL statements per order", "", None),
    ("saga", "service_commits_per_order", "service: PostgreSQL commits per order", "", None),
    ("saga", "service_messages_per_order", "service: Celery messages per order", "", None),
    ("saga", "paced_lat_p50", "service @{saga_paced_rate:g}/s: p50", "ms", None),
    ("saga", "paced_lat_p95", "service @{saga_paced_rate:g}/s: p95", "ms", None),
    ("saga", "paced_lat_p99", "service @{saga_paced_rate:g}/s: p99", "ms", ("<=", 1000)),
    ("saga", "http_rate", "HTTP: orders/s to terminal ({saga_http})", "/s", None),
    ("saga", "http_lat_p50", "HTTP burst: p50", "ms", None),
    ("saga", "http_lat_p95", "HTTP burst: p95", "ms", None),
    ("saga", "http_lat_p99", "HTTP burst: p99", "ms", None),
    ("saga", "http_cpu_total_ms", "HTTP: CPU per order, all processes", "ms", None),
    ("saga", "http_cpu_web_ms", "HTTP: CPU per order, web", "ms", None),
    ("saga", "http_cpu_producer_ms", "HTTP: CPU per order, HTTP clients", "ms", None),
    ("saga", "http_cpu_postgres_ms", "HTTP: CPU per order, PostgreSQL", "ms", None),
    ("saga", "http_sql_per_order", "HTTP: SQL statements per order", "", None),
    ("saga", "http_commits_per_order", "HTTP: PostgreSQL commits per order", "", None),
    ("saga", "http_messages_per_order", "HTTP: Celery messages per order", "", None),
    ("latency", "steady_p50", "@{latency_rate:g}/s commit->handler p50", "ms", ("<=", 25)),
    ("latency", "steady_p95", "@{latency_rate:g}/s p95", "ms", None),
    ("latency", "steady_p99", "@{latency_rate:g}/s p99", "ms", ("<=", 150)),
    ("latency", "idle_p50", "idle, single event: p50", "ms", None),
    ("latency", "idle_p95", "idle: p95", "ms", None),
    ("latency", "idle_p99", "idle: p99", "ms", None),
    ("memory", "worker_start_mb", "worker RSS at start (all procs)", "MB", None),
    ("memory", "worker_end_mb", "worker RSS after {memory_events} events", "MB", None),
    ("memory", "worker_growth_pct", "worker RSS growth", "%", ("<=", 10)),
    ("memory", "relay_start_mb", "relay RSS at start", "MB", None),
    ("memory", "relay_end_mb", "relay RSS at end", "MB", None),
    ("memory", "relay_growth_pct", "relay RSS growth", "%", ("<=", 10)),
    ("memory", "sustained_rate", "deliveries/s over the long run", "/s", None),
    ("bus", "rabbitmq_rate", "RabbitMQ: confirmed/s, {backlog} backlog", "/s", (">=", 5000)),
    ("bus", "nats_rate", "NATS JetStream: confirmed/s, {backlog} backlog", "/s", (">=", 5000)),
    (
        "bus_latency",
        "rabbitmq_p50",
        "RabbitMQ @{latency_rate:g}/s A commit->B handler p50",
        "ms",
        ("<=", 50),
    ),
    ("bus_latency", "rabbitmq_p95", "RabbitMQ p95", "ms", None),
    ("bus_latency", "rabbitmq_p99", "RabbitMQ p99", "ms", ("<=", 250)),
    (
        "bus_latency",
        "nats_p50",
        "NATS @{latency_rate:g}/s A commit->B handler p50",
        "ms",
        ("<=", 50),
    ),
    ("bus_latency", "nats_p95", "NATS p95", "ms", None),
    ("bus_latency", "nats_p99", "NATS p99", "ms", ("<=", 250)),
    ("bus_latency", "rabbitmq_idle_p50", "RabbitMQ idle, single event: p50", "ms", None),
    ("bus_latency", "rabbitmq_idle_p99", "RabbitMQ idle: p99", "ms", None),
    ("bus_latency", "nats_idle_p50", "NATS idle, single event: p50", "ms", None),
    ("bus_latency", "nats_idle_p99", "NATS idle: p99", "ms", None),
]
# The saga on the split deployment (bench/saga_split.py), per broker: the monolith's figures
# (scenario 4's service burst and paced run) and CPU per order by service.
_SPLIT_FIGURES = [
    ("service_rate", "orders/s to terminal ({saga_service})", "/s"),
    ("service_lat_p50", "burst: place->terminal p50", "ms"),
    ("service_lat_p99", "burst: p99", "ms"),
    ("paced_lat_p50", "@{saga_paced_rate:g}/s: p50", "ms"),
    ("paced_lat_p99", "@{saga_paced_rate:g}/s: p99", "ms"),
    ("service_cpu_total_ms", "burst: CPU per order, all processes", "ms"),
    ("service_cpu_shop_ms", "burst: CPU per order, shop service", "ms"),
    ("service_cpu_payments_ms", "burst: CPU per order, payments service", "ms"),
    ("service_cpu_notifications_ms", "burst: CPU per order, notifications service", "ms"),
    ("service_cpu_producer_ms", "burst: CPU per order, producers", "ms"),
    ("service_cpu_postgres_ms", "burst: CPU per order, PostgreSQL (3 databases)", "ms"),
    ("service_commits_per_order", "burst: PostgreSQL commits per order (3 databases)", ""),
]
_BROKER_NAMES = {"rabbitmq": "RabbitMQ", "nats": "NATS"}
SPLIT_KEYS = [key for key, _label, _unit in _SPLIT_FIGURES]
FIGURES += [
    ("saga_split", f"{broker}_{key}", f"{name} {label}", unit, None)
    for broker, name in _BROKER_NAMES.items()
    for key, label, unit in _SPLIT_FIGURES
]
SCENARIO_TITLES = {
    "publish": "1 publish",
    "relay": "2 relay",
    "e2e": "3 end-to-end",
    "saga": "4 saga",
    "latency": "5 latency",
    "memory": "6 memory",
    "bus": "7 bus externalisation",
    "bus_latency": "8 bus cross-database latency",
    "saga_split": "9 saga, split deployment",
}


def machine_facts(args, redis_client, procfile) -> dict:
    from django.db import connection

    from outbox import metrics
    from outbox.conf import outbox_settings

    def read(path, prefix):
        with contextlib.suppress(OSError), open(path) as f:
            for line in f:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
        return None

    def show(name):
        with connection.cursor() as cursor:
            cursor.execute(f"SHOW {name}")
            return cursor.fetchone()[0]

    def version(dist):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    def git(*cmd):
        with contextlib.suppress(Exception):
            return subprocess.run(
                ["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        return None

    redis_config = {}
    for key in ("appendonly", "save"):
        with contextlib.suppress(Exception):
            redis_config.update(redis_client.config_get(key))
    info = redis_client.info("server")
    status = git("status", "--porcelain") or ""
    return {
        "hostname": platform.node(),
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": read("/proc/cpuinfo", "model name"),
        "memory_total": read("/proc/meminfo", "MemTotal"),
        "kernel": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
        "python": sys.version.split()[0],
        "packages": {
            d: version(d)
            for d in (
                "Django",
                "celery",
                "kombu",
                "redis",
                "psycopg",
                "djangorestframework",
                "gunicorn",
                "django-celery-beat",
                "prometheus-client",
                "structlog",
                "opentelemetry-sdk",
            )
        },
        "postgresql": {
            "version": show("server_version"),
            "synchronous_commit": show("synchronous_commit"),
            "fsync": show("fsync"),
            "shared_buffers": show("shared_buffers"),
            "max_connections": show("max_connections"),
            "wal_level": show("wal_level"),
        },
        "redis": {"version": info.get("redis_version"), **redis_config},
        # The Procfile's commands as the harness runs them, and what fills their variables.
        "processes": {
            **{name: t.command for name, t in procfile.types.items()},
            "WORKER_CONCURRENCY": args.concurrency,
            "WEB_CONCURRENCY": args.web_workers,
            "producers": args.producers,
        },
        "outbox": dataclasses.asdict(outbox_settings()),
        "environment": {
            k: os.environ.get(k)
            for k in (
                "DJANGO_DEBUG",
                "LOG_LEVEL",
                "LOG_FORMAT",
                "DATABASE_CONN_MAX_AGE",
                "WORKER_CONCURRENCY",
            )
        },
        "tracing_configured": any(k.startswith("OTEL_") for k in os.environ),
        "metrics_enabled": metrics.enabled,
        "git": {
            "head": git("rev-parse", "HEAD"),
            "uncommitted_files": len(status.splitlines()),
        },
    }


def aggregate(results: dict, sizes) -> list[dict]:
    names = dataclasses.asdict(sizes)
    rows = []
    for scenario, key, label, unit, target in FIGURES:
        measured = results.get(scenario, {}).get("runs", [])
        if scenario not in results:
            continue
        if measured and all(key not in r["figures"] for r in measured):
            # Not measured by choice (BENCH_SPLIT_BROKERS left a broker out); a figure that could
            # not be measured is there as None, and shows as "-".
            continue
        runs = [r["figures"].get(key) for r in measured]
        stats = summary([v for v in runs if v is not None])
        met = None
        if target is not None and stats["median"] is not None:
            op, value = target
            met = stats["median"] >= value if op == ">=" else stats["median"] <= value
        rows.append(
            {
                "scenario": scenario,
                "key": key,
                "figure": label.format(**names),
                "unit": unit,
                "runs": runs,
                **stats,
                "target": f"{target[0]} {target[1]:g}" if target else None,
                "met": met,
            }
        )
    return rows


def fmt(value, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "/s":
        # A loaded machine's saga runs a few orders a second: whole numbers would hide the ratio.
        return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"
    if unit == "x":
        return f"{value:.2f}"
    if unit == "":
        return f"{value:.1f}"
    if unit in ("ms", "MB", "%"):
        return f"{value:.1f}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:g}"


def table(rows: list[dict]) -> str:
    head = ("scenario", "figure", "median", "min", "max", "target", "met?")
    lines = []
    for row in rows:
        unit = row["unit"]
        gap = "" if unit in ("x", "%") else " "
        target = f"{row['target']}{gap}{unit}" if row["target"] else ""
        met = {True: "yes", False: "NO", None: "" if not row["target"] else "n/a"}[row["met"]]
        lines.append(
            (
                SCENARIO_TITLES[row["scenario"]],
                f"{row['figure']} [{unit}]" if unit else row["figure"],
                fmt(row["median"], unit),
                fmt(row["min"], unit),
                fmt(row["max"], unit),
                target,
                met,
            )
        )
    widths = [max(len(str(x[i])) for x in [head, *lines]) for i in range(len(head))]
    align = ["<", "<", ">", ">", ">", "<", "<"]

    def render(cells):
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths, strict=True))

    out = [render(head), "  ".join("-" * w for w in widths)]
    previous = None
    for line in lines:
        if previous is not None and line[0] != previous:
            out.append("")
        out.append(render(line if line[0] != previous else ("", *line[1:])))
        previous = line[0]
    return "\n".join(out)
