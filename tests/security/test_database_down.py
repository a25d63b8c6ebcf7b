"""While the database is away the web answers 503 with Retry-After: never a 500, never a
request that hangs. PostgreSQL only: the real driver, refused and silent servers."""

from __future__ import annotations

import contextlib
import socket

import pytest
from django.db import connection

from tests.support import is_postgres

pytestmark = [
    pytest.mark.skipif(not is_postgres(), reason="needs PostgreSQL"),
    pytest.mark.django_db(transaction=True),
]


@contextlib.contextmanager
def database_at(port: int):
    """Point this process's connection at another port, as after a failover to nothing."""
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict["PORT"] = port
    connection.settings_dict["OPTIONS"] = {**saved.get("OPTIONS", {}), "connect_timeout": 1}
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def silent_server():
    """Accepts TCP connections and never says a word, like a database that hangs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


@pytest.mark.parametrize("server", ["refused", "silent"])
@pytest.mark.parametrize(
    ("method", "path"),
    [("get", "/api/products/"), ("post", "/api/orders/"), ("get", "/admin/")],
)
def test_a_lost_database_is_a_503_with_retry_after(client, django_user_model, server, method, path):
    # A signed-in operator: the admin has to read the session from the database.
    client.force_login(django_user_model.objects.create_user("op", is_staff=True))
    with contextlib.ExitStack() as stack:
        port = closed_port() if server == "refused" else stack.enter_context(silent_server())
        stack.enter_context(database_at(port))
        response = getattr(client, method)(
            path,
            data={"lines": [{"sku": "X", "quantity": 1}], "payment_token": "tok_visa"},
            content_type="application/json",
            headers={"Authorization": "Token 0123456789abcdef", "Idempotency-Key": "k1"},
        )
    assert response.status_code == 503, response.content
    assert response["Retry-After"] == "5"
    if path.startswith("/api/"):
        assert response.json()["status"] == 503
    # The next request, with the database back, is served as usual.
    assert client.get("/api/products/").status_code == 200
