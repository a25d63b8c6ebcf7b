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


@dataclass(frozen=True, kw_only=True)
class RemotePing(DomainEvent):
    """``bench.RemotePing``: externalised, with no subscriber in the publishing service; the
    cross-database latency scenario's consumer (bench/busconsumer/) handles it on the far side
    of the bus."""

    aggregate_type: ClassVar[str] = "ping"
    externalised: ClassVar[bool] = True

    ping_id: int
    tag: str
