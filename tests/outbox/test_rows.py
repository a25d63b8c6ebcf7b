"""``outbox.row_get``, ``row_update``, ``rows_load`` and ``insert_or_nothing``'s statement kept
once per model (outbox/rows.py, outbox/transactions.py): what they read and write is what the
ORM reads and writes, on both backends (decimals, times, JSON, nulls), whatever the statement
was first written for."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import IntegrityError, connection
from django.db.models import DecimalField, Value
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from outbox import insert_or_nothing, model_columns, row_get, row_update, rows_load
from payments.models import GatewayAttempt, Payment
from shipping.models import Shipment

pytestmark = pytest.mark.django_db


def _payment(order_id: int, **fields) -> Payment:
    return Payment.objects.create(
        order_id=order_id,
        amount=fields.pop("amount", Decimal("12.30")),
        currency="EUR",
        status=fields.pop("status", Payment.Status.CAPTURED),
        gateway_charge_id=fields.pop("gateway_charge_id", f"ch_{order_id}"),
        idempotency_key=f"order-{order_id}-charge",
        **fields,
    )


def _as_orm(model, pk) -> dict:
    obj = model.objects.get(pk=pk)
    return {f.attname: getattr(obj, f.attname) for f in model._meta.concrete_fields}


def _fields(obj) -> dict:
    return {f.attname: getattr(obj, f.attname) for f in type(obj)._meta.concrete_fields}


def test_row_get_reads_what_the_orm_reads():
    stored = _payment(5, amount=Decimal("0.10"))
    _payment(6)
    found = row_get(Payment, order_id=5)
    assert _fields(found) == _as_orm(Payment, stored.pk)
    assert isinstance(found.amount, Decimal) and found.amount == Decimal("0.10")
    assert timezone.is_aware(found.created_at)
    assert found._state.adding is False and found._state.db == "default"
    # Each lookup's own parameters, with the statement written for the first.
    assert row_get(Payment, order_id=6).order_id == 6
    assert row_get(Payment, order_id=7) is None


def test_row_get_on_several_fields_with_a_lock_and_json():
    shipment = Shipment.objects.create(
        order_id=3, carrier="UPS", tracking_number="1Z1", lines=[{"sku": "A", "quantity": 2}]
    )
    found = row_get(Shipment, lock=True, order_id=3, carrier="UPS")
    assert found.lines == [{"sku": "A", "quantity": 2}]
    assert _fields(found) == _as_orm(Shipment, shipment.pk)
    assert row_get(Shipment, lock=True, order_id=3, carrier="DHL") is None


def test_row_get_refuses_a_lookup_that_is_not_unique():
    _payment(1, status=Payment.Status.FAILED, gateway_charge_id="")
    _payment(2, status=Payment.Status.FAILED, gateway_charge_id="")
    with pytest.raises(Payment.MultipleObjectsReturned):
        row_get(Payment, status=Payment.Status.FAILED)


def test_row_update_writes_the_fields_named_and_sets_auto_now():
    payment = _payment(9)
    before = payment.updated_at
    payment.status = Payment.Status.REFUNDED
    payment.currency = "USD"  # not named: not written
    assert row_update(payment, ["status", "updated_at"]) == 1
    stored = Payment.objects.get(pk=payment.pk)
    assert stored.status == "refunded" and stored.currency == "EUR"
    assert stored.updated_at == payment.updated_at > before
    gone = Payment(pk=10**9, status="failed")
    assert row_update(gone, ["status"]) == 0


def test_row_update_keeps_the_tables_checks():
    payment = _payment(11)
    payment.gateway_charge_id = ""  # a captured payment without its charge id
    with pytest.raises(IntegrityError):
        row_update(payment, ["gateway_charge_id"])


def test_rows_load_takes_the_models_columns_and_leaves_the_rest():
    payment = _payment(12)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {model_columns(Payment, 'p')}, 42 FROM payments_payment p WHERE p.id = %s",
            [payment.pk],
        )
        rows = cursor.fetchall()
    (loaded,) = rows_load(Payment, rows)
    assert _fields(loaded) == _as_orm(Payment, payment.pk)
    assert rows[0][-1] == 42


def test_insert_or_nothing_writes_each_object_with_its_own_values():
    first = GatewayAttempt(
        kind="charge", order_id=1, idempotency_key="k1", amount=Decimal("1.50"), currency="EUR"
    )
    second = GatewayAttempt(
        kind="charge", order_id=2, idempotency_key="k2", amount=Decimal("2.25"), currency="USD"
    )
    assert insert_or_nothing(first) and insert_or_nothing(second)
    assert first.pk != second.pk
    assert _as_orm(GatewayAttempt, first.pk) == _fields(first)
    assert _as_orm(GatewayAttempt, second.pk) == _fields(second)
    again = GatewayAttempt(
        kind="charge", order_id=2, idempotency_key="k3", amount=Decimal("9"), currency="EUR"
    )
    assert insert_or_nothing(again) is False and again.pk is None
    assert GatewayAttempt.objects.count() == 2


def test_insert_or_nothing_takes_an_expression_the_orms_way():
    attempt = GatewayAttempt(
        kind="refund",
        order_id=4,
        idempotency_key="k4",
        amount=Value(Decimal("3.10"), output_field=DecimalField(max_digits=12, decimal_places=2)),
        currency="EUR",
    )
    assert insert_or_nothing(attempt)
    assert GatewayAttempt.objects.get(pk=attempt.pk).amount == Decimal("3.10")
    plain = GatewayAttempt(
        kind="refund", order_id=5, idempotency_key="k5", amount=Decimal("4"), currency="EUR"
    )
    assert insert_or_nothing(plain)  # the kept statement, after the ORM's
    assert GatewayAttempt.objects.get(pk=plain.pk).amount == Decimal("4.00")


def test_a_saga_read_is_one_statement():
    _payment(13)
    with CaptureQueriesContext(connection) as queries:
        row_get(Payment, lock=True, order_id=13)
    assert len(queries.captured_queries) == 1
