"""Deployment checks of the observability endpoints (``manage.py check --deploy``)."""

from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.security, deploy=True)
def metrics_token_check(app_configs, **kwargs):
    if settings.METRICS_TOKEN or settings.METRICS_PUBLIC:
        return []
    return [
        Warning(
            "METRICS_TOKEN is not set: /metrics refuses every scrape.",
            hint="Set METRICS_TOKEN to 32+ random characters and give Prometheus the same "
            "value as a bearer token (docs/operations.md).",
            id="shop.W001",
        )
    ]
