"""Readiness checks: the database, the broker, and the relay's and beat's heartbeats.

Each check returns None when fine, or a short sentence saying what is wrong.
"""

from __future__ import annotations

from django.conf import settings
from django.db import connection

from outbox.ops import HEARTBEAT_ROLES, heartbeat_ages, heartbeat_problems, outbox_settings


def check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        return f"unreachable: {type(exc).__name__}: {exc}"
    return None


def check_broker() -> str | None:
    from shop.celery import app

    timeout = getattr(settings, "HEALTH_BROKER_TIMEOUT_SECONDS", 1.0)
    options = {
        **(app.conf.broker_transport_options or {}),
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
    }
    try:
        with app.connection_for_write(connect_timeout=timeout, transport_options=options) as conn:
            conn.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, timeout=timeout
            )
            client = getattr(conn.default_channel, "client", None)
            if client is not None and hasattr(client, "ping"):
                client.ping()
    except Exception as exc:
        return f"unreachable: {type(exc).__name__}: {exc}"
    return None


def required_heartbeats() -> list[str]:
    return list(getattr(settings, "HEALTH_HEARTBEATS", HEARTBEAT_ROLES))


def check_heartbeats() -> dict[str, str | None]:
    stale_after = outbox_settings().HEARTBEAT_STALE_SECONDS
    roles = required_heartbeats()
    try:
        ages = heartbeat_ages()
    except Exception as exc:
        return {name: f"not readable: {type(exc).__name__}" for name in roles}
    return heartbeat_problems(ages, stale_after=stale_after, roles=roles)


def readiness() -> dict[str, str | None]:
    """Every check by name; a value that is not None says what failed."""
    checks: dict[str, str | None] = {"database": check_database()}
    checks["broker"] = check_broker()
    if checks["database"] is None:
        checks.update(check_heartbeats())
    else:
        checks.update(
            {name: "not checked: the database is unreachable" for name in required_heartbeats()}
        )
    return checks
