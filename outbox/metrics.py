"""Prometheus metrics of the outbox. A no-op when prometheus_client is not installed.

Counted where things happen, and only once they are committed: an event published in a
transaction that rolls back, or a delivery outcome whose transaction fails, is not counted.
Each call costs a dictionary look-up and an addition (a write to a memory-mapped file in
prometheus_client's multiprocess mode); never a database query.

What is better read from the database at scrape time (backlog, lag, dead letters, heartbeats)
is computed by :class:`OutboxCollector`, for the process that serves ``/metrics``.
"""

from __future__ import annotations

import os
import threading
from collections import Counter as Tally
from collections.abc import Iterable

from outbox.selectors import outbox_gauges

try:
    import prometheus_client
    from prometheus_client import values as _values
    from prometheus_client.core import GaugeMetricFamily
except ImportError:  # pragma: no cover - prometheus_client is optional
    prometheus_client = None

enabled = prometheus_client is not None

HANDLER_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
RELAY_BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


class _Metrics:
    def __init__(self) -> None:
        p = prometheus_client
        self.published = p.Counter(
            "outbox_events_published",
            "Events committed to the outbox, by type.",
            ["event_type"],
        )
        self.deliveries = p.Counter(
            "outbox_deliveries",
            "Delivery attempts that committed, by subscriber and outcome: done, retry (failed, "
            "to be tried again), dead (failed its last attempt) or waiting (ordered, behind "
            "an earlier event).",
            ["subscriber", "outcome"],
        )
        self.handler_seconds = p.Histogram(
            "outbox_handler_duration_seconds",
            "Time to load the event and run the subscriber's handler, failed runs included.",
            ["subscriber"],
            buckets=HANDLER_SECONDS_BUCKETS,
        )
        self.relay_runs = p.Counter(
            "outbox_relay_runs",
            "Relay runs, by how they ended: skipped (the wake-up was already served), idle "
            "(nothing due), drained (dispatched until nothing was due), timeboxed (stopped "
            "after RELAY_MAX_SECONDS with work left), error (the broker refused the batch).",
            ["result"],
        )
        self.relay_batch = p.Histogram(
            "outbox_relay_batch_size",
            "Deliveries per non-empty claim (at most RELAY_BATCH_SIZE).",
            buckets=RELAY_BATCH_BUCKETS,
        )
        self.continued = p.Counter(
            "outbox_deliveries_continued",
            "Deliveries a worker ran itself right after the run that committed their event, "
            "without the relay: born leased to it, or claimed (outbox/continuation.py).",
        )
        self.batches = p.Counter(
            "outbox_delivery_batches",
            "Batches of several deliveries a worker ran in one transaction, by how they ended: "
            "committed, or fallback (a deadlock, a serialization failure or an error at COMMIT "
            "rolled the batch back, and its deliveries ran one per transaction).",
            ["result"],
        )
        self._children: dict[tuple, object] = {}

    def child(self, family, *labels):
        # labels() validates and locks on every call; the children never change.
        key = (id(family), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(*labels)
        return child


_metrics: _Metrics | None = None
_lock = threading.Lock()


def _get() -> _Metrics:
    # Built on first use, so a process that never counts anything (a management command)
    # leaves no files in the multiprocess directory.
    global _metrics
    if _metrics is None:
        with _lock:
            if _metrics is None:
                multiproc = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
                if multiproc and not getattr(_values.ValueClass, "_multiprocess", False):
                    # prometheus_client was imported before the variable was set.
                    _values.ValueClass = _values.get_value_class()
                _metrics = _Metrics()
    return _metrics


def events_published(types: list[str]) -> None:
    m = _get()
    if len(types) == 1:
        m.child(m.published, types[0]).inc()
        return
    for event_type, n in Tally(types).items():
        m.child(m.published, event_type).inc(n)


def delivery_finished(subscriber: str, outcome: str, seconds: float | None = None) -> None:
    m = _get()
    m.child(m.deliveries, subscriber, outcome).inc()
    if seconds is not None:
        m.child(m.handler_seconds, subscriber).observe(seconds)


def relay_claimed(count: int) -> None:
    if count:
        _get().relay_batch.observe(count)


def deliveries_continued(count: int) -> None:
    _get().continued.inc(count)


def delivery_batch_finished(result: str) -> None:
    m = _get()
    m.child(m.batches, result).inc()


def relay_finished(result: str) -> None:
    m = _get()
    m.child(m.relay_runs, result).inc()


class OutboxCollector:
    """Gauges read from the database when scraped: a few aggregate queries on indexed
    columns, whatever the number of events."""

    def __init__(self, *, subscribers: Iterable[str] = ()) -> None:
        # Subscribers that exist in code get a sample (0) even with nothing pending.
        self.subscribers = list(subscribers)

    def describe(self):
        return []

    def collect(self):
        import logging

        ok = GaugeMetricFamily(
            "outbox_scrape_success", "1 if the outbox's gauges could be read from the database."
        )
        try:
            g = outbox_gauges()
        except Exception:
            logging.getLogger(__name__).warning("outbox gauges not readable", exc_info=True)
            ok.add_metric([], 0)
            yield ok
            return
        ok.add_metric([], 1)
        yield ok

        lag = GaugeMetricFamily(
            "outbox_lag_seconds",
            "How long the oldest due delivery has been waiting to be dispatched (0: none due).",
        )
        lag.add_metric([], g.lag_seconds)
        yield lag

        names = sorted(set(self.subscribers) | set(g.pending) | set(g.dead))
        backlog = GaugeMetricFamily(
            "outbox_backlog",
            "Pending deliveries (due, leased to a worker, or waiting for a retry), by subscriber.",
            labels=["subscriber"],
        )
        dead = GaugeMetricFamily(
            "outbox_dead_letters",
            "Dead-lettered deliveries waiting for a replay, by subscriber.",
            labels=["subscriber"],
        )
        for name in names:
            backlog.add_metric([name], g.pending.get(name, 0))
            dead.add_metric([name], g.dead.get(name, 0))
        yield backlog
        yield dead

        beats = GaugeMetricFamily(
            "outbox_heartbeat_age_seconds",
            "Seconds since each role last showed it was alive (relay: a relay run; beat: a "
            "relay run that beat triggered).",
            labels=["name"],
        )
        for name, age in sorted(g.heartbeats.items()):
            beats.add_metric([name], age)
        yield beats
