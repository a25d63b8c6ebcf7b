"""The orders HTTP API: placing, reading, the timeline, and every way a client can get it wrong."""

import json
import re
import uuid

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from orders.models import Order, OrderLine
from orders.services import MAX_QUANTITY
from outbox.models import Delivery, Event
from payments.events import PaidLine, PaymentCompleted
from shipping.events import ShippingScheduled
from tests.security.credentials import api_token, grant
from tests.support import event_deliver, problem_places

pytestmark = pytest.mark.django_db

LIST_URL = "/api/orders/"
ORDER_KEYS = {
    "id",
    "status",
    "cancellation_reason",
    "cancellation_requested_at",
    "lines",
    "total",
    "payment",
    "shipment",
    "created_at",
    "updated_at",
}
GOOD_BODY = {"lines": [{"sku": "MUG", "quantity": 2}], "payment_token": "tok_visa"}


def detail_url(order_id) -> str:
    return f"/api/orders/{order_id}/"


def events_url(order_id) -> str:
    return f"/api/orders/{order_id}/events/"


@pytest.fixture
def api(customer, catalogue):
    client = APIClient()
    client.force_authenticate(customer)
    return client


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def post_json(client, body, **headers):
    raw = body if isinstance(body, str) else json.dumps(body)
    return client.post(LIST_URL, data=raw, content_type="application/json", headers=headers)


# --- placing ------------------------------------------------------------------------------------


def test_placing_answers_202_with_the_order_and_its_location(api):
    response = post_json(api, GOOD_BODY)
    assert response.status_code == 202, response.content
    order = Order.objects.get()
    body = response.json()
    assert set(body) == ORDER_KEYS
    assert body["id"] == order.reference
    assert body["status"] == "placed"
    assert body["cancellation_reason"] is None
    assert body["lines"] == [{"sku": "MUG", "quantity": 2, "unit_price": "9.50"}]
    assert body["total"] == "19.00"
    assert body["payment"] is None and body["shipment"] is None
    assert response["Location"] == f"http://testserver/api/orders/{order.reference}/"
    assert reverse("orders:order-detail", args=[order.reference]) == detail_url(order.reference)
    assert Event.objects.filter(type="orders.OrderPlaced", correlation_id=order.correlation_id)


def test_placing_with_a_token_works(customer, catalogue):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token(customer)}")
    assert post_json(client, GOOD_BODY).status_code == 202


def test_unknown_extra_fields_are_ignored(api):
    body = {
        "lines": [{"sku": "MUG", "quantity": 1, "colour": "red"}],
        "payment_token": "tok_visa",
        "coupon": "FREE",
        "total": "0.01",
    }
    response = post_json(api, body)
    assert response.status_code == 202
    assert response.json()["total"] == "9.50"


def test_the_same_idempotency_key_and_body_returns_the_same_order(api):
    first = post_json(api, GOOD_BODY, **{"Idempotency-Key": "abc-123"})
    again = post_json(api, GOOD_BODY, **{"Idempotency-Key": "abc-123"})
    assert (first.status_code, again.status_code) == (202, 202)
    assert first.json()["id"] == again.json()["id"]
    assert first["Location"] == again["Location"]
    assert Order.objects.count() == 1


def test_the_same_idempotency_key_with_another_body_is_a_409(api):
    post_json(api, GOOD_BODY, **{"Idempotency-Key": "abc-123"})
    other = {"lines": [{"sku": "TEE", "quantity": 1}], "payment_token": "tok_visa"}
    response = post_json(api, other, **{"Idempotency-Key": "abc-123"})
    assert response.status_code == 409
    assert "Idempotency-Key" in response.json()["detail"]
    assert Order.objects.count() == 1


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "new\x01line", "ключ"])
def test_a_malformed_idempotency_key_is_a_400(api, key):
    response = post_json(api, GOOD_BODY, **{"Idempotency-Key": key})
    assert response.status_code == 400
    assert problem_places(response) == {"Idempotency-Key"}
    assert Order.objects.count() == 0


def test_an_idempotency_key_of_255_printable_characters_is_fine(api):
    assert post_json(api, GOOD_BODY, **{"Idempotency-Key": "k " + "~" * 253}).status_code == 202


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


BAD_BODIES = [
    ({"lines": [], "payment_token": "tok_visa"}, "lines"),
    ({"lines": {"sku": "MUG", "quantity": 1}, "payment_token": "tok_visa"}, "lines"),
    ({"lines": "MUG", "payment_token": "tok_visa"}, "lines"),
    ({"lines": None, "payment_token": "tok_visa"}, "lines"),
    ({"payment_token": "tok_visa"}, "lines"),
    ({"lines": [None], "payment_token": "tok_visa"}, "lines"),
    ({"lines": ["MUG"], "payment_token": "tok_visa"}, "lines"),
    ({"lines": [[1, 2]], "payment_token": "tok_visa"}, "lines"),
    ({"lines": [{"sku": "MUG"}], "payment_token": "tok_visa"}, "lines"),
    ({"lines": [{"quantity": 1}], "payment_token": "tok_visa"}, "lines"),
    ({"lines": [{"sku": "MUG", "quantity": 0}], "payment_token": "tok_visa"}, "lines"),
    ({"lines": [{"sku": "MUG", "quantity": -3}], "payment_token": "tok_visa"}, "lines"),
    ({"lines": [{"sku": "MUG", "quantity": 2.5}], "payment_token": "tok_visa"}, "lines"),
    ({"lines": [{"sku": "MUG", "quantity": 2.0}], "payment_token": "tok_visa"}, "lines"),
    ({"lines": [{"sku": "MUG", "quantity": "3"}], "payment_token": "tok_visa"}, "lines"),
    ({"lines": [{"sku": "MUG", "quantity": True}], "payment_token": "tok_visa"}, "lines"),
    ({"lines": [{"sku": "MUG", "quantity": None}], "payment_token": "tok_visa"}, "lines"),
    ({"lines": [{"sku": "MUG", "quantity": [1]}], "payment_token": "tok_visa"}, "lines"),
    ({"lines": [{"sku": "MUG", "quantity": {"n": 1}}], "payment_token": "tok_visa"}, "lines"),
    (
        {"lines": [{"sku": "MUG", "quantity": MAX_QUANTITY + 1}], "payment_token": "tok_visa"},
        "lines",
    ),
    ({"lines": [{"sku": "MUG", "quantity": 10**30}], "payment_token": "tok_visa"}, "lines"),
    ({"lines": [{"sku": "MUG", "quantity": -(10**30)}], "payment_token": "tok_visa"}, "lines"),
    ({"lines": [{"sku": "NOPE", "quantity": 1}], "payment_token": "tok_visa"}, "lines"),
    ({"lines": [{"sku": "", "quantity": 1}], "payment_token": "tok_visa"}, "lines"),
    ({"lines": [{"sku": None, "quantity": 1}], "payment_token": "tok_visa"}, "lines"),
    ({"lines": [{"sku": 42, "quantity": 1}], "payment_token": "tok_visa"}, "lines"),
    ({"lines": [{"sku": ["MUG"], "quantity": 1}], "payment_token": "tok_visa"}, "lines"),
    ({"lines": [{"sku": "M" * 101, "quantity": 1}], "payment_token": "tok_visa"}, "lines"),
    ({"lines": [{"sku": "MUG\x00", "quantity": 1}], "payment_token": "tok_visa"}, "lines"),
    (
        {
            "lines": [{"sku": "MUG", "quantity": 1}, {"sku": "MUG", "quantity": 2}],
            "payment_token": "tok_visa",
        },
        "lines",
    ),
    ({"lines": [{"sku": "MUG", "quantity": 1}] * 101, "payment_token": "tok_visa"}, "lines"),
    ({"lines": [{"sku": "MUG", "quantity": 1}]}, "payment_token"),
    ({"lines": [{"sku": "MUG", "quantity": 1}], "payment_token": ""}, "payment_token"),
    ({"lines": [{"sku": "MUG", "quantity": 1}], "payment_token": "   "}, "payment_token"),
    ({"lines": [{"sku": "MUG", "quantity": 1}], "payment_token": None}, "payment_token"),
    ({"lines": [{"sku": "MUG", "quantity": 1}], "payment_token": 4242}, "payment_token"),
    ({"lines": [{"sku": "MUG", "quantity": 1}], "payment_token": {"t": 1}}, "payment_token"),
    ({"lines": [{"sku": "MUG", "quantity": 1}], "payment_token": "t" * 256}, "payment_token"),
    ({}, "lines"),
    ([GOOD_BODY], "#"),
    ("null", None),
    ('"just a string"', "#"),
    ("42", "#"),
    ("{not json", "detail"),
    ('{"lines": [', "detail"),
    ("", None),
    ('{"lines": [{"sku": "MUG", "quantity": NaN}], "payment_token": "t"}', "detail"),
    ('{"lines": [{"sku": "MUG", "quantity": 1e999}], "payment_token": "t"}', "lines"),
    ('{"lines": [{"sku": "MUG", "quantity": ' + "9" * 5000 + '}], "payment_token": "t"}', None),
    (nested(100_000), "detail"),
    ('{"lines": ' + nested(5000) + ', "payment_token": "t"}', None),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
def test_bad_input_is_a_400_with_field_errors_and_changes_nothing(api, body, field):
    response = post_json(api, body)
    assert response.status_code == 400, response.content
    if field == "detail":  # not JSON at all
        assert response.json()["type"] == "urn:shop:problem:malformed-body", response.json()
    elif field is not None:
        assert field in problem_places(response), response.json()
    assert Order.objects.count() == 0
    assert OrderLine.objects.count() == 0
    assert not Event.objects.filter(type="orders.OrderPlaced").exists()


@pytest.mark.parametrize(
    "token",
    [
        "4242424242424242 exp 12/29 cvc 123",
        "4242 4242 4242 4242",
        "4242-4242-4242-4242",
        "tok_4242424242424242",
        "tok_visa 4000056655665556",
    ],
)
def test_a_card_number_is_refused_and_not_stored(api, token):
    response = post_json(api, {**GOOD_BODY, "payment_token": token})
    assert response.status_code == 400, response.content
    assert problem_places(response) == {"payment_token"}
    [message] = [error["detail"] for error in response.json()["errors"]]
    assert "card number" in message
    assert "4242" not in response.content.decode() and "4000" not in response.content.decode()
    assert not Order.objects.exists()
    assert not Event.objects.exists() or "4242" not in str(list(Event.objects.values("payload")))


@pytest.mark.parametrize("token", ["visa", "tok_", "tok_vi sa", "TOK_visa", "tok_visa!", "pm_123"])
def test_only_the_gateways_token_format_is_accepted(api, token):
    response = post_json(api, {**GOOD_BODY, "payment_token": token})
    assert response.status_code == 400, response.content
    assert problem_places(response) == {"payment_token"}
    assert "tok_" in response.json()["errors"][0]["detail"]
    assert not Order.objects.exists()


def test_errors_point_at_the_line_and_field(api):
    body = {
        "lines": [{"sku": "MUG", "quantity": 1}, {"sku": "TEE", "quantity": "3"}],
        "payment_token": "tok_visa",
    }
    assert post_json(api, body).json()["errors"] == [
        {
            "detail": "A valid integer is required.",
            "code": "invalid",
            "pointer": "#/lines/1/quantity",
        }
    ]


def test_an_orders_limits_are_decided_and_explained_by_order_place(api):
    # Issue 9: the serializer shapes the request, order_place decides; an API client gets the
    # service's own words, pointing at the lines, as a Python caller does.
    zero = {"lines": [{"sku": "MUG", "quantity": 0}], "payment_token": "tok_visa"}
    assert post_json(api, zero).json()["errors"] == [
        {
            "detail": "Line 1: quantity must be an integer from 1 to 1000.",
            "code": "invalid",
            "pointer": "#/lines",
        }
    ]
    for lines in ([{"sku": "MUG", "quantity": 1}] * 101, [{"sku": "MUG", "quantity": 1}, 0] * 51):
        too_many = {"lines": lines, "payment_token": "tok_visa"}
        assert post_json(api, too_many).json()["errors"] == [
            {"detail": "An order has at most 100 lines.", "code": "invalid", "pointer": "#/lines"}
        ]
    assert not Order.objects.exists()


def test_an_unknown_sku_is_named(api):
    body = {"lines": [{"sku": "NOPE", "quantity": 1}], "payment_token": "tok_visa"}
    assert post_json(api, body).json()["errors"] == [
        {"detail": "Unknown sku 'NOPE'.", "code": "invalid", "pointer": "#/lines"}
    ]


def test_an_unknown_charset_falls_back_to_utf8(api):
    response = api.post(
        LIST_URL, data=json.dumps(GOOD_BODY), content_type="application/json; charset=nope"
    )
    assert response.status_code == 202


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ("lines=MUG&payment_token=tok_visa", "application/x-www-form-urlencoded"),
        (json.dumps(GOOD_BODY), "text/plain"),
        ("<order/>", "application/xml"),
    ],
)
def test_a_body_that_is_not_json_is_a_415(api, data, content_type):
    response = api.post(LIST_URL, data=data, content_type=content_type)
    assert response.status_code == 415
    assert Order.objects.count() == 0


def test_a_multipart_body_is_a_415(api):
    response = api.post(LIST_URL, data={"payment_token": "tok_visa"}, format="multipart")
    assert response.status_code == 415
    assert Order.objects.count() == 0


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("post", LIST_URL),
        ("get", LIST_URL),
        ("get", detail_url(1)),
        ("get", events_url(1)),
    ],
)
def test_anonymous_requests_are_a_401(catalogue, method, url):
    client = APIClient()
    response = getattr(client, method)(url, data=GOOD_BODY, format="json")
    assert response.status_code == 401
    assert Order.objects.count() == 0


def test_a_bad_token_is_a_401(catalogue):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token nope")
    assert post_json(client, GOOD_BODY).status_code == 401


# --- reading ------------------------------------------------------------------------------------


def test_the_list_is_paginated_newest_first_and_only_mine(api, other_customer):
    mine = [post_json(api, GOOD_BODY).json()["id"] for _ in range(3)]
    post_json(client_for(other_customer), GOOD_BODY)
    body = api.get(LIST_URL).json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 3
    assert [o["id"] for o in body["results"]] == list(reversed(mine))
    assert all(set(o) == ORDER_KEYS for o in body["results"])


def test_the_list_pages_by_twenty(api):
    for _ in range(21):
        post_json(api, GOOD_BODY)
    first = api.get(LIST_URL).json()
    assert (first["count"], len(first["results"])) == (21, 20)
    assert first["next"].endswith("?page=2")
    second = api.get(first["next"]).json()
    assert len(second["results"]) == 1
    assert api.get(LIST_URL, {"page": 99}).status_code == 404
    not_a_page = api.get(LIST_URL, {"page": "x"})  # invalid input, not a missing page
    assert not_a_page.status_code == 400
    assert problem_places(not_a_page) == {"page"}


def test_staff_with_the_permission_see_everyones_orders(api, other_customer, staff):
    mine = post_json(api, GOOD_BODY).json()["id"]
    theirs = post_json(client_for(other_customer), GOOD_BODY).json()["id"]
    staff_client = client_for(staff)
    assert staff_client.get(LIST_URL).json()["count"] == 2
    assert staff_client.get(detail_url(mine)).status_code == 200
    assert staff_client.get(events_url(theirs)).status_code == 200


def test_the_detail_shows_payment_and_shipment_once_known(api):
    order = Order.objects.get(reference=post_json(api, GOOD_BODY).json()["id"])
    event_deliver(
        PaymentCompleted(
            payment_id=1,
            order_id=order.id,
            amount="19.00",
            currency="EUR",
            lines=(PaidLine(sku="MUG", quantity=2),),
        ),
        subscriber="orders.order_mark_paid_on_payment_completed",
        correlation_id=order.correlation_id,
    )
    event_deliver(
        ShippingScheduled(shipment_id=7, order_id=order.id, carrier="DHL", tracking_number="T1"),
        subscriber="orders.order_complete_on_shipping_scheduled",
        correlation_id=order.correlation_id,
    )
    body = api.get(detail_url(order.reference)).json()
    assert set(body) == ORDER_KEYS
    assert body["status"] == "completed"
    assert body["payment"] == {"status": "captured", "amount": "19.00"}
    assert body["shipment"] == {"status": "scheduled", "carrier": "DHL", "tracking_number": "T1"}
    assert body["lines"] == [{"sku": "MUG", "quantity": 2, "unit_price": "9.50"}]


def test_another_customers_order_is_a_404(api, other_customer):
    theirs = post_json(client_for(other_customer), GOOD_BODY).json()["id"]
    assert api.get(detail_url(theirs)).status_code == 404
    assert api.get(events_url(theirs)).status_code == 404


@pytest.mark.parametrize("order_id", ["999999", "9" * 40])
def test_a_missing_order_is_a_404(api, order_id):
    assert api.get(detail_url(order_id)).status_code == 404
    assert api.get(events_url(order_id)).status_code == 404


@pytest.fixture
def ops(operator):
    """The operator's client: the timeline with its machinery."""
    return client_for(operator)


def test_the_timeline_lists_the_sagas_events_in_causal_order(api, ops):
    order = Order.objects.get(reference=post_json(api, GOOD_BODY).json()["id"])
    event_deliver(
        ShippingScheduled(shipment_id=7, order_id=order.id, carrier="DHL", tracking_number="T1"),
        subscriber="orders.order_complete_on_shipping_scheduled",
        correlation_id=order.correlation_id,
    )
    timeline = ops.get(events_url(order.reference)).json()
    assert [e["type"] for e in timeline] == [
        "orders.OrderPlaced",
        "shipping.ShippingScheduled",
        "orders.OrderCompleted",
    ]
    placed, scheduled, completed = timeline
    assert set(placed) == {
        "id",
        "type",
        "version",
        "occurred_at",
        "aggregate_type",
        "aggregate_id",
        "correlation_id",
        "causation_id",
        "payload",
        "deliveries",
    }
    stored = Event.objects.get(type="orders.OrderPlaced")
    assert placed["id"] == str(stored.event_id)
    assert (placed["version"], placed["aggregate_type"], placed["aggregate_id"]) == (
        2,
        "order",
        str(order.id),
    )
    assert placed["correlation_id"] == str(order.correlation_id)
    assert placed["causation_id"] is None
    assert placed["payload"]["total"] == "19.00"
    assert completed["causation_id"] == scheduled["id"]
    [delivery] = [
        d
        for d in scheduled["deliveries"]
        if d["subscriber"] == "orders.order_complete_on_shipping_scheduled"
    ]
    assert delivery == {
        "subscriber": "orders.order_complete_on_shipping_scheduled",
        "status": "done",
        "attempts": 1,
        "last_error": None,
    }


def test_the_timeline_redacts_the_payment_token(api, ops):
    order_id = post_json(api, GOOD_BODY).json()["id"]
    [placed] = ops.get(events_url(order_id)).json()
    assert placed["payload"]["payment_token"] == "[redacted]"
    assert "tok_visa" not in ops.get(events_url(order_id)).content.decode()
    assert "tok_visa" not in api.get(events_url(order_id)).content.decode()


def test_the_timeline_shows_only_the_first_line_of_an_error(api, ops):
    order = Order.objects.get(reference=post_json(api, GOOD_BODY).json()["id"])
    stored = Event.objects.get(type="orders.OrderPlaced")
    # Whatever subscribes to OrderPlaced, give the event a failed delivery to show.
    from outbox.models import Delivery

    Delivery.objects.create(
        event=stored,
        subscriber="tests.failing",
        next_attempt_at=stored.occurred_at,
        attempts=2,
        last_error="RuntimeError: gateway down\n\nTraceback ...",
        aggregate_key=f"order:{order.id}",
    )
    [placed] = ops.get(events_url(order.reference)).json()
    [failing] = [d for d in placed["deliveries"] if d["subscriber"] == "tests.failing"]
    assert failing == {
        "subscriber": "tests.failing",
        "status": "pending",
        "attempts": 2,
        "last_error": "RuntimeError: gateway down",
    }


def test_the_customer_sees_events_and_times_the_operator_the_machinery(api, ops):
    """The same order's timeline, twice: its customer sees each event's type and time; the
    operator also sees ids, payloads and deliveries (subscribers, attempts, errors)."""
    order = Order.objects.get(reference=post_json(api, GOOD_BODY).json()["id"])
    Delivery.objects.filter(event__correlation_id=order.correlation_id).update(
        attempts=2, last_error="GatewayUnavailable: timeout (simulated: call 2 of 3)"
    )
    event_deliver(
        ShippingScheduled(shipment_id=7, order_id=order.id, carrier="DHL", tracking_number="T1"),
        subscriber="orders.order_complete_on_shipping_scheduled",
        correlation_id=order.correlation_id,
    )
    customers = api.get(events_url(order.reference)).json()
    operators = ops.get(events_url(order.reference)).json()
    assert [(e["type"], e["occurred_at"]) for e in customers] == [
        (e["type"], e["occurred_at"]) for e in operators
    ]
    assert all(set(e) == {"type", "occurred_at"} for e in customers)
    assert operators[0]["deliveries"] and operators[0]["payload"]["customer_id"]
    text = api.get(events_url(order.reference)).content.decode()
    for machinery in ("GatewayUnavailable", "payments.", "attempts", str(order.correlation_id)):
        assert machinery not in text
        assert machinery in ops.get(events_url(order.reference)).content.decode()


def test_references_are_random_and_old_numeric_ids_resolve_for_staff_only(api, staff, ops):
    """The public reference tells nothing of the shop's volume; the numeric id still finds the
    order for staff with orders.view_any_order (old links, the admin), and for nobody else."""
    first, second = (post_json(api, GOOD_BODY).json()["id"] for _ in range(2))
    assert re.fullmatch(r"ORD-[A-Z2-9]{12}", first) and first != second
    order = Order.objects.get(reference=first)
    # Not the id dressed up (a random reference may still hold the id's digits by chance:
    # ORD-KC8D5PYR9473 for order 47 once failed a `str(pk) not in reference` check).
    assert first.removeprefix("ORD-") not in {str(order.pk), str(order.pk).zfill(12)}
    assert api.get(detail_url(order.pk)).status_code == 404  # the customer's own order
    assert api.get(events_url(order.pk)).status_code == 404
    for who in (client_for(staff), ops):
        assert who.get(detail_url(order.pk)).json()["id"] == first
        assert who.get(events_url(order.pk)).status_code == 200
    assert ops.get(detail_url("9" * 40)).status_code == 404


@pytest.mark.parametrize("reference", ["ORD-%00", "%00", "ORD-" + "X" * 300, "ORD-%F0%9F%92%A5"])
def test_a_reference_that_cannot_exist_is_a_404_everywhere(api, ops, operator, reference):
    """Whatever a client puts in the path (a NUL, which PostgreSQL refuses; too long; any
    character) is no order: a 404, never a 500."""
    console = client_for(grant(operator, "orders.change_order"))
    for client, method, url in [
        (api, "get", f"/api/orders/{reference}/"),
        (ops, "get", f"/api/orders/{reference}/events/"),
        (api, "post", f"/api/orders/{reference}/cancel/"),
        (console, "post", f"/api/sagas/{reference}/retry/"),
        (console, "post", f"/api/sagas/{reference}/cancel/"),
    ]:
        response = getattr(client, method)(url, {"reason": "x"}, format="json")
        assert response.status_code == 404, (url, response.content)


# --- the schema ---------------------------------------------------------------------------------


def test_the_schema_documents_the_orders_api(api):
    response = api.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = json.loads(response.content)
    post = schema["paths"]["/api/orders/"]["post"]
    [key] = [p for p in post["parameters"] if p["name"] == "Idempotency-Key"]
    assert (key["in"], key.get("required", False)) == ("header", False)
    assert {"202", "400", "409", "415"} <= set(post["responses"])
    assert "Location" in post["responses"]["202"]["headers"]
    assert "/api/orders/{reference}/" in schema["paths"]
    assert "/api/orders/{reference}/events/" in schema["paths"]
    page = schema["components"]["schemas"]["OrderPageOutput"]
    assert set(page["properties"]) == {"count", "next", "previous", "results"}
    order = schema["components"]["schemas"]["OrderOutput"]
    assert set(order["properties"]) == ORDER_KEYS


def test_correlation_ids_are_uuids(api):
    body = post_json(api, GOOD_BODY).json()
    assert uuid.UUID(str(Order.objects.get(reference=body["id"]).correlation_id))
