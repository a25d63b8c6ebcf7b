"""``/metrics``, ``/healthz`` and ``/readyz``: cheap, never cached.

``/metrics`` is private: it answers a scraper that sends ``Authorization: Bearer
<METRICS_TOKEN>``, and nobody else once debug is off (docs/operations.md configures
Prometheus for it). The health endpoints are for any load balancer or orchestrator: an
anonymous caller learns up or down, nothing more; staff and the metrics scraper see which
checks failed.
"""

from __future__ import annotations

import hmac
import logging

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from shop.observability.health import readiness
from shop.observability.metrics import metrics_exposition

logger = logging.getLogger(__name__)


@never_cache
@require_safe
def metrics(request):
    refused = _metrics_refusal(request)
    if refused is not None:
        return refused
    body, content_type = metrics_exposition(request.headers.get("Accept"))
    return HttpResponse(body, content_type=content_type)


@never_cache
@require_safe
def healthz(request):
    """The process is up and answers; nothing else is looked at."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_safe
def readyz(request):
    """The database and the broker answer, and the relay and beat showed they are alive.

    An anonymous caller learns up (200) or down (503) and nothing else: the names of the checks
    describe the infrastructure. Staff (a session) and the metrics scraper (its bearer token)
    see which checks failed. Why a check failed (an exception's text, a host and port) goes to
    the log only, whoever asks.
    """
    checks = readiness()
    failed = sorted(name for name, problem in checks.items() if problem)
    for name in failed:
        logger.warning("readiness check %s failed: %s", name, checks[name])
    body: dict = {"status": "unavailable" if failed else "ok"}
    if _may_see_details(request):
        body["failed"] = failed
        body["checks"] = {name: "failed" if problem else "ok" for name, problem in checks.items()}
    return JsonResponse(body, status=503 if failed else 200)


def _may_see_details(request) -> bool:
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        return True
    return bool(settings.METRICS_TOKEN) and _bearer_matches(request, settings.METRICS_TOKEN)


def _bearer_matches(request, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


def _metrics_refusal(request) -> HttpResponse | None:
    token = settings.METRICS_TOKEN
    if not token:
        if settings.METRICS_PUBLIC:
            return None
        return JsonResponse(
            {"detail": "metrics are private: set METRICS_TOKEN and scrape with it"}, status=403
        )
    if _bearer_matches(request, token):
        return None
    response = JsonResponse({"detail": "a bearer token is required"}, status=401)
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response
