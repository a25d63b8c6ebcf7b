"""The operator's view of the outbox in the Django admin."""

import pytest
from django.db import transaction
from django.urls import reverse

from outbox import publish
from outbox.models import Delivery
from tests.testapp.events import ThingHappened

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    monkeypatch.setattr("outbox.publisher.relay_wake", lambda: None)


@pytest.fixture
def event():
    with transaction.atomic():
        return publish(ThingHappened(thing_id="admin-thing", seq=3))


def test_events_are_searchable_and_read_only(admin_client, event):
    url = reverse("admin:outbox_event_changelist")
    for term in ("admin-thing", str(event.correlation_id), "tests.ThingHappened"):
        page = admin_client.get(url, {"q": term})
        assert page.status_code == 200
        assert "admin-thing" in page.content.decode(), term
    detail = admin_client.get(reverse("admin:outbox_event_change", args=[event.pk]))
    assert detail.status_code == 200
    assert "&quot;seq&quot;: 3" in detail.content.decode()
    assert "Save" not in detail.content.decode()
    assert admin_client.get(reverse("admin:outbox_event_add")).status_code == 403


def test_dead_letters_are_listed_with_their_error_and_can_be_replayed(admin_client, event):
    dead = event.deliveries.get(subscriber="tests.record_a")
    Delivery.objects.filter(pk=dead.pk).update(
        status="dead", attempts=8, last_error="RuntimeError: boom\n\ntraceback..."
    )
    url = reverse("admin:outbox_deadletter_changelist")
    page = admin_client.get(url)
    assert page.status_code == 200
    body = page.content.decode()
    assert "RuntimeError: boom" in body
    assert "tests.record_b" not in body  # only dead ones
    response = admin_client.post(
        url, {"action": "replay_deliveries", "_selected_action": [dead.pk]}, follow=True
    )
    assert "1 deliveries will be dispatched again" in response.content.decode()
    dead.refresh_from_db()
    assert (dead.status, dead.attempts) == ("pending", 0)


def test_deliveries_filter_by_status(admin_client, event):
    page = admin_client.get(reverse("admin:outbox_delivery_changelist"), {"status": "pending"})
    assert page.status_code == 200
    assert page.content.decode().count("tests.record_") >= 3


@pytest.mark.parametrize("changelist", ["outbox_deadletter", "outbox_delivery"])
def test_replaying_needs_the_replay_permission_not_only_viewing(client, event, changelist):
    """A view-only operator posting the replay action changes nothing (it would run a handler,
    a charge at the gateway, again); with outbox.replay_delivery the same post replays."""
    from django.contrib.auth import get_user_model

    from tests.security.credentials import grant

    dead = event.deliveries.get(subscriber="tests.record_a")
    Delivery.objects.filter(pk=dead.pk).update(status="dead", attempts=8, last_error="boom")
    viewer = get_user_model().objects.create_user("viewer", is_staff=True)
    viewer = grant(viewer, "outbox.view_delivery", "outbox.view_deadletter")
    client.force_login(viewer)
    url = reverse(f"admin:{changelist}_changelist")
    assert client.get(url).status_code == 200
    post = {"action": "replay_deliveries", "_selected_action": [dead.pk]}
    response = client.post(url, post, follow=True)
    assert "will be dispatched again" not in response.content.decode()
    dead.refresh_from_db()
    assert (dead.status, dead.attempts) == ("dead", 8)

    client.force_login(grant(viewer, "outbox.replay_delivery"))
    response = client.post(url, post, follow=True)
    assert "1 deliveries will be dispatched again" in response.content.decode()
    dead.refresh_from_db()
    assert (dead.status, dead.attempts) == ("pending", 0)
