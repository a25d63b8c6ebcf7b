"""The relay: claim due deliveries in batches and hand them to Celery.

A claim pushes each delivery's ``next_attempt_at`` one lease ahead in the same transaction that
selects it (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so relays running side by side never
claim the same row; on SQLite every transaction takes the write lock first, so claims are
serialised). Then the ids go to the broker, many per message. If the message is lost, the
worker dies, or the relay dies between commit and send, the lease runs out and the next claim
takes the delivery again: the broker carries work, the database remembers it.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections import defaultdict

from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.db.models.functions import Now
from django.utils import timezone

from outbox import metrics, sql
from outbox.bus.relaying import relay_publisher_offer
from outbox.bus.target import bus_batches, bus_delivery
from outbox.conf import outbox_settings
from outbox.errors import UnknownSubscriber
from outbox.logcontext import log_fields
from outbox.models import Delivery, Heartbeat
from outbox.queues import RELAY_QUEUE
from outbox.registry import subscriber_get
from outbox.transport import transport_get
from outbox.wake import wake_flag_lower

logger = logging.getLogger(__name__)

# Where deliveries of a subscriber that no longer exists are sent, to be dead-lettered there
# with a clear error rather than left pending forever.
FALLBACK_QUEUE = RELAY_QUEUE
HEARTBEAT_EVERY = dt.timedelta(seconds=5)

# When this process last began a drain that ended with nothing left to claim. A wake-up sent
# before that moment describes a commit that drain already saw, so it needs no query at all.
_last_full_drain_started = 0.0
# When this process last began a run that claimed something (RELAY_GATHER_SECONDS).
_last_busy_run_started = 0.0
_last_heartbeat: dict[str, float] = {}


def deliveries_claim_of(*, events: set[int], subscribers: set[str]) -> list[tuple[int, str]]:
    """Claim, as :func:`deliveries_claim` does, the due deliveries of ``events`` (positions) to
    ``subscribers``: a worker's continuation claims those its run has just committed
    (outbox/continuation.py)."""
    if connection.vendor == "postgresql":
        with transaction.atomic():
            return sql.deliveries_claim_of(connection, events, subscribers, conf=outbox_settings())
    among = Q(event_id__in=events, subscriber__in=subscribers)
    return deliveries_claim(limit=len(events) * len(subscribers), among=among)


def deliveries_claim(*, limit: int, among: Q | None = None) -> list[tuple[int, str]]:
    """Claim up to ``limit`` due deliveries for one lease; returns (id, subscriber) pairs.
    ``among`` narrows the claim to some deliveries (:func:`deliveries_claim_of`).

    The lease doubles with every dispatch since the delivery's last attempt (capped at
    2**LEASE_MAX_DOUBLINGS leases): when workers fall behind, a delivery still queued in the
    broker is sent again ever more rarely, instead of once per lease, which would flood the
    queues with duplicates faster than the workers can skip them and never let the system
    catch up.
    """
    conf = outbox_settings()
    now = Now()  # the database's clock, as every time the engine compares
    earlier_undone = Delivery.objects.filter(
        subscriber=OuterRef("subscriber"),
        aggregate_key=OuterRef("aggregate_key"),
        sequence__lt=OuterRef("sequence"),
    ).exclude(status=Delivery.Status.DONE)
    due = (
        Delivery.objects.filter(status=Delivery.Status.PENDING, next_attempt_at__lte=now)
        .filter(among or Q())
        .filter(Q(ordered=False) | ~Exists(earlier_undone))
        .order_by("next_attempt_at")
        .select_for_update(skip_locked=True, of=("self",))
    )
    with transaction.atomic():
        if connection.vendor == "postgresql":
            return sql.deliveries_claim(connection, due.values("id")[:limit], conf=conf)
        rows = list(due.values_list("id", "subscriber", "dispatches")[:limit])
        by_dispatches: dict[int, list[int]] = defaultdict(list)
        for pk, _, dispatches in rows:
            by_dispatches[min(dispatches, conf.LEASE_MAX_DOUBLINGS)].append(pk)
        for doublings, ids in by_dispatches.items():
            Delivery.objects.filter(id__in=ids).update(
                next_attempt_at=now + dt.timedelta(seconds=conf.LEASE_SECONDS * 2**doublings),
                dispatched_at=now,
                dispatches=F("dispatches") + 1,
            )
    return [(pk, subscriber) for pk, subscriber, _ in rows]


def deliveries_dispatch(claimed: list[tuple[int, str]]) -> int:
    """Send claimed deliveries to their subscribers' queues, several ids per message."""
    conf = outbox_settings()
    by_queue: dict[str, list[int]] = defaultdict(list)
    bus_ids = []
    for pk, name in claimed:
        if bus_delivery(name):
            bus_ids.append(pk)
            continue
        try:
            queue = subscriber_get(name).queue
        except UnknownSubscriber:
            queue = FALLBACK_QUEUE
        by_queue[queue].append(pk)
    messages = []
    for queue, ids in by_queue.items():
        # Small batches spread over a worker's processes; large ones are capped per message.
        size = max(1, min(conf.DISPATCH_CHUNK_SIZE, math.ceil(len(ids) / 4)))
        messages += [(queue, ids[start : start + size]) for start in range(0, len(ids), size)]
    # The bus: a small claim is published by this process's publishing thread, when this is
    # the relay's process and the thread takes it (outbox/bus/relaying.py); otherwise up to
    # its batch size per message to the bus queue, each published as one confirmed batch.
    handed = relay_publisher_offer(bus_ids)
    bus_messages = [] if handed else bus_batches(bus_ids)
    if messages or bus_messages:
        transport_get().deliveries_send(messages, bus_messages)
    return len(messages) + len(bus_messages) + int(handed)


def relay_run(*, woken_at: float | None = None) -> int:
    """Claim and dispatch until nothing is due (or RELAY_MAX_SECONDS); returns deliveries sent."""
    global _last_full_drain_started, _last_busy_run_started
    if woken_at is not None and woken_at < _last_full_drain_started:
        _relay_finished("skipped")
        return 0
    conf = outbox_settings()
    if woken_at is not None:
        gather = _last_busy_run_started + conf.RELAY_GATHER_SECONDS - time.time()
        if gather > 0:
            time.sleep(gather)
    started = time.time()
    # Before the first claim: a commit that finds the flag up is then seen by this run's claim.
    wake_flag_lower()
    total = 0
    while True:
        claimed = deliveries_claim(limit=conf.RELAY_BATCH_SIZE)
        if claimed:
            _relay_claimed(len(claimed))
            with log_fields(batch_size=len(claimed)):
                try:
                    messages = deliveries_dispatch(claimed)
                except Exception:
                    logger.warning(
                        "relay could not send %s claimed deliveries; they are sent again when "
                        "their lease of %ss runs out",
                        len(claimed),
                        conf.LEASE_SECONDS,
                    )
                    _relay_finished("error")
                    raise
                logger.debug(
                    "relay dispatched %s deliveries in %s messages", len(claimed), messages
                )
            total += len(claimed)
        if len(claimed) < conf.RELAY_BATCH_SIZE:
            _last_full_drain_started = started
            result = "drained" if total else "idle"
            break
        if time.time() - started > conf.RELAY_MAX_SECONDS:
            result = "timeboxed"
            logger.info(
                "relay stopped after %.1fs with deliveries still due (%s sent); the next run "
                "goes on",
                time.time() - started,
                total,
            )
            break
    if total:
        _last_busy_run_started = started
    heartbeat("relay")
    _relay_finished(result)
    return total


def _relay_claimed(count: int) -> None:
    if metrics.enabled:
        metrics.relay_claimed(count)


def _relay_finished(result: str) -> None:
    if metrics.enabled:
        metrics.relay_finished(result)


def heartbeat(name: str, *, detail: dict | None = None) -> None:
    """Record that ``name`` is alive, at most every few seconds per process."""
    now = time.time()
    if now - _last_heartbeat.get(name, 0.0) < HEARTBEAT_EVERY.total_seconds():
        return
    _last_heartbeat[name] = now
    Heartbeat.objects.update_or_create(
        name=name, defaults={"beat_at": timezone.now(), "detail": detail or {}}
    )
