import pytest

from inventory.models import Product
from inventory.selectors import product_get, product_list
from inventory.services import stock_reserve
from tests.inventory.helpers import a_product

pytestmark = pytest.mark.django_db


def test_products_are_listed_by_sku_with_what_is_available():
    a_product("TEE", stock=2)
    a_product("MUG", stock=5)
    stock_reserve(order_id=1, lines=[{"sku": "MUG", "quantity": 3}])
    assert [(p.sku, p.available) for p in product_list()] == [("MUG", 2), ("TEE", 2)]
    assert product_get(sku="MUG").available == 2
    with pytest.raises(Product.DoesNotExist):
        product_get(sku="NOPE")
