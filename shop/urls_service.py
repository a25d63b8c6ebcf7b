"""The URLs of a service without the shop's web side (the payments service, shop/services.py):
the probes and the metrics, nothing else. Its work arrives as events, never as requests."""

from django.urls import include, path

urlpatterns = [
    # /metrics, /healthz, /readyz
    path("", include("shop.observability.urls")),
]
