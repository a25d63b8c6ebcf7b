"""Who may do what: customers see only their own orders, only staff write the catalogue or open
the admin, writes need credentials, and a session-authenticated write needs its CSRF token."""

import pytest
from rest_framework.test import APIClient

from inventory.models import Product, StockLevel
from orders.models import Order
from outbox.models import Event
from tests.fuzz.helpers import db_snapshot
from tests.security.conftest import PASSWORDS
from tests.security.credentials import api_token

pytestmark = pytest.mark.django_db

ORDERS = "/api/orders/"
PRODUCTS = "/api/products/"
ORDER_BODY = {"lines": [{"sku": "MUG", "quantity": 2}], "payment_token": "tok_visa"}
NEW_PRODUCT = {"sku": "NEW-1", "name": "New", "price": "3.00", "stock": 5}


def token_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token(user)}")
    return client


def without_instance(response) -> dict:
    return {key: value for key, value in response.json().items() if key != "instance"}


def place(client, **headers) -> int:
    response = client.post(ORDERS, ORDER_BODY, format="json", headers=headers)
    assert response.status_code == 202, response.content
    return response.json()["id"]


def products_state():
    return (
        list(Product.objects.order_by("sku").values_list("sku", "name", "price")),
        list(StockLevel.objects.order_by("pk").values_list("on_hand", "reserved")),
    )


# --- customers and each other's orders ----------------------------------------------------------


def test_a_customer_cannot_read_another_customers_order(customer, other_customer, catalogue):
    alice, bob = token_client(customer), token_client(other_customer)
    theirs = place(bob)
    mine = place(alice)
    for url in (f"{ORDERS}{theirs}/", f"{ORDERS}{theirs}/events/"):
        response = alice.get(url)
        assert response.status_code == 404
        # the same answer as an order that never was
        assert without_instance(response) == without_instance(alice.get(f"{ORDERS}99999999/"))
        assert response.json()["detail"] == "No such order."
    assert [o["id"] for o in alice.get(ORDERS).json()["results"]] == [mine]
    assert bob.get(f"{ORDERS}{theirs}/").status_code == 200


@pytest.mark.parametrize("method", ["put", "patch", "delete", "post"])
def test_no_customer_can_change_an_order_over_the_api(customer, other_customer, catalogue, method):
    """Orders change only through the saga: no write method on an order, for its owner or
    anyone else, and the answer is the same whether the order is theirs, not theirs or absent
    (so it tells nothing of other customers' orders)."""
    alice, bob = token_client(customer), token_client(other_customer)
    theirs, mine = place(bob), place(alice)
    before = db_snapshot()
    answers = set()
    for order_id in (theirs, mine, 99999999):
        response = getattr(alice, method)(
            f"{ORDERS}{order_id}/", {"status": "completed", "total": "0.01"}, format="json"
        )
        answers.add(response.status_code)
    assert answers == {405}
    assert db_snapshot() == before
    assert set(Order.objects.values_list("status", flat=True)) == {"placed"}


def test_another_customers_idempotency_key_names_no_order_of_theirs(
    customer, other_customer, catalogue
):
    theirs = place(token_client(other_customer), **{"Idempotency-Key": "shared-key"})
    mine = place(token_client(customer), **{"Idempotency-Key": "shared-key"})
    assert mine != theirs
    assert Order.objects.get(reference=mine).customer == customer
    assert Order.objects.get(reference=theirs).customer == other_customer


def test_the_timeline_does_not_show_the_payment_token(customer, catalogue):
    alice = token_client(customer)
    order_id = place(alice)
    [placed] = alice.get(f"{ORDERS}{order_id}/events/").json()
    assert "tok_visa" not in str(placed)


# --- the catalogue: staff writes only ---------------------------------------------------------


def test_a_customer_cannot_write_products(customer, catalogue):
    alice = token_client(customer)
    before = products_state()
    response = alice.post(PRODUCTS, NEW_PRODUCT, format="json")
    assert response.status_code == 403
    response = alice.patch(f"{PRODUCTS}MUG/", {"price": "0.01", "stock": 0}, format="json")
    assert response.status_code == 403
    assert alice.patch(f"{PRODUCTS}NOPE/", {"price": "0.01"}, format="json").status_code == 403
    assert products_state() == before
    assert not Event.objects.filter(type="inventory.ProductCatalogued", aggregate_id="NEW-1")


def test_staff_without_the_permission_cannot_write_products(staff, catalogue):
    """is_staff is no master key: the product permissions decide, as in the admin."""
    carol = token_client(staff)
    before = products_state()
    assert carol.post(PRODUCTS, NEW_PRODUCT, format="json").status_code == 403
    assert carol.patch(f"{PRODUCTS}MUG/", {"price": "0.01"}, format="json").status_code == 403
    assert products_state() == before


def test_a_catalogue_manager_can_write_products(catalogue_manager, catalogue):
    carol = token_client(catalogue_manager)
    assert carol.post(PRODUCTS, NEW_PRODUCT, format="json").status_code == 201
    assert carol.patch(f"{PRODUCTS}MUG/", {"price": "8.00"}, format="json").status_code == 200


def test_staff_without_the_permission_see_only_their_own_orders(staff, customer, catalogue):
    theirs = place(token_client(customer))
    carol = token_client(staff)
    assert carol.get(ORDERS).json()["count"] == 0
    for url in (f"{ORDERS}{theirs}/", f"{ORDERS}{theirs}/events/"):
        assert carol.get(url).status_code == 404


# --- no credentials, bad credentials --------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("post", ORDERS, ORDER_BODY),
        ("post", PRODUCTS, NEW_PRODUCT),
        ("patch", f"{PRODUCTS}MUG/", {"price": "0.01"}),
        ("patch", f"{PRODUCTS}NOPE/", {"price": "0.01"}),
    ],
)
@pytest.mark.parametrize("authorization", [None, "Token nope", "Token ", "Bearer x", "Token a b"])
def test_unauthenticated_writes_are_a_401(catalogue, method, url, body, authorization):
    client = APIClient()
    if authorization is not None:
        client.credentials(HTTP_AUTHORIZATION=authorization)
    before = db_snapshot()
    response = getattr(client, method)(url, body, format="json")
    assert response.status_code == 401, response.content
    assert response["WWW-Authenticate"] == "Token"
    assert db_snapshot() == before


def test_an_inactive_users_token_is_refused(customer, catalogue):
    client = token_client(customer)
    customer.is_active = False
    customer.save()
    assert client.post(ORDERS, ORDER_BODY, format="json").status_code == 401
    assert not Order.objects.exists()


# --- the admin ----------------------------------------------------------------------------------

ADMIN_PAGES = [
    "/admin/",
    "/admin/orders/order/",
    "/admin/payments/payment/",
    "/admin/outbox/event/",
    "/admin/auth/user/",
]


@pytest.mark.parametrize("who", ["anonymous", "customer"])
@pytest.mark.parametrize("page", ADMIN_PAGES)
def test_the_admin_sends_non_staff_to_its_login_page(client, customer, catalogue, who, page):
    order_id = place(token_client(customer))
    if who == "customer":
        client.force_login(customer)
    pk = Order.objects.get(reference=order_id).pk
    pages = [page, f"/admin/orders/order/{pk}/change/"]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/admin/login/?next=")
        assert b"Secretperson" not in response.content
        assert b"tok_visa" not in response.content


def test_a_customer_cannot_log_in_to_the_admin(client, customer):
    response = client.post(
        "/admin/login/?next=/admin/",
        {"username": "alice", "password": PASSWORDS["alice"], "next": "/admin/"},
    )
    assert response.status_code == 200  # the form again, with its error
    assert b"staff account" in response.content
    assert client.get("/admin/").status_code == 302


def test_staff_without_permissions_see_no_data(client, staff, customer, catalogue):
    place(token_client(customer))
    client.force_login(staff)
    assert client.get("/admin/").status_code == 200
    for url in ("/admin/orders/order/", "/admin/auth/user/", "/admin/outbox/event/"):
        assert client.get(url).status_code == 403, url


# --- CSRF for session-authenticated writes -----------------------------------------------------


def session_client(user) -> APIClient:
    """A browser-like client: logged in with a session cookie, CSRF checks enforced."""
    client = APIClient(enforce_csrf_checks=True)
    assert client.login(username=user.username, password=PASSWORDS[user.username])
    return client


def csrf_token(client) -> str:
    """The CSRF cookie as a browser gets it: from a page with a form (the admin's login form, or
    for staff, who are sent on to the admin, its logout form)."""
    assert client.get("/admin/login/", follow=True).status_code == 200
    return client.cookies["csrftoken"].value


def test_a_session_write_without_the_csrf_token_is_a_403(customer, catalogue):
    client = session_client(customer)
    assert client.get(ORDERS).status_code == 200  # reads need no token
    response = client.post(ORDERS, ORDER_BODY, format="json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert not Order.objects.exists()


def test_a_session_write_with_a_wrong_csrf_token_is_a_403(customer, catalogue):
    client = session_client(customer)
    csrf_token(client)
    response = client.post(ORDERS, ORDER_BODY, format="json", HTTP_X_CSRFTOKEN="x" * 32)
    assert response.status_code == 403
    assert not Order.objects.exists()


def test_a_session_write_with_the_csrf_token_is_accepted(customer, catalogue):
    client = session_client(customer)
    response = client.post(ORDERS, ORDER_BODY, format="json", HTTP_X_CSRFTOKEN=csrf_token(client))
    assert response.status_code == 202, response.content
    assert Order.objects.get().customer == customer


def test_a_staff_session_product_write_needs_the_csrf_token(catalogue_manager, catalogue):
    client = session_client(catalogue_manager)
    before = products_state()
    assert client.patch(f"{PRODUCTS}MUG/", {"price": "1.00"}, format="json").status_code == 403
    assert client.post(PRODUCTS, NEW_PRODUCT, format="json").status_code == 403
    assert products_state() == before
    token = csrf_token(client)
    response = client.patch(
        f"{PRODUCTS}MUG/", {"price": "1.00"}, format="json", HTTP_X_CSRFTOKEN=token
    )
    assert response.status_code == 200, response.content


def test_a_token_authenticated_write_needs_no_csrf_token(customer, catalogue):
    """A token is not sent by a browser on its own, so it is no cross-site risk."""
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token(customer)}")
    assert client.post(ORDERS, ORDER_BODY, format="json").status_code == 202
