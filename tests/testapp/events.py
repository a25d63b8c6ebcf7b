"""Events of the test suite's own app (type names ``tests.*``)."""

from dataclasses import dataclass
from typing import ClassVar

from outbox import DomainEvent


@dataclass(frozen=True, kw_only=True)
class ThingHappened(DomainEvent):
    """Fanned out to three subscribers."""

    aggregate_type: ClassVar[str] = "thing"

    thing_id: str
    seq: int = 0


@dataclass(frozen=True, kw_only=True)
class FlakyThing(DomainEvent):
    """Its handler fails on attempts up to ``fail_times``, or always while BROKEN is set."""

    aggregate_type: ClassVar[str] = "thing"

    thing_id: str
    fail_times: int = 0


@dataclass(frozen=True, kw_only=True)
class OrderedThing(DomainEvent):
    aggregate_type: ClassVar[str] = "thing"

    thing_id: str
    seq: int
    fail_times: int = 0


@dataclass(frozen=True, kw_only=True)
class RoutedThing(DomainEvent):
    """One subscriber on the payments queue, one on the inventory queue."""

    aggregate_type: ClassVar[str] = "thing"

    thing_id: str


@dataclass(frozen=True, kw_only=True)
class SlowThing(DomainEvent):
    aggregate_type: ClassVar[str] = "thing"

    thing_id: str
    seconds: float


@dataclass(frozen=True, kw_only=True)
class Reshaped(DomainEvent):
    """At v2: v1 had ``name``; v2 splits it into ``given`` and ``family``."""

    version: ClassVar[int] = 2
    aggregate_type: ClassVar[str] = "person"

    person_id: int
    given: str
    family: str


@dataclass(frozen=True, kw_only=True)
class Stranded(DomainEvent):
    """At v3, with an upcaster from v2 only: a stored v1 has no path to the present."""

    version: ClassVar[int] = 3
    aggregate_type: ClassVar[str] = "person"

    person_id: int
    label: str


@dataclass(frozen=True, kw_only=True)
class Counted(DomainEvent):
    """Handled by two deliberately non-idempotent subscribers that count their runs."""

    aggregate_type: ClassVar[str] = "thing"

    thing_id: str


@dataclass(frozen=True, kw_only=True)
class Confided(DomainEvent):
    """Carries sensitive fields: sealed in the event store and on the bus, clear in its handler.

    At v2: v1 called the secret ``pin`` (sensitive then too).
    """

    version: ClassVar[int] = 2
    aggregate_type: ClassVar[str] = "thing"
    sensitive: ClassVar[tuple[str, ...]] = ("secret", "contact")

    thing_id: str
    secret: str
    contact: dict | None = None
