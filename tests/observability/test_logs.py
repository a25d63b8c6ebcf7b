"""Structured logs: what the relay and the handlers write carries the delivery's fields."""

from __future__ import annotations

import pytest
from django.db import transaction

from outbox import publish
from outbox.handling import delivery_handle
from outbox.models import Event
from outbox.relay import relay_run
from tests.observability.conftest import ChainContinued, ChainStarted
from tests.testapp.events import FlakyThing

pytestmark = pytest.mark.django_db

FIELDS = ("event_id", "event_type", "correlation_id", "causation_id", "subscriber", "attempt")


def test_a_failed_attempt_is_logged_with_the_delivery_fields(json_logs):
    with transaction.atomic():
        stored = publish(FlakyThing(thing_id="f", fail_times=1))
    delivery = stored.deliveries.get()
    assert delivery_handle(delivery_id=delivery.pk) == "retry"

    line = json_logs.find("attempt 1/3 failed")
    assert line["level"] == "warning"
    assert line["logger"] == "outbox.handling"
    # The message keeps its information; the fields make it searchable.
    assert f"tests.FlakyThing {stored.event_id} -> tests.flaky" in line["event"]
    assert {k: line[k] for k in FIELDS} == {
        "event_id": str(stored.event_id),
        "event_type": "tests.FlakyThing",
        "correlation_id": str(stored.correlation_id),
        "causation_id": None,
        "subscriber": "tests.flaky",
        "attempt": 1,
    }
    assert line["delivery_id"] == delivery.pk
    assert "timestamp" in line


def test_lines_a_handler_writes_carry_its_event_and_its_cause(chain, json_logs):
    with transaction.atomic():
        first = publish(ChainStarted(chain_id="c1"))
    assert delivery_handle(delivery_id=first.deliveries.get().pk) == "done"
    second = Event.objects.get(type=ChainContinued.event_type)
    assert delivery_handle(delivery_id=second.deliveries.get().pk) == "done"

    expected = {
        "event_id": str(second.event_id),
        "event_type": "tests.ChainContinued",
        "correlation_id": str(first.correlation_id),
        "causation_id": str(first.event_id),
        "subscriber": "tests.chain_end",
        "attempt": 1,
    }
    stdlib = json_logs.find("chain c1 ended (stdlib)")
    native = json_logs.find("chain ended (structlog)")
    for line in (stdlib, native):
        assert {k: line[k] for k in FIELDS} == expected
        assert line["logger"] == "tests.chain"
        assert line["level"] == "info"
    assert native["chain"] == "c1"
    # The outbox's own line about the run carries them too.
    done = json_logs.find("done in")
    assert done["subscriber"] == "tests.chain_end"
    assert done["causation_id"] == str(first.event_id)


def test_the_relay_binds_its_batch_size(json_logs, monkeypatch):
    monkeypatch.setattr("outbox.relay.deliveries_dispatch", lambda claimed: 2)
    with transaction.atomic():
        publish(FlakyThing(thing_id="r"))
        publish(FlakyThing(thing_id="s"))
    assert relay_run() == 2
    line = json_logs.find("relay dispatched 2 deliveries in 2 messages")
    assert line["batch_size"] == 2
    assert line["level"] == "debug"
    assert "subscriber" not in line


def test_fields_are_unbound_after_the_delivery(json_logs):
    import logging

    with transaction.atomic():
        stored = publish(FlakyThing(thing_id="u"))
    delivery_handle(delivery_id=stored.deliveries.get().pk)
    logging.getLogger("outbox.test").info("after the delivery")
    line = json_logs.find("after the delivery")
    assert not set(FIELDS) & set(line)
