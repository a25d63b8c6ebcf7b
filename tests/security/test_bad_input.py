"""Bodies no endpoint may answer with a 500, whichever parser reads them."""

import pytest
from rest_framework.test import APIClient

from tests.fuzz.helpers import db_snapshot

pytestmark = pytest.mark.django_db


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# Every endpoint that reads a body, with credentials where it needs them. The token endpoint
# has DRF's own parsers (form, multipart and the stock JSON parser), not the project's.
ENDPOINTS = [
    ("post", "/api/auth/token/", None),
    ("post", "/api/orders/", "alice"),
    ("post", "/api/products/", "carol"),
    ("patch", "/api/products/MUG/", "carol"),
]


@pytest.fixture
def clients(customer, catalogue_manager, catalogue):
    made = {None: APIClient()}
    for user in (customer, catalogue_manager):
        made[user.username] = APIClient()
        made[user.username].force_authenticate(user)
    return made


@pytest.mark.parametrize(("method", "url", "who"), ENDPOINTS)
@pytest.mark.parametrize(
    "body",
    [
        nested(100_000),
        '{"username": ' + nested(50_000) + ', "password": "x"}',
        '{"a": ' * 50_000 + "1" + "}" * 50_000,
    ],
    ids=["array", "in-a-field", "objects"],
)
def test_a_json_body_nested_too_deeply_is_a_400_everywhere(clients, method, url, who, body):
    before = db_snapshot()
    response = getattr(clients[who], method)(url, data=body, content_type="application/json")
    assert response.status_code == 400, response.content[:300]
    assert "nested too deeply" in response.json()["detail"]
    assert db_snapshot() == before


def test_a_recursion_error_elsewhere_is_still_a_server_error(monkeypatch, customer, catalogue):
    """Only a body the parser cannot read is the client's fault; a RecursionError in the
    view's own work stays a 500 (it is a bug to see, not a 400 to hide)."""

    def overflow(**kwargs):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr("orders.api.order_place", overflow)
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(customer)
    body = {"lines": [{"sku": "MUG", "quantity": 1}], "payment_token": "tok_visa"}
    assert client.post("/api/orders/", body, format="json").status_code == 500
