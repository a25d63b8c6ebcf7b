"""outbox_status shows how old the relay's and beat's heartbeats are, and which are stale."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from django.core.management import call_command
from django.utils import timezone

from outbox.models import Heartbeat

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = io.StringIO()
    call_command("outbox_status", *args, stdout=out)
    return out.getvalue()


def test_heartbeat_ages_and_staleness_are_shown():
    Heartbeat.objects.create(name="relay", beat_at=timezone.now() - dt.timedelta(seconds=3))
    out = run()
    assert "heartbeats (stale after 30s):" in out
    relay = next(line for line in out.splitlines() if line.strip().startswith("relay"))
    beat = next(line for line in out.splitlines() if line.strip().startswith("beat"))
    assert "s ago" in relay and relay.rstrip().endswith("ok")
    assert "never seen" in beat and "STALE" in beat and "celery beat" in beat
    assert json.loads(run("--json"))["heartbeats_stale"] == ["beat"]


def test_an_old_relay_heartbeat_is_stale():
    now = timezone.now()
    Heartbeat.objects.create(name="relay", beat_at=now - dt.timedelta(seconds=95))
    Heartbeat.objects.create(name="beat", beat_at=now)
    out = run()
    relay = next(line for line in out.splitlines() if line.strip().startswith("relay"))
    assert "95." in relay and "STALE" in relay and "queue 'outbox'" in relay
    assert json.loads(run("--json"))["heartbeats_stale"] == ["relay"]
