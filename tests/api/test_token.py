"""POST /api/auth/token/: a well-formed request with wrong credentials is a 401, not a 400."""

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

URL = "/api/auth/token/"


@pytest.fixture
def user(db):
    return get_user_model().objects.create_user("tok-alice", password="pw-tok-alice-123")


def test_right_credentials_get_a_token_in_json_or_a_form(user):
    body = {"username": "tok-alice", "password": "pw-tok-alice-123"}
    first = APIClient().post(URL, body, format="json")
    assert first.status_code == 200
    again = APIClient().post(URL, body)  # multipart, as a form would send it
    assert again.status_code == 200
    # A token per login (one per client), each of them working.
    tokens = {first.json()["token"], again.json()["token"]}
    assert len(tokens) == 2
    for token in tokens:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        assert client.get("/api/orders/").status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"username": "tok-alice", "password": "wrong"},
        {"username": "nobody", "password": "pw-tok-alice-123"},
        {"username": " tok-alice", "password": "pw-tok-alice-123"},
    ],
)
def test_wrong_credentials_are_a_401(user, body):
    response = APIClient().post(URL, body, format="json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json()["code"] == "authentication_failed"


def test_a_stale_authorization_header_does_not_stop_a_login(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    body = {"username": "tok-alice", "password": "pw-tok-alice-123"}
    assert client.post(URL, body, format="json").status_code == 200


@pytest.mark.parametrize(
    "body", [{}, {"username": "", "password": "x"}, {"username": "a\x00", "password": "x"}]
)
def test_a_malformed_request_is_a_400(user, body):
    response = APIClient().post(URL, body, format="json")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
