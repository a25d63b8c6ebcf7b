"""Every error under /api/ is an RFC 9457 problem document; pages outside /api/ keep HTML."""

import json

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from inventory.api import ProductListApi
from orders.models import Order
from tests.fuzz.helpers import db_snapshot
from tests.security.credentials import api_token

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"
ORDER = {"lines": [{"sku": "MUG", "quantity": 1}], "payment_token": "tok_visa"}


@pytest.fixture
def customer(db):
    user = get_user_model().objects.create_user("prob-alice", password="pw-prob-alice-123")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token(user)}")
    return client


def problem(response, status: int) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == PROBLEM
    body = response.json()
    assert {"type", "title", "status", "detail", "instance", "code"} <= set(body), body
    assert body["status"] == status
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def test_field_errors_point_into_the_body(customer):
    body = {"lines": [{"sku": "MUG", "quantity": 1}, {"sku": "TEE", "quantity": "3"}]}
    found = problem(customer.post("/api/orders/", body, format="json"), 400)
    assert found["type"] == "urn:shop:problem:invalid-request"
    assert found["title"] == "Bad Request"
    assert found["instance"] == "/api/orders/"
    assert found["errors"] == [
        {
            "detail": "A valid integer is required.",
            "code": "invalid",
            "pointer": "#/lines/1/quantity",
        },
        {"detail": "This field is required.", "code": "required", "pointer": "#/payment_token"},
    ]


def test_a_body_that_is_not_an_object_points_at_the_root(customer):
    found = problem(customer.post("/api/orders/", [1], format="json"), 400)
    assert [e["pointer"] for e in found["errors"]] == ["#"]


def test_a_bad_header_and_a_bad_query_parameter_are_named(customer):
    response = customer.post("/api/orders/", ORDER, format="json", headers={"Idempotency-Key": ""})
    assert problem(response, 400)["errors"][0]["header"] == "Idempotency-Key"
    for page in ("null", "0", "-1", "1.5", "last", "\u0661"):
        found = problem(customer.get("/api/orders/", {"page": page}), 400)
        assert found["errors"] == [
            {"detail": "A page is a whole number from 1.", "code": "invalid", "parameter": "page"}
        ]
    assert customer.get("/api/orders/", {"page": 1}).status_code == 200
    assert problem(customer.get("/api/orders/", {"page": 2}), 404)["detail"] == "Invalid page."


def test_malformed_json_and_other_media_types(customer):
    found = problem(customer.generic("POST", "/api/orders/", "{", "application/json"), 400)
    assert found["type"] == "urn:shop:problem:malformed-body"
    assert "errors" not in found
    found = problem(customer.generic("POST", "/api/orders/", "x", "text/plain"), 415)
    assert found["type"] == "about:blank"
    assert found["title"] == "Unsupported Media Type"
    assert found["code"] == "unsupported_media_type"


def test_wrong_method_unauthenticated_and_not_acceptable(customer):
    found = problem(customer.delete("/api/orders/"), 405)
    assert found["code"] == "method_not_allowed"
    assert "Allow" in customer.delete("/api/orders/")
    response = APIClient().get("/api/orders/")
    assert problem(response, 401)["code"] == "not_authenticated"
    assert response["WWW-Authenticate"] == "Token"
    assert problem(customer.get("/api/orders/", HTTP_ACCEPT="text/html"), 406)


def test_a_conflict_is_a_problem_too(customer, catalogue):
    customer.post("/api/orders/", ORDER, format="json", headers={"Idempotency-Key": "k"})
    other = {**ORDER, "payment_token": "tok_other"}
    response = customer.post("/api/orders/", other, format="json", headers={"Idempotency-Key": "k"})
    found = problem(response, 409)
    assert found["type"] == "urn:shop:problem:idempotency-key-reused"
    assert "Idempotency-Key" in found["detail"]


class OnePerDay(SimpleRateThrottle):
    rate = "1/day"

    def get_cache_key(self, request, view):
        return "test-problems-throttle"


def test_throttling_is_a_429_with_retry_after(monkeypatch):
    monkeypatch.setattr(ProductListApi, "throttle_classes", [OnePerDay])
    client = APIClient()
    from django.core.cache import cache

    cache.delete("test-problems-throttle")
    try:
        assert client.get("/api/products/").status_code == 200
        response = client.get("/api/products/")
    finally:
        # With CACHE_URL on Redis (the PostgreSQL + Redis pass) the count would outlive the run.
        cache.delete("test-problems-throttle")
    found = problem(response, 429)
    assert found["code"] == "throttled"
    assert 0 < int(response["Retry-After"]) <= 86400


@pytest.mark.parametrize(
    "path", ["/api/nope/", "/api/orders/null,null/nope/", "/api/orders/1/events/x/", "/api/orders"]
)
@pytest.mark.parametrize("debug", [False, True])
def test_an_unknown_route_under_api_is_a_json_404_even_with_debug_on(settings, path, debug):
    settings.DEBUG = debug
    for method in ("get", "post", "delete"):
        found = problem(getattr(Client(), method)(path), 404)
        assert found["instance"] == path
    if path == "/api/orders":
        assert "Did you mean /api/orders/" in found["detail"]


def test_pages_outside_the_api_keep_html():
    response = Client().get("/nowhere/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_a_server_error_says_nothing_of_its_cause(monkeypatch, customer, catalogue):
    def broken(**kwargs):
        raise RuntimeError("secret internals: password=hunter2")

    monkeypatch.setattr("orders.api.order_place", broken)
    client = APIClient(raise_request_exception=False)
    client.credentials(**customer._credentials)
    before = db_snapshot()
    response = client.post("/api/orders/", ORDER, format="json")
    found = problem(response, 500)
    assert found["type"] == "about:blank"
    text = json.dumps(found)
    assert "hunter2" not in text and "RuntimeError" not in text and "Traceback" not in text
    assert db_snapshot() == before
    assert Order.objects.count() == 0
