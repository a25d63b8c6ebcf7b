"""/metrics answers only a scraper with the bearer token (or anyone while debugging)."""

from __future__ import annotations

import pytest

TOKEN = "t" * 40


@pytest.fixture
def private_metrics(settings):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_PUBLIC = False


@pytest.mark.django_db
def test_the_token_opens_metrics(client, private_metrics):
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert b"outbox_backlog" in response.content


@pytest.mark.django_db
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Token {TOKEN}", f"Bearer {TOKEN}x", "Bearer"],
    ids=["none", "wrong", "other-scheme", "longer", "empty"],
)
def test_without_the_token_metrics_answer_401_and_nothing_else(
    client, private_metrics, authorization
):
    headers = {"Authorization": authorization} if authorization else {}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"outbox_" not in response.content


@pytest.mark.django_db
def test_a_token_is_required_even_of_debugging_processes_once_set(client, settings):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_PUBLIC = True
    assert client.get("/metrics").status_code == 401


@pytest.mark.django_db
def test_without_a_token_production_refuses_everyone(client, settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_PUBLIC = False
    response = client.get("/metrics", headers={"Authorization": "Bearer anything"})
    assert response.status_code == 403
    assert b"outbox_" not in response.content


@pytest.mark.django_db
def test_health_endpoints_stay_anonymous(client, private_metrics):
    assert client.get("/healthz").status_code == 200
