"""Sensitive fields on the bus: the message carries their ciphertext (RabbitMQ and NATS), and a
consuming service with the same keys opens them in its handler; one without refuses the message."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet
from django.db import transaction

from outbox import publish
from outbox.bus.publishing import bus_adapter, bus_deliveries_publish
from outbox.bus.target import BUS_SUBSCRIBER
from outbox.crypto import SEALED, payload_open
from outbox.models import Delivery
from tests.bus.conftest import CONSUME, NATS_URL, RABBITMQ_URL, ROOT
from tests.bus.test_nats import stream_messages
from tests.bus.test_rabbitmq import dead_letters, pika_channel
from tests.support import wait_until
from tests.testapp.events import Confided

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "s3cr3t-on-the-wire"
EMAIL = "grace@example.com"

# Run in the consuming service: its workers' part, every stored delivery handled once.
HANDLE_ALL = (
    "from outbox.models import Delivery; from outbox.handling import delivery_handle; "
    "print([delivery_handle(delivery_id=pk) for pk in Delivery.objects.values_list('pk', "
    "flat=True)])"
)


@pytest.fixture
def key(settings):
    key = Fernet.generate_key().decode()
    settings.EVENT_ENCRYPTION_KEYS = [key]
    return key


def publish_confided():
    with transaction.atomic():
        row = publish(Confided(thing_id="w-1", secret=SECRET, contact={"email": EMAIL}))
    ids = list(Delivery.objects.filter(subscriber=BUS_SUBSCRIBER).values_list("id", flat=True))
    return row, ids


def assert_sealed(body: bytes, headers: dict) -> None:
    text = body.decode() + json.dumps(headers, default=str)
    assert SECRET not in text and EMAIL not in text
    data = json.loads(body)
    assert data["secret"].keys() == {SEALED}
    assert data["thing_id"] == "w-1"
    opened = payload_open(data, event_type="tests.Confided")
    assert (opened["secret"], opened["contact"]) == (SECRET, {"email": EMAIL})


def test_a_rabbitmq_message_carries_the_ciphertext(rabbitmq_bus, bus_namespace, key):
    bus_adapter().topology_declare(service=None, event_types=())
    connection, channel = pika_channel()
    try:
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(queue, f"{bus_namespace}.events", routing_key="tests.Confided")
        _, ids = publish_confided()
        assert bus_deliveries_publish(delivery_ids=ids)["done"] == 1
        method, properties, body = channel.basic_get(queue, auto_ack=True)
    finally:
        connection.close()
    assert method is not None, "no message reached the bound queue"
    assert_sealed(body, properties.headers)


def test_a_nats_message_carries_the_ciphertext(nats_bus, bus_namespace, key):
    _, ids = publish_confided()
    assert bus_deliveries_publish(delivery_ids=ids)["done"] == 1
    [msg] = asyncio.run(
        stream_messages(NATS_URL, bus_adapter().stream, f"{bus_namespace}.events.tests.Confided")
    )
    assert_sealed(msg.data, msg.headers)


def consumer(other_service, key: str):
    other = other_service(RABBITMQ_URL)
    other.env["EVENT_ENCRYPTION_KEYS"] = key
    # The handler runs as the service's workers run it (HANDLE_ALL), not in the consumer.
    other.env["EVENT_BUS_RUN"] = "0"
    subprocess.run(
        [sys.executable, *CONSUME, "--declare-only"], cwd=ROOT, env=other.env, check=True
    )
    other.start()
    return other


def test_a_consumer_with_the_keys_stores_ciphertext_and_opens_it_in_its_handler(
    rabbitmq_bus, bus_namespace, other_service, bus_worker, key
):
    other = consumer(other_service, key)
    row, _ = publish_confided()
    wait_until(lambda: len(other.events()) == 1, timeout=60, what="the event downstream")
    other.stop()
    [(stored,)] = other.query("SELECT payload FROM outbox_event")
    assert SECRET not in stored and EMAIL not in stored
    handled = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", HANDLE_ALL],
        cwd=ROOT,
        env=other.env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "'done'" in handled.stdout, handled.stdout + handled.stderr
    [(data,)] = other.query(
        "SELECT data FROM testapp_effect WHERE subscriber = 'confided' AND event_id = ?",
        (row.event_id.hex,),
    )
    assert json.loads(data) == {"secret": SECRET, "contact": {"email": EMAIL}}


def test_a_consumer_without_the_keys_dead_letters_the_message(
    rabbitmq_bus, bus_namespace, other_service, bus_worker, key
):
    other = consumer(other_service, Fernet.generate_key().decode())
    publish_confided()
    wait_until(lambda: dead_letters(bus_namespace) == 1, timeout=60, what="the dead letter")
    other.stop()
    assert other.events() == []
    log = other.log.read_text()
    assert "field 'secret' cannot be decrypted" in log
    assert SECRET not in log and EMAIL not in log
