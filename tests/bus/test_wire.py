"""CloudEvents on the wire: what goes out reads back the same; anything else is refused with a
reason and dead-lettered, never stored, never a crash. No broker needed."""

import datetime as dt
import json
import uuid

import pytest
from cloudevents.core.bindings import amqp as ce_amqp
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.v1.event import CloudEvent

from outbox.bus.adapters.base import ReceivedMessage, Verdict
from outbox.bus.adapters.nats import NatsAdapter
from outbox.bus.adapters.rabbitmq import RabbitMQAdapter
from outbox.bus.consuming import bus_message_receive
from outbox.bus.wire import MalformedMessage, row_attributes
from outbox.models import Event

pytestmark = pytest.mark.django_db

ADAPTERS = [
    RabbitMQAdapter("amqp://guest:guest@127.0.0.1:1//", namespace="wire"),
    NatsAdapter("nats://127.0.0.1:1", namespace="wire"),
]


def stored(**changes) -> Event:
    fields = dict(
        event_id=uuid.uuid4(),
        type="tests.ThingHappened",
        version=1,
        aggregate_type="thing",
        aggregate_id="t-1",
        payload={"thing_id": "t-1", "seq": 3},
        correlation_id=uuid.uuid4(),
        causation_id=uuid.uuid4(),
        headers={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
        occurred_at=dt.datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=dt.UTC),
    )
    fields.update(changes)
    return Event(**fields)


def received(adapter, row: Event) -> ReceivedMessage:
    headers, content_type, body = adapter.encode(row_attributes(row, service="shop"), row.payload)
    return ReceivedMessage(headers=headers, content_type=content_type, body=body)


@pytest.mark.parametrize(
    "row",
    [
        stored(),
        stored(causation_id=None, headers={}, payload={"thing_id": "t/é 1?", "seq": 0}),
        stored(headers={"traceparent": "00-ab-01", "tracestate": "k=v,w=x"}),
        # Header values the NATS binding percent-encodes: a space, '"', '%', non-ASCII.
        stored(headers={"traceparent": "00-ab-01", "tracestate": 'k=v w="100%" é'}),
    ],
    ids=["full", "bare-non-ascii", "tracestate", "tracestate-quoted"],
)
def test_what_goes_out_is_byte_for_byte_the_sdks_binary_mode(row):
    """The attributes are written without the SDK, for speed: the messages must be exactly
    what the CloudEvents SDK's AMQP and HTTP (NATS) bindings write."""
    ce = CloudEvent(
        {
            "id": str(row.event_id),
            "source": "/shop/tests",
            "type": row.type,
            "time": row.occurred_at,
            "subject": "thing:t-1",
            "datacontenttype": "application/json",
            "eventversion": row.version,
            "correlationid": str(row.correlation_id),
            **({"causationid": str(row.causation_id)} if row.causation_id else {}),
            **row.headers,
        },
        row.payload,
    )
    sdk = ce_amqp.to_binary_event(ce)
    headers, content_type, body = ADAPTERS[0].encode(
        row_attributes(row, service="shop"), row.payload
    )
    # The one deliberate difference: time as RFC 3339 text, not an AMQP timestamp.
    assert headers == {
        **sdk.application_properties,
        "cloudEvents_time": row.occurred_at.isoformat(),
    }
    assert (content_type, body) == (sdk.properties["content-type"], sdk.application_data)
    sdk = ce_http.to_binary_event(ce)
    headers, content_type, body = ADAPTERS[1].encode(
        row_attributes(row, service="shop"), row.payload
    )
    assert headers == {k.lower(): v for k, v in sdk.headers.items()}
    assert (content_type, body) == ("application/json", sdk.body)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=["amqp", "nats"])
def test_an_event_reads_back_as_it_was_stored(adapter):
    row = stored()
    event = adapter.decode(received(adapter, row))
    assert event.event_id == row.event_id
    assert (event.type, event.version) == (row.type, row.version)
    assert (event.aggregate_type, event.aggregate_id) == ("thing", "t-1")
    assert event.payload == row.payload
    assert (event.correlation_id, event.causation_id) == (row.correlation_id, row.causation_id)
    assert event.headers == row.headers
    assert event.occurred_at == row.occurred_at
    assert event.source == "/shop/tests"


def spoil(adapter, message: ReceivedMessage, *, attribute=None, value=None, body=None):
    headers = dict(message.headers)
    if attribute is not None:
        key = ("cloudEvents_" if isinstance(adapter, RabbitMQAdapter) else "ce-") + attribute
        if value is None:
            headers.pop(key)
        else:
            headers[key] = value
    return ReceivedMessage(
        headers=headers,
        content_type=message.content_type,
        body=message.body if body is None else body,
    )


BAD = {
    "not a CloudEvent": dict(attribute="specversion", value=None),
    "bad JSON": dict(body=b"{not json"),
    "data not an object": dict(body=b"[1, 2]"),
    "payload fails the schema": dict(body=json.dumps({"thing_id": 5}).encode()),
    "unknown type": dict(attribute="type", value="tests.NoSuchThing"),
    "newer version than the code": dict(attribute="eventversion", value="9"),
    "id not a UUID": dict(attribute="id", value="42"),
    "subject not an aggregate key": dict(attribute="subject", value="nothing"),
}


@pytest.mark.parametrize("adapter", ADAPTERS, ids=["amqp", "nats"])
@pytest.mark.parametrize("how", BAD)
def test_a_malformed_message_is_refused_with_a_reason_and_dead_lettered(adapter, how, settings):
    settings.EVENT_BUS = {**settings.EVENT_BUS, "LOCAL_APPS": ["orders"]}  # tests.* consumed
    message = spoil(adapter, received(adapter, stored()), **BAD[how])
    with pytest.raises(MalformedMessage) as refused:
        adapter.decode(message)
    assert str(refused.value)
    assert bus_message_receive(message=message, adapter=adapter) is Verdict.DEAD
    assert not Event.objects.exists()


def test_a_consumed_event_is_stored_once_with_its_local_deliveries(settings):
    settings.EVENT_BUS = {**settings.EVENT_BUS, "LOCAL_APPS": ["orders"]}
    adapter = ADAPTERS[0]
    message = received(adapter, stored())
    assert bus_message_receive(message=message, adapter=adapter) is Verdict.ACK
    assert bus_message_receive(message=message, adapter=adapter) is Verdict.ACK  # a duplicate
    event = Event.objects.get()
    assert sorted(event.deliveries.values_list("subscriber", flat=True)) == [
        "tests.record_a",
        "tests.record_b",
        "tests.record_c",
    ]


def test_the_monolith_takes_nothing_it_publishes_itself():
    adapter = ADAPTERS[0]
    message = received(adapter, stored())
    assert bus_message_receive(message=message, adapter=adapter) is Verdict.ACK  # ignored
    assert not Event.objects.exists()
