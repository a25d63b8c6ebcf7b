"""The Content Security Policy in a real browser: the admin, the API docs and the flow page
work under it, and Chromium reports no violation on any of them (issue: inline script and
other hosts' assets are forbidden, so a page that relied on them would break here)."""

from __future__ import annotations

from django.contrib.auth import get_user_model

from tests.flow.test_browser import chromium_page

ADMIN_PASSWORD = "root-pass-123456"
LISTEN = """() => {
  window.__violations = [];
  document.addEventListener('securitypolicyviolation', (e) => {
    const where = `${e.sourceFile}:${e.lineNumber}`;
    window.__violations.push(`${e.violatedDirective} ${e.blockedURI} ${where}`);
  });
}"""


def test_admin_api_docs_and_flow_page_render_with_no_csp_violation(live_server, saga_order):
    order_id = saga_order.pk
    get_user_model().objects.create_superuser("root", "root@example.com", ADMIN_PASSWORD)
    with chromium_page() as page:
        console = []
        page.on("console", lambda message: console.append(message.text))
        page.add_init_script(f"({LISTEN})()")

        page.goto(f"{live_server.url}/admin/login/")
        page.fill("#id_username", "root")
        page.fill("#id_password", ADMIN_PASSWORD)
        with page.expect_navigation():
            page.click("input[type=submit]")
        assert page.url == f"{live_server.url}/admin/", page.url
        visited = {"admin": violations(page)}

        page.goto(f"{live_server.url}/admin/orders/order/{order_id}/change/")
        page.wait_for_selector("#content")
        visited["admin order"] = violations(page)

        page.goto(f"{live_server.url}/api/docs/")
        # Swagger UI is drawn by its script, from the schema it fetched: both were allowed.
        page.wait_for_selector(".opblock")
        visited["api docs"] = violations(page)

        page.goto(f"{live_server.url}/orders/{order_id}/flow/")
        page.wait_for_selector("svg.flow-diagram")
        visited["flow page"] = violations(page)

    assert visited == {name: [] for name in visited}, visited
    refused = [text for text in console if "Content Security Policy" in text]
    assert refused == [], refused


def violations(page) -> list[str]:
    return page.evaluate("() => window.__violations")
