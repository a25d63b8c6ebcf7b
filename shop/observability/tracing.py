"""OpenTelemetry tracing, configured from the standard ``OTEL_*`` environment variables.

Off unless asked for: tracing starts when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, or ``OTEL_TRACES_EXPORTER`` names an
exporter (``otlp``: OTLP over HTTP/protobuf; ``console``: spans printed to stdout).
``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` turns it off again. Everything
else (service name, resource attributes, sampler, headers, timeouts, batch sizes) is read by
the SDK and the exporter from their own ``OTEL_*`` variables.

When on, Django requests and Celery tasks get spans too (the contrib instrumentations), and
the outbox's publish and handler spans join them: see ``outbox/tracing.py``.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)

_provider = None


def tracing_wanted(environ=os.environ) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = [e for e in _exporter_names(environ) if e != "none"]
    if environ.get("OTEL_TRACES_EXPORTER", "").strip():
        return bool(exporters)
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def _exporter_names(environ) -> list[str]:
    value = environ.get("OTEL_TRACES_EXPORTER", "").strip() or "otlp"
    return [name.strip().lower() for name in value.split(",") if name.strip()]


def tracing_configure(environ=os.environ) -> bool:
    """Install the tracer provider and the instrumentations, once per process; returns
    whether tracing is on."""
    global _provider
    if _provider is not None:
        return True
    if not tracing_wanted(environ):
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    attributes = {} if environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: "shop"}
    provider = TracerProvider(resource=Resource.create(attributes))
    for name in _exporter_names(environ):
        if name == "otlp":
            protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
                "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
            )
            if protocol != "http/protobuf":
                logger.warning(
                    "OTLP protocol %r is not installed; exporting with http/protobuf", protocol
                )
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        elif name != "none":
            logger.warning("OTEL_TRACES_EXPORTER %r is not supported (otlp, console)", name)
    trace.set_tracer_provider(provider)
    _provider = provider
    _instrument(provider, environ)
    logger.info("tracing on: exporting spans with %s", ", ".join(_exporter_names(environ)))
    return True


def _instrument(provider, environ) -> None:
    try:
        from opentelemetry.instrumentation.django import DjangoInstrumentor
    except ImportError:  # pragma: no cover
        pass
    else:
        excluded = environ.get("OTEL_PYTHON_DJANGO_EXCLUDED_URLS") or "healthz,readyz,metrics"
        DjangoInstrumentor().instrument(tracer_provider=provider, excluded_urls=excluded)
    try:
        from opentelemetry.instrumentation.celery import CeleryInstrumentor
    except ImportError:  # pragma: no cover
        pass
    else:
        CeleryInstrumentor().instrument(tracer_provider=provider)


def tracing_flush(**kwargs) -> None:
    """Send what is buffered: a Celery pool process may exit without running atexit."""
    if _provider is not None:
        _provider.force_flush(timeout_millis=5000)
