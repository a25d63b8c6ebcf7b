"""A two-step chain of events of this package's own (type names ``tests.Chain*``): the first
handler publishes the second event, the second handler writes log lines."""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from typing import ClassVar

import pytest
import structlog

from outbox import DomainEvent, publish, subscribe
from outbox.registry import _by_type, _subscribers
from shop.observability.logs import formatter


@dataclass(frozen=True, kw_only=True)
class ChainStarted(DomainEvent):
    aggregate_type: ClassVar[str] = "chain"

    chain_id: str


@dataclass(frozen=True, kw_only=True)
class ChainContinued(DomainEvent):
    aggregate_type: ClassVar[str] = "chain"

    chain_id: str


CHAIN_LOGGER = "tests.chain"


@pytest.fixture
def chain():
    """Subscribe the chain's two handlers for one test, then remove them again."""

    @subscribe(ChainStarted, name="tests.chain_continue")
    def chain_continue(event: ChainStarted) -> None:
        publish(ChainContinued(chain_id=event.chain_id))

    @subscribe(ChainContinued, name="tests.chain_end")
    def chain_end(event: ChainContinued) -> None:
        logging.getLogger(CHAIN_LOGGER).info("chain %s ended (stdlib)", event.chain_id)
        structlog.get_logger(CHAIN_LOGGER).info("chain ended (structlog)", chain=event.chain_id)

    yield
    for name, event_type in [
        ("tests.chain_continue", ChainStarted.event_type),
        ("tests.chain_end", ChainContinued.event_type),
    ]:
        del _subscribers[name]
        _by_type[event_type] = [s for s in _by_type[event_type] if s.name != name]


@pytest.fixture(autouse=True)
def quiet(monkeypatch, outbox_fast):
    """No relay wake-ups: these tests run deliveries themselves."""
    monkeypatch.setattr("outbox.publisher.relay_wake", lambda: None)


class JsonLines:
    """What the loggers wrote, through the production JSON formatter, one dict per line."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines() if line]

    def find(self, fragment: str) -> dict:
        matches = [line for line in self.lines() if fragment in line["event"]]
        assert matches, f"no log line contains {fragment!r}: {self.lines()}"
        return matches[-1]


@pytest.fixture
def json_logs():
    """Capture the outbox's and the chain's log records, DEBUG and up, as JSON lines."""
    captured = JsonLines()
    handler = logging.StreamHandler(captured.stream)
    handler.setFormatter(formatter("json"))
    loggers = [logging.getLogger(name) for name in ("outbox", CHAIN_LOGGER)]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    yield captured
    for lg, level in zip(loggers, levels, strict=True):
        lg.removeHandler(handler)
        lg.setLevel(level)
