"""The event catalogue: an AsyncAPI 3.0 document generated from the registry, valid against the
official AsyncAPI 3.0.0 JSON Schema kept in docs/schemas/."""

import json
from pathlib import Path

import jsonschema
import pytest
from django.core.management import call_command
from django.test import Client

from outbox.asyncapi import asyncapi_document, channel_address
from outbox.events import event_types_all

SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "schemas" / "asyncapi-3.0.0.json"


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_the_document_is_valid_asyncapi_3(validator):
    errors = sorted(validator.iter_errors(asyncapi_document()), key=str)
    assert not errors, errors[0].message


def test_the_validation_can_fail(validator):
    document = asyncapi_document()
    document["channels"]["orders.OrderPlaced"]["address"] = 42
    del document["info"]["version"]
    assert len(list(validator.iter_errors(document))) >= 2


def test_every_event_type_is_a_channel_with_its_payload_publisher_and_subscribers():
    document = asyncapi_document()
    assert {cls.event_type for cls in event_types_all()} == set(document["channels"])
    placed = document["components"]["messages"]["orders.OrderPlaced.v2"]
    assert placed["payload"]["required"] == [
        "order_id",
        "order_reference",
        "customer_email",
        "customer_id",
        "lines",
        "total",
        "currency",
        "payment_token",
    ]
    line = placed["payload"]["properties"]["lines"]
    assert line["type"] == "array"
    assert line["items"]["properties"]["quantity"] == {"type": "integer"}
    assert document["channels"]["orders.OrderPlaced"]["address"] == "shop.orders.OrderPlaced"
    operations = document["operations"]
    assert operations["orders.OrderPlaced.publish"]["action"] == "send"
    assert operations["orders.OrderPlaced.publish"]["x-app"] == "orders"
    receivers = {
        name: op
        for name, op in operations.items()
        if op["action"] == "receive" and op["channel"] == {"$ref": "#/channels/orders.OrderPlaced"}
    }
    assert {"payments", "notifications"} <= {op["x-app"] for op in receivers.values()}


def test_channel_addresses_derive_from_the_event_type():
    assert channel_address("payments.PaymentCompleted") == "shop.payments.PaymentCompleted"


@pytest.mark.django_db
def test_it_is_served_and_written_by_a_command(tmp_path):
    response = Client().get("/api/asyncapi.json")
    assert response.status_code == 200
    assert response.json() == json.loads(json.dumps(asyncapi_document()))
    target = tmp_path / "asyncapi.json"
    call_command("asyncapi", "--output", str(target))
    assert json.loads(target.read_text()) == response.json()
