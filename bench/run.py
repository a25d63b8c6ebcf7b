"""`make bench`: the outbox's figures on PostgreSQL + Redis, one table, and a JSON file.

    .venv/bin/python bench/run.py                 # full sizes, 3 runs of each scenario
    .venv/bin/python bench/run.py --smoke         # tiny sizes, 1 run (CI)
    .venv/bin/python bench/run.py --size 0.2 --only e2e,latency --profile

It creates a database of its own (shop_bench_<random>) on --postgres-url, migrates it, uses a
Redis database of its own (--redis-url, flushed before each run of each scenario), starts the
real processes (relay, worker with 2 processes, beat, web) for each run, and drops the
database at the end. docs/benchmarks.md explains each figure.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import os
import platform
import secrets
import signal
import subprocess
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    BenchError,
    RedisDb,
    ServiceUnreachable,
    json_dump,
    pg_database_create,
    pg_database_drop,
    pg_database_url,
    service_check,
    summary,
)

DEFAULT_POSTGRES = "postgres://postgres@127.0.0.1:5432"
DEFAULT_REDIS = "redis://127.0.0.1:6379/13"

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
    ("saga", "paced_lat_p50", "service @{saga_paced_rate:g}/s: p50", "ms", None),
    ("saga", "paced_lat_p95", "service @{saga_paced_rate:g}/s: p95", "ms", None),
    ("saga", "paced_lat_p99", "service @{saga_paced_rate:g}/s: p99", "ms", ("<=", 1000)),
    ("saga", "http_rate", "HTTP: orders/s to terminal ({saga_http})", "/s", None),
    ("saga", "http_lat_p50", "HTTP burst: p50", "ms", None),
    ("saga", "http_lat_p95", "HTTP burst: p95", "ms", None),
    ("saga", "http_lat_p99", "HTTP burst: p99", "ms", None),
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
]
SCENARIO_TITLES = {
    "publish": "1 publish",
    "relay": "2 relay",
    "e2e": "3 end-to-end",
    "saga": "4 saga",
    "latency": "5 latency",
    "memory": "6 memory",
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny fixed sizes, 1 run each (CI)")
    p.add_argument("--size", type=float, default=None, help="scale every size (default 1)")
    p.add_argument("--runs", type=int, default=None, help="runs per scenario (default 3)")
    p.add_argument("--only", default="", help="some of: " + ",".join(SCENARIO_TITLES))
    p.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES),
        help="server where shop_bench_<random> is created and dropped",
    )
    p.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS),
        help="a Redis database of the bench's own: it is flushed",
    )
    p.add_argument("--producers", type=int, default=2, help="load-producing processes")
    p.add_argument(
        "--concurrency",
        type=int,
        default=int(os.environ.get("WORKER_CONCURRENCY") or 2),
        help="the worker's prefork processes",
    )
    p.add_argument("--web-workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY") or 2))
    p.add_argument(
        "--settings",
        default="shop.settings",
        help="settings module for every process: an A/B experiment such as\n"
        "bench.experiments.new_connection_per_task (default shop.settings)",
    )
    p.add_argument("--profile", action="store_true", help="py-spy the relay and worker")
    p.add_argument("--output", type=Path, default=None, help="JSON path (var/bench/<ts>.json)")
    p.add_argument("--note", default="", help="free text stored with the figures")
    args = p.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.smoke else 3
    if args.smoke and args.size is not None:
        p.error("--smoke has its own sizes; leave out --size")
    if args.size is None:
        args.size = 1.0
    unknown = {s for s in args.only.split(",") if s} - set(SCENARIO_TITLES)
    if unknown:
        p.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return args


def child_env(
    *, database_url: str, redis_url: str, run_dir: Path, settings: str = "shop.settings"
) -> dict:
    """What every process of the system gets: the bench's database, broker and app, and the
    production switches (debug off) unless the caller's environment says otherwise."""
    env = dict(os.environ)
    env.pop("SHOP_TEST_APPS", None)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": settings,
            "DATABASE_URL": database_url,
            "CELERY_BROKER_URL": redis_url,
            "SHOP_BENCH_APPS": "1",
            "BENCH_RECORD_REDIS_URL": redis_url,
            # Its own metrics folder: never another run's, never wiped under someone else.
            "PROMETHEUS_MULTIPROC_DIR": str(run_dir / "prometheus"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.setdefault("DJANGO_DEBUG", "0")
    if env["DJANGO_DEBUG"] in ("0", "false", "no", "off"):
        env.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(60))
        env.setdefault("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost")
        env.setdefault("DJANGO_SECURE_SSL_REDIRECT", "0")
    return env


def machine_facts(args, redis_client) -> dict:
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
        "processes": {
            "worker": f"celery worker --pool prefork --concurrency {args.concurrency}",
            "relay": "celery worker --queues outbox --pool solo",
            "beat": "celery beat (django-celery-beat), relay tick 1 s",
            "web": f"gunicorn shop.wsgi --workers {args.web_workers}",
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
        runs = [r["figures"].get(key) for r in results.get(scenario, {}).get("runs", [])]
        if scenario not in results:
            continue
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
        return f"{value:,.0f}"
    if unit == "x":
        return f"{value:.2f}"
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
                f"{row['figure']} [{unit}]",
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


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    from bench.scenarios import SCENARIOS, Sizes

    try:
        service_facts = service_check(args.postgres_url, args.redis_url)
    except ServiceUnreachable as exc:
        print(
            f"bench: cannot run, a service is not reachable:\n{exc}\n"
            "Start PostgreSQL and Redis (see README), or point --postgres-url / --redis-url "
            "(BENCH_POSTGRES_URL / BENCH_REDIS_URL) at them.",
            file=sys.stderr,
        )
        return 1

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = ROOT / "var" / "bench"
    run_dir = out_dir / stamp
    run_dir.mkdir(parents=True, exist_ok=True)
    output = args.output or out_dir / f"{stamp}.json"
    sizes = Sizes.smoke() if args.smoke else Sizes().scaled(args.size)
    selected = [s for s in SCENARIO_TITLES if not args.only or s in args.only.split(",")]

    redis_db = RedisDb(args.redis_url, out_dir)
    db_name = None
    bench = None
    results: dict = {}
    report: dict = {}
    failed = interrupted = False

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        redis_db.acquire()
        db_name = pg_database_create(args.postgres_url)
        database_url = pg_database_url(args.postgres_url, db_name)
        env = child_env(
            database_url=database_url,
            redis_url=args.redis_url,
            run_dir=run_dir,
            settings=args.settings,
        )
        os.environ.update(env)
        os.environ.pop("SHOP_TEST_APPS", None)
        say(f"database {db_name}, Redis {args.redis_url}, logs in {run_dir}")
        (run_dir / "logs").mkdir(exist_ok=True)
        with open(run_dir / "logs" / "migrate.log", "wb") as log:
            migrated = subprocess.run(
                [sys.executable, "manage.py", "migrate", "--noinput"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=600,
            )
        if migrated.returncode:
            raise BenchError(f"migrate failed; see {run_dir / 'logs' / 'migrate.log'}")

        import django

        django.setup()
        import logging

        logging.getLogger().setLevel(logging.WARNING)
        from bench.scenarios import Bench

        profile_dir = None
        if args.profile:
            profile_dir = run_dir / "profile"
            profile_dir.mkdir(exist_ok=True)
        bench = Bench(
            env=env,
            run_dir=run_dir,
            redis_db=redis_db,
            sizes=sizes,
            producers=args.producers,
            concurrency=args.concurrency,
            web_workers=args.web_workers,
            profile_dir=profile_dir,
        )
        report = {
            "started_at": stamp,
            "argv": sys.argv[1:],
            "smoke": args.smoke,
            "size": args.size,
            "runs": args.runs,
            "sizes": dataclasses.asdict(sizes),
            "note": args.note,
            "settings_module": args.settings,
            # py-spy samples the processes: the figures of a profiled run are not comparable.
            "profiled": args.profile,
            "machine": {**machine_facts(args, redis_db.client), **service_facts},
            "logs": str(run_dir),
        }
        for scenario in selected:
            results[scenario] = {"runs": [], "errors": [], "checks_ok": True}
            for run in range(args.runs):
                say(f"{SCENARIO_TITLES[scenario]}: run {run + 1}/{args.runs}")
                began = time.monotonic()
                try:
                    outcome = SCENARIOS[scenario](bench, run)
                except BenchError as exc:
                    failed = True
                    say(f"{scenario} run {run + 1} failed: {exc}")
                    results[scenario]["errors"].append(str(exc))
                    bench.stop()
                    continue
                except Exception:
                    failed = True
                    text = traceback.format_exc()
                    say(f"{scenario} run {run + 1} crashed:\n{text}")
                    results[scenario]["errors"].append(text)
                    bench.stop()
                    continue
                outcome["seconds"] = round(time.monotonic() - began, 1)
                outcome["loadavg_1m"] = os.getloadavg()[0]
                if outcome.get("checks_ok") is False:
                    results[scenario]["checks_ok"] = False
                    say(f"{scenario} run {run + 1}: a correctness check failed (see the JSON)")
                results[scenario]["runs"].append(outcome)
                shown = ", ".join(
                    f"{k}={v:.4g}" for k, v in outcome["figures"].items() if v is not None
                )
                say(f"  {shown}")
            if not results[scenario]["checks_ok"]:
                failed = True
            # After each scenario, so that an interrupted long run keeps what it measured.
            json_dump(output, {**report, "table": aggregate(results, sizes), "scenarios": results})
    except KeyboardInterrupt:
        failed = interrupted = True
        say("interrupted: the figures measured so far are kept")
    except (BenchError, ServiceUnreachable) as exc:
        failed = True
        say(str(exc))
    finally:
        if bench is not None:
            bench.stop()
        if db_name is not None:
            with contextlib.suppress(Exception):
                from django.db import connections

                connections.close_all()
            try:
                pg_database_drop(args.postgres_url, db_name)
            except Exception as exc:
                say(f"could not drop database {db_name}: {exc}")
        redis_db.release()

    if not report:
        return 1
    rows = aggregate(results, sizes)
    report.update(
        {
            "finished_at": dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ"),
            "loadavg_at_end": os.getloadavg(),
            "table": rows,
            "scenarios": results,
            "complete": set(results) == set(selected) and not interrupted,
            "ok": not failed,
        }
    )
    if args.profile and bench is not None and bench.profile_dir is not None:
        from bench.profile import summarise_dir

        report["profile"] = summarise_dir(bench.profile_dir)
    json_dump(output, report)
    title = (
        f"Outbox benchmark ({'smoke sizes' if args.smoke else f'size {args.size:g}'}, "
        f"{args.runs} run{'s' if args.runs > 1 else ''} each; median, min, max"
        f"{'; PROFILED, figures perturbed' if args.profile else ''}"
        f"{'; settings ' + args.settings if args.settings != 'shop.settings' else ''})"
    )
    print(f"\n{title}\n\n{table(rows)}\n")
    for scenario, outcome in results.items():
        for error in outcome["errors"]:
            print(f"{scenario}: ERROR {error.strip().splitlines()[-1]}")
        if not outcome["checks_ok"]:
            print(f"{scenario}: a correctness check failed; see the JSON")
    print(f"figures and machine facts: {output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
