"""No test can hang the suite (tests/exit_guard.py): pytest runs, in a process of its own, on
scratch tests that hang or leave a thread or a process behind, and every run ends, failed, with
a traceback or a report, within a bound."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOUND_SECONDS = 90  # far above what each run needs (seconds); only a hang comes near it

INI = """\
[pytest]
addopts = -p pytest_timeout -p tests.exit_guard -p no:cacheprovider
timeout = 60
timeout_method = signal
exit_guard_grace_seconds = 1
exit_guard_watchdog_margin_seconds = 2
"""


def pytest_run(tmp_path: Path, tests: str) -> subprocess.CompletedProcess:
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "test_scratch.py").write_text(textwrap.dedent(tests))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST_"))}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # a bare pytest: quick to start
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-rA", "test_scratch.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=BOUND_SECONDS,  # raises if the run outlives the bound: the test fails
    )


def test_a_hung_test_fails_with_its_traceback_and_the_run_goes_on(tmp_path):
    run = pytest_run(
        tmp_path,
        """
        import time
        import pytest

        @pytest.mark.timeout(1)
        def test_hangs():
            time.sleep(600)

        def test_after():
            pass
        """,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Timeout" in run.stdout and "time.sleep(600)" in run.stdout
    assert "1 failed, 1 passed" in run.stdout


def test_a_thread_or_process_left_behind_fails_the_run_and_cannot_keep_it_alive(tmp_path):
    run = pytest_run(
        tmp_path,
        """
        import subprocess
        import threading

        def test_leaves_a_thread():
            threading.Thread(target=threading.Event().wait, name="forever").start()

        def test_leaves_a_process():
            subprocess.Popen(["sleep", "600"])
        """,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "2 passed" in run.stdout
    assert "thread 'forever' (not a daemon)" in run.stdout
    assert "child process" in run.stdout and "sleep 600" in run.stdout


def test_a_hang_the_timeout_cannot_interrupt_ends_the_process(tmp_path):
    run = pytest_run(
        tmp_path,
        """
        import signal
        import time
        import pytest

        @pytest.mark.timeout(1)
        def test_deaf_to_the_alarm():
            signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])  # as a stuck C call is
            time.sleep(600)
        """,
    )
    assert run.returncode != 0, run.stdout + run.stderr
    assert "Timeout" in run.stderr and "test_deaf_to_the_alarm" in run.stderr


def test_the_suite_runs_with_both_of_its_guards(request):
    """tests/conftest.py loads the exit guard and the leftovers check: a second
    ``pytest_plugins = ...`` once replaced the first, and the suite ran without its exit guard."""
    manager = request.config.pluginmanager
    assert manager.has_plugin("tests.exit_guard")
    assert manager.has_plugin("tests.leftovers")
