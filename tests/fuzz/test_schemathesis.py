"""Schemathesis against the API's own OpenAPI schema (/api/schema/), served by the WSGI app in
this process: for every operation, requests generated from the schema (valid and invalid ones)
with a customer's token, a staff token or none never get a 5xx, and every 4xx leaves the
database as it was.

Schemathesis' pytest integration (``schema.parametrize()``) does not run on pytest 9.2 (it reads
``request.node._nodeid``, which pytest 9.2 removed), so each operation's Hypothesis strategy is
used directly with ``@given``: the same generation and the same checks.
"""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from orders.services import order_place
from shop.wsgi import application
from tests.fuzz.helpers import CATALOGUE, db_snapshot
from tests.fuzz.schemathesis_hooks import order_body_catalogued

pytestmark = pytest.mark.django_db

# Per operation and generation mode; eight operations, so a few hundred requests in all.
MAX_EXAMPLES = 40


@pytest.fixture
def wsgi_app():
    """The project's WSGI app, sharing the test's database transaction.

    Django's handler closes the database connection around each request when it is not in
    autocommit mode, which in a test is always; Django's own test client turns that off the
    same way.
    """
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield application
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


def _operations() -> list[tuple[str, str]]:
    """(METHOD, path) of every operation the schema documents, read when tests are collected."""
    from drf_spectacular.generators import SchemaGenerator

    paths = SchemaGenerator().get_schema(request=None, public=True)["paths"]
    return sorted((method.upper(), path) for path, ops in paths.items() for method in ops)


OPERATIONS = _operations()


@pytest.fixture
def api_schema(wsgi_app, catalogue):
    """The schema as a client reads it: from /api/schema/, over the WSGI app."""
    return schemathesis.openapi.from_wsgi("/api/schema/", wsgi_app)


@pytest.fixture
def known(customer, other_customer, catalogue) -> dict[str, list]:
    """Path parameter values that exist, mixed into the generated ones so that requests also
    reach existing rows: the customer's own order, another customer's, a product."""
    mine, _ = order_place(
        customer=customer, lines=[{"sku": "MUG", "quantity": 1}], payment_token="tok_visa"
    )
    theirs, _ = order_place(
        customer=other_customer, lines=[{"sku": "TEE", "quantity": 1}], payment_token="tok_visa"
    )
    return {"order_id": [mine.pk, theirs.pk], "sku": sorted(catalogue)}


def _catalogued(case):
    """A valid order names catalogued products and carries a token in the gateway's format
    (tests/fuzz/schemathesis_hooks.py)."""
    case.body = order_body_catalogued(case.body, sorted(CATALOGUE))
    return case


def case_strategy(operation, known: dict[str, list]):
    """Positive and negative cases of the operation, some with path parameters that exist."""
    strategies = [
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    ]
    names = [name for name in known if f"{{{name}}}" in operation.path]
    for name in names:
        for value in known[name]:
            for mode in GenerationMode:
                strategies.append(operation.as_strategy(mode, path_parameters={name: value}))
    if (operation.method.upper(), operation.path) == ("POST", "/api/orders/"):
        strategies[0] = strategies[0].map(_catalogued)
    return st.one_of(strategies)


def fuzz(operation, strategy, headers: dict[str, str], max_examples: int) -> Counter:
    """Send generated requests; fail on a 5xx and on a 4xx that changed the database."""
    statuses: Counter = Counter()

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case):
        before = db_snapshot()
        response = case.call(headers=headers)
        statuses[response.status_code] += 1
        case.validate_response(response, headers=headers)  # every check schemathesis has
        if 400 <= response.status_code < 500:
            assert db_snapshot() == before, (
                f"{case.method} {case.formatted_path} answered {response.status_code} "
                "and changed the database"
            )

    run()
    assert statuses, f"no request was generated for {operation and operation.label}"
    return statuses


def test_every_operation_is_fuzzed(api_schema):
    loaded = sorted(
        (result.ok().method.upper(), result.ok().path) for result in api_schema.get_all_operations()
    )
    assert loaded == OPERATIONS
    assert len(OPERATIONS) >= 8


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_a_customer_gets_no_5xx_and_no_write_on_4xx(
    api_schema, known, customer_token, method, path
):
    operation = api_schema[path][method]
    statuses = fuzz(
        operation,
        case_strategy(operation, known),
        {"Authorization": f"Token {customer_token}"},
        MAX_EXAMPLES,
    )
    if (method, path) == ("POST", "/api/orders/"):
        assert statuses[202] and statuses[400], statuses  # both sides of the validation


STAFF_WRITES = [(m, p) for m, p in OPERATIONS if p.startswith("/api/products/") and m != "GET"]


@pytest.mark.parametrize(
    ("method", "path"), STAFF_WRITES, ids=[f"{m} {p}" for m, p in STAFF_WRITES]
)
def test_staff_product_writes_get_no_5xx_and_no_write_on_4xx(
    api_schema, known, staff_token, method, path
):
    operation = api_schema[path][method]
    statuses = fuzz(
        operation,
        case_strategy(operation, known),
        {"Authorization": f"Token {staff_token}"},
        MAX_EXAMPLES,
    )
    assert statuses[400], statuses


def test_an_anonymous_client_gets_no_5xx_either(api_schema, known):
    """Every operation without credentials: 401s and public reads, never a 5xx."""
    strategy = st.one_of(
        [case_strategy(result.ok(), known) for result in api_schema.get_all_operations()]
    )
    statuses = fuzz(None, strategy, {}, 80)
    assert statuses[401], statuses
