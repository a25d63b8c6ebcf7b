"""The short chaos run: the Procfile's real processes on a private PostgreSQL cluster (through
the latency proxy) and a private Redis, a few hundred orders over HTTP (a fifth of them
cancelled by their customer), every fault at least once (the database's restart, crash and
slowness included), and every invariant checked afterwards.

It runs in the PostgreSQL + Redis pass of `make test` (skipped on SQLite, where the processes
would not share a database worth attacking); where PostgreSQL's server binaries or
redis-server are not installed it is skipped, or fails when CI is set. The long version is
`make chaos`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from harness.services import postgres_bindir
from tests.support import IN_CI

REPO = Path(__file__).resolve().parents[2]
# Every fault of the default plan: the private cluster is restarted, crashed and slowed.
FAULTS = {
    "kill-worker",
    "kill-worker-child",
    "kill-relay-beat",
    "restart-redis",
    "flush-redis",
    "restart-web",
    "restart-postgres",
    "crash-postgres",
    "slow-postgres",
}
ORDERS = 250

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.e2e,
    pytest.mark.postgres,
    pytest.mark.timeout(480),
    pytest.mark.skipif(
        not settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
        or not settings.CELERY_BROKER_URL.startswith("redis://"),
        reason="runs in the PostgreSQL + Redis pass",
    ),
]


def skip_or_fail(message: str) -> None:
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def test_short_chaos_run_loses_nothing(tmp_path, monkeypatch):
    if not shutil.which("redis-server"):
        skip_or_fail("redis-server is not installed: the chaos run starts a Redis of its own")
    try:
        postgres_bindir()
    except RuntimeError as exc:
        skip_or_fail(f"{exc}: the chaos run starts a PostgreSQL cluster of its own")
    monkeypatch.delenv("CHAOS_POSTGRES_URL", raising=False)
    run_dir = tmp_path / "chaos"
    output = tmp_path / "chaos.out"
    command = [
        sys.executable,
        str(REPO / "scripts" / "chaos.py"),
        f"--orders={ORDERS}",
        "--load-seconds=40",
        "--quiet-timeout=180",
        "--timeout=420",
        "--api-sample=50",
        f"--run-dir={run_dir}",
    ]
    with output.open("wb") as out:
        code = subprocess.call(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    printed = output.read_text(errors="replace")
    summary_file = run_dir / "summary.json"
    assert summary_file.exists(), f"no summary; output:\n{printed[-6000:]}"
    summary = json.loads(summary_file.read_text())
    where = f"\n(logs in {run_dir})\n{printed[-6000:]}"

    assert summary["violations"] == [], where
    assert code == 0, where
    assert summary["acknowledged"] == ORDERS, where
    assert summary["quiet"] is True, where
    assert set(summary["faults_injected"]) >= FAULTS, where
    assert summary["postgres"] == "private cluster", where
    assert summary["requests_timed_out_during_database_faults"] == 0, where
    assert {int(status) for status in summary["http_statuses"]} <= {200, 201, 202, 503}, where
    # About a fifth of the orders were cancelled by their customer, each cancel answered 202
    # (nothing is handed to the carrier in a chaos run, so no 409).
    assert summary["cancels_sent"] > ORDERS // 10, where
    assert set(summary["cancels_by_answer"]) == {"202"}, where
    # Exactly-once measured: the counting subscribers took part, each effect counted once.
    (counted,) = [row for row in summary["rows"] if row[0].startswith("counted effects")]
    assert counted[2] is True, where
