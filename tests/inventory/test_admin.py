"""The admin: products are created and changed through the services; reservations are read-only."""

import pytest
from django.urls import reverse

from inventory.models import Product
from inventory.services import stock_fulfil, stock_reserve
from tests.inventory.helpers import a_product, payloads, snapshot, stock

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:inventory_product_changelist")
ADD = reverse("admin:inventory_product_add")


def change_url(product: Product) -> str:
    return reverse("admin:inventory_product_change", args=[product.pk])


def change_form(product: Product, *, shown_stock: int, **data) -> dict:
    """What the change page posts back: the fields, and the stock the page was rendered with."""
    return {
        "name": product.name,
        "price": str(product.price),
        "stock": shown_stock,
        "initial-stock": shown_stock,
        **data,
    }


def test_the_product_list_shows_stock_on_hand_reserved_and_available(admin_client):
    a_product("MUG", stock=5)
    stock_reserve(order_id=1, lines=[{"sku": "MUG", "quantity": 2}])
    page = admin_client.get(CHANGELIST)
    assert page.status_code == 200
    body = page.content.decode()
    for cell in ("MUG", "19.99", '<td class="field-on_hand">5</td>', 'field-reserved">2<'):
        assert cell in body
    assert '<td class="field-available">3</td>' in body
    assert admin_client.get(CHANGELIST, {"q": "MUG"}).status_code == 200


def test_adding_a_product_goes_through_product_create(admin_client):
    assert admin_client.get(ADD).status_code == 200
    response = admin_client.post(ADD, {"sku": "MUG", "name": "Mug", "price": "19.99", "stock": 4})
    assert response.status_code == 302, response.content.decode()
    assert stock("MUG") == (4, 0)
    assert payloads("inventory.ProductCatalogued") == [
        {"sku": "MUG", "name": "Mug", "price": "19.99", "currency": "EUR"}
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [("sku", "MUG"), ("sku", "bad sku"), ("price", "0"), ("price", "1.234"), ("stock", "-1")],
)
def test_bad_input_on_the_add_page_is_shown_on_the_form(admin_client, field, value):
    a_product("MUG")
    before = snapshot()
    data = {"sku": "TEE", "name": "Tee", "price": "9.99", "stock": 4, field: value}
    response = admin_client.post(ADD, data)
    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    assert snapshot() == before


def test_changing_a_product_goes_through_product_update(admin_client):
    product = a_product("MUG", stock=5, price="19.99")
    page = admin_client.get(change_url(product))
    assert page.status_code == 200
    assert 'name="stock" value="5"' in page.content.decode()
    response = admin_client.post(
        change_url(product), change_form(product, shown_stock=5, price="17.00", stock=8)
    )
    assert response.status_code == 302, response.content.decode()
    assert stock("MUG") == (8, 0)
    assert [p["price"] for p in payloads("inventory.ProductCatalogued")] == ["19.99", "17.00"]


def test_stock_below_what_is_reserved_is_refused_on_the_form(admin_client):
    product = a_product("MUG", stock=5)
    stock_reserve(order_id=1, lines=[{"sku": "MUG", "quantity": 3}])
    before = snapshot()
    response = admin_client.post(change_url(product), change_form(product, shown_stock=5, stock=2))
    assert response.status_code == 200
    assert "3 units are reserved" in str(response.context["adminform"].form.errors["stock"])
    assert snapshot() == before


def test_saving_the_page_without_touching_stock_keeps_stock_that_moved_meanwhile(admin_client):
    product = a_product("MUG", stock=5)
    shown = 5  # the page is opened; then an order's goods leave the shelf
    stock_reserve(order_id=1, lines=[{"sku": "MUG", "quantity": 2}])
    stock_fulfil(order_id=1)
    response = admin_client.post(
        change_url(product), change_form(product, shown_stock=shown, name="Big mug")
    )
    assert response.status_code == 302
    assert stock("MUG") == (3, 0)
    assert Product.objects.get(sku="MUG").name == "Big mug"


def test_the_sku_cannot_be_changed_and_products_cannot_be_deleted(admin_client):
    product = a_product("MUG", stock=5)
    admin_client.post(change_url(product), change_form(product, shown_stock=5, sku="TEE"))
    assert Product.objects.get(pk=product.pk).sku == "MUG"
    delete = reverse("admin:inventory_product_delete", args=[product.pk])
    assert admin_client.get(delete).status_code == 403


def test_reservations_are_listed_with_their_lines_and_read_only(admin_client):
    a_product("MUG", stock=5)
    reservation = stock_reserve(order_id=4711, lines=[{"sku": "MUG", "quantity": 2}])
    changelist = reverse("admin:inventory_stockreservation_changelist")
    page = admin_client.get(changelist, {"q": "4711", "status": "reserved"})
    assert page.status_code == 200
    assert "4711" in page.content.decode()
    assert admin_client.get(changelist, {"q": "not-a-number"}).status_code == 200
    detail = admin_client.get(
        reverse("admin:inventory_stockreservation_change", args=[reservation.pk])
    )
    assert detail.status_code == 200
    body = detail.content.decode()
    assert "MUG" in body
    assert "Save" not in body
    add = reverse("admin:inventory_stockreservation_add")
    assert admin_client.get(add).status_code == 403
