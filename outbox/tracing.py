"""Trace context across the outbox: captured into an event's headers at publish, restored
around its handlers, so one saga is one trace. A no-op when OpenTelemetry is not installed.

The chain: the caller's span (a web request, or a handler) -> ``publish <type>`` (whose
context goes into the event's headers) -> ``handle <type>`` in the worker, a child of that
publish span whatever process or machine runs it -> a publish inside the handler -> ...
The relay batches deliveries of many sagas, so it is no parent: a handler span links to the
span that was current when the delivery ran (the Celery task, when Celery is instrumented).

Without a configured tracer provider no span is started, and only a context that arrived in
the headers is passed on.
"""

from __future__ import annotations

import contextlib

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Link, ProxyTracerProvider, SpanKind, Status, StatusCode
except ImportError:  # pragma: no cover - OpenTelemetry is optional
    propagate = None

# Set once a tracer provider is installed; until then no span is started at all (the API's
# no-op spans would still cost more than the rest of a publish's Python work).
_tracer = None


def _tracer_get():
    global _tracer
    if (
        _tracer is None
        and propagate is not None
        and not isinstance(trace.get_tracer_provider(), ProxyTracerProvider)
    ):
        _tracer = trace.get_tracer("outbox")
    return _tracer


def trace_headers() -> dict[str, str]:
    if propagate is None:
        return {}
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


@contextlib.contextmanager
def trace_context(headers: dict):
    if propagate is None or not headers:
        yield
        return
    token = otel_context.attach(propagate.extract(headers))
    try:
        yield
    finally:
        otel_context.detach(token)


@contextlib.contextmanager
def publish_span(type_names: list[str]):
    """The span whose context a publish stores in its events' headers."""
    tracer = _tracer_get()
    if tracer is None:
        yield None
        return
    first = type_names[0] if type_names else "nothing"
    name = f"publish {first}" if all(t == first for t in type_names) else "publish events"
    with tracer.start_as_current_span(name, kind=SpanKind.PRODUCER) as span:
        yield span


def publish_span_describe(span, rows) -> None:
    if span is None or not span.is_recording() or not rows:
        return
    span.set_attribute("messaging.system", "outbox")
    span.set_attribute("messaging.operation.type", "send")
    span.set_attribute("messaging.batch.message_count", len(rows))
    span.set_attribute("outbox.event_type", rows[0].type)
    ids = [str(r.event_id) for r in rows]
    span.set_attribute("outbox.event_id", ids[0] if len(ids) == 1 else ids)
    span.set_attribute("outbox.correlation_id", str(rows[0].correlation_id))
    if rows[0].causation_id:
        span.set_attribute("outbox.causation_id", str(rows[0].causation_id))


@contextlib.contextmanager
def handler_span(*, headers: dict, event_type: str, attributes: dict):
    """``handle <type>``: a child of the span that published the event.

    ``attributes`` are the log fields of the run (event id, subscriber, attempt, ...); values
    that are None are left out.
    """
    tracer = _tracer_get()
    if tracer is None:
        # No tracing here; the context still travels on to events the handler publishes.
        with trace_context(headers):
            yield None
        return
    current = trace.get_current_span().get_span_context()
    links = [Link(current)] if current.is_valid else None
    with trace_context(headers):
        with tracer.start_as_current_span(
            f"handle {event_type}",
            kind=SpanKind.CONSUMER,
            links=links,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            if span.is_recording():
                span.set_attribute("messaging.system", "outbox")
                span.set_attribute("messaging.operation.type", "process")
                for key, value in attributes.items():
                    if value is not None:
                        span.set_attribute(f"outbox.{key}", value)
            yield span


def handler_span_end(span, outcome: str, exc: BaseException | None = None) -> None:
    """Record how the run ended: done, retry or dead (with the exception)."""
    if span is None or not span.is_recording():
        return
    span.set_attribute("outbox.outcome", outcome)
    if exc is not None:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
