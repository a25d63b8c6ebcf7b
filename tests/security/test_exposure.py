"""Nothing for anonymous callers to learn: the schema, Swagger UI and the AsyncAPI document follow
API_DOCS_PUBLIC (off in production), there is no browsable API, and X-Forwarded-Proto is trusted
only behind a proxy."""

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

DOCS = ["/api/schema/", "/api/docs/", "/api/asyncapi.json"]
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.mark.parametrize("url", DOCS)
def test_the_schema_and_docs_are_not_for_anonymous_callers_in_production(settings, url):
    settings.API_DOCS_PUBLIC = False
    response = APIClient().get(url)
    assert response.status_code == 401
    assert b"/api/orders/" not in response.content


@pytest.mark.parametrize("url", DOCS)
def test_the_schema_and_docs_are_served_to_logged_in_users(settings, customer, url):
    settings.API_DOCS_PUBLIC = False
    client = APIClient()
    client.force_login(customer)
    assert client.get(url).status_code == 200


@pytest.mark.parametrize("url", DOCS)
def test_the_schema_and_docs_are_public_when_the_setting_says_so(settings, url):
    settings.API_DOCS_PUBLIC = True
    assert APIClient().get(url).status_code == 200


@pytest.mark.parametrize("logged_in", [False, True])
def test_there_is_no_browsable_api_a_browser_gets_json(settings, customer, catalogue, logged_in):
    settings.API_DOCS_PUBLIC = True  # even then: the schema and Swagger UI are the docs
    client = APIClient()
    if logged_in:
        client.force_login(customer)
    response = client.get("/api/products/", HTTP_ACCEPT=BROWSER)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"


def test_bad_credentials_asked_for_by_a_browser_are_a_json_401(settings):
    settings.API_DOCS_PUBLIC = False
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token nope")
    response = client.get("/api/orders/", HTTP_ACCEPT=BROWSER)
    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"


def test_a_spoofed_forwarded_proto_does_not_skip_the_https_redirect(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = None  # what production has without DJANGO_BEHIND_PROXY
    response = client.get("/admin/login/", HTTP_X_FORWARDED_PROTO="https")
    assert response.status_code == 301
    assert response["Location"].startswith("https://")
