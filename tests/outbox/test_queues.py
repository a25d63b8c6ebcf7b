"""Queues come from the subscriber registry: an app that subscribes has a queue, every worker
started the Procfile's way consumes it, and no subscriber can take the relay's queue."""

from __future__ import annotations

import io
import os
import re
import subprocess
from pathlib import Path

import pytest
from django.core.management import call_command

from outbox import SubscriptionError, subscribe
from outbox.queues import RELAY_QUEUE
from outbox.registry import subscriber_queues, subscribers_all
from tests.testapp.events import ThingHappened

ROOT = Path(__file__).resolve().parent.parent.parent


def test_every_app_that_subscribes_has_its_queue_and_the_relay_has_its_own():
    apps = {s.handler.__module__.split(".")[0] for s in subscribers_all()}
    assert {"orders", "payments", "inventory", "shipping", "notifications", "tests"} <= apps
    assert subscriber_queues() == sorted(apps)
    assert RELAY_QUEUE not in subscriber_queues()


def test_the_command_prints_the_worker_queues_and_the_relays():
    out = io.StringIO()
    call_command("outbox_queues", stdout=out)
    assert out.getvalue().strip() == ",".join(subscriber_queues())
    out = io.StringIO()
    call_command("outbox_queues", "--relay", stdout=out)
    assert out.getvalue().strip() == RELAY_QUEUE


def test_the_procfile_worker_and_relay_take_their_queues_from_the_registry():
    """Run the substitution each Procfile line passes to --queues, in a shell, as honcho does."""
    procfile = dict(
        line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line
    )
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}
    for name, expected in (("worker", subscriber_queues()), ("relay", [RELAY_QUEUE])):
        pick = re.search(r'--queues ("\$\(python manage\.py outbox_queues[^)]*\)")', procfile[name])
        assert pick, f"the Procfile's {name} does not take its queues from manage.py outbox_queues"
        printed = subprocess.run(
            ["sh", "-c", f"echo {pick[1]}"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout.strip()
        assert printed.split(",") == expected


def test_a_worker_given_an_empty_queue_name_stops_at_once():
    """What a worker of the Procfile gets when manage.py outbox_queues fails."""
    run = subprocess.run(
        [
            ROOT / ".venv" / "bin" / "celery",
            "-A",
            "shop",
            "worker",
            "--queues",
            "",
            "--pool",
            "solo",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    assert "empty queue name" in run.stdout + run.stderr


def test_a_subscriber_cannot_take_the_relays_queue():
    with pytest.raises(SubscriptionError, match="relay"):

        @subscribe(ThingHappened, name="tests.on_relay_queue", queue=RELAY_QUEUE)
        def on_relay_queue(event):  # pragma: no cover
            pass
