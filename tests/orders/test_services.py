"""order_place: validation, pricing from the catalogue, idempotency, the OrderPlaced event."""

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError

from orders.models import CatalogItem, Order, OrderLine
from orders.services import (
    MAX_QUANTITY,
    IdempotencyKeyReused,
    catalog_item_upsert,
    order_place,
    order_request_fingerprint,
)
from outbox.crypto import payload_open
from outbox.models import Event

pytestmark = pytest.mark.django_db


def place(customer, lines, token="tok_visa", key=None):
    return order_place(customer=customer, lines=lines, payment_token=token, idempotency_key=key)


def test_an_order_is_priced_from_the_catalogue(customer, catalogue):
    order, created = place(customer, [{"sku": "MUG", "quantity": 2}, {"sku": "TEE", "quantity": 1}])
    assert created
    assert (order.status, order.currency, order.total) == ("placed", "EUR", Decimal("39.00"))
    assert order.cancellation_reason is None and order.payment_status is None
    lines = {line.sku: (line.quantity, line.unit_price) for line in order.lines.all()}
    assert lines == {"MUG": (2, Decimal("9.50")), "TEE": (1, Decimal("20.00"))}


def test_a_price_change_applies_to_new_orders_only(customer, catalogue):
    before, _ = place(customer, [{"sku": "MUG", "quantity": 1}])
    catalog_item_upsert(sku="MUG", name="Mug", price="11.25", currency="EUR")
    after, _ = place(customer, [{"sku": "MUG", "quantity": 1}])
    before.refresh_from_db()
    assert (before.total, after.total) == (Decimal("9.50"), Decimal("11.25"))


def test_order_placed_is_published_with_the_orders_correlation_id(customer, catalogue):
    order, _ = place(customer, [{"sku": "TEE", "quantity": 3}, {"sku": "MUG", "quantity": 1}])
    event = Event.objects.get(type="orders.OrderPlaced")
    assert event.correlation_id == order.correlation_id
    assert (event.aggregate_type, event.aggregate_id) == ("order", str(order.pk))
    assert event.payload["payment_token"] != "tok_visa"  # sealed in the store
    assert payload_open(event.payload, event_type=event.type) == {
        "order_id": order.pk,
        "order_reference": order.reference,
        "customer_email": "alice@example.com",
        "customer_id": customer.pk,
        "lines": [
            {"sku": "TEE", "quantity": 3, "unit_price": "20.00"},
            {"sku": "MUG", "quantity": 1, "unit_price": "9.50"},
        ],
        "total": "69.50",
        "currency": "EUR",
        "payment_token": "tok_visa",
    }


@pytest.mark.parametrize(
    ("lines", "token", "field"),
    [
        ([], "tok_visa", "lines"),
        ("MUG", "tok_visa", "lines"),
        (None, "tok_visa", "lines"),
        ([{"sku": "MUG", "quantity": 101}] * 101, "tok_visa", "lines"),
        ([{"sku": "MUG", "quantity": 0}], "tok_visa", "lines"),
        ([{"sku": "MUG", "quantity": -1}], "tok_visa", "lines"),
        ([{"sku": "MUG", "quantity": MAX_QUANTITY + 1}], "tok_visa", "lines"),
        ([{"sku": "MUG", "quantity": "3"}], "tok_visa", "lines"),
        ([{"sku": "MUG", "quantity": 1.5}], "tok_visa", "lines"),
        ([{"sku": "MUG", "quantity": True}], "tok_visa", "lines"),
        ([{"sku": "NOPE", "quantity": 1}], "tok_visa", "lines"),
        ([{"sku": 7, "quantity": 1}], "tok_visa", "lines"),
        (["MUG"], "tok_visa", "lines"),
        ([{"sku": "MUG", "quantity": 1}, {"sku": "MUG", "quantity": 2}], "tok_visa", "lines"),
        ([{"sku": "MUG", "quantity": 1}], "", "payment_token"),
        ([{"sku": "MUG", "quantity": 1}], "   ", "payment_token"),
        ([{"sku": "MUG", "quantity": 1}], None, "payment_token"),
        ([{"sku": "MUG", "quantity": 1}], "x" * 256, "payment_token"),
        ([{"sku": "MUG", "quantity": 1}], "4242424242424242", "payment_token"),
        ([{"sku": "MUG", "quantity": 1}], "visa", "payment_token"),
    ],
)
def test_invalid_input_is_refused_with_field_errors_and_leaves_nothing(
    customer, catalogue, lines, token, field
):
    with pytest.raises(ValidationError) as error:
        place(customer, lines, token)
    assert field in error.value.message_dict
    assert Order.objects.count() == 0
    assert OrderLine.objects.count() == 0
    assert not Event.objects.filter(type="orders.OrderPlaced").exists()


def test_every_problem_is_reported_at_once(customer, catalogue):
    with pytest.raises(ValidationError) as error:
        place(customer, [{"sku": "NOPE", "quantity": 1}, {"sku": "MUG", "quantity": 0}], "")
    errors = error.value.message_dict
    assert set(errors) == {"lines", "payment_token"}
    assert len(errors["lines"]) == 2


def test_a_sku_priced_in_another_currency_is_refused(customer, catalogue):
    catalog_item_upsert(sku="USD-ONLY", name="Cap", price="5.00", currency="USD")
    with pytest.raises(ValidationError) as error:
        place(customer, [{"sku": "USD-ONLY", "quantity": 1}])
    assert "not sold in EUR" in error.value.message_dict["lines"][0]


def test_a_total_too_large_for_the_order_is_refused(customer, catalogue):
    catalog_item_upsert(sku="GOLD", name="Gold", price="99999999.99", currency="EUR")
    lines = [{"sku": "GOLD", "quantity": MAX_QUANTITY}, {"sku": "MUG", "quantity": 1}]
    with pytest.raises(ValidationError) as error:
        place(customer, lines)
    assert error.value.message_dict == {"lines": ["The order's total is too large."]}
    assert Order.objects.count() == 0


def test_the_same_key_and_request_returns_the_same_order(customer, catalogue):
    lines = [{"sku": "MUG", "quantity": 2}, {"sku": "TEE", "quantity": 1}]
    first, created_first = place(customer, lines, key="k-1")
    # The same request, lines in another order: still the same request.
    again, created_again = place(customer, list(reversed(lines)), key="k-1")
    assert (created_first, created_again) == (True, False)
    assert again.pk == first.pk
    assert Order.objects.count() == 1
    assert Event.objects.filter(type="orders.OrderPlaced").count() == 1


def test_the_same_key_with_another_request_is_refused(customer, catalogue):
    first, _ = place(customer, [{"sku": "MUG", "quantity": 2}], key="k-1")
    for lines, token in (
        ([{"sku": "MUG", "quantity": 3}], "tok_visa"),
        ([{"sku": "MUG", "quantity": 2}], "tok_other"),
    ):
        with pytest.raises(IdempotencyKeyReused) as error:
            place(customer, lines, token, key="k-1")
        assert error.value.order.pk == first.pk
    assert Order.objects.count() == 1


def test_keys_belong_to_one_customer(customer, other_customer, catalogue):
    mine, _ = place(customer, [{"sku": "MUG", "quantity": 1}], key="shared")
    theirs, created = place(other_customer, [{"sku": "TEE", "quantity": 1}], key="shared")
    assert created and theirs.pk != mine.pk


def test_without_a_key_every_request_is_a_new_order(customer, catalogue):
    place(customer, [{"sku": "MUG", "quantity": 1}])
    place(customer, [{"sku": "MUG", "quantity": 1}])
    assert Order.objects.count() == 2


def test_losing_the_race_on_a_key_returns_the_winners_order(customer, catalogue, monkeypatch):
    """Two requests with one key at once: the loser's insert hits the unique constraint after
    its lookup found nothing; it must answer with the winner's order, not fail."""
    winner, _ = place(customer, [{"sku": "MUG", "quantity": 1}], key="race")
    real_filter = Order.objects.filter
    lookups = {"n": 0}

    def filter_missing_first_lookup(*args, **kwargs):
        if kwargs.get("idempotency_key") == "race" and lookups["n"] == 0:
            lookups["n"] += 1
            return Order.objects.none()
        return real_filter(*args, **kwargs)

    monkeypatch.setattr(Order.objects, "filter", filter_missing_first_lookup)
    order, created = place(customer, [{"sku": "MUG", "quantity": 1}], key="race")
    assert (order.pk, created) == (winner.pk, False)

    lookups["n"] = 0
    with pytest.raises(IdempotencyKeyReused):
        place(customer, [{"sku": "MUG", "quantity": 5}], key="race")
    assert Order.objects.count() == 1


def test_an_integrity_error_without_a_key_is_not_swallowed(customer, catalogue, monkeypatch):
    # The order's insert meets a row (its random reference taken): without a key there is no
    # order to answer with instead.
    monkeypatch.setattr("orders.services.insert_or_nothing", lambda order: False)
    with pytest.raises(IntegrityError):
        place(customer, [{"sku": "MUG", "quantity": 1}])
    assert Order.objects.count() == 0


def test_the_fingerprint_is_canonical():
    a = order_request_fingerprint(lines=[("B", 1), ("A", 2)], payment_token="t")
    b = order_request_fingerprint(lines=[("A", 2), ("B", 1)], payment_token="t")
    assert a == b and len(a) == 64
    assert a != order_request_fingerprint(lines=[("A", 2), ("B", 1)], payment_token="u")


def test_the_fingerprint_is_keyed_with_the_secret(settings):
    """A short token cannot be recovered by hashing every candidate: without the secret, the
    fingerprint is not the unkeyed hash of the request, and another secret gives another one."""
    import hashlib

    lines = [("MUG", 1)]
    settings.ORDERS_FINGERPRINT_SECRET = "one secret"
    keyed = order_request_fingerprint(lines=lines, payment_token="tok_visa")
    canonical = '{"lines":[["MUG",1]],"token":"tok_visa"}'
    assert keyed != hashlib.sha256(canonical.encode()).hexdigest()
    settings.ORDERS_FINGERPRINT_SECRET = "another secret"
    assert order_request_fingerprint(lines=lines, payment_token="tok_visa") != keyed


def test_catalogue_upsert_creates_then_updates(db):
    catalog_item_upsert(sku="CUP", name="Cup", price="3", currency="EUR")
    catalog_item_upsert(sku="CUP", name="Big cup", price="4.5", currency="EUR")
    item = CatalogItem.objects.get(sku="CUP")
    assert (item.name, item.price, item.currency) == ("Big cup", Decimal("4.50"), "EUR")


@pytest.mark.parametrize("price", ["abc", "NaN", "Infinity", "-1", "100000000"])
def test_catalogue_upsert_refuses_a_bad_price(db, price):
    with pytest.raises(ValueError):
        catalog_item_upsert(sku="CUP", name="Cup", price=price, currency="EUR")
    assert not CatalogItem.objects.exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_key_make_one_order(customer, catalogue, monkeypatch):
    """Both requests pass the lookup before either inserts; the unique constraint decides, and
    the loser answers with the winner's order."""
    from tests.support import is_postgres

    if not is_postgres():
        pytest.skip("SQLite serialises writers at BEGIN: the two requests cannot overlap")

    import threading

    from django.db import connection

    barrier = threading.Barrier(2, timeout=10)
    real_create = Order.objects.create

    def create_after_both_looked(**kwargs):
        barrier.wait()
        return real_create(**kwargs)

    monkeypatch.setattr(Order.objects, "create", create_after_both_looked)
    results, errors = [], []

    def request():
        try:
            results.append(place(customer, [{"sku": "MUG", "quantity": 1}], key="same"))
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=request) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert sorted(created for _, created in results) == [False, True]
    assert len({order.pk for order, _ in results}) == 1
    assert Order.objects.count() == 1
    assert Event.objects.filter(type="orders.OrderPlaced").count() == 1
