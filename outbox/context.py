"""The event being handled right now, so that events published by its handler inherit its
correlation id and name it as their cause."""

import contextlib
import uuid
from contextvars import ContextVar
from dataclasses import dataclass


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
    delivery the run's events got whose subscriber's queue is among them. ``wake_owed``: a
    publish left the relay's wake-up to the worker, which sends it unless it claims them all.
    """

    queues: frozenset[str]
    deliveries: list[tuple[int, str]]
    wake_owed: bool = False


_continuing: ContextVar[Continuing | None] = ContextVar("outbox_continuing", default=None)


def continuing_current() -> Continuing | None:
    return _continuing.get()


def continuing(c: Continuing):
    return _within(_continuing, c)
