"""Sensitive event fields: sealed in the event store, clear in the subscriber's handler only,
redacted everywhere a person reads; keys rotate, and a missing or wrong key is an error."""

from __future__ import annotations

import json
import logging

import pytest
from cryptography.fernet import Fernet
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection, transaction
from django.urls import reverse
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from orders.events import OrderPlaced, PlacedLine
from outbox import EventPayloadError, publish, timeline_for_correlation
from outbox.asyncapi import asyncapi_document
from outbox.crypto import REDACTED, SEALED, cipher, payload_open
from outbox.handling import delivery_handle
from outbox.models import Delivery, Event
from tests.support import event_deliver, wait_until
from tests.testapp.events import Confided
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db

SECRET = "s3cr3t-4242"
EMAIL = "ada@example.com"
SUBSCRIBER = "tests.confided"


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    monkeypatch.setattr("outbox.publisher.relay_wake", lambda: None)


def confided(secret: str = SECRET, **kwargs) -> Confided:
    return Confided(thing_id="t-1", secret=secret, contact={"email": EMAIL}, **kwargs)


def stored(event) -> Event:
    with transaction.atomic():
        return publish(event)


def raw_payload(row: Event) -> str:
    """The event's payload column as the database holds it, past the ORM."""
    key = Event._meta.get_field("event_id").get_db_prep_value(row.event_id, connection)
    with connection.cursor() as cursor:
        cursor.execute("SELECT CAST(payload AS TEXT) FROM outbox_event WHERE event_id = %s", [key])
        (text,) = cursor.fetchone()
    return text


def handle(row: Event) -> str:
    return delivery_handle(delivery_id=row.deliveries.get(subscriber=SUBSCRIBER).pk)


def effect(row: Event) -> dict:
    return Effect.objects.get(subscriber="confided", event_id=row.event_id).data


def test_the_store_holds_ciphertext_and_the_handler_gets_clear_text():
    row = stored(confided())
    raw = raw_payload(row)
    assert SECRET not in raw
    assert EMAIL not in raw
    assert "t-1" in raw  # the other fields stay readable (and queryable)
    assert json.loads(raw)["secret"].keys() == {SEALED}
    assert handle(row) == "done"
    assert effect(row) == {"secret": SECRET, "contact": {"email": EMAIL}}


def test_order_placed_seals_the_payment_token():
    placed = OrderPlaced(
        order_id=1,
        order_reference="ORD-TESTTESTTEST",
        customer_email="alice@example.com",
        customer_id=1,
        lines=(PlacedLine(sku="MUG", quantity=1, unit_price="9.00"),),
        total="9.00",
        currency="EUR",
        payment_token="tok_visa_4242",
    )
    row = stored(placed)
    assert "tok_visa_4242" not in raw_payload(row)
    assert "alice@example.com" not in raw_payload(row)
    assert payload_open(row.payload, event_type=row.type)["payment_token"] == "tok_visa_4242"
    assert "tok_visa_4242" not in repr(placed)


@pytest.mark.e2e
def test_a_real_worker_hands_the_subscriber_clear_text(worker):
    row = stored(confided())
    wait_until(lambda: Effect.objects.filter(subscriber="confided").exists(), what="the handler")
    assert effect(row)["secret"] == SECRET
    assert SECRET not in raw_payload(row)


def test_keys_rotate_the_new_key_writes_and_the_old_one_still_reads(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.EVENT_ENCRYPTION_KEYS = [old]
    before = stored(confided("before-rotation"))
    settings.EVENT_ENCRYPTION_KEYS = [new, old]
    after = stored(confided("after-rotation"))
    token = after.payload["secret"][SEALED].encode()
    assert json.loads(Fernet(new).decrypt(token)) == "after-rotation"
    with pytest.raises(Exception):  # noqa: B017 - any refusal: the old key did not write it
        Fernet(old).decrypt(token)
    assert (handle(before), handle(after)) == ("done", "done")
    assert effect(before)["secret"] == "before-rotation"
    assert effect(after)["secret"] == "after-rotation"


def test_an_event_no_key_opens_fails_its_delivery_without_showing_anything(settings, caplog):
    settings.EVENT_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    row = stored(confided())
    settings.EVENT_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]  # the old key dropped
    assert handle(row) == "retry"
    delivery = Delivery.objects.get(event=row, subscriber=SUBSCRIBER)
    assert delivery.last_error.startswith("EventDecryptionError: tests.Confided")
    assert "field 'secret' cannot be decrypted with any key of EVENT_ENCRYPTION_KEYS" in (
        delivery.last_error
    )
    assert not Effect.objects.exists()
    assert SECRET not in delivery.last_error + caplog.text


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ([], "EVENT_ENCRYPTION_KEYS is empty"),
        (["not-a-key"], "key 1 of 1 is not a Fernet key"),
        ([Fernet.generate_key().decode(), "short"], "key 2 of 2 is not a Fernet key"),
    ],
    ids=["missing", "malformed", "second-malformed"],
)
def test_a_missing_or_malformed_key_stops_start_up_and_publishing(settings, keys, message):
    settings.EVENT_ENCRYPTION_KEYS = keys
    with pytest.raises(ImproperlyConfigured, match=message):
        apps.get_app_config("outbox").ready()
    with pytest.raises(ImproperlyConfigured, match=message), transaction.atomic():
        publish(confided())
    assert not Event.objects.exists()  # no clear-text fallback


def test_the_database_check_names_keys_that_cannot_open_the_store(settings):
    writer = Fernet.generate_key().decode()
    settings.EVENT_ENCRYPTION_KEYS = [writer]
    stored(confided())
    call_command("check", databases=["default"])
    settings.EVENT_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(SystemCheckError, match="outbox.E002"):
        call_command("check", databases=["default"])
    settings.EVENT_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), writer]
    call_command("check", databases=["default"])


def test_a_row_written_in_clear_before_the_field_was_sensitive_is_still_read():
    row = stored(confided())
    Event.objects.filter(pk=row.pk).update(
        payload={"thing_id": "t-1", "secret": "legacy-clear", "contact": None}
    )
    assert handle(row) == "done"
    assert effect(row)["secret"] == "legacy-clear"
    [event] = timeline_for_correlation(row.correlation_id)
    assert event.payload["secret"] == REDACTED  # declared sensitive: redacted even in clear


def test_an_old_version_is_opened_before_its_upcaster_runs():
    row = stored(confided())
    sealed_pin = cipher().encrypt(json.dumps("pin-1234").encode()).decode()
    Event.objects.filter(pk=row.pk).update(
        version=1, payload={"thing_id": "t-1", "pin": {SEALED: sealed_pin}, "contact": None}
    )
    assert handle(row) == "done"
    assert effect(row)["secret"] == "pin-1234"


def test_the_timeline_and_the_admin_show_the_fields_redacted(admin_client):
    row = stored(confided())
    [event] = timeline_for_correlation(row.correlation_id)
    assert event.payload == {"thing_id": "t-1", "secret": REDACTED, "contact": REDACTED}
    page = admin_client.get(reverse("admin:outbox_event_change", args=[row.pk]))
    body = page.content.decode()
    assert page.status_code == 200
    assert REDACTED in body
    assert SECRET not in body and EMAIL not in body
    assert row.payload["secret"][SEALED] not in body  # not the ciphertext either


def test_logs_and_errors_show_the_event_redacted(caplog):
    caplog.set_level(logging.DEBUG)
    row = stored(confided("fail-on-purpose"))
    assert handle(row) == "retry"
    last_error = Delivery.objects.get(event=row, subscriber=SUBSCRIBER).last_error
    assert "cannot take Confided(thing_id='t-1', secret=[redacted], contact=[redacted])" in (
        last_error
    )
    assert "confided: Confided(thing_id='t-1', secret=[redacted]" in caplog.text
    assert "fail-on-purpose" not in caplog.text + last_error
    assert EMAIL not in caplog.text + last_error


def test_a_bad_value_in_a_sensitive_field_is_refused_without_showing_it():
    with pytest.raises(EventPayloadError, match=r"tests.Confided.secret: not a valid value") as e:
        Confided.from_payload({"thing_id": "t-1", "secret": 987654321})
    assert "987654321" not in str(e.value)


def test_traces_carry_no_sensitive_value(monkeypatch):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr("outbox.tracing._tracer", provider.get_tracer("outbox"))
    try:
        assert event_deliver(confided(), subscriber=SUBSCRIBER) == "done"
        spans = exporter.get_finished_spans()
    finally:
        provider.shutdown()
    assert {span.name.split()[0] for span in spans} >= {"publish", "handle"}
    exported = "".join(span.to_json() for span in spans)
    assert SECRET not in exported and EMAIL not in exported


def test_the_asyncapi_catalogue_marks_the_fields_sealed_and_its_examples_redacted():
    document = asyncapi_document()
    placed = document["components"]["messages"]["orders.OrderPlaced.v2"]
    token = placed["payload"]["properties"]["payment_token"]
    assert token["x-sensitive"] is True
    assert token["required"] == [SEALED]
    assert token["x-decrypted"] == {"type": "string"}
    [example] = placed["examples"]
    assert example["payload"]["payment_token"] == {SEALED: REDACTED}
    assert example["payload"]["order_id"] == 1
    assert "tok_" not in json.dumps(document)
