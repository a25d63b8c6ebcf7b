"""A pytest plugin: no test can hang the suite, and nothing a test leaves behind keeps it alive.

Three bounds, from the inside out:

1. pytest-timeout (``timeout`` in pyproject.toml, method ``signal``) fails a test that runs too
   long with the traceback of where it hung, and the run goes on with the next test.
2. A hang the signal cannot interrupt (a C call that never returns to the interpreter) is ended
   by a watchdog armed for each test a little past its timeout: :mod:`faulthandler` prints every
   thread's traceback to the real stderr and ends the process with status 1.
3. At the end of the session, child processes still running are reported and ended (SIGTERM,
   then SIGKILL), and threads that are not daemons are given a few seconds to end; what is left
   fails the run. If such a thread still runs once pytest has reported, the process ends with
   ``os._exit`` and the run's status instead of waiting for the thread forever, as the
   interpreter's own exit would.

``tests/conftest.py`` loads it for the suite; ``tests/shop/test_exit_guard.py`` runs pytest on
scratch tests that hang or leave a thread or a process behind, and checks each run ends, failed,
within a bound.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time

import psutil
import pytest

_stderr_fd: int | None = None
_exit_status: int = 0
# Children ended before the session's end (children_end_now), named with the others at its end.
_ended_early: list[str] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "exit_guard_grace_seconds",
        "seconds leftover threads and processes get to end by themselves after the session",
        default="5",
    )
    parser.addini(
        "exit_guard_watchdog_margin_seconds",
        "seconds past a test's timeout before the watchdog ends the whole process",
        default="30",
    )


def _ini_seconds(config: pytest.Config, name: str) -> float:
    return float(config.getini(name))


def _timeout_of(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    if marker is not None and "timeout" in marker.kwargs:
        return float(marker.kwargs["timeout"])
    try:
        return float(item.config.getini("timeout") or 0)
    except ValueError:
        return 0.0


def pytest_configure(config: pytest.Config) -> None:
    global _stderr_fd
    # Output capture replaces fd 2 while a test runs; the watchdog writes to the real stderr.
    if _stderr_fd is None:
        _stderr_fd = os.dup(sys.stderr.fileno())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem):
    timeout = _timeout_of(item)
    if timeout > 0 and _stderr_fd is not None:
        margin = _ini_seconds(item.config, "exit_guard_watchdog_margin_seconds")
        faulthandler.dump_traceback_later(timeout + margin, exit=True, file=_stderr_fd)
    try:
        yield
    finally:
        if timeout > 0:
            faulthandler.cancel_dump_traceback_later()


def _live_threads() -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t is not threading.main_thread() and not t.daemon and t.is_alive()
    ]


def _helper_pids() -> set[int]:
    """multiprocessing's resource tracker: started once per process, it ends with it."""
    from multiprocessing import resource_tracker

    pid = getattr(resource_tracker._resource_tracker, "_pid", None)
    return {pid} if pid else set()


def _children_end(grace: float) -> list[str]:
    """End this process's children (they would outlive the run, or keep it waiting for them)."""
    helpers = _helper_pids()
    children = [c for c in psutil.Process().children(recursive=True) if c.pid not in helpers]
    named = []
    for child in children:
        try:
            named.append(f"pid {child.pid}: {' '.join(child.cmdline())[:200]}")
            child.terminate()
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs(children, timeout=grace)
    for child in alive:
        try:
            child.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(alive, timeout=grace)
    return named


def children_end_now() -> None:
    """End the children still running now, and name them at the session's end: called before
    the test database is dropped (tests/conftest.py), which a child's connection would block."""
    _ended_early.extend(_children_end(grace=5.0))


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Runs after the session's fixtures are torn down: whatever still runs was left behind."""
    global _exit_status
    grace = _ini_seconds(session.config, "exit_guard_grace_seconds")
    ended = [*_ended_early, *_children_end(grace)]
    leftovers = [f"child process {name}" for name in ended]
    deadline = time.monotonic() + grace
    for thread in _live_threads():
        thread.join(max(0.0, deadline - time.monotonic()))
    leftovers += [f"thread {t.name!r} (not a daemon)" for t in _live_threads()]
    if leftovers:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = ["tests left these running after the session ended:", *leftovers]
        if reporter is not None:
            reporter.section("exit guard", sep="=", red=True, bold=True)
            for line in lines:
                reporter.line(line, red=True)
        else:
            print("\n".join(lines), file=sys.stderr)
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    _exit_status = int(session.exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """The last resort: the interpreter would wait for a thread that is not a daemon forever."""
    if _live_threads():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status or pytest.ExitCode.TESTS_FAILED)
