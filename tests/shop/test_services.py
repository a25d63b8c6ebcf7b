"""The split deployment's service map (shop/services.py): one codebase, two shapes.

Each shape is a process of its own (``SHOP_SERVICE`` is read once, by the settings), so the
settings a shape gets are read in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from outbox.bus.consuming import bus_types_unpublished
from outbox.bus.target import event_externalised
from outbox.registry import subscribers_all
from shop.services import LOCAL_APPS, SERVICES, UnknownService, service_get, service_of_app
from tests.test_import_contracts import domain_apps

ROOT = Path(__file__).resolve().parents[2]

SHAPE = """
import json, django
django.setup()
from django.conf import settings
from shop.celery import app
print(json.dumps({
    "apps": settings.INSTALLED_APPS,
    "database": settings.DATABASES["default"]["NAME"],
    "broker": app.connection().as_uri().replace(":**@", ""),
    "bus_service": settings.EVENT_BUS["SERVICE"],
    "bus_local_apps": settings.EVENT_BUS["LOCAL_APPS"],
    "urls": settings.ROOT_URLCONF,
}))
"""


def shape(tmp_path, **env) -> dict:
    environ = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {"SHOP_SERVICE", "SHOP_TEST_APPS", "DATABASE_URL", "CELERY_BROKER_URL"}
        | {s.database_env for s in SERVICES.values()}
        | {s.broker_env for s in SERVICES.values()}
    }
    environ.update(SHOP_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="shop.settings", **env)
    done = subprocess.run(
        [sys.executable, "-c", SHAPE],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


SPLIT_ENV = {
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/the_shop",
    "PAYMENTS_DATABASE_URL": "postgres://postgres@127.0.0.1:5432/the_payments",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/3",
    "PAYMENTS_CELERY_BROKER_URL": "redis://127.0.0.1:6379/4",
    "NOTIFICATIONS_DATABASE_URL": "postgres://postgres@127.0.0.1:5432/the_notifications",
    "NOTIFICATIONS_CELERY_BROKER_URL": "redis://127.0.0.1:6379/5",
}


def test_every_app_belongs_to_exactly_one_service():
    # A new app forgotten in the map would be installed by no service of the split.
    assert set(LOCAL_APPS) == set(domain_apps())
    owners = {app: [s.name for s in SERVICES.values() if app in s.apps] for app in LOCAL_APPS}
    assert all(len(names) == 1 for names in owners.values()), owners
    assert service_of_app("payments").name == "payments"
    assert service_of_app("orders").name == "shop"
    assert service_of_app("notifications").name == "notifications"


def test_an_unknown_service_is_refused_and_none_is_the_monolith(tmp_path):
    assert service_get("") is None and service_get(None) is None
    with pytest.raises(UnknownService, match="SHOP_SERVICE='nope'.*shop, payments"):
        service_get("nope")
    environ = {**os.environ, "SHOP_SERVICE": "nope", "SHOP_VAR_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert "SHOP_SERVICE='nope' is no service of the split deployment" in done.stderr


def test_what_a_service_consumes_from_another_is_published_to_the_bus():
    """A subscriber in one service of an event another service publishes hears of it only
    through the bus: the event type must be externalised, or the saga stalls in the split."""
    crossing = sorted(
        {
            sub.event_type
            for sub in subscribers_all()
            if sub.name.split(".")[0] in LOCAL_APPS
            and service_of_app(sub.name.split(".")[0])
            != service_of_app(sub.event_type.split(".")[0])
        }
    )
    assert "orders.OrderPlaced" in crossing and "payments.PaymentCompleted" in crossing
    # What the notifications service hears of, from the shop service.
    assert {"orders.OrderCompleted", "orders.OrderCancelled"} <= set(crossing)
    assert [t for t in crossing if not event_externalised(t)] == []


def test_the_consumer_refuses_a_type_no_publisher_sends():
    # tests.testapp's ThingHappened is not declared externalised.
    assert bus_types_unpublished(["tests.ThingHappened", "orders.OrderPlaced"]) == [
        "tests.ThingHappened"
    ]


def test_the_monolith_is_todays_shape(tmp_path):
    got = shape(tmp_path, **SPLIT_ENV)
    assert [a for a in got["apps"] if a in LOCAL_APPS] == list(LOCAL_APPS)
    assert "django.contrib.admin" in got["apps"] and "shop" in got["apps"]
    assert got["database"] == "the_shop"
    assert got["broker"] == "redis://127.0.0.1:6379/3"
    assert got["bus_service"] == "shop" and got["bus_local_apps"] is None
    assert got["urls"] == "shop.urls"


def test_the_shop_service_installs_its_apps_and_the_web_side(tmp_path):
    got = shape(tmp_path, SHOP_SERVICE="shop", **SPLIT_ENV)
    assert [a for a in got["apps"] if a in LOCAL_APPS] == ["orders", "inventory", "shipping"]
    assert {"django.contrib.admin", "rest_framework", "knox", "shop", "outbox"} <= set(got["apps"])
    assert got["database"] == "the_shop"
    assert got["broker"] == "redis://127.0.0.1:6379/3"
    assert got["bus_service"] == "shop"
    assert got["bus_local_apps"] == ["orders", "inventory", "shipping"]
    assert got["urls"] == "shop.urls"


def test_the_payments_service_has_its_own_database_and_broker(tmp_path):
    # CELERY_BROKER_URL is set too (the shop's): Celery prefers that variable to any setting,
    # and the payments service must still talk to its own broker.
    got = shape(tmp_path, SHOP_SERVICE="payments", **SPLIT_ENV)
    assert got["apps"] == ["django_celery_beat", "outbox", "payments", "shop.observability"]
    assert got["database"] == "the_payments"
    assert got["broker"] == "redis://127.0.0.1:6379/4"
    assert got["bus_service"] == "payments" and got["bus_local_apps"] == ["payments"]
    assert got["urls"] == "shop.urls_service"


def test_the_notifications_service_has_its_own_database_and_broker(tmp_path):
    got = shape(tmp_path, SHOP_SERVICE="notifications", **SPLIT_ENV)
    assert got["apps"] == ["django_celery_beat", "outbox", "notifications", "shop.observability"]
    assert got["database"] == "the_notifications"
    assert got["broker"] == "redis://127.0.0.1:6379/5"
    assert got["bus_service"] == "notifications"
    assert got["bus_local_apps"] == ["notifications"]
    assert got["urls"] == "shop.urls_service"
