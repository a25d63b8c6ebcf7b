"""The service map: which apps each service of the split deployment installs (docs/architecture.md,
"Splitting an app out").

``SHOP_SERVICE`` chooses the shape of a process. Unset (or empty): the monolith, every app in one
database, exactly as the Procfile runs it. Set to a name of :data:`SERVICES`: that service alone,
with its own apps, the outbox, its own database and its own Celery broker; events reach the other
services through the bus (``EVENT_BUS_URL``). A new service is one more entry here (and its
processes in ``Procfile.split``); no app's code changes between the shapes.

Nothing here imports Django: the settings read it.
"""

from __future__ import annotations

from dataclasses import dataclass

# Every local app of the shop (the monolith installs them all), in INSTALLED_APPS order.
LOCAL_APPS = ("orders", "payments", "inventory", "shipping", "notifications")


@dataclass(frozen=True)
class Service:
    name: str
    # The local apps it installs; their events are published here, never consumed from the bus.
    apps: tuple[str, ...]
    # The environment variables of its default database and its Celery broker.
    database_env: str
    broker_env: str
    # The host project's web side: the REST API, the admin, logins and API tokens (shop.urls).
    # A service without it serves only /metrics, /healthz and /readyz (shop/urls_service.py).
    web: bool = False


SERVICES: dict[str, Service] = {
    service.name: service
    for service in (
        Service(
            name="shop",
            apps=("orders", "inventory", "shipping"),
            database_env="DATABASE_URL",
            broker_env="CELERY_BROKER_URL",
            web=True,
        ),
        Service(
            name="payments",
            apps=("payments",),
            database_env="PAYMENTS_DATABASE_URL",
            broker_env="PAYMENTS_CELERY_BROKER_URL",
        ),
        Service(
            name="notifications",
            apps=("notifications",),
            database_env="NOTIFICATIONS_DATABASE_URL",
            broker_env="NOTIFICATIONS_CELERY_BROKER_URL",
        ),
    )
}


class UnknownService(ValueError):
    pass


def service_get(name: str | None) -> Service | None:
    """The service called ``name``; ``None`` for the monolith (``name`` unset or empty)."""
    if not name:
        return None
    try:
        return SERVICES[name]
    except KeyError:
        raise UnknownService(
            f"SHOP_SERVICE={name!r} is no service of the split deployment; "
            f"use one of {', '.join(SERVICES)}, or leave it unset for the monolith"
        ) from None


def service_of_app(app: str) -> Service:
    """The service that installs ``app`` (every local app belongs to exactly one)."""
    for service in SERVICES.values():
        if app in service.apps:
            return service
    raise UnknownService(f"no service of the split deployment installs {app!r}")
