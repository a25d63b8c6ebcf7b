"""Events and subscribers of the issue-16 defect tests (type names ``tests.Defect*``).

Declared here, not in tests/testapp, so that these tests own their subscribers: each event type
has exactly the subscribers below and nothing else in the suite publishes them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import ClassVar

from django.contrib.auth.models import Permission

from outbox import DomainEvent, subscribe
from outbox.context import handling_current
from tests.testapp.models import Effect


@dataclass(frozen=True, kw_only=True)
class DefectFailing(DomainEvent):
    """Its handler raises ``message``, with each ``{NUL}`` in it made a NUL character (a payload
    cannot hold one on PostgreSQL; an error text from a library can)."""

    aggregate_type: ClassVar[str] = "defect"

    defect_id: str
    message: str


@dataclass(frozen=True, kw_only=True)
class DefectDeferred(DomainEvent):
    """Its handler writes a row whose foreign key is checked only at COMMIT, and fails there."""

    aggregate_type: ClassVar[str] = "defect"

    defect_id: str
    poison: bool = True


@dataclass(frozen=True, kw_only=True)
class DefectHeld(DomainEvent):
    """Its handler waits until the test releases it (HELD), holding the delivery's row lock."""

    aggregate_type: ClassVar[str] = "defect"

    defect_id: str


@dataclass(frozen=True, kw_only=True)
class DefectPriced(DomainEvent):
    """A price of one aggregate; the ordered subscriber keeps the latest it was handed."""

    aggregate_type: ClassVar[str] = "defect"

    defect_id: str
    price: str


class Held:
    """The held handler announces it runs (``entered``) and waits for ``release``."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()


HELD = {"current": Held()}
# The ordered subscriber's view: defect_id -> the price it applied last.
PRICES: dict[str, str] = {}


def _effect(event, name: str) -> None:
    Effect.objects.create(
        subscriber=name,
        event_id=event.meta.event_id,
        aggregate_id=event.aggregate_id,
        attempt=handling_current().attempt,
    )


@subscribe(DefectFailing, max_attempts=3)
def defect_failing(event: DefectFailing) -> None:
    raise RuntimeError(event.message.replace("{NUL}", "\x00"))


@subscribe(DefectDeferred, max_attempts=2)
def defect_deferred(event: DefectDeferred) -> None:
    _effect(event, "defect_deferred")
    if event.poison:
        # Django's foreign keys are DEFERRABLE INITIALLY DEFERRED: this insert succeeds and
        # the transaction's COMMIT fails.
        Permission.objects.create(
            name="poison", codename=f"poison_{event.defect_id}", content_type_id=2_000_000_000
        )


@subscribe(DefectHeld)
def defect_held(event: DefectHeld) -> None:
    held = HELD["current"]
    held.entered.set()
    held.release.wait(timeout=30)
    _effect(event, "defect_held")


@subscribe(DefectPriced, ordered=True)
def defect_priced(event: DefectPriced) -> None:
    _effect(event, "defect_priced")
    PRICES[event.defect_id] = event.price
