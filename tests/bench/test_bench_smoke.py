"""`bench/run.py --smoke` proves the benchmark harness works: every scenario, real processes.

It runs in the PostgreSQL + Redis pass only (the benchmark needs both); there it fails in CI
when either is unreachable, like every other test of that pass.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, urlparse, urlunparse

import pytest
from django.conf import settings

from bench.bus_scenarios import BROKERS
from bench.report import FIGURES, SPLIT_KEYS
from tests.support import require_service

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = {
    "publish",
    "relay",
    "e2e",
    "saga",
    "latency",
    "memory",
    "bus",
    "bus_latency",
    "saga_split",
}
# pytest-env's settings for the suite; the benchmark runs on the shop's own defaults.
SUITE_ONLY_ENV = {
    "SHOP_TEST_APPS",
    "DATABASE_CONN_MAX_AGE",
    "OUTBOX_BACKOFF_BASE_SECONDS",
    "OUTBOX_BACKOFF_CAP_SECONDS",
    "SHOP_BROKER_POLLING_INTERVAL",
    "DATABASE_URL",
    "CELERY_BROKER_URL",
}


def _postgres_server() -> str:
    db = settings.DATABASES["default"]
    auth = quote(db["USER"] or "postgres")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"])
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"


def _redis_for_bench() -> str:
    # A database of the benchmark's own (it flushes it), on the suite's Redis server; not the
    # 13 that a full `make bench` uses by default, so both can run at once.
    default = urlunparse(urlparse(settings.CELERY_BROKER_URL)._replace(path="/12"))
    return os.environ.get("BENCH_SMOKE_REDIS_URL", default)


# A few minutes on a quiet machine; 11 on this one with its load average at 13.
@pytest.mark.timeout(1020)
def test_smoke_run_measures_every_scenario_and_writes_the_json(tmp_path):
    if not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        pytest.skip("the benchmark runs on PostgreSQL + Redis (the second pass of make test)")
    if not settings.CELERY_BROKER_URL.startswith("redis://"):
        pytest.skip("the benchmark runs on PostgreSQL + Redis (the second pass of make test)")
    postgres, redis = _postgres_server(), _redis_for_bench()
    require_service(postgres, "PostgreSQL")
    require_service(redis, "Redis")
    # The scenario "bus" measures both brokers.
    require_service(BROKERS["nats"], "NATS")
    require_service(BROKERS["rabbitmq"], "RabbitMQ")
    output = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if k not in SUITE_ONLY_ENV}
    # Scenarios "bus_latency" and "saga_split": the consuming (payments) service's Celery
    # broker, a Redis database of its own.
    env.setdefault("BENCH_BUS_CONSUMER_REDIS_URL", urlunparse(urlparse(redis)._replace(path="/11")))
    # Scenario "saga_split" over RabbitMQ alone: the split saga over NATS is tests/split's, and
    # each broker costs this test a deployment of twelve processes and two databases.
    env.setdefault("BENCH_SPLIT_BROKERS", "rabbitmq")

    command = [sys.executable, "bench/run.py", "--smoke", "--output", str(output)]
    command += ["--postgres-url", postgres, "--redis-url", redis]
    bench = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        stdout, stderr = bench.communicate(timeout=900)
    finally:
        if bench.poll() is None:
            # SIGTERM: the harness stops its processes and drops its database, then exits.
            bench.terminate()
            try:
                bench.communicate(timeout=90)
            except subprocess.TimeoutExpired:
                bench.kill()
                bench.communicate()

    assert bench.returncode == 0, f"{stdout[-4000:]}\n{stderr[-4000:]}"
    assert "met?" in stdout  # the table was printed
    report = json.loads(output.read_text())
    assert set(report["scenarios"]) == SCENARIOS
    for name, scenario in report["scenarios"].items():
        assert scenario["errors"] == [], name
        assert len(scenario["runs"]) == 1, name
        assert scenario["checks_ok"], name
    missing = [row["key"] for row in report["table"] if row["median"] is None]
    assert missing == []
    # Every figure of every scenario has its row, but the split saga's over the brokers left out.
    left_out = {
        f"{broker}_{key}"
        for broker in set(BROKERS) - set(env["BENCH_SPLIT_BROKERS"].split(","))
        for key in SPLIT_KEYS
    }
    expected = [(s, key) for s, key, *_ in FIGURES if not (s == "saga_split" and key in left_out)]
    assert [(row["scenario"], row["key"]) for row in report["table"]] == expected
    machine = report["machine"]
    assert machine["postgresql"]["synchronous_commit"]
    assert machine["nproc"] >= 1
    assert machine["outbox"]["RELAY_BATCH_SIZE"] >= 1
