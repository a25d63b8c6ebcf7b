"""Who may do what: the roles, the groups that make them, and the permission table.

This module is the one place that says it. The data migration ``shop/migrations`` creates the
groups (and a test checks it matches ``GROUPS``), ``docs/permissions.md`` shows the table
(rendered by ``permission_table_markdown``, and a test checks the two are the same), and the
role tests in ``tests/security/test_permission_table.py`` request every operation as every role
and expect the answer written here. A URL pattern, an API method, an admin model or an admin
action with no row fails those tests.

Every capability is a Django permission checked the same way everywhere: model permissions
(``inventory.add_product``, ``orders.change_order`` to operate a saga: retry or cancel it,
``shipping.change_shipment`` to move a parcel on) or named ones (``orders.view_any_order``,
``orders.view_order_machinery``, ``outbox.replay_delivery``). ``is_staff`` only lets a user log
in to the admin; it grants nothing else.
"""

from __future__ import annotations

# --- roles and groups ----------------------------------------------------------------------------

# The columns of the table. "customer" owns the order a row is about; "other_customer" does not.
# "staff" is a staff user with no permission at all; the last three are staff in one group each.
ROLES = (
    "anonymous",
    "customer",
    "other_customer",
    "staff",
    "catalogue_manager",
    "support",
    "operator",
)

SUPPORT_PERMISSIONS = (
    "orders.view_order",
    "orders.view_orderline",
    "orders.view_any_order",
    "payments.view_payment",
    "payments.view_refund",
    "shipping.view_shipment",
    "inventory.view_stockreservation",
    "inventory.view_stockreservationline",
)

# Group name -> its permissions ("app_label.codename"). Created by shop's data migration.
GROUPS: dict[str, tuple[str, ...]] = {
    "catalogue manager": (
        "inventory.view_product",
        "inventory.add_product",
        "inventory.change_product",
        "orders.view_catalogitem",
    ),
    "support": SUPPORT_PERMISSIONS,
    "operator": (
        *SUPPORT_PERMISSIONS,
        "orders.view_order_machinery",
        "orders.change_order",
        "shipping.change_shipment",
        "outbox.view_event",
        "outbox.view_delivery",
        "outbox.view_deadletter",
        "outbox.view_heartbeat",
        "outbox.replay_delivery",
        "django_celery_beat.view_periodictask",
        "django_celery_beat.view_intervalschedule",
        "django_celery_beat.view_crontabschedule",
        "django_celery_beat.view_solarschedule",
        "django_celery_beat.view_clockedschedule",
    ),
}
ROLE_GROUPS = {
    "catalogue_manager": "catalogue manager",
    "support": "support",
    "operator": "operator",
}


def _row(*answers):
    assert len(answers) == len(ROLES), answers
    return dict(zip(ROLES, answers, strict=True))


# --- the API and the pages: (method, URL name) -> each role's status code -------------------------
# Rows about an order use the customer's order. Schema, docs and metrics: as in production
# (API_DOCS_PUBLIC off, no METRICS_TOKEN). The token endpoint: each role posts its own username
# and password (anonymous posts none). The saga console's actions post a reason.

EVERYONE_200 = _row(200, 200, 200, 200, 200, 200, 200)
CUSTOMERS_ORDER = _row(401, 200, 404, 404, 404, 200, 200)
CUSTOMERS_ORDER_PAGE = _row(302, 200, 404, 404, 404, 200, 200)
CATALOGUE_WRITE = {"anonymous": 401, **{role: 403 for role in ROLES[1:]}}
OPERATOR_ONLY_200 = {**CATALOGUE_WRITE, "operator": 200}

OPERATIONS: dict[tuple[str, str], dict[str, int]] = {
    ("POST", "api-token"): _row(400, 200, 200, 200, 200, 200, 200),
    ("POST", "api-logout"): _row(401, 204, 204, 204, 204, 204, 204),
    ("POST", "api-logout-all"): _row(401, 204, 204, 204, 204, 204, 204),
    ("GET", "inventory:product-list"): EVERYONE_200,
    ("POST", "inventory:product-list"): {**CATALOGUE_WRITE, "catalogue_manager": 201},
    ("GET", "inventory:product-detail"): EVERYONE_200,
    ("PATCH", "inventory:product-detail"): {**CATALOGUE_WRITE, "catalogue_manager": 200},
    ("GET", "orders:order-list"): _row(401, 200, 200, 200, 200, 200, 200),
    ("POST", "orders:order-list"): _row(401, 202, 202, 202, 202, 202, 202),
    ("GET", "orders:order-detail"): CUSTOMERS_ORDER,
    ("GET", "orders:order-events"): CUSTOMERS_ORDER,
    # Support sees the order but may not cancel it; the operator cancels (operator_cancelled).
    ("POST", "orders:order-cancel"): _row(401, 202, 404, 404, 404, 403, 202),
    # The saga console: its machinery to read, orders.change_order to act.
    ("GET", "orders:saga-list"): OPERATOR_ONLY_200,
    ("POST", "orders:saga-retry"): OPERATOR_ONLY_200,
    ("POST", "orders:saga-cancel"): {**OPERATOR_ONLY_200, "operator": 202},
    ("GET", "schema"): _row(401, 200, 200, 200, 200, 200, 200),
    ("GET", "swagger-ui"): _row(401, 200, 200, 200, 200, 200, 200),
    ("GET", "asyncapi"): _row(401, 200, 200, 200, 200, 200, 200),
    ("GET", "api-not-found"): _row(404, 404, 404, 404, 404, 404, 404),  # anything else in /api/
    ("GET", "order_pages:order-list"): _row(302, 200, 200, 200, 200, 200, 200),
    ("GET", "order_pages:order-flow"): CUSTOMERS_ORDER_PAGE,
    ("GET", "login"): _row(200, 302, 302, 302, 302, 302, 302),
    ("POST", "login"): _row(200, 302, 302, 302, 302, 302, 302),
    ("PUT", "login"): _row(200, 302, 302, 302, 302, 302, 302),  # Django's: as POST
    ("POST", "logout"): _row(302, 302, 302, 302, 302, 302, 302),
    # Private: a scraper's METRICS_TOKEN opens it, no role does (docs/operations.md).
    ("GET", "metrics"): _row(403, 403, 403, 403, 403, 403, 403),
    ("GET", "healthz"): EVERYONE_200,
    ("GET", "readyz"): EVERYONE_200,
    ("GET", "admin:index"): _row(302, 302, 302, 200, 200, 200, 200),
}

# What a successful answer shows, by role: True where the role sees it.
VIEWS: dict[str, dict[str, bool]] = {
    # GET /api/orders/ and /orders/: every customer's orders (else the caller's own).
    "every customer's orders": _row(False, False, False, False, False, True, True),
    # The timeline and the flow page: subscribers, attempts, error text and internal ids
    # (else events, times and the order's state).
    "the saga's machinery": _row(False, False, False, False, False, False, True),
}

# --- the admin -----------------------------------------------------------------------------------
# Model ("app_label.model") -> each role's status code for its change list (non-staff are sent
# to the admin's login page: 302).

_STAFF_ONLY = (302, 302, 302)


def _admin(*staff_answers):
    return _row(*_STAFF_ONLY, *staff_answers)


SUPERUSER_ONLY = _admin(403, 403, 403, 403)
ADMIN_PAGES: dict[str, dict[str, int]] = {
    "auth.user": SUPERUSER_ONLY,
    "auth.group": SUPERUSER_ONLY,
    "knox.authtoken": SUPERUSER_ONLY,
    "django_celery_beat.periodictask": _admin(403, 403, 403, 200),
    "django_celery_beat.clockedschedule": _admin(403, 403, 403, 200),
    "django_celery_beat.crontabschedule": _admin(403, 403, 403, 200),
    "django_celery_beat.solarschedule": _admin(403, 403, 403, 200),
    "django_celery_beat.intervalschedule": _admin(403, 403, 403, 200),
    "outbox.event": _admin(403, 403, 403, 200),
    "outbox.delivery": _admin(403, 403, 403, 200),
    "outbox.deadletter": _admin(403, 403, 403, 200),
    "outbox.heartbeat": _admin(403, 403, 403, 200),
    "orders.order": _admin(403, 403, 200, 200),
    "orders.sagainflight": _admin(403, 403, 403, 200),
    "orders.catalogitem": _admin(403, 200, 403, 403),
    "payments.payment": _admin(403, 403, 200, 200),
    "payments.refund": _admin(403, 403, 200, 200),
    "inventory.product": _admin(403, 200, 403, 403),
    "inventory.stockreservation": _admin(403, 403, 200, 200),
    "shipping.shipment": _admin(403, 403, 200, 200),
    # Customers' addresses and what was sent to them: superusers only until a group needs it.
    "notifications.notification": SUPERUSER_ONLY,
    # Gateway attempts (read-only; an unresolved one is answered by payments_attempt_resolve):
    # superusers only until a role group is granted payments.view_gatewayattempt.
    "payments.gatewayattempt": SUPERUSER_ONLY,
}

# (model, action) -> whether the role is offered the action (and so may run it). Each action
# declares the permission it needs (admin.action(permissions=...)).
_NOBODY = _row(False, False, False, False, False, False, False)
ADMIN_ACTIONS: dict[tuple[str, str], dict[str, bool]] = {
    **{(model, "delete_selected"): _NOBODY for model in ADMIN_PAGES},
    ("outbox.delivery", "replay_deliveries"): _row(False, False, False, False, False, False, True),
    ("outbox.deadletter", "replay_deliveries"): _row(
        False, False, False, False, False, False, True
    ),
    ("orders.sagainflight", "retry_dead"): _row(False, False, False, False, False, False, True),
    ("orders.sagainflight", "cancel_with_compensation"): _row(
        False, False, False, False, False, False, True
    ),
    ("shipping.shipment", "hand_to_carrier"): _row(False, False, False, False, False, False, True),
    ("shipping.shipment", "mark_delivered"): _row(False, False, False, False, False, False, True),
    **{
        ("django_celery_beat.periodictask", action): _NOBODY
        for action in ("enable_tasks", "disable_tasks", "toggle_tasks", "run_tasks")
    },
}


# --- the table in the docs -----------------------------------------------------------------------


def _cell(value) -> str:
    if value is True:
        return "yes"
    if value is False:
        return "-"
    return str(value)


def permission_table_markdown() -> str:
    """The tables of docs/permissions.md, from this module."""
    header = "| operation | " + " | ".join(ROLES) + " |\n| --- |" + " --- |" * len(ROLES) + "\n"

    def rows(items):
        return "".join(
            f"| {name} | " + " | ".join(_cell(answers[role]) for role in ROLES) + " |\n"
            for name, answers in items
        )

    return (
        header
        + rows((f"`{method} {name}`", answers) for (method, name), answers in OPERATIONS.items())
        + rows((f"sees {what}", answers) for what, answers in VIEWS.items())
        + rows((f"admin: `{model}` list", answers) for model, answers in ADMIN_PAGES.items())
        + rows(
            (f"admin action: `{model}` {action}", answers)
            for (model, action), answers in ADMIN_ACTIONS.items()
        )
    )
