"""Issue 16, defect 8: one lock order (the product, then its stock level) wherever a product is
edited, so that the admin and the API editing one product at once queue instead of deadlocking."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.db import connection, transaction

from inventory.admin import ProductAdminForm
from inventory.services import product_update
from tests.inventory.helpers import a_product, stock
from tests.outbox.test_defects_state_changes import Background, someone_waits_for_a_row_lock
from tests.support import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_admin_and_api_editing_one_product_at_once_do_not_deadlock(monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("a race of row locks: SQLite serialises every writer at BEGIN")
    monkeypatch.setattr("outbox.publisher.relay_wake", lambda: None)
    product = a_product("MUG", stock=5)
    validated, save = threading.Event(), threading.Event()

    def admin_edit():
        # What the admin's change view does: validate the form, then save, in one transaction.
        with transaction.atomic():
            data = {"sku": "MUG", "name": "Mug", "price": "21.00", "stock": 7, "initial-stock": 5}
            form = ProductAdminForm(data=data, instance=product)
            assert form.is_valid(), form.errors
            validated.set()
            assert save.wait(30)
            product_update(
                sku="MUG",
                name=form.cleaned_data["name"],
                price=form.cleaned_data["price"],
                stock=form.cleaned_data["stock"],
            )

    admin = Background(admin_edit)
    try:
        assert validated.wait(30), admin.error
        api = Background(lambda: product_update(sku="MUG", price=Decimal("22.00"), stock=9))
        wait_until(someone_waits_for_a_row_lock, what="the API edit waiting for the admin's")
    finally:
        save.set()
    admin.result()  # neither fails with "deadlock detected"
    api.result()
    assert stock("MUG") == (9, 0)
