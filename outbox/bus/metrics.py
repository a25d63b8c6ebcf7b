"""Prometheus metrics of the bus, counted where things happen (after the commit).

- ``outbox_bus_published_total{target,outcome}``: bus deliveries by outcome (done: confirmed by
  the broker; retry; dead), per target (``<scheme>:<namespace>``).
- ``outbox_bus_confirm_seconds{target}``: time from the first publish of a batch to its last
  confirm.
- ``outbox_bus_received_total{service,outcome}``: messages a consumer settled: stored,
  duplicate, ignored (not for this service), dead (malformed, dead-lettered), retry.
- ``outbox_bus_stored_batch_events{service}``: events a consumer stored per transaction (its
  count is the consumer's storing commits, its sum the events they stored).
- ``outbox_bus_consumer_lag{service}``: messages waiting for the service's consumer.
- ``outbox_bus_unroutable{namespace}``: messages the alternate exchange kept (RabbitMQ).
"""

from __future__ import annotations

import threading

from outbox import metrics as outbox_metrics

try:
    import prometheus_client
except ImportError:  # pragma: no cover
    prometheus_client = None

enabled = prometheus_client is not None

STORED_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500)
CONFIRM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

_families: dict[str, object] = {}
_lock = threading.Lock()


def _family(name: str):
    with _lock:
        if not _families:
            outbox_metrics._get()  # multiprocess value class set up first
            p = prometheus_client
            _families["published"] = p.Counter(
                "outbox_bus_published",
                "Bus deliveries by outcome: done (confirmed by the broker), retry, dead.",
                ["target", "outcome"],
            )
            _families["confirm"] = p.Histogram(
                "outbox_bus_confirm_seconds",
                "Time to publish a batch and receive every confirm.",
                ["target"],
                buckets=CONFIRM_BUCKETS,
            )
            _families["received"] = p.Counter(
                "outbox_bus_received",
                "Messages a consumer settled: stored, duplicate, ignored, dead, retry.",
                ["service", "outcome"],
            )
            _families["stored_batch"] = p.Histogram(
                "outbox_bus_stored_batch_events",
                "Events a consumer stored per transaction.",
                ["service"],
                buckets=STORED_BATCH_BUCKETS,
            )
            _families["ran"] = p.Counter(
                "outbox_bus_consumer_ran",
                "Deliveries a consumer claimed and ran itself, after storing their events.",
                ["service"],
            )
            _families["lag"] = p.Gauge(
                "outbox_bus_consumer_lag",
                "Messages waiting in the broker for this service's consumer.",
                ["service"],
                multiprocess_mode="mostrecent",
            )
            _families["unroutable"] = p.Gauge(
                "outbox_bus_unroutable",
                "Messages kept by the alternate exchange: published with no queue bound.",
                ["namespace"],
                multiprocess_mode="mostrecent",
            )
    return _families[name]


def bus_published(*, target: str, outcomes: dict[str, int], seconds: float) -> None:
    for outcome, n in outcomes.items():
        if n and outcome != "skipped":
            _family("published").labels(target, outcome).inc(n)
    if outcomes.get("done") or outcomes.get("retry") or outcomes.get("dead"):
        _family("confirm").labels(target).observe(seconds)


def bus_received(*, service: str, outcome: str) -> None:
    _family("received").labels(service, outcome).inc()


def bus_stored_batch(*, service: str, events: int) -> None:
    _family("stored_batch").labels(service).observe(events)


def bus_consumer_ran(*, service: str, deliveries: int) -> None:
    _family("ran").labels(service).inc(deliveries)


def bus_consumer_stats(*, service: str, namespace: str, lag, unroutable) -> None:
    if lag is not None:
        _family("lag").labels(service).set(lag)
    if unroutable is not None:
        _family("unroutable").labels(namespace).set(unroutable)
