"""The chaos tests' marks (the ``chaos`` marker, registered in pyproject.toml: ``pytest -m "not
chaos"`` leaves out their few minutes), and what they do when a server binary they need is not
installed. The marker is registered there, not here: ``CHAOS_TEST`` uses it when this file is
imported, which in a run of the whole suite is after pytest has checked its markers."""

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
# A chaos test: its marker, a generous limit, and only in the PostgreSQL + Redis pass.
CHAOS_TEST = [
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
    """Skipped on a machine without it; in CI a failure, never a skip."""
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def require_servers(*more) -> None:
    """The binaries a chaos run starts servers of its own with: redis-server, PostgreSQL's, and
    ``more`` (functions that raise RuntimeError when theirs is missing)."""
    if not shutil.which("redis-server"):
        skip_or_fail("redis-server is not installed: the chaos run starts a Redis of its own")
    for needed in (postgres_bindir, *more):
        try:
            needed()
        except RuntimeError as exc:
            skip_or_fail(f"{exc}: the chaos run starts a server of its own")


def chaos_run(tmp_path: Path, *options: str) -> tuple[int, dict, str]:
    """``scripts/chaos.py`` with ``options``, its run folder in ``tmp_path``: (exit code,
    summary.json, where to look: the logs' folder and the end of what it printed)."""
    run_dir = tmp_path / "chaos"
    output = tmp_path / "chaos.out"
    command = [sys.executable, str(REPO / "scripts" / "chaos.py"), *options]
    with output.open("wb") as out:
        code = subprocess.call(
            [*command, f"--run-dir={run_dir}"], cwd=REPO, stdout=out, stderr=subprocess.STDOUT
        )
    printed = output.read_text(errors="replace")
    summary_file = run_dir / "summary.json"
    assert summary_file.exists(), f"no summary; output:\n{printed[-6000:]}"
    return code, json.loads(summary_file.read_text()), f"\n(logs in {run_dir})\n{printed[-6000:]}"


def assert_clean(code: int, summary: dict, where: str, *, orders: int, faults: set[str]) -> None:
    """No violation, every order acknowledged, quiet reached, every fault kind injected."""
    assert summary["violations"] == [], where
    assert code == 0, where
    assert summary["acknowledged"] == orders, where
    assert summary["quiet"] is True, where
    assert set(summary["faults_injected"]) >= faults, where
