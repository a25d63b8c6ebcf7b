"""product_create and product_update: the catalogue, its rules and its ProductCatalogued events."""

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from inventory.models import STOCK_MAX, Product, StockLevel
from inventory.services import product_create, product_update, stock_reserve
from tests.inventory.helpers import a_product, payloads, snapshot, stock

pytestmark = pytest.mark.django_db


def test_create_stores_the_product_with_its_stock_and_publishes_it():
    product = product_create(sku="MUG", name="Mug", price=Decimal("19.99"), stock=7)
    assert (product.sku, product.name, product.price, product.currency) == (
        "MUG",
        "Mug",
        Decimal("19.99"),
        "EUR",
    )
    assert stock("MUG") == (7, 0)
    assert payloads("inventory.ProductCatalogued") == [
        {"sku": "MUG", "name": "Mug", "price": "19.99", "currency": "EUR"}
    ]


def test_create_writes_whole_prices_with_cents_and_takes_the_shop_currency(settings):
    settings.SHOP_CURRENCY = "USD"
    product = product_create(sku="T-1", name="  Tee  ", price=Decimal("20"), stock=0)
    assert (product.name, str(product.price), product.currency) == ("Tee", "20.00", "USD")
    assert payloads("inventory.ProductCatalogued")[0]["price"] == "20.00"
    assert payloads("inventory.ProductCatalogued")[0]["currency"] == "USD"


def test_a_duplicate_sku_is_refused_on_sku():
    a_product("MUG")
    before = snapshot()
    with pytest.raises(ValidationError) as exc:
        product_create(sku="MUG", name="Another", price=Decimal("1.00"), stock=1)
    assert "sku" in exc.value.message_dict
    assert snapshot() == before


VALID = {"sku": "MUG", "name": "Mug", "price": Decimal("19.99"), "stock": 5}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sku", ""),
        ("sku", "-MUG"),
        ("sku", "MU G"),
        ("sku", "MUG\n"),
        ("sku", "MUG/1"),
        ("sku", "M" * 65),
        ("name", ""),
        ("name", "   "),
        ("name", "n" * 201),
        ("name", "Mug\x00"),
        ("name", None),
        ("price", Decimal("0")),
        ("price", Decimal("-1.00")),
        ("price", Decimal("1.999")),
        ("price", Decimal("100000000.00")),
        ("price", Decimal("NaN")),
        ("price", Decimal("Infinity")),
        ("price", "abc"),
        ("stock", -1),
        ("stock", 1_000_001),
        ("stock", "5"),
        ("stock", True),
        ("stock", 1.5),
        ("stock", None),
    ],
)
def test_create_refuses_bad_input_with_a_field_error_and_changes_nothing(field, value):
    before = snapshot()
    with pytest.raises(ValidationError) as exc:
        product_create(**{**VALID, field: value})
    assert field in exc.value.message_dict
    assert snapshot() == before


def test_update_of_name_or_price_publishes_the_product_as_it_now_is():
    a_product("MUG", price="19.99", name="Mug")
    product_update(sku="MUG", name="Big mug")
    product_update(sku="MUG", price=Decimal("21.5"))
    product = Product.objects.get(sku="MUG")
    assert (product.name, product.price) == ("Big mug", Decimal("21.50"))
    assert payloads("inventory.ProductCatalogued")[1:] == [
        {"sku": "MUG", "name": "Big mug", "price": "19.99", "currency": "EUR"},
        {"sku": "MUG", "name": "Big mug", "price": "21.50", "currency": "EUR"},
    ]


def test_update_that_changes_nothing_the_catalogue_shows_publishes_nothing():
    a_product("MUG", price="19.99", name="Mug", stock=3)
    product_update(sku="MUG", name="Mug", price=Decimal("19.99"), stock=12)
    product_update(sku="MUG")
    assert stock("MUG") == (12, 0)
    assert len(payloads("inventory.ProductCatalogued")) == 1


def test_stock_may_go_down_to_what_is_reserved_and_not_below():
    a_product("MUG", stock=10)
    stock_reserve(order_id=1, lines=[{"sku": "MUG", "quantity": 4}])
    product_update(sku="MUG", stock=4)
    assert stock("MUG") == (4, 4)
    before = snapshot()
    with pytest.raises(ValidationError) as exc:
        product_update(sku="MUG", name="Renamed", stock=3)
    assert list(exc.value.message_dict) == ["stock"]
    assert "4 units are reserved" in exc.value.message_dict["stock"][0]
    assert snapshot() == before


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", ""),
        ("name", "n" * 201),
        ("price", Decimal("0.00")),
        ("price", Decimal("1.001")),
        ("stock", -1),
        ("stock", 1_000_001),
        ("stock", "7"),
    ],
)
def test_update_refuses_bad_input_and_changes_nothing(field, value):
    a_product("MUG")
    before = snapshot()
    with pytest.raises(ValidationError) as exc:
        product_update(sku="MUG", **{field: value})
    assert field in exc.value.message_dict
    assert snapshot() == before


def test_update_of_an_unknown_sku_raises_does_not_exist():
    with pytest.raises(Product.DoesNotExist):
        product_update(sku="NOPE", name="x")
    assert not StockLevel.objects.exists()


def test_a_name_with_a_null_character_says_so():
    with pytest.raises(ValidationError) as exc:
        product_create(**{**VALID, "name": "Mug\x00"})
    assert exc.value.message_dict["name"] == ["Null characters are not allowed."]


def test_a_sku_taken_by_a_create_that_committed_after_validation_is_refused_on_sku(monkeypatch):
    # The race the database's unique constraint settles: another create of the same sku
    # commits between this one's validation and its insert. The API answers 409 on the code.
    validate = Product.full_clean

    def validate_then_rival_commits(product, *args, **kwargs):
        validate(product, *args, **kwargs)
        Product.objects.create(sku=product.sku, name="Rival", price=Decimal("1.00"))

    monkeypatch.setattr(Product, "full_clean", validate_then_rival_commits)
    with pytest.raises(ValidationError) as exc:
        product_create(**VALID)
    assert exc.value.message_dict == {"sku": ["A product with sku 'MUG' already exists."]}
    assert [error.code for error in exc.value.error_dict["sku"]] == ["unique"]
    assert not StockLevel.objects.exists()  # the refused create added nothing of its own


def test_the_largest_stock_a_product_may_hold_is_accepted():
    product_create(**{**VALID, "stock": STOCK_MAX})
    assert stock("MUG") == (STOCK_MAX, 0)
