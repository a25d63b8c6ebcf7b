"""The flow page in a real browser: Debian's headless Chromium driven by Playwright.

The live server serves the page; the test logs in through the login page as the customer,
opens the order's flow, checks what the browser rendered, and saves a full-page screenshot to
``<SHOP_VAR_DIR>/test-artifacts/flow-<order>.png`` (the path is printed). Without Chromium or
Playwright the tests are skipped, except in CI (CI set), where that is a failure.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

from inventory.services import product_create
from orders.models import CatalogItem, Order
from orders.services import order_place
from outbox.models import Delivery
from tests.flow.conftest import DEAD, LEFT_PENDING, OPERATOR_PASSWORD, RETRIED
from tests.support import IN_CI, wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 60_000  # the machine may be busy


def require_browser() -> None:
    problem = None
    if not CHROMIUM.exists():
        problem = f"{CHROMIUM} is missing (Debian: apt-get install -y chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "the playwright package is not installed (pip install playwright)"
    if problem:
        if IN_CI:
            pytest.fail(f"browser test cannot run in CI: {problem}")
        pytest.skip(problem)


@contextlib.contextmanager
def chromium_page():
    """A page of a fresh headless Chromium; never downloads a browser of its own.

    Playwright's sync API runs an event loop in this thread, and Django refuses database
    access while one runs: read everything the test needs from the database before this.
    """
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def login_and_open_flow(
    page, live_server, *, order_id: str, username: str, password: str = OPERATOR_PASSWORD
) -> str:
    flow = reverse("order_pages:order-flow", args=[order_id])
    page.goto(live_server.url + flow)
    assert "/accounts/login/" in page.url  # anonymous: sent to the login page
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.url == live_server.url + flow, page.url
    page.wait_for_selector("svg.flow-diagram")
    return flow


def screenshot(page, order_id: str, capsys) -> Path:
    folder = Path(settings.VAR_DIR) / "test-artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"flow-{order_id}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    # The diagram alone too, at its natural size, for a closer look.
    page.locator("svg.flow-diagram").screenshot(path=str(path.with_suffix(".diagram.png")))
    with capsys.disabled():
        print(f"\nflow page screenshot: {path} (diagram: {path.with_suffix('.diagram.png')})")
    return path


def rendered_arrows(page) -> list[dict]:
    """Each arrow as the browser laid it out, with the lifelines it starts and ends on."""
    return page.evaluate(
        """() => {
          const lifelines = {};
          for (const g of document.querySelectorAll('svg.flow-diagram .lifeline')) {
            const box = g.querySelector('.lifeline-line').getBoundingClientRect();
            lifelines[g.dataset.app] = box.left + box.width / 2;
          }
          return [...document.querySelectorAll('svg.flow-diagram .msg')].map((a) => {
            const line = a.querySelector('.msg-line');
            const box = line.getBoundingClientRect();
            const style = getComputedStyle(line);
            const from = lifelines[a.dataset.eventType.split('.')[0]];
            const to = lifelines[a.dataset.subscriber.split('.')[0]];
            return {
              type: a.dataset.eventType, subscriber: a.dataset.subscriber,
              state: a.dataset.state, classes: a.getAttribute('class'),
              label: a.querySelector('.msg-label').textContent,
              left: box.left, right: box.right, from, to,
              stroke: style.stroke, dash: style.strokeDasharray,
              labelVisible: a.querySelector('.msg-label').getBoundingClientRect().width > 20,
            };
          });
        }"""
    )


def test_the_flow_page_in_chromium_shows_every_delivery_state(
    live_server, saga_order, operator, capsys
):
    order_id, username = saga_order.reference, operator.get_username()
    with chromium_page() as page:
        flow_page_check_every_state(page, live_server, order_id, username)
        screenshot(page, order_id, capsys)


def flow_page_check_every_state(page, live_server, order_id: str, username: str) -> None:
    login_and_open_flow(page, live_server, order_id=order_id, username=username)

    assert page.locator("h1").inner_text() == f"Order {order_id}"
    assert page.locator(".summary .status").inner_text().lower() == "completed"
    headers = page.locator("svg.flow-diagram .lifeline-title:not(.lifeline-title--foot)")
    assert headers.all_text_contents() == [
        "Orders",
        "Payments",
        "Inventory",
        "Shipping",
        "Notifications",
    ]

    arrows = rendered_arrows(page)
    assert len(arrows) == 9
    for arrow in arrows:
        assert f"msg--{arrow['state']}" in arrow["classes"]
        assert arrow["label"] == arrow["type"].split(".")[1]
        assert arrow["labelVisible"], arrow
        # It spans from the publisher's lifeline to the subscriber's (arrowheads aside).
        low, high = sorted([arrow["from"], arrow["to"]])
        assert abs(arrow["left"] - low) < 12 and abs(arrow["right"] - high) < 12, arrow
    states = {arrow["subscriber"]: arrow["state"] for arrow in arrows}
    assert states[RETRIED] == "retried"
    assert states[DEAD] == "dead"
    assert states[LEFT_PENDING] == "pending"
    assert sorted(states.values()).count("done") == 6  # 2 of them notifications'
    # The project's stylesheet was served and applied: each state has its own look.
    style = {arrow["state"]: (arrow["stroke"], arrow["dash"]) for arrow in arrows}
    assert style["dead"][0] == "rgb(201, 42, 42)"
    assert style["retried"][0] == "rgb(199, 119, 0)"
    assert style["done"][0] == "rgb(47, 143, 78)"
    assert style["pending"][1] not in ("none", "")
    assert page.locator("svg.flow-diagram .note").count() == 0  # every event has a subscriber
    assert "dead letter · 3 attempts" in page.locator("svg.flow-diagram").inner_html()

    timeline = page.locator("table.timeline")
    assert timeline.locator("tr.event").count() == 5
    dead = timeline.locator(f'li[data-subscriber="{DEAD}"]')
    assert dead.locator(".pill").inner_text().lower() == "dead"
    assert "warehouse API unreachable" in dead.locator(".error").inner_text()

    # An arrow links to its event's row in the timeline.
    page.locator(f'svg.flow-diagram .msg[data-subscriber="{DEAD}"]').click()
    assert page.url.endswith("#event-4")
    page.goto(page.url.split("#")[0])  # the top of the page again, for the screenshot


@pytest.mark.e2e
def test_a_saga_run_by_a_real_worker_renders_in_chromium(
    live_server, worker, customer, operator, settings, capsys
):
    """Out of stock: payment, stock check, refund, cancellation, all through the worker."""
    require_browser()
    settings.SHOP_CURRENCY = "EUR"
    product_create(sku="LAST", name="Last print", price="5.00", stock=1)
    wait_until(lambda: CatalogItem.objects.filter(sku="LAST").exists(), what="the catalogue")
    order, _ = order_place(
        customer=customer, lines=[{"sku": "LAST", "quantity": 3}], payment_token="tok_visa"
    )
    wait_until(
        lambda: (
            Order.objects.filter(pk=order.pk, status="cancelled").exists()
            and not Delivery.objects.filter(status="pending").exists()
        ),
        timeout=90,
        what="the order to be cancelled and every delivery done",
    )
    with chromium_page() as page:
        login_and_open_flow(page, live_server, order_id=order.reference, username=operator.username)
        out_of_stock_check(page)
        screenshot(page, order.pk, capsys)


def out_of_stock_check(page) -> None:
    arrows = rendered_arrows(page)
    assert [(a["type"], a["subscriber"].split(".")[0]) for a in arrows] == [
        ("orders.OrderPlaced", "payments"),
        ("orders.OrderPlaced", "notifications"),
        ("payments.PaymentCompleted", "orders"),
        ("payments.PaymentCompleted", "inventory"),
        ("inventory.StockNotAvailable", "payments"),
        ("payments.PaymentRefunded", "orders"),
        ("orders.OrderCancelled", "notifications"),
    ]
    assert {a["state"] for a in arrows} == {"done"}
    assert page.locator(".summary .status").inner_text().lower() == "cancelled"
    assert page.locator(".summary .reason").inner_text() == "Out of stock"
    # Notifications answers OrderCancelled: no event of this saga goes unheard (no note).
    assert page.locator("svg.flow-diagram .note").count() == 0
