"""/healthz: the process answers. /readyz: database, broker, relay and beat heartbeats.

Anonymous callers learn up or down; staff and the metrics scraper (its token) see which checks
failed; why they failed is in the log only.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from outbox.models import Heartbeat
from shop.celery import app as celery_app

pytestmark = pytest.mark.django_db

TOKEN = "m" * 40


@pytest.fixture
def scraper(client, settings):
    """A caller with the metrics token: /readyz shows it the checks by name."""
    settings.METRICS_TOKEN = TOKEN
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {TOKEN}"
    return client


def beat(name: str, *, seconds_ago: float = 0) -> None:
    Heartbeat.objects.update_or_create(
        name=name, defaults={"beat_at": timezone.now() - dt.timedelta(seconds=seconds_ago)}
    )


def test_healthz_answers_without_looking_at_anything(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_200_when_everything_answers_and_beats(scraper):
    beat("relay", seconds_ago=2)
    beat("beat", seconds_ago=1)
    response = scraper.get("/readyz")
    assert response.status_code == 200, response.json()
    assert response.json() == {
        "status": "ok",
        "failed": [],
        "checks": {"database": "ok", "broker": "ok", "relay": "ok", "beat": "ok"},
    }


def test_readyz_is_503_naming_a_stale_relay_heartbeat(scraper, caplog):
    beat("relay", seconds_ago=120)
    beat("beat", seconds_ago=1)
    response = scraper.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["failed"] == ["relay"]
    assert body["checks"]["relay"] == "failed"
    assert body["checks"]["beat"] == "ok"
    assert "relay failed: heartbeat 120s old (stale after 30s)" in caplog.text


def test_readyz_is_503_when_beat_was_never_seen(scraper, caplog):
    beat("relay")
    response = scraper.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failed"] == ["beat"]
    assert "never seen" in caplog.text
    assert "never seen" not in response.content.decode()


def test_readyz_is_503_when_the_broker_does_not_answer(scraper, monkeypatch, caplog):
    beat("relay")
    beat("beat")
    # Nothing listens on port 1: refused at once, well within the short timeout.
    monkeypatch.setattr(celery_app.conf, "broker_write_url", "redis://127.0.0.1:1/0")
    response = scraper.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failed"] == ["broker"]
    assert response.json()["checks"]["broker"] == "failed"
    assert "broker failed: unreachable" in caplog.text


def test_readyz_tells_the_scraper_which_check_failed_not_why(scraper, monkeypatch, caplog):
    """The database's error text names its host and port: it goes to the log, not the answer."""
    beat("relay")
    beat("beat")
    monkeypatch.setattr(
        "shop.observability.health.check_database",
        lambda: "unreachable: OperationalError: connection to server at 10.1.2.3, port 5432",
    )
    response = scraper.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failed"] == ["beat", "database", "relay"]
    assert "10.1.2.3" not in response.content.decode()
    assert "5432" not in response.content.decode()
    assert set(response.json()["checks"].values()) <= {"ok", "failed"}
    assert "10.1.2.3, port 5432" in caplog.text


def test_probes_and_scrapes_are_anonymous_and_not_redirected_to_https(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    beat("relay")
    beat("beat")
    assert client.get("/admin/login/").status_code == 301
    for path in ("/healthz", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200, path


def test_readyz_requires_only_the_configured_heartbeats(scraper, settings):
    settings.HEALTH_HEARTBEATS = ["relay"]
    beat("relay")
    response = scraper.get("/readyz")
    assert response.status_code == 200, response.json()
    assert set(response.json()["checks"]) == {"database", "broker", "relay"}


def test_readyz_tells_an_anonymous_caller_up_or_down_and_nothing_else(client, monkeypatch, caplog):
    beat("relay")
    beat("beat")
    assert client.get("/readyz").json() == {"status": "ok"}
    monkeypatch.setattr(
        "shop.observability.health.check_database",
        lambda: "unreachable: OperationalError: connection to server at 10.1.2.3, port 5432",
    )
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable"}
    assert "10.1.2.3, port 5432" in caplog.text


@pytest.mark.parametrize(
    "authorization", ["Bearer wrong-token", f"Token {TOKEN}", "Bearer"], ids=str
)
def test_readyz_details_need_the_right_token(client, settings, authorization):
    settings.METRICS_TOKEN = TOKEN
    beat("relay")
    response = client.get("/readyz", headers={"Authorization": authorization})
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable"}


def test_readyz_shows_staff_the_checks_by_name(client, django_user_model):
    beat("relay")
    user = django_user_model.objects.create_user("ops", password="x", is_staff=True)
    client.force_login(user)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failed"] == ["beat"]
    customer = django_user_model.objects.create_user("customer", password="x")
    client.force_login(customer)
    assert client.get("/readyz").json() == {"status": "unavailable"}
