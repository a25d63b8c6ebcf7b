"""Fixtures of the security tests: customers, staff and a catalogue, built the real way."""

import pytest
from django.contrib.auth import get_user_model

from tests.fuzz.helpers import catalogue_create

PASSWORDS = {
    "alice": "pw-sec-alice-123",
    "bob": "pw-sec-bob-123",
    "carol": "pw-sec-carol-123",
}


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    # No broker in these tests (the poison test starts its own worker and relay ticker).
    monkeypatch.setattr("outbox.publisher.relay_wake", lambda: None)


def _user(name: str, **extra):
    return get_user_model().objects.create_user(name, password=PASSWORDS[name], **extra)


@pytest.fixture
def customer(db):
    return _user("alice", first_name="Alice", last_name="Secretperson")


@pytest.fixture
def other_customer(db):
    return _user("bob")


@pytest.fixture
def staff(db):
    return _user("carol", is_staff=True)


@pytest.fixture
def catalogue_manager(staff):
    """Staff in the catalogue manager group (as the data migration made it)."""
    from django.contrib.auth.models import Group

    staff.groups.add(Group.objects.get(name="catalogue manager"))
    return staff


@pytest.fixture
def catalogue(db, settings):
    settings.SHOP_CURRENCY = "EUR"
    return catalogue_create()
