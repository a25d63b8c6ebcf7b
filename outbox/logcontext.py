"""Fields that every log line written inside a block carries (event id, subscriber, ...).

Bound with structlog's context variables, so they reach stdlib ``logging`` records too when
the logging configuration merges them (``structlog.contextvars.merge_contextvars``, as
``shop.observability.logs`` does). A no-op when structlog is not installed.
"""

from __future__ import annotations

import contextlib

try:
    from structlog.contextvars import bind_contextvars, reset_contextvars
except ImportError:  # pragma: no cover - structlog is optional
    bind_contextvars = None


@contextlib.contextmanager
def log_fields(**fields):
    if bind_contextvars is None:
        yield
        return
    tokens = bind_contextvars(**fields)
    try:
        yield
    finally:
        reset_contextvars(**tokens)
