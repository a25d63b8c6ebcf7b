"""Request throttles (DRF): the token endpoint per username and per client address, and order
writes (placing, cancelling) per user.

They are the API's default throttle classes; each one counts only on views that declare its
scope (``throttle_scope = "orders"`` or ``"login"``), as DRF's ScopedRateThrottle does, so an
app names what a view is and never imports the host project.

The rates come from settings (``THROTTLE_RATE_LOGIN``, ``THROTTLE_RATE_ORDERS`` in DRF's
``N/period`` syntax) and are read on every request, so a deploy changes them with its
environment. Counts live in the default cache: Redis in production (``CACHE_URL``), so every
web process counts together; a file cache on the embedded default, shared by the processes of
one machine. A throttled request is answered ``429`` with ``Retry-After``.
"""

from __future__ import annotations

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class _SettingsRateThrottle(SimpleRateThrottle):
    """Counts on views whose ``throttle_scope`` is this scope, at the rate
    ``settings.THROTTLE_RATES[scope]`` read on each request."""

    def __init__(self):
        # SimpleRateThrottle reads its rate once, at construction: that is per request here.
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)

    def get_rate(self) -> str | None:
        return settings.THROTTLE_RATES.get(self.scope)

    def allow_request(self, request, view) -> bool:
        if getattr(view, "throttle_scope", None) != self.scope:
            return True
        return super().allow_request(request, view)


class LoginAddressThrottle(_SettingsRateThrottle):
    """Token requests per client address: one address guessing many users' passwords."""

    scope = "login"

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": "login-address", "ident": self.get_ident(request)}


class LoginUsernameThrottle(_SettingsRateThrottle):
    """Token requests per username: many addresses guessing one user's password."""

    scope = "login"

    def get_cache_key(self, request, view) -> str | None:
        username = request.data.get("username") if hasattr(request.data, "get") else None
        if not isinstance(username, str) or not username.strip():
            return None  # nothing to count: the request is a 400 anyway
        ident = username.strip().casefold()[:150]
        return self.cache_format % {"scope": "login-username", "ident": ident}


class OrderWriteThrottle(_SettingsRateThrottle):
    """Placing and cancelling orders, per user; reading them is not throttled."""

    scope = "orders"

    def get_cache_key(self, request, view) -> str | None:
        if request.method in SAFE_METHODS or not request.user.is_authenticated:
            return None
        return self.cache_format % {"scope": "orders", "ident": request.user.pk}
