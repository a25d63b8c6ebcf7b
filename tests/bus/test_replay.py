"""``outbox_replay --subscriber bus``: a service that joins late is sent, through the bus, the
events published before there was one; on each real broker, with a real worker and a consumer
process on a second database."""

from __future__ import annotations

import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import transaction

from outbox import publish
from outbox.bus.target import BUS_SUBSCRIBER
from outbox.models import Delivery
from tests.bus.conftest import CONSUME, NATS_URL, RABBITMQ_URL, ROOT, publish_things
from tests.support import wait_until
from tests.testapp.events import ThingHappened

pytestmark = pytest.mark.django_db(transaction=True)

SINCE = "2000-01-01T00:00Z"


def bus_done() -> bool:
    deliveries = Delivery.objects.filter(subscriber=BUS_SUBSCRIBER)
    return deliveries.exists() and not deliveries.exclude(status="done").exists()


def replay(*args: str) -> str:
    out = StringIO()
    call_command("outbox_replay", "--subscriber", "bus", *args, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("broker", "url"), [("rabbitmq_bus", RABBITMQ_URL), ("nats_bus", NATS_URL)]
)
def test_a_service_that_joins_late_is_sent_the_earlier_events_once_in_order(
    request, settings, broker, url, other_service, bus_worker
):
    request.getfixturevalue(broker)
    bus_url = settings.EVENT_BUS_URL
    # Before there was a bus: no bus deliveries at all.
    settings.EVENT_BUS_URL = ""
    publish_things(aggregates=2, seqs=range(3))
    assert not Delivery.objects.filter(subscriber=BUS_SUBSCRIBER).exists()

    # The bus arrives, and with it a consuming service.
    settings.EVENT_BUS_URL = bus_url
    other = other_service(url)
    subprocess.run(
        [sys.executable, *CONSUME, "--declare-only"], cwd=ROOT, env=other.env, check=True
    )
    other.start()
    with transaction.atomic():
        publish(ThingHappened(thing_id="agg-late", seq=0))
    wait_until(lambda: len(other.events()) == 1, timeout=60, what="the event published live")
    wait_until(bus_done, timeout=30, what="the live bus delivery done")

    out = replay("--type", "tests.ThingHappened")
    assert "bus: 6 new deliveries (backfill), 0 made due again, 1 already done" in out
    wait_until(lambda: len(other.events()) == 7, timeout=60, what="7 events downstream")
    wait_until(bus_done, timeout=30, what="every bus delivery done")

    # Again, done ones included: published a second time, stored once downstream.
    assert "0 new deliveries (backfill), 7 made due again" in replay(
        "--since", SINCE, "--include-done"
    )
    wait_until(bus_done, timeout=60, what="the republished bus deliveries")
    # One more event behind them: once it is downstream, so were they (the queue and the stream
    # deliver in publish order).
    with transaction.atomic():
        publish(ThingHappened(thing_id="agg-last", seq=0))
    wait_until(lambda: len(other.events()) == 8, timeout=60, what="the last event downstream")
    other.stop()
    stored = other.events()
    assert len(stored) == len({event_id for event_id, _, _ in stored}) == 8
    assert other.query("SELECT count(*) FROM outbox_delivery") == [(8 * 3,)]
    for n in range(2):
        assert [
            seq
            for (seq,) in other.query(
                "SELECT json_extract(payload, '$.seq') FROM outbox_event "
                "WHERE aggregate_id = ? ORDER BY position",
                (f"agg-{n}",),
            )
        ] == [0, 1, 2]
