"""Structured logs: one JSON object per line, or readable lines on a terminal.

Every record goes through structlog's processors, whether it was written with stdlib
``logging`` (Django, Celery, the outbox) or with ``structlog.get_logger()``: same timestamp,
level, logger name, the fields bound in context (the outbox binds event id, type, correlation
and causation ids, subscriber and attempt around each handler run; the relay binds the batch
size) and, while a span is recording, its trace and span ids.

``settings.LOGGING`` comes from :func:`logging_settings`; ``settings.LOGGING_CONFIG`` points at
:func:`configure`, which Django calls at setup and Celery's ``setup_logging`` signal calls in
its workers and beat, so Celery leaves the configuration alone.
"""

from __future__ import annotations

import logging
import logging.config
import sys

import structlog

RENDERERS = ("json", "console")


def add_trace_ids(logger, method_name: str, event_dict: dict) -> dict:
    """The current span's trace and span ids, to find a log line's trace (and back)."""
    try:
        from opentelemetry import trace
    except ImportError:  # pragma: no cover - OpenTelemetry is optional
        return event_dict
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict


def shared_processors() -> list:
    """What every record gets, before it is rendered."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_ids,
    ]


def default_renderer() -> str:
    """JSON when stderr is not a terminal (a process manager, a container, a file)."""
    stream = sys.__stderr__
    return "console" if stream is not None and stream.isatty() else "json"


def formatter(renderer: str) -> structlog.stdlib.ProcessorFormatter:
    if renderer not in RENDERERS:
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(RENDERERS)}, got {renderer!r}")
    if renderer == "json":
        final = [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(default=str),
        ]
    else:
        stream = sys.__stderr__
        final = [
            structlog.dev.ConsoleRenderer(
                colors=stream is not None and stream.isatty(),
                exception_formatter=structlog.dev.plain_traceback,
            )
        ]
    return structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
        foreign_pre_chain=shared_processors(),
    )


def logging_settings(*, level: str = "INFO", renderer: str | None = None) -> dict:
    """``settings.LOGGING``: the root logger writes every record through one formatter."""
    renderer = renderer or default_renderer()
    if renderer not in RENDERERS:
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(RENDERERS)}, got {renderer!r}")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structured": {"()": formatter, "renderer": renderer},
        },
        "handlers": {
            # sys.__stderr__: Celery replaces sys.stderr with a proxy that logs what is
            # written to it; writing records there would loop.
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "structured",
                "stream": "ext://sys.__stderr__",
            },
        },
        "root": {"handlers": ["console"], "level": level},
        # Django's own default handlers would print these a second time, unformatted.
        "loggers": {
            "django": {"handlers": [], "level": level, "propagate": True},
            "django.server": {"handlers": [], "propagate": True},
        },
    }


def configure(logging_config: dict) -> None:
    """``settings.LOGGING_CONFIG``: structlog's own loggers, then the stdlib configuration."""
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    logging.config.dictConfig(logging_config)


def celery_setup_logging(**kwargs) -> None:
    """Celery's ``setup_logging`` signal: with a receiver, Celery configures nothing itself,
    and its worker, pool processes and beat log like every other process."""
    from django.conf import settings

    configure(settings.LOGGING)
