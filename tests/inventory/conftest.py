import pytest


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    """No broker in these tests: the relay is not woken on commit."""
    monkeypatch.setattr("outbox.publisher.relay_wake", lambda: None)
