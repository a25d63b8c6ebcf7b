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
def handling(h: Handling):
    token = _current.set(h)
    try:
        yield h
    finally:
        _current.reset(token)
