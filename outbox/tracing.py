"""Trace context across the outbox: captured into an event's headers at publish, restored
around its handlers, so one saga is one trace. A no-op when OpenTelemetry is not installed."""

import contextlib

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate
except ImportError:  # pragma: no cover - OpenTelemetry is optional
    propagate = None


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
