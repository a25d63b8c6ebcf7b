"""The event being handled right now, so that events published by its handler inherit its
correlation id and name it as their cause."""

import contextlib
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Handling:
    event_id: uuid.UUID
    event_type: str
    correlation_id: uuid.UUID
    subscriber: str
    attempt: int


_current: ContextVar[Handling | None] = ContextVar("outbox_handling", default=None)


def handling_current() -> Handling | None:
    return _current.get()


@contextlib.contextmanager
def _within(var: ContextVar, value):
    token = var.set(value)
    try:
        yield value
    finally:
        var.reset(token)


def handling(h: Handling):
    return _within(_current, h)


@dataclass
class Continuing:
    """What a delivery's run published for subscribers this worker serves (outbox/continuation.py).

    ``queues``: the worker's queues. ``deliveries``: (event position, subscriber) of each
    delivery the run's events got whose subscriber's queue is among them, to be claimed once
    the run commits. ``born``: the ids of those the publisher inserted already leased to this
    worker (``born_until``: the ``time.monotonic()`` before which it may; 0, never), which it
    runs without a claim. ``wake_owed``: a publish left the relay's wake-up to the worker,
    which sends it unless it claims (or was born with) them all.
    """

    queues: frozenset[str]
    deliveries: list[tuple[int, str]]
    wake_owed: bool = False
    born: list[int] = field(default_factory=list)
    born_until: float = 0.0


def born_mark() -> int:
    """Where the current run's born deliveries end now (``born_forget`` goes back to it)."""
    current = _continuing.get()
    return len(current.born) if current is not None else 0


def born_forget(mark: int) -> None:
    """The transaction (or savepoint) that inserted the born deliveries after ``mark`` was
    rolled back: they do not exist."""
    current = _continuing.get()
    if current is not None:
        del current.born[mark:]


_continuing: ContextVar[Continuing | None] = ContextVar("outbox_continuing", default=None)


def continuing_current() -> Continuing | None:
    return _continuing.get()


def continuing(c: Continuing):
    return _within(_continuing, c)
