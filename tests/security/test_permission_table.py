"""Every operation, admin page and admin action answers each role as shop/permissions.py says.

The tests are generated from that table; the coverage tests fail when a URL pattern, an API
method, an admin model or an admin action has no row (or a row names nothing that exists).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser, Group, Permission
from django.test import Client, RequestFactory
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone
from rest_framework.test import APIClient

from orders.models import Order
from outbox.models import Heartbeat
from shop import permissions as table
from tests.security.credentials import api_token

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "pw-role-123"
ORDER_BODY = {"lines": [{"sku": "MUG", "quantity": 1}], "payment_token": "tok_visa"}
HTTP_METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture
def roles(db, settings, catalogue):
    """One user per role (None for anonymous), and an order of the customer's."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    users: dict[str, object] = {"anonymous": None}
    User = get_user_model()
    for role in table.ROLES[1:]:
        staff = role not in ("customer", "other_customer")
        user = User.objects.create_user(f"role-{role}", password=PASSWORD, is_staff=staff)
        if role in table.ROLE_GROUPS:
            user.groups.add(group_of(table.ROLE_GROUPS[role]))
        users[role] = user
    order = place(users["customer"])
    return users, order


def group_of(name: str) -> Group:
    """The role's group, as the migration made it (made again after a flush)."""
    group, _ = Group.objects.get_or_create(name=name)
    for permission in table.GROUPS[name]:
        app_label, codename = permission.split(".")
        group.permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return group


def place(user) -> Order:
    client = APIClient()
    client.force_authenticate(user)
    response = client.post("/api/orders/", ORDER_BODY, format="json")
    assert response.status_code == 202, response.content
    return Order.objects.get(reference=response.json()["id"])


def order_arg(order: Order):
    return order.reference


def url_of(name: str, order: Order) -> str:
    kwargs = {}
    if name in (
        "orders:order-detail",
        "orders:order-events",
        "orders:order-cancel",
        "orders:saga-retry",
        "orders:saga-cancel",
        "order_pages:order-flow",
    ):
        kwargs = {"reference": order_arg(order)}
    elif name == "inventory:product-detail":
        kwargs = {"sku": "MUG"}
    return reverse(name, kwargs=kwargs)


def body_of(method: str, name: str, role: str, user) -> dict | None:
    if (method, name) == ("POST", "api-token"):
        return {} if user is None else {"username": user.username, "password": PASSWORD}
    if (method, name) == ("POST", "inventory:product-list"):
        return {"sku": f"NEW-{role}", "name": "New", "price": "3.00", "stock": 5}
    if (method, name) == ("PATCH", "inventory:product-detail"):
        return {"price": "8.00"}
    if (method, name) == ("POST", "orders:order-list"):
        return ORDER_BODY
    if name in ("orders:saga-retry", "orders:saga-cancel"):
        return {"reason": f"asked by {role}"}
    return None


def client_for(url: str, user):
    """API URLs with the user's token; pages, the admin and probes with a session."""
    if url.startswith("/api/"):
        client = APIClient()
        if user is not None:
            client.credentials(HTTP_AUTHORIZATION=f"Token {api_token(user)}")
        return client
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def answer(method: str, name: str, role: str, user, order: Order) -> int:
    url = url_of(name, order)
    client = client_for(url, user)
    body = body_of(method, name, role, user)
    if isinstance(client, APIClient):
        response = getattr(client, method.lower())(url, body, format="json")
    elif body is None:
        response = getattr(client, method.lower())(url)
    else:
        response = getattr(client, method.lower())(url, body)
    return response.status_code


# --- generated from the table --------------------------------------------------------------------


@pytest.mark.parametrize(("method", "name"), list(table.OPERATIONS))
def test_every_role_gets_the_answer_the_table_says(roles, settings, method, name):
    settings.API_DOCS_PUBLIC = False  # as in production
    settings.METRICS_PUBLIC = False
    for heartbeat in ("relay", "beat"):
        Heartbeat.objects.update_or_create(name=heartbeat, defaults={"beat_at": timezone.now()})
    users, order = roles
    expected = table.OPERATIONS[(method, name)]
    got = {role: answer(method, name, role, users[role], order) for role in table.ROLES}
    assert got == expected


@pytest.mark.parametrize("model", list(table.ADMIN_PAGES))
def test_every_role_gets_the_admin_page_the_table_says(roles, model):
    users, _ = roles
    url = reverse(f"admin:{model.replace('.', '_')}_changelist")
    got = {role: client_for(url, users[role]).get(url).status_code for role in table.ROLES}
    assert got == table.ADMIN_PAGES[model]


@pytest.mark.parametrize(("model", "action"), list(table.ADMIN_ACTIONS))
def test_every_role_is_offered_the_admin_actions_the_table_says(roles, model, action):
    users, _ = roles
    model_admin = admin_of(model)
    got = {}
    for role in table.ROLES:
        request = RequestFactory().post("/")
        request.user = users[role] or AnonymousUser()
        got[role] = action in model_admin.get_actions(request)
    assert got == table.ADMIN_ACTIONS[(model, action)]


def test_the_order_list_shows_every_customers_orders_to_the_roles_the_table_says(roles):
    users, _ = roles
    place(users["other_customer"])
    total = Order.objects.count()
    for role, sees_all in table.VIEWS["every customer's orders"].items():
        if users[role] is None:
            continue
        client = client_for("/api/orders/", users[role])
        count = client.get("/api/orders/").json()["count"]
        own = Order.objects.filter(customer=users[role]).count()
        assert count == (total if sees_all else own), role


def test_the_timeline_and_flow_page_show_the_machinery_to_the_roles_the_table_says(roles):
    users, order = roles
    for role, sees_machinery in table.VIEWS["the saga's machinery"].items():
        if table.OPERATIONS[("GET", "orders:order-events")][role] != 200:
            continue
        client = client_for("/api/", users[role])
        [placed] = client.get(url_of("orders:order-events", order)).json()
        assert ("deliveries" in placed) == sees_machinery, role
        page = client_for("/orders/", users[role]).get(url_of("order_pages:order-flow", order))
        assert ("data-subscriber=" in page.content.decode()) == sees_machinery, role


# --- the table covers everything -----------------------------------------------------------------


def url_patterns(patterns=None, namespace: str = ""):
    """(URL name, view) of every pattern outside the admin."""
    for pattern in patterns if patterns is not None else get_resolver().url_patterns:
        if isinstance(pattern, URLResolver):
            if pattern.namespace == "admin":
                continue
            inner = ":".join(filter(None, [namespace, pattern.namespace]))
            yield from url_patterns(pattern.url_patterns, inner)
        elif isinstance(pattern, URLPattern):
            name = f"{namespace}:{pattern.name}" if namespace else pattern.name
            yield name, pattern.callback


def methods_of(view) -> set[str]:
    view_class = getattr(view, "view_class", None)
    if view_class is None:
        return set()  # a function view: at least one row, below
    allowed = set(view_class.http_method_names)
    return {m.upper() for m in HTTP_METHODS if m in allowed and hasattr(view_class, m)}


def test_every_url_pattern_and_method_has_a_row():
    missing = []
    for name, view in url_patterns():
        assert name, f"an unnamed URL pattern ({view}) cannot have a row: name it"
        rows = {method for method, row_name in table.OPERATIONS if row_name == name}
        if not rows:
            missing.append(name)
        missing += [f"{m} {name}" for m in methods_of(view) - rows]
    assert not missing, f"no row in shop/permissions.py for {missing}"


def test_every_row_names_a_url_that_exists():
    names = {name for name, _ in url_patterns()} | {"admin:index"}
    assert {name for _, name in table.OPERATIONS} <= names


def admin_of(model: str):
    for model_class, model_admin in admin.site._registry.items():
        if model_class._meta.label_lower == model:
            return model_admin
    raise AssertionError(f"{model} is not in the admin")


def test_every_admin_model_and_action_has_a_row_and_every_action_a_permission():
    registered = {m._meta.label_lower: a for m, a in admin.site._registry.items()}
    assert set(registered) == set(table.ADMIN_PAGES)
    actions = set()
    for model, model_admin in registered.items():
        for func, name, _ in model_admin._get_base_actions():
            actions.add((model, name))
            assert getattr(func, "allowed_permissions", None), f"{model} {name}: no permissions="
            for permission in func.allowed_permissions:
                assert hasattr(model_admin, f"has_{permission}_permission"), (model, name)
    assert actions == set(table.ADMIN_ACTIONS)


# --- the groups and the docs ---------------------------------------------------------------------


def test_the_migration_creates_the_groups_of_the_table():
    migration = importlib.import_module("shop.migrations.0001_role_groups")
    assert {name: set(perms) for name, perms in migration.GROUPS.items()} == {
        name: set(perms) for name, perms in table.GROUPS.items()
    }
    for name, permissions in table.GROUPS.items():
        group = Group.objects.get(name=name)
        assert {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.all()} == set(
            permissions
        )


def test_the_docs_show_the_table():
    docs = (ROOT / "docs" / "permissions.md").read_text()
    assert table.permission_table_markdown() in docs, (
        "docs/permissions.md is out of date: paste shop.permissions.permission_table_markdown()"
    )
