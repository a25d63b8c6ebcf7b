"""The short chaos run: the Procfile's real processes on PostgreSQL + a private Redis, a few
hundred orders over HTTP, every fault at least once, and every invariant checked afterwards.

It runs in the PostgreSQL + Redis pass of `make test` (skipped on SQLite, where the processes
would not share a database worth attacking); where PostgreSQL or Redis is not reachable the
session fixtures skip it, or fail it when CI is set. The long version is `make chaos`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings

from tests.support import IN_CI

REPO = Path(__file__).resolve().parents[2]
# Every fault of the default plan; --restart-postgres (the machine's server) is left to people.
FAULTS = {
    "kill-worker",
    "kill-worker-child",
    "kill-relay-beat",
    "restart-redis",
    "flush-redis",
    "restart-web",
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


def postgres_server_url() -> str:
    """The server of the suite's PostgreSQL settings; the run creates its own database there."""
    db = settings.DATABASES["default"]
    auth = quote(db["USER"] or "postgres", safe="")
    if db["PASSWORD"]:
        auth += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/postgres"


def test_short_chaos_run_loses_nothing(tmp_path):
    if not shutil.which("redis-server"):
        message = "redis-server is not installed: the chaos run starts a Redis of its own"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
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
        f"--postgres-url={postgres_server_url()}",
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
    # Exactly-once measured: the counting subscribers took part, each effect counted once.
    (counted,) = [row for row in summary["rows"] if row[0].startswith("counted effects")]
    assert counted[2] is True, where
