"""No shared table: the release step migrates each service's database, and each holds only its
own apps' tables and its own outbox (issue 11, item 3)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from urllib.parse import urlparse

import psycopg

from tests.split.conftest import ROOT, split_env

# What a service without the web side (payments, notifications) may hold in its database besides
# its own app's tables, and why:
SERVICE_ALSO = {
    "outbox_": "its own outbox: events, deliveries, the aggregates' sequences, heartbeats",
    "django_migrations": "Django's record of the migrations applied",
    "django_celery_beat_": "beat's schedule: the relay's safety-net tick and the retention purge "
    "(outbox/migrations/0002_beat_schedule.py)",
}


def tables(url: str) -> set[str]:
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        return {name for (name,) in rows if not name.startswith("sqlite_")}
    parts = urlparse(url)
    with psycopg.connect(
        host=parts.hostname, port=parts.port, user=parts.username, dbname=parts.path[1:]
    ) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return {name for (name,) in rows}


def test_each_service_database_holds_only_its_own_tables(tmp_path, service_databases):
    done = subprocess.run(
        [sys.executable, "manage.py", "release", "--skip-bus"],
        cwd=ROOT,
        env=split_env(tmp_path, service_databases, SHOP_SERVICE="shop"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "released: shop, payments, notifications" in done.stdout

    payments = tables(service_databases["payments"])
    assert {"payments_payment", "payments_refund", "outbox_event", "outbox_delivery"} <= payments
    foreign = sorted(
        name
        for name in payments
        if not name.startswith("payments_") and not name.startswith(tuple(SERVICE_ALSO))
    )
    assert foreign == []  # no orders, inventory, shipping, notifications, auth, sessions, admin

    notifications = tables(service_databases["notifications"])
    assert {"notifications_notification", "outbox_event", "outbox_delivery"} <= notifications
    foreign = sorted(
        name
        for name in notifications
        if not name.startswith("notifications_") and not name.startswith(tuple(SERVICE_ALSO))
    )
    assert foreign == []  # no orders (it knows them by their events), payments, auth, admin

    shop = tables(service_databases["shop"])
    assert {"orders_order", "inventory_product", "shipping_shipment", "outbox_event"} <= shop
    assert sorted(name for name in shop if name.startswith(("payments_", "notifications_"))) == []
