"""``/metrics``, ``/healthz`` and ``/readyz``: anonymous, cheap, never cached."""

from __future__ import annotations

from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from shop.observability.health import readiness
from shop.observability.metrics import metrics_exposition


@never_cache
@require_safe
def metrics(request):
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
    """The database and the broker answer, and the relay and beat showed they are alive."""
    checks = readiness()
    failed = sorted(name for name, problem in checks.items() if problem)
    body = {
        "status": "unavailable" if failed else "ok",
        "failed": failed,
        "checks": {name: problem or "ok" for name, problem in checks.items()},
    }
    return JsonResponse(body, status=503 if failed else 200)
