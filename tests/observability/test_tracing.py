"""One saga, one trace: request -> publish -> handler -> publish -> handler."""

from __future__ import annotations

import itertools

import pytest
from django.db import transaction
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from outbox import publish
from outbox.handling import delivery_handle
from outbox.models import Event
from shop.observability.tracing import tracing_wanted
from tests.observability.conftest import ChainContinued, ChainStarted
from tests.testapp.events import FlakyThing

pytestmark = pytest.mark.django_db


@pytest.fixture
def spans(monkeypatch):
    """An in-memory exporter behind the outbox's tracer, for this test only (the global
    tracer provider is left alone)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr("outbox.tracing._tracer", provider.get_tracer("outbox"))
    yield exporter, provider.get_tracer("tests")
    provider.shutdown()


def test_a_saga_is_one_trace_across_publish_and_handlers(chain, spans):
    exporter, tracer = spans
    with tracer.start_as_current_span("POST /api/orders/", kind=SpanKind.SERVER) as request:
        with transaction.atomic():
            first = publish(ChainStarted(chain_id="t1"))
    assert "traceparent" in first.headers

    # Later, in a worker: no span is current there.
    assert trace.get_current_span() is trace.INVALID_SPAN
    assert delivery_handle(delivery_id=first.deliveries.get().pk) == "done"
    second = Event.objects.get(type=ChainContinued.event_type)
    assert delivery_handle(delivery_id=second.deliveries.get().pk) == "done"

    by_name = {s.name: s for s in exporter.get_finished_spans()}
    chain_order = [
        "POST /api/orders/",
        "publish tests.ChainStarted",
        "handle tests.ChainStarted",
        "publish tests.ChainContinued",
        "handle tests.ChainContinued",
    ]
    assert sorted(by_name) == sorted(chain_order)
    for parent, child in itertools.pairwise(chain_order):
        assert by_name[child].parent.span_id == by_name[parent].context.span_id, child
    trace_id = request.get_span_context().trace_id
    assert {s.context.trace_id for s in by_name.values()} == {trace_id}

    publish_span = by_name["publish tests.ChainStarted"]
    assert publish_span.kind is SpanKind.PRODUCER
    assert publish_span.attributes["outbox.event_id"] == str(first.event_id)
    handler = by_name["handle tests.ChainContinued"]
    assert handler.kind is SpanKind.CONSUMER
    assert dict(handler.attributes) == {
        "messaging.system": "outbox",
        "messaging.operation.type": "process",
        "outbox.delivery_id": second.deliveries.get().pk,
        "outbox.event_id": str(second.event_id),
        "outbox.event_type": "tests.ChainContinued",
        "outbox.correlation_id": str(first.correlation_id),
        "outbox.causation_id": str(first.event_id),
        "outbox.subscriber": "tests.chain_end",
        "outbox.attempt": 1,
        "outbox.outcome": "done",
    }


def test_a_failing_handler_marks_its_span_as_an_error(spans):
    exporter, tracer = spans
    with tracer.start_as_current_span("request"), transaction.atomic():
        stored = publish(FlakyThing(thing_id="f", fail_times=1))
    assert delivery_handle(delivery_id=stored.deliveries.get().pk) == "retry"
    (handler,) = [s for s in exporter.get_finished_spans() if s.name.startswith("handle")]
    assert handler.status.status_code is StatusCode.ERROR
    assert handler.attributes["outbox.outcome"] == "retry"
    assert handler.events[0].name == "exception"


def test_a_handler_span_links_to_the_task_that_ran_it(spans):
    exporter, tracer = spans
    with tracer.start_as_current_span("request"), transaction.atomic():
        stored = publish(FlakyThing(thing_id="l"))
    with tracer.start_as_current_span("run/outbox.deliver") as task:
        delivery_handle(delivery_id=stored.deliveries.get().pk)
    (handler,) = [s for s in exporter.get_finished_spans() if s.name.startswith("handle")]
    assert [link.context.span_id for link in handler.links] == [task.get_span_context().span_id]
    assert handler.parent.span_id != task.get_span_context().span_id


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
    ],
)
def test_tracing_is_off_unless_an_exporter_or_endpoint_is_set(environ, wanted):
    assert tracing_wanted(environ) is wanted
