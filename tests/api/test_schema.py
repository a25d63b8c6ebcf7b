"""The OpenAPI document is valid OpenAPI and says what the server enforces."""

import pytest
from openapi_spec_validator import validate

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def schema(django_db_blocker):
    from rest_framework.test import APIClient

    with django_db_blocker.unblock():
        response = APIClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def operations(schema):
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", operation


def test_the_document_is_valid_openapi(schema):
    validate(schema)


def test_the_meta_schema_check_can_fail(schema):
    broken = {**schema, "paths": {"/x/": {"get": {"responses": {"200": {}}}}}}
    with pytest.raises(Exception, match=r'\["get"\]\["responses"\]'):
        validate(broken)


def test_every_error_of_every_operation_is_a_problem_document(schema):
    problem = {"$ref": "#/components/schemas/Problem"}
    for name, operation in operations(schema):
        errors = {code for code in operation["responses"] if int(code) >= 400}
        assert {"406", "429", "500"} <= errors, name
        for code in errors:
            response = operation["responses"][code]
            assert response["description"], (name, code)
            assert list(response["content"]) == [PROBLEM], (name, code)
            assert response["content"][PROBLEM]["schema"] == problem, (name, code)


def test_what_an_operation_can_answer_follows_from_what_it_is(schema):
    paths = schema["paths"]
    assert set(paths["/api/orders/"]["post"]["responses"]) >= {"400", "401", "403", "409", "415"}
    assert set(paths["/api/orders/"]["get"]["responses"]) >= {"400", "401", "404"}
    assert "404" in paths["/api/orders/{reference}/"]["get"]["responses"]
    catalogue = paths["/api/products/"]["get"]
    assert {} in catalogue["security"]  # public: no credentials needed...
    assert "401" in catalogue["responses"]  # ...but a token sent is checked: a wrong one is a 401
    assert "403" in paths["/api/products/"]["post"]["responses"]  # staff only
    token = paths["/api/auth/token/"]["post"]
    assert set(token["responses"]) >= {"200", "400", "401"}
    assert "security" not in token or token["security"] in ([], [{}])


def test_the_rules_the_server_enforces_are_written_down(schema):
    place = schema["paths"]["/api/orders/"]["post"]
    key = next(p for p in place["parameters"] if p["name"] == "Idempotency-Key")
    assert key["in"] == "header"
    assert key["schema"] == {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "pattern": "^[\\x20-\\x7e]+$",
    }
    assert place["responses"]["202"]["headers"]["Location"]["schema"]["format"] == "uri"
    components = schema["components"]["schemas"]
    lines = components["OrderPlaceInput"]["properties"]["lines"]
    assert (lines["minItems"], lines["maxItems"]) == (1, 100)
    quantity = components["OrderLineInput"]["properties"]["quantity"]
    assert (quantity["minimum"], quantity["maximum"]) == (1, 1000)
    page = next(p for p in schema["paths"]["/api/orders/"]["get"]["parameters"])
    assert page["schema"] == {"type": "integer", "minimum": 1}
    assert set(components["OrderOutputStatusEnum"]["enum"]) == {
        "placed",
        "paid",
        "stock_reserved",
        "completed",
        "cancelled",
    }
    assert set(components["CancellationReasonEnum"]["enum"]) >= {"payment_failed", "out_of_stock"}
    assert components["ProductCreateInput"]["properties"]["sku"]["pattern"].startswith("^")
    assert place["requestBody"]["content"]["application/json"]["examples"]
