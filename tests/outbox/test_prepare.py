"""subscribe(prepare=...): what it may be combined with. What it does (its writes commit before
the handler runs, and stay when the handler fails) is tested through the subscriber that uses
it, in tests/payments/test_gateway_attempts.py."""

from __future__ import annotations

import pytest

from outbox import SubscriptionError, subscribe
from tests.testapp.events import OrderedThing, ThingHappened


def test_an_ordered_subscriber_cannot_have_a_prepare_step():
    with pytest.raises(SubscriptionError, match="ordered"):

        @subscribe(OrderedThing, name="tests.ordered_prepared", ordered=True, prepare=print)
        def ordered_prepared(event):  # pragma: no cover
            pass


def test_prepare_must_be_callable():
    with pytest.raises(SubscriptionError, match="callable"):

        @subscribe(ThingHappened, name="tests.prepared_badly", prepare="not a function")
        def prepared_badly(event):  # pragma: no cover
            pass
