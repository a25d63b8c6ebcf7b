"""Helpers of the crash tests: run a worker or relay in a child process of its own (so that it
can really be killed), count the counting subscribers' runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from django.db import connection, transaction

from outbox import publish
from outbox.models import Delivery
from shop.celery import app as celery_app
from tests.testapp.events import Counted
from tests.testapp.models import HandlerRun

ROOT = Path(__file__).resolve().parents[2]
COUNTERS = ("tests.count_one", "tests.count_two")
KILLED = -signal.SIGKILL


def counted_publish(n: int = 1) -> list:
    """``n`` Counted events, committed; returns the stored events."""
    with transaction.atomic():
        return [publish(Counted(thing_id=f"t{i}")) for i in range(n)]


def runs_per_event(events) -> dict[tuple[str, str], int]:
    """(event id, subscriber) -> committed runs, for every counting subscriber of ``events``."""
    counted = Counter(HandlerRun.objects.values_list("event_id", "subscriber"))
    return {(str(e.event_id), sub): counted[(e.event_id, sub)] for e in events for sub in COUNTERS}


def exactly_once(events) -> dict:
    return dict.fromkeys(runs_per_event(events), 1)


def delivery_of(event, subscriber: str = COUNTERS[0]) -> Delivery:
    return Delivery.objects.get(event=event, subscriber=subscriber)


def _env(fault: str, folder: Path | None, lease_seconds: float) -> dict:
    return {
        **os.environ,
        "SHOP_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
        "SHOP_TEST_BROKER_OPTIONS": json.dumps(celery_app.conf.broker_transport_options or {}),
        "SHOP_TEST_FAULT": fault,
        "SHOP_TEST_FAULT_DIR": str(folder or ""),
        "OUTBOX_LEASE_SECONDS": str(lease_seconds),
    }


def child_run(*args: str, fault: str = "", lease_seconds: float = 1.0):
    """Run the child to its end (or its death); returns (return code, last line printed)."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.outbox.crash_child", *args],
        cwd=ROOT,
        env=_env(fault, None, lease_seconds),
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = done.stdout.strip().splitlines()
    assert done.returncode in (0, KILLED), done.stderr[-3000:]
    return done.returncode, (lines[-1] if lines else "")


class child_held:
    """The child, stopped at the ``hold@POINT`` fault until ``release()``; ``finish()`` waits for
    its end and returns its last line."""

    def __init__(self, *args: str, point: str, folder: Path, lease_seconds: float = 1.0):
        self.folder = folder
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.outbox.crash_child", *args],
            cwd=ROOT,
            env=_env(f"hold@{point}", folder, lease_seconds),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def __enter__(self):
        deadline = time.monotonic() + 60
        while not (self.folder / "reached").exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                _out, err = self.process.communicate()
                raise AssertionError(f"the child never reached its fault point: {err[-3000:]}")
            time.sleep(0.01)
        return self

    def release(self) -> None:
        (self.folder / "release").touch()

    def finish(self) -> str:
        self.release()
        out, err = self.process.communicate(timeout=120)
        assert self.process.returncode == 0, err[-3000:]
        return out.strip().splitlines()[-1]

    def __exit__(self, *exc):
        if self.process.poll() is None:
            self.release()
            try:
                self.process.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.communicate()
