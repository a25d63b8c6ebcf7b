"""The saga flow page without a browser: who may see it, and what it shows."""

from __future__ import annotations

import datetime as dt
import re
import uuid
import xml.etree.ElementTree as ET

import pytest
from django.urls import reverse

from orders.flow import flow_diagram, offset_format
from orders.selectors import TimelineDelivery, TimelineEvent
from outbox.models import Event
from tests.flow.conftest import CUSTOMER_PASSWORD, DEAD, LEFT_PENDING, MAX_ATTEMPTS, RETRIED

pytestmark = pytest.mark.django_db

SVG = "{http://www.w3.org/2000/svg}"


def flow_url(order) -> str:
    return reverse("order_pages:order-flow", args=[order.reference])


def diagram(html: str) -> ET.Element:
    """The page's inline SVG, parsed (it is well-formed XML)."""
    match = re.search(r"<svg class=\"flow-diagram\".*?</svg>", html, re.S)
    assert match, "no diagram on the page"
    return ET.fromstring(match.group(0))


# --- who may see it -------------------------------------------------------------------------------


def test_the_owner_sees_the_page(client, saga_order, customer):
    client.force_login(customer)
    assert client.get(flow_url(saga_order)).status_code == 200


def test_another_customer_gets_404(client, saga_order, other_customer):
    client.force_login(other_customer)
    assert client.get(flow_url(saga_order)).status_code == 404


def test_staff_with_the_permission_see_any_order(client, saga_order, staff):
    client.force_login(staff)
    page = client.get(flow_url(saga_order))
    assert page.status_code == 200
    assert reverse("admin:orders_order_change", args=[saga_order.pk]) in page.content.decode()


def test_an_unknown_order_is_404(client, customer):
    client.force_login(customer)
    assert client.get(reverse("order_pages:order-flow", args=[999999])).status_code == 404


def test_anonymous_visitors_are_sent_to_the_login_page(client, saga_order):
    page = client.get(flow_url(saga_order))
    assert page.status_code == 302
    assert page["Location"] == f"/accounts/login/?next=/orders/{saga_order.reference}/flow/"


def test_a_customer_logs_in_on_the_login_page_and_lands_on_the_flow(client, saga_order):
    login = reverse("login")
    assert client.get(login).status_code == 200
    wrong = client.post(login, {"username": "alice", "password": "nope"})
    assert wrong.status_code == 200
    assert "correct username and password" in wrong.content.decode()
    page = client.post(
        login,
        {"username": "alice", "password": CUSTOMER_PASSWORD, "next": flow_url(saga_order)},
    )
    assert page.status_code == 302
    assert page["Location"] == flow_url(saga_order)
    assert client.get(flow_url(saga_order)).status_code == 200


def test_the_order_list_links_each_order_to_its_flow(client, saga_order, other_customer):
    client.force_login(saga_order.customer)
    assert flow_url(saga_order) in client.get(reverse("order_pages:order-list")).content.decode()
    client.force_login(other_customer)
    assert (
        flow_url(saga_order) not in client.get(reverse("order_pages:order-list")).content.decode()
    )


def test_the_admin_order_page_links_to_the_flow(admin_client, saga_order):
    page = admin_client.get(reverse("admin:orders_order_change", args=[saga_order.pk]))
    assert page.status_code == 200
    assert f'href="{flow_url(saga_order)}"' in page.content.decode()


# --- what it shows --------------------------------------------------------------------------------


@pytest.fixture
def page(client, saga_order, operator):
    """The page as an operator sees it (the customer's own view: further down)."""
    client.force_login(operator)
    response = client.get(flow_url(saga_order))
    assert response.status_code == 200
    return response.content.decode()


def test_the_summary_shows_status_total_payment_and_shipment(page, saga_order):
    assert 'data-status="completed"' in page
    assert "19.00 EUR" in page
    assert "Captured · 19.00 EUR" in page
    assert saga_order.shipment_carrier and saga_order.shipment_tracking_number in page
    assert str(saga_order.correlation_id) in page
    # 9 deliveries: 6 done (2 of them notifications'), 1 retried, 1 pending, 1 dead.
    for state, count in {"done": 6, "retried": 1, "pending": 1, "dead": 1}.items():
        assert re.search(rf'chip--{state}[^"]*"><strong>{count}</strong>', page), state
    assert "The saga is still running" in page  # a delivery is still pending


def test_the_timeline_lists_every_event_with_its_deliveries(page, saga_order):
    types = re.findall(r'<tr id="event-\d+" class="event[^"]*" data-event-type="([^"]+)"', page)
    assert types == [
        "orders.OrderPlaced",
        "payments.PaymentCompleted",
        "inventory.StockUpdated",
        "shipping.ShippingScheduled",
        "orders.OrderCompleted",
    ]
    assert f'data-subscriber="{RETRIED}" data-state="retried" data-attempts="3"' in page
    assert f'data-subscriber="{DEAD}" data-state="dead" data-attempts="{MAX_ATTEMPTS}"' in page
    assert f'data-subscriber="{LEFT_PENDING}" data-state="pending" data-attempts="0"' in page
    # Last errors, first line only; the causation links back to the cause's row.
    assert "GatewayUnavailable: timeout: the gateway did not answer within 10 s" in page
    assert "ConnectionError: warehouse API unreachable: connection refused" in page
    assert "Traceback" not in page
    assert '<a href="#event-1"' in page and "#1 OrderPlaced" in page
    assert 'class="event event--dead"' in page
    assert 'order <span class="mono">#' in page
    # The payment token is redacted in the payload (sealed in the store: docs/outbox.md).
    assert "tok_visa" not in page
    assert "&quot;payment_token&quot;: &quot;[redacted]&quot;" in page


def test_the_diagram_draws_one_arrow_per_delivery_between_the_services(page):
    svg = diagram(page)
    lifelines = {
        g.get("data-app"): int(g.find(f"{SVG}line").get("x1"))
        for g in svg.iter(f"{SVG}g")
        if "lifeline" in (g.get("class") or "").split()
    }
    assert list(lifelines) == ["orders", "payments", "inventory", "shipping", "notifications"]
    arrows = [a for a in svg.iter(f"{SVG}a") if "msg" in (a.get("class") or "").split()]
    seen = []
    for arrow in arrows:
        event_type, subscriber = arrow.get("data-event-type"), arrow.get("data-subscriber")
        state = arrow.get("data-state")
        assert f"msg--{state}" in arrow.get("class")
        line = next(p for p in arrow.iter(f"{SVG}path") if "msg-line" in p.get("class"))
        assert line.get("marker-end") == f"url(#head-{state})"
        start, end = (float(n) for n in re.findall(r"[MH](-?[\d.]+)", line.get("d"))[:2])
        source, target = lifelines[event_type.split(".")[0]], lifelines[subscriber.split(".")[0]]
        assert abs(start - source) <= 6 and abs(end - target) <= 7, (event_type, subscriber)
        label = next(t for t in arrow.iter(f"{SVG}text") if "msg-label" in t.get("class"))
        assert label.text == event_type.split(".")[1]
        seen.append((event_type, subscriber.split(".")[0], state))
    assert sorted(seen) == [
        ("inventory.StockUpdated", "orders", "pending"),
        ("inventory.StockUpdated", "shipping", "done"),
        ("orders.OrderCompleted", "notifications", "done"),
        ("orders.OrderPlaced", "notifications", "done"),
        ("orders.OrderPlaced", "payments", "retried"),
        ("payments.PaymentCompleted", "inventory", "done"),
        ("payments.PaymentCompleted", "orders", "done"),
        ("shipping.ShippingScheduled", "inventory", "dead"),
        ("shipping.ShippingScheduled", "orders", "done"),
    ]
    # Every event of this saga has a subscriber (the note of an event nobody subscribes to: the
    # layout's own test, below).
    assert not [a for a in svg.iter(f"{SVG}a") if a.get("class") == "note"]
    badges = [t.text for t in svg.iter(f"{SVG}text") if "msg-badge" in (t.get("class") or "")]
    assert sorted(badges) == [
        f"dead letter · {MAX_ATTEMPTS} attempts",
        "pending",
        "retried · 3 attempts",
    ]


def test_an_order_whose_events_were_purged_says_so(client, saga_order, operator):
    Event.objects.filter(correlation_id=saga_order.correlation_id).delete()
    client.force_login(operator)
    page = client.get(flow_url(saga_order)).content.decode()
    assert "No events for this order" in page
    assert '<svg class="flow-diagram"' not in page


def test_the_customer_sees_events_times_and_state_not_the_machinery(client, saga_order, page):
    """The same order as its customer sees it: every event and its time and the order's state;
    no subscriber, attempt, error text, payload or internal id (the operator's page has them)."""
    client.force_login(saga_order.customer)
    mine = client.get(flow_url(saga_order)).content.decode()
    assert 'data-status="completed"' in mine and "19.00 EUR" in mine
    event_types = r'<tr id="event-\d+" class="event[^"]*" data-event-type="([^"]+)"'
    assert re.findall(event_types, mine) == re.findall(event_types, page)
    assert len(re.findall(r"<time datetime=", mine)) == len(re.findall(r"<time datetime=", page))
    machinery = [
        RETRIED,
        DEAD,
        "attempt",
        "payload",
        "data-subscriber",
        "data-event-id",
        str(saga_order.correlation_id),
        '<svg class="flow-diagram"',
        *Event.objects.filter(correlation_id=saga_order.correlation_id).values_list(
            "event_id", flat=True
        ),
    ]
    for secret in machinery:
        assert str(secret) in page, secret  # the operator sees it
        assert str(secret) not in mine, secret
    last_error = "GatewayUnavailable"
    assert last_error not in mine


# --- the layout on its own ------------------------------------------------------------------------


def test_the_layout_draws_a_self_subscription_as_a_loop_and_adds_unknown_apps():
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def event(type_, *deliveries, cause=None):
        return TimelineEvent(
            id=uuid.uuid4(),
            type=type_,
            version=1,
            occurred_at=now,
            aggregate_type="order",
            aggregate_id="1",
            correlation_id=uuid.uuid4(),
            causation_id=cause,
            payload={},
            deliveries=tuple(TimelineDelivery(s, "done", 1, None) for s in deliveries),
        )

    placed = event("orders.OrderPlaced", "orders.audit", "loyalty.points_award")
    awarded = event("loyalty.PointsAwarded", cause=placed.id)
    layout = flow_diagram([placed, awarded], placed_at=now)
    apps = [lifeline.app for lifeline in layout.lifelines]
    assert apps == ["orders", "payments", "inventory", "shipping", "notifications", "loyalty"]
    loop, across = layout.arrows
    assert (loop.subscriber, across.subscriber) == ("orders.audit", "loyalty.points_award")
    assert "V" in loop.path and loop.label_anchor == "start"
    assert across.x2 == layout.lifelines[-1].x
    assert [note.event_type for note in layout.notes] == ["loyalty.PointsAwarded"]
    # The loyalty app's activation begins where the delivery that caused its event arrived.
    assert any(a.app == "loyalty" and a.y == across.y for a in layout.activations)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-0.01, "+0 ms"),
        (0.1534, "+153 ms"),
        (2.414, "+2.41 s"),
        (192, "+3 min 12 s"),
        (7380, "+2 h 3 min"),
    ],
)
def test_offsets_read_naturally(seconds, text):
    assert offset_format(seconds) == text
