"""Fixtures of the API contract tests: a catalogue built the real way, no broker."""

import pytest

from tests.fuzz.helpers import catalogue_create


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    # No broker in these tests: nothing needs waking when an order commits.
    monkeypatch.setattr("outbox.publisher.relay_wake", lambda: None)


@pytest.fixture
def catalogue(db, settings):
    settings.SHOP_CURRENCY = "EUR"
    return catalogue_create()
