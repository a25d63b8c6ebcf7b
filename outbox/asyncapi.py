"""The event catalogue as an AsyncAPI 3.0 document, generated from the registry.

Every declared event type is a channel (``channel_address``) carrying one message, the event at
its current version, whose payload's JSON Schema is read from the dataclass fields. The app
that declares the event publishes it (a ``send`` operation); each subscriber receives it (a
``receive`` operation named after the subscriber). Served at /api/asyncapi.json and written by
``manage.py asyncapi``; another team needs nothing else to consume the events.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from outbox.crypto import REDACTED, SEALED
from outbox.events import DomainEvent, _hints, event_types_all
from outbox.registry import subscribers_for

ASYNCAPI_VERSION = "3.0.0"
CHANNEL_PREFIX = "shop"


def channel_address(event_type: str) -> str:
    """Where an event type travels on a bus: ``orders.OrderPlaced`` -> ``shop.orders.OrderPlaced``.

    One function for every transport: a RabbitMQ routing key, a NATS subject and the AsyncAPI
    channel address are all this string.
    """
    return f"{CHANNEL_PREFIX}.{event_type}"


def publisher_app(event_class: type[DomainEvent]) -> str:
    """The app that declares (and so publishes) an event: its module's first part."""
    return event_class.__module__.split(".")[0]


# The envelope every message carries besides its payload (docs/outbox.md, "Events").
ENVELOPE = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "format": "uuid", "description": "The event's id."},
        "type": {"type": "string", "description": 'The event type, e.g. "orders.OrderPlaced".'},
        "version": {"type": "integer", "minimum": 1, "description": "The payload's version."},
        "aggregate_type": {"type": "string"},
        "aggregate_id": {"type": "string"},
        "occurred_at": {"type": "string", "format": "date-time"},
        "correlation_id": {
            "type": "string",
            "format": "uuid",
            "description": "The saga the event belongs to (one order's).",
        },
        "causation_id": {
            "type": ["string", "null"],
            "format": "uuid",
            "description": "The event that caused this one; null for the first.",
        },
    },
    "required": ["id", "type", "version", "aggregate_type", "aggregate_id", "occurred_at"],
}


def asyncapi_document(*, title: str = "Shop events", version: str = "1.0.0") -> dict:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for event_class in event_types_all():
        event_type = event_class.event_type
        message_id = f"{event_type}.v{event_class.version}"
        messages[message_id] = _message(event_class)
        channel_ref = {"$ref": f"#/channels/{event_type}"}
        message_ref = {"$ref": f"#/channels/{event_type}/messages/{message_id}"}
        channels[event_type] = {
            "address": channel_address(event_type),
            "title": event_class.__name__,
            "messages": {message_id: {"$ref": f"#/components/messages/{message_id}"}},
        }
        if event_class.__doc__ and not event_class.__doc__.startswith(event_class.__name__ + "("):
            channels[event_type]["description"] = event_class.__doc__.strip()
        app = publisher_app(event_class)
        operations[f"{event_type}.publish"] = {
            "action": "send",
            "channel": channel_ref,
            "messages": [message_ref],
            "summary": f"{app} publishes {event_class.__name__}.",
            "x-app": app,
        }
        for subscriber in subscribers_for(event_type):
            operations[subscriber.name] = {
                "action": "receive",
                "channel": channel_ref,
                "messages": [message_ref],
                "summary": f"{subscriber.name} handles {event_class.__name__}.",
                "x-app": subscriber.handler.__module__.split(".")[0],
                "x-ordered": subscriber.ordered,
            }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": title,
            "version": version,
            "description": (
                "Every event the shop publishes, generated from its event registry: the payload "
                "of each type at its current version (older stored versions are upcast on "
                "read), the app that publishes it and the subscribers that handle it."
            ),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def _message(event_class: type[DomainEvent]) -> dict:
    payload = payload_schema(event_class)
    return {
        "name": event_class.event_type,
        "title": f"{event_class.__name__} v{event_class.version}",
        "contentType": "application/json",
        "headers": ENVELOPE,
        "payload": payload,
        "examples": [{"name": "example", "payload": _example(payload)}],
        "correlationId": {"location": "$message.header#/correlation_id"},
        "x-event-type": event_class.event_type,
        "x-version": event_class.version,
        "x-aggregate-type": event_class.aggregate_type,
    }


def payload_schema(cls: type) -> dict:
    """The JSON Schema of a (frozen dataclass) event or value's payload, from its fields."""
    hints = _hints(cls)
    fields = [field for field in dataclasses.fields(cls) if field.init]
    required = [
        field.name
        for field in fields
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    ]
    sensitive = set(getattr(cls, "sensitive", ()))
    schema = {
        "type": "object",
        "properties": {
            field.name: _sealed_schema(_type_schema(hints[field.name]))
            if field.name in sensitive
            else _type_schema(hints[field.name])
            for field in fields
        },
        "required": required,
        "additionalProperties": False,
    }
    if not required:
        del schema["required"]
    return schema


def _sealed_schema(clear: dict) -> dict:
    """A sensitive field travels sealed (outbox/crypto.py); its clear value's schema is kept
    as ``x-decrypted``. Its example is redacted."""
    return {
        "type": "object",
        "properties": {SEALED: {"type": "string", "description": "A Fernet token."}},
        "required": [SEALED],
        "additionalProperties": False,
        "description": (
            "Sensitive: encrypted with the shop's event keys (EVENT_ENCRYPTION_KEYS); the "
            "handler receives the decrypted value."
        ),
        "examples": [{SEALED: REDACTED}],
        "x-sensitive": True,
        "x-decrypted": clear,
    }


_EXAMPLES = {"string": "string", "integer": 1, "number": 1.5, "boolean": True, "null": None}


def _example(schema: dict) -> Any:
    """A made-up value of ``schema``, for the catalogue: sensitive fields come redacted."""
    if "examples" in schema:
        return schema["examples"][0]
    if "anyOf" in schema:
        return _example(schema["anyOf"][0])
    kind = schema.get("type")
    if kind == "object":
        return {name: _example(sub) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [_example(schema.get("items", {}))]
    return _EXAMPLES.get(kind, {})


_PRIMITIVES = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _type_schema(hint: Any) -> dict:
    origin = typing.get_origin(hint)
    if hint in _PRIMITIVES:
        return {"type": _PRIMITIVES[hint]}
    if hint is type(None):
        return {"type": "null"}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return payload_schema(hint)
    if origin in (list, tuple):
        args = [arg for arg in typing.get_args(hint) if arg is not Ellipsis]
        return {"type": "array", "items": _type_schema(args[0]) if args else {}}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_type_schema(arg) for arg in typing.get_args(hint)]}
    if origin is dict or hint is dict:
        return {"type": "object"}
    return {}  # Any: whatever JSON
