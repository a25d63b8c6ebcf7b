"""The benchmark's event (type name ``bench.Ping``): nothing but an id and a run tag."""

from dataclasses import dataclass
from typing import ClassVar

from outbox import DomainEvent


@dataclass(frozen=True, kw_only=True)
class Ping(DomainEvent):
    aggregate_type: ClassVar[str] = "ping"

    ping_id: int
    # Which measurement the event belongs to; the handler files its start time under it.
    tag: str
