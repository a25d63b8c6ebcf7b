"""API tokens with a lifecycle: several per user, stored hashed, expiring, revoked on logout (one
or all) and on a password change; the admin never shows a usable key."""

import datetime as dt

import pytest
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from tests.security.conftest import PASSWORDS

pytestmark = pytest.mark.django_db

ORDERS = "/api/orders/"


def log_in(user) -> str:
    response = APIClient().post(
        "/api/auth/token/",
        {"username": user.username, "password": PASSWORDS[user.username]},
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"token", "expiry"}
    return body["token"]


def with_token(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def works(token: str) -> bool:
    status = with_token(token).get(ORDERS).status_code
    assert status in (200, 401)
    return status == 200


def test_each_login_is_a_new_token_and_several_work_at_once(customer):
    phone, laptop = log_in(customer), log_in(customer)
    assert phone != laptop
    assert works(phone) and works(laptop)
    assert AuthToken.objects.filter(user=customer).count() == 2


def test_tokens_are_stored_hashed(customer):
    token = log_in(customer)
    [row] = AuthToken.objects.filter(user=customer).values()
    assert token not in {str(value) for value in row.values()}
    assert row["digest"] != token


def test_a_token_expires(customer):
    token = log_in(customer)
    expiry = AuthToken.objects.get(user=customer).expiry
    assert timezone.now() < expiry <= timezone.now() + dt.timedelta(hours=24, seconds=5)
    AuthToken.objects.filter(user=customer).update(expiry=timezone.now() - dt.timedelta(seconds=1))
    assert not works(token)


def test_logout_revokes_this_token_only(customer):
    phone, laptop = log_in(customer), log_in(customer)
    assert with_token(phone).post("/api/auth/logout/").status_code == 204
    assert not works(phone)
    assert works(laptop)


def test_logout_all_revokes_every_token_of_the_user(customer, other_customer):
    phone, laptop, theirs = log_in(customer), log_in(customer), log_in(other_customer)
    assert with_token(phone).post("/api/auth/logout-all/").status_code == 204
    assert not works(phone) and not works(laptop)
    assert works(theirs)


def test_a_password_change_revokes_every_token_of_the_user(customer, other_customer):
    token, theirs = log_in(customer), log_in(other_customer)
    customer.first_name = "Al"
    customer.save()  # not a password change: the token stays
    assert works(token)
    customer.set_password("a-new-password-456")
    customer.save()
    assert not works(token)
    assert works(theirs)
    PASSWORDS_NOW = {**PASSWORDS, customer.username: "a-new-password-456"}
    response = APIClient().post(
        "/api/auth/token/",
        {"username": customer.username, "password": PASSWORDS_NOW[customer.username]},
        format="json",
    )
    assert response.status_code == 200 and works(response.json()["token"])


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 400),
        ({"username": "alice"}, 400),
        ({"username": 1}, 400),
        ({"username": "alice", "password": "wrong"}, 401),
        ({"username": "nobody", "password": "pw-alice-123"}, 401),
    ],
)
def test_bad_credentials_get_no_token(customer, body, status):
    response = APIClient().post("/api/auth/token/", body, format="json")
    assert response.status_code == status
    assert not AuthToken.objects.exists()


def test_a_token_that_is_not_utf8_is_a_401():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token \xff\xfe")
    assert client.get(ORDERS).status_code == 401


def test_the_admin_never_shows_a_usable_key(client, customer, django_user_model):
    token = log_in(customer)
    row = AuthToken.objects.get(user=customer)
    admin = django_user_model.objects.create_superuser("root", password="pw-root-123")
    client.force_login(admin)
    pages = [
        "/admin/knox/authtoken/",
        f"/admin/knox/authtoken/{row.pk}/change/",
    ]
    for url in pages:
        page = client.get(url)
        assert page.status_code == 200, url
        body = page.content.decode()
        assert "alice" in body
        # The digest (the row's primary key, in its URLs) is a SHA-512 of the token: not usable.
        assert token not in body, url
        assert row.token_key not in body, url
    assert client.get("/admin/knox/authtoken/add/").status_code == 403


def test_a_users_expired_tokens_are_deleted_when_they_log_in(customer, other_customer):
    phone, laptop, theirs = log_in(customer), log_in(customer), log_in(other_customer)
    past = timezone.now() - dt.timedelta(seconds=1)
    from knox.settings import CONSTANTS

    AuthToken.objects.filter(token_key=phone[: CONSTANTS.TOKEN_KEY_LENGTH]).update(expiry=past)
    AuthToken.objects.filter(user=other_customer).update(expiry=past)
    tablet = log_in(customer)
    assert AuthToken.objects.filter(user=customer).count() == 2  # the laptop's and the tablet's
    assert works(laptop) and works(tablet) and not works(phone)
    assert not works(theirs)  # refused (and deleted) when presented, as before
    assert not AuthToken.objects.filter(user=other_customer).exists()


def test_a_request_reads_its_token_and_user_in_one_statement(customer):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = with_token(log_in(customer))
    with CaptureQueriesContext(connection) as queries:
        assert client.get(ORDERS).status_code == 200
    reads = [q["sql"] for q in queries.captured_queries if "knox_authtoken" in q["sql"]]
    assert len(reads) == 1 and "auth_user" in reads[0], reads
    assert not any(q["sql"].startswith("UPDATE") for q in queries.captured_queries)
