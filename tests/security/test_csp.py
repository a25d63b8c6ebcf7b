"""Every response carries a Content Security Policy that forbids inline script and other
hosts' assets. The browser half (no page breaks under it) is tests/flow/test_browser.py."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

PAGES = ["/admin/login/", "/api/docs/", "/api/docs/?script=", "/accounts/login/", "/healthz"]


def directives(header: str) -> dict[str, list[str]]:
    parsed = {}
    for part in header.split(";"):
        name, *values = part.split()
        parsed[name] = values
    return parsed


@pytest.mark.django_db
@pytest.mark.parametrize("path", PAGES)
def test_every_page_forbids_inline_script_and_other_hosts(client, path):
    user = get_user_model().objects.create_user("csp-reader", password="csp-pass-123456")
    client.force_login(user)
    response = client.get(path)
    assert response.status_code < 400, path
    policy = directives(response["Content-Security-Policy"])
    for directive in ("default-src", "script-src", "style-src"):
        assert policy[directive] == ["'self'"], (path, directive, policy)
    assert policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]


@pytest.mark.django_db
def test_the_api_docs_load_their_script_from_this_origin(client):
    user = get_user_model().objects.create_user("csp-docs", password="csp-pass-123456")
    client.force_login(user)
    page = client.get("/api/docs/").content.decode()
    assert "<script>" not in page and "<style>" not in page
    assert 'src="/api/docs/?script=' in page
    script = client.get("/api/docs/?script=")
    assert script["Content-Type"].startswith("application/javascript")
    assert b"SwaggerUIBundle" in script.content
