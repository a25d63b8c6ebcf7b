"""``/metrics``: every process's counters, and gauges read from the database at scrape time.

The web, worker and relay processes count into prometheus_client's multiprocess directory
(``PROMETHEUS_MULTIPROC_DIR``, one memory-mapped file per process and metric type); the web
process serving ``/metrics`` adds them up. Gauges that describe the whole system (backlog,
lag, dead letters, heartbeats, saga outcomes) are read from the database when scraped, so
they are right whichever process answers and cost nothing on the hot path.
"""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from outbox.ops import (
    OutboxCollector,
    event_counts_by_payload_field,
    event_counts_by_type,
    subscribers_all,
)

logger = logging.getLogger(__name__)

# The saga's outcomes, read from the event store by type name: no import of the orders app.
ORDER_PLACED = "orders.OrderPlaced"
ORDER_COMPLETED = "orders.OrderCompleted"
ORDER_CANCELLED = "orders.OrderCancelled"
CANCELLATION_REASONS = (
    "payment_failed",
    "out_of_stock",
    "customer_cancelled",
    "timed_out",
    "operator_cancelled",
)


def multiproc_dir() -> Path | None:
    value = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(value) if value else None


def multiproc_dir_prepare(path: Path) -> int:
    """Create the directory; empty it when no running process owns a file in it.

    prometheus_client needs the directory wiped when the system starts: files left by an
    earlier run would be added to this run's counters. Wiping it while a process still
    writes its files would lose that process's counts for good (it keeps writing to an
    unlinked file), and processes of one machine start in any order. So every process runs
    this at start, before it counts anything: the first one of a new run finds only dead
    owners and wipes; later ones find a live owner and leave it alone, and so does a process
    restarted alone (its dead predecessor's counts stay in the sums, as counters should).
    Files named after this very process come from an earlier process that had its pid.
    Returns the number of files removed.
    """
    path.mkdir(parents=True, exist_ok=True)
    files = glob.glob(str(path / "*.db"))
    me = os.getpid()
    for name in files:
        pid = _owner(name)
        if pid is not None and pid != me and _alive(pid):
            return 0
    removed = 0
    for name in files:
        try:
            os.remove(name)
            removed += 1
        except FileNotFoundError:
            pass
    if removed:
        logger.info("removed %s metrics files of an earlier run from %s", removed, path)
    return removed


def _owner(filename: str) -> int | None:
    # counter_1234.db, histogram_1234.db, gauge_livesum_1234.db
    stem = os.path.basename(filename)[: -len(".db")]
    try:
        return int(stem.rsplit("_", 1)[1])
    except (IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SagaCollector:
    """Orders placed, completed and cancelled by reason, counted in the event store.

    Gauges, not counters: retention deletes finished events after OUTBOX_RETENTION_DAYS, so
    these count the orders of the retention window. The type counts read the index on
    ``type``; the cancellation reasons read the payloads of cancelled orders only.
    """

    def describe(self):
        return []

    def collect(self):
        try:
            by_type = event_counts_by_type(types=[ORDER_PLACED, ORDER_COMPLETED])
            reasons = event_counts_by_payload_field(type=ORDER_CANCELLED, field="reason")
            cancelled = {str(reason or "unknown"): n for reason, n in reasons.items()}
        except Exception:
            logger.warning("saga outcomes not readable", exc_info=True)
            return
        placed = GaugeMetricFamily(
            "shop_orders_placed", "Orders placed (OrderPlaced events in the event store)."
        )
        placed.add_metric([], by_type.get(ORDER_PLACED, 0))
        yield placed
        completed = GaugeMetricFamily(
            "shop_orders_completed",
            "Sagas that ended completed (OrderCompleted events in the event store).",
        )
        completed.add_metric([], by_type.get(ORDER_COMPLETED, 0))
        yield completed
        family = GaugeMetricFamily(
            "shop_orders_cancelled",
            "Sagas that ended cancelled, by reason (OrderCancelled events in the event store).",
            labels=["reason"],
        )
        for reason in sorted({*CANCELLATION_REASONS, *cancelled}):
            family.add_metric([reason], cancelled.get(reason, 0))
        yield family


def metrics_registry() -> CollectorRegistry:
    """A registry for one scrape: the processes' files, then the database gauges."""
    path = multiproc_dir()
    if path is not None and path.is_dir():
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(path))
    else:
        # One process only (no multiprocess directory): its own default registry.
        registry = CollectorRegistry()
        registry.register(_Forward(REGISTRY))
    registry.register(OutboxCollector(subscribers=[s.name for s in subscribers_all()]))
    registry.register(SagaCollector())
    registry.register(SagaProgressCollector())
    return registry


class SagaProgressCollector:
    """Sagas in flight by the step they are in, and saga deadlines fired, from orders' tables
    (orders' selectors: the host project may read them; no app reads another's)."""

    def describe(self):
        return []

    def collect(self):
        from orders.selectors import deadline_counts, saga_counts_by_step

        try:
            in_flight = saga_counts_by_step()
            fired = deadline_counts()
        except Exception:
            logger.warning("saga progress not readable", exc_info=True)
            return
        family = GaugeMetricFamily(
            "shop_sagas_in_flight",
            "Orders not yet completed or cancelled, by the step they wait in (cancelling: a "
            "cancellation is being compensated).",
            labels=["step"],
        )
        for step in ("placed", "paid", "stock_reserved", "cancelling"):
            family.add_metric([step], in_flight.get(step, 0))
        yield family
        family = GaugeMetricFamily(
            "shop_saga_deadlines_fired",
            "Saga deadlines fired, by step and outcome: cancelled (the order timed out) or "
            "moved_on (it had left the step).",
            labels=["step", "outcome"],
        )
        for (step, outcome), n in sorted(fired.items()):
            family.add_metric([step, outcome], n)
        yield family


class _Forward:
    def __init__(self, registry):
        self.registry = registry

    def describe(self):
        return []

    def collect(self):
        return self.registry.collect()


def metrics_exposition(accept_header: str | None) -> tuple[bytes, str]:
    encoder, content_type = choose_encoder(accept_header or "")
    return encoder(metrics_registry()), content_type
