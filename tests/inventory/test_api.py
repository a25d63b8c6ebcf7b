"""The catalogue API: public reads, writes with the product permissions, 400 with field errors
for any bad input."""

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from inventory.models import Product
from inventory.services import stock_reserve
from tests.inventory.helpers import a_product, payloads, snapshot, stock
from tests.security.credentials import api_token, grant
from tests.support import problem_places

pytestmark = pytest.mark.django_db

LIST = "/api/products/"


def detail(sku: str) -> str:
    return f"/api/products/{sku}/"


@pytest.fixture
def anonymous():
    return APIClient()


@pytest.fixture
def staff():
    """A catalogue manager: staff with the product permissions (is_staff alone grants none)."""
    user = get_user_model().objects.create_user("clerk", is_staff=True)
    user = grant(user, "inventory.add_product", "inventory.change_product")
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def customer():
    """A non-staff user authenticating with a token, as API clients do."""
    user = get_user_model().objects.create_user("ada")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token(user)}")
    return client


def test_anyone_lists_the_catalogue_with_what_is_available(anonymous):
    a_product("TEE", stock=2, price="9.50", name="Tee")
    a_product("MUG", stock=5, price="19.99", name="Mug")
    stock_reserve(order_id=1, lines=[{"sku": "MUG", "quantity": 3}])
    response = anonymous.get(LIST)
    assert response.status_code == 200
    assert response.json() == [
        {"sku": "MUG", "name": "Mug", "price": "19.99", "available": 2},
        {"sku": "TEE", "name": "Tee", "price": "9.50", "available": 2},
    ]


def test_anyone_reads_one_product_and_an_unknown_sku_is_404(anonymous):
    a_product("MUG.v2_a-b", stock=5, price="19.99", name="Mug")
    response = anonymous.get(detail("MUG.v2_a-b"))
    assert response.status_code == 200
    assert response.json() == {"sku": "MUG.v2_a-b", "name": "Mug", "price": "19.99", "available": 5}
    assert anonymous.get(detail("NOPE")).status_code == 404
    assert anonymous.get(detail("x" * 300)).status_code == 404
    assert anonymous.get(detail("MUG%00")).status_code == 404


def test_staff_create_a_product(staff):
    response = staff.post(
        LIST, {"sku": "MUG", "name": "Mug", "price": "19.99", "stock": 5}, format="json"
    )
    assert response.status_code == 201
    assert response.json() == {"sku": "MUG", "name": "Mug", "price": "19.99", "available": 5}
    assert stock("MUG") == (5, 0)
    assert payloads("inventory.ProductCatalogued") == [
        {"sku": "MUG", "name": "Mug", "price": "19.99", "currency": "EUR"}
    ]


def test_a_json_number_price_is_accepted(staff):
    response = staff.post(
        LIST, {"sku": "MUG", "name": "Mug", "price": 20, "stock": 0}, format="json"
    )
    assert response.status_code == 201
    assert response.json()["price"] == "20.00"


def test_staff_change_any_of_name_price_and_stock(staff):
    a_product("MUG", stock=5, price="19.99", name="Mug")
    stock_reserve(order_id=1, lines=[{"sku": "MUG", "quantity": 2}])
    response = staff.patch(detail("MUG"), {"price": "17.50"}, format="json")
    assert response.status_code == 200
    assert response.json() == {"sku": "MUG", "name": "Mug", "price": "17.50", "available": 3}
    response = staff.patch(detail("MUG"), {"name": "Big mug", "stock": 10}, format="json")
    assert response.json() == {"sku": "MUG", "name": "Big mug", "price": "17.50", "available": 8}
    assert stock("MUG") == (10, 2)
    assert [p["price"] for p in payloads("inventory.ProductCatalogued")] == [
        "19.99",
        "17.50",
        "17.50",
    ]


def test_patching_an_unknown_sku_is_404(staff):
    assert staff.patch(detail("NOPE"), {"name": "x"}, format="json").status_code == 404
    assert staff.patch(detail("NOPE"), {"price": "-1"}, format="json").status_code == 404
    assert staff.patch(detail("NO%00PE"), {"name": "x"}, format="json").status_code == 404
    assert not Product.objects.exists()


def test_writes_need_credentials_401_and_the_permission_403(anonymous, customer):
    a_product("MUG")
    before = snapshot()
    body = {"sku": "TEE", "name": "Tee", "price": "9.99", "stock": 1}
    bare_staff = APIClient()
    bare_staff.force_authenticate(get_user_model().objects.create_user("bare", is_staff=True))
    assert bare_staff.post(LIST, body, format="json").status_code == 403
    assert bare_staff.patch(detail("MUG"), {"price": "0.01"}, format="json").status_code == 403
    adder = APIClient()  # may add, not change
    adder.force_authenticate(
        grant(get_user_model().objects.create_user("adder"), "inventory.add_product")
    )
    assert adder.patch(detail("MUG"), {"price": "0.01"}, format="json").status_code == 403
    assert anonymous.post(LIST, body, format="json").status_code == 401
    assert anonymous.patch(detail("MUG"), {"name": "x"}, format="json").status_code == 401
    assert customer.post(LIST, body, format="json").status_code == 403
    assert customer.patch(detail("MUG"), {"name": "x"}, format="json").status_code == 403
    assert customer.get(LIST).status_code == 200
    assert snapshot() == before


def test_a_bad_token_is_401_even_on_reads(anonymous):
    anonymous.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    assert anonymous.get(LIST).status_code == 401


VALID = {"sku": "TEE", "name": "Tee", "price": "9.99", "stock": 3}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sku", None),
        ("sku", ""),
        ("sku", "-TEE"),
        ("sku", " TEE"),
        ("sku", "TEE 2"),
        ("sku", "TEE\n"),
        ("sku", "TEE\x00"),
        ("sku", "T" * 65),
        ("sku", ["TEE"]),
        ("name", None),
        ("name", ""),
        ("name", "n" * 201),
        ("name", {"en": "Tee"}),
        ("name", "Tee\x00"),
        ("price", None),
        ("price", "0"),
        ("price", "0.00"),
        ("price", "-5"),
        ("price", "9.999"),
        ("price", "100000000"),
        ("price", "1e400"),
        ("price", "NaN"),
        ("price", "Infinity"),
        ("price", "nine"),
        ("price", True),
        ("stock", None),
        ("stock", -1),
        ("stock", 1_000_001),
        ("stock", 10**30),
        ("stock", 1.5),
        ("stock", "lots"),
        ("stock", True),
    ],
)
def test_create_refuses_bad_input_with_400_and_field_errors(staff, field, value):
    a_product("MUG")
    before = snapshot()
    response = staff.post(LIST, {**VALID, field: value}, format="json")
    assert response.status_code == 400, response.content
    assert field in problem_places(response)
    assert snapshot() == before


def test_creating_a_sku_that_exists_is_a_409_conflict(staff):
    a_product("MUG")
    before = snapshot()
    response = staff.post(LIST, {**VALID, "sku": "MUG"}, format="json")
    assert response.status_code == 409, response.content
    assert response.json()["code"] == "sku_taken"
    assert "MUG" in response.json()["detail"]
    assert snapshot() == before


@pytest.mark.parametrize("field", ["sku", "name", "price", "stock"])
def test_create_refuses_a_missing_field(staff, field):
    body = {k: v for k, v in VALID.items() if k != field}
    response = staff.post(LIST, body, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"detail": "This field is required.", "code": "required", "pointer": f"#/{field}"}
    ]
    assert not Product.objects.exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", ""),
        ("name", "n" * 201),
        ("price", "0"),
        ("price", "12.345"),
        ("price", "abc"),
        ("stock", -1),
        ("stock", 1_000_001),
        ("stock", 1),  # below the 2 units reserved
    ],
)
def test_patch_refuses_bad_input_with_400_and_field_errors(staff, field, value):
    a_product("MUG", stock=5)
    stock_reserve(order_id=1, lines=[{"sku": "MUG", "quantity": 2}])
    before = snapshot()
    response = staff.patch(detail("MUG"), {field: value}, format="json")
    assert response.status_code == 400, response.content
    assert field in problem_places(response)
    assert snapshot() == before


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        ("{not json", "application/json", 400),
        ("[1, 2]", "application/json", 400),
        ('"text"', "application/json", 400),
        ("null", "application/json", 400),
        ("sku=TEE&name=Tee&price=1&stock=1", "application/x-www-form-urlencoded", 415),
    ],
)
def test_a_body_that_is_not_a_json_object_is_a_client_error(staff, body, content_type, status):
    before = snapshot()
    response = staff.generic("POST", LIST, body, content_type=content_type)
    assert response.status_code == status
    assert snapshot() == before


def test_the_schema_describes_the_catalogue(anonymous):
    response = anonymous.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = response.json()
    paths = schema["paths"]
    assert set(paths["/api/products/"]) >= {"get", "post"}
    assert set(paths["/api/products/{sku}/"]) >= {"get", "patch"}
    assert "put" not in paths["/api/products/{sku}/"]
    created = paths["/api/products/"]["post"]["responses"]["201"]["content"]["application/json"]
    assert created["schema"]["$ref"].endswith("/ProductOutput")
    listed = paths["/api/products/"]["get"]["responses"]["200"]["content"]["application/json"]
    assert listed["schema"]["type"] == "array"
    components = schema["components"]["schemas"]
    assert set(components["ProductCreateInput"]["required"]) == {"sku", "name", "price", "stock"}
    assert "required" not in components["PatchedProductUpdateInput"]
    assert {"sku", "name", "price", "available"} <= set(components["ProductOutput"]["required"])
