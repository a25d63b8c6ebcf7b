"""Answer 503, not 500, while the database is away.

A PostgreSQL restart or failover takes seconds; every request in that window fails to connect
or loses its connection mid-query. That is the service being unavailable, not a bug: the
client gets ``503`` with ``Retry-After`` and retries, and the next request opens a fresh
connection (``CONN_HEALTH_CHECKS`` drops the broken one). Connecting is bounded by
``connect_timeout`` (settings), so no request hangs on a database that does not answer.
"""

from __future__ import annotations

import logging

from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
DETAIL = "The database is unavailable; try again shortly."


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        logger.warning(
            "database unavailable for %s %s: %s", request.method, request.path, exception
        )
        if request.path.startswith("/api/"):
            response = JsonResponse(
                {"status": 503, "title": "Service Unavailable", "detail": DETAIL}, status=503
            )
        else:
            response = HttpResponse(DETAIL, status=503, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
