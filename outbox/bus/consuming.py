"""Taking events in from the bus: store them with their local deliveries, then acknowledge.

The adapter hands the consumer every message it already holds, as a batch
(``bus_messages_receive``); ``bus_events_store`` writes the batch's events into this service's
event store (``event_id`` is unique) and their deliveries to the local subscribers, in one
transaction with one relay wake-up on its commit; the adapter acknowledges the broker only
after that commit (guarantee 7). A redelivered or republished event finds its id taken, in the
store or earlier in the same batch: nothing is written and the message is acknowledged as a
duplicate. Each message keeps a verdict of its own: a malformed one is dead-lettered alone,
never part of the transaction, and if the batch's transaction fails (a racing consumer's
insert, the database) the batch is stored again one message per transaction
(``bus_event_store``), so that a failure affects only the message it belongs to. From there
the ordinary relay and workers run the handlers, upcasters included, or, for a small batch,
the consumer itself (``ConsumerRun``).

**The consumer runs what it stored** (``EVENT_BUS`` ``RUN``): once a batch of at most
``RUN_MAX_EVENTS`` stored events has committed and the broker has been acknowledged, the
consumer claims those events' deliveries to the subscribers of its queues with the relay's own
claim (``deliveries_claim_of``: the lease, ``SKIP LOCKED``, an ordered subscriber's predecessor
rule) and runs them with the worker's code (``deliveries_run``, continuation of the handlers'
own events included), for at most ``RUN_MAX_SECONDS``. Nothing about the guarantees changes,
by the argument that holds for a worker's continuation (outbox/continuation.py): a relay or
worker that claimed a delivery first keeps it; a consumer killed after its claim leaves leased
deliveries that the relay dispatches again when the lease runs out; killed between its commit
and its claim, it leaves due deliveries that beat's tick claims. What it leaves to the relay
(a larger batch, a queue it does not run) wakes the relay in the storing transaction: by
``pg_notify`` where ``wake_by_notify()`` holds, else the Redis flag and a Celery message after
the commit; what it meant to run and did not claim, with ``relay_wake`` after its claims.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, close_old_connections, connection, transaction
from django.utils import timezone

from outbox import sql
from outbox.bus import metrics
from outbox.bus.adapters.base import BusAdapter, ReceivedMessage, Verdict
from outbox.bus.conf import bus_settings
from outbox.bus.target import event_externalised
from outbox.bus.wire import IncomingEvent, MalformedMessage
from outbox.continuation import deliveries_run
from outbox.errors import UnknownSubscriber
from outbox.models import Delivery, Event
from outbox.publisher import delivery_new, relay_wake
from outbox.queues import BUS_QUEUE, RELAY_QUEUE
from outbox.registry import subscriber_get, subscriber_queues, subscribers_all, subscribers_for
from outbox.relay import deliveries_claim_of
from outbox.wake import NOTIFY_SQL, wake_by_notify

logger = logging.getLogger(__name__)


def bus_types_consumed() -> list[str]:
    """The event types this service takes from the bus: those its subscribers handle, less
    those its own apps publish (already in the local event store: never bound at all)."""
    local = bus_settings().local_apps()
    return sorted(
        {sub.event_type for sub in subscribers_all() if sub.event_type.split(".")[0] not in local}
    )


def bus_types_unpublished(types: list[str]) -> list[str]:
    """Of ``types`` (this service's, from the bus), those no publisher sends to the bus: not
    declared ``externalised`` (and EXTERNALISE_ALL off). Their subscribers here would wait for
    ever, so the consumer refuses to start (the split deployment's release step with it)."""
    return [t for t in types if not event_externalised(t)]


class ConsumerRun:
    """What the consumer runs itself of what it stores: ``keep`` notes, in a storing
    transaction, the deliveries it will run (noted for good only if that transaction commits);
    ``run``, once the batch is acknowledged, claims and runs them. Never raises."""

    def __init__(self, *, queues: Sequence[str], max_events: int, max_seconds: float) -> None:
        self.queues = frozenset(queues) - {BUS_QUEUE, RELAY_QUEUE}
        self.max_events = max_events
        self.max_seconds = max_seconds
        self.wanted: list[tuple[int, str]] = []  # (event position, subscriber), committed
        self.events = 0  # stored events kept since the last run

    def keep(self, rows: Sequence[Event], targets: Sequence[tuple]) -> int:
        """Of ``targets`` ((event, subscriber) pairs just inserted with ``rows``), note those
        this consumer runs: none when the received batch stores more than ``max_events``
        events (a burst is the relay's and the workers'), else those of its queues. Returns
        how many it keeps; the others are the relay's."""
        if self.events + len(rows) > self.max_events:
            return 0
        kept = [(row.position, sub.name) for row, sub in targets if sub.queue in self.queues]
        if kept:

            def committed() -> None:
                self.wanted += kept
                self.events += len(rows)

            transaction.on_commit(committed)
        return len(kept)

    def run(self) -> None:
        """Claim the deliveries kept since the last run and run them here (``deliveries_run``,
        with this budget for its continuation); claim again while an ordered subscriber's next
        delivery may have become claimable by the runs, within the budget. Wakes the relay for
        what it did not claim."""
        wanted, self.wanted, self.events = self.wanted, [], 0
        if not wanted:
            return
        started = time.monotonic()
        events = {position for position, _ in wanted}
        subscribers = {name for _, name in wanted}
        again = any(_ordered(name) for name in subscribers)
        claimed = 0
        try:
            while True:
                ids = [pk for pk, _ in deliveries_claim_of(events=events, subscribers=subscribers)]
                if not ids:
                    break
                claimed += len(ids)
                left = self.max_seconds - (time.monotonic() - started)
                deliveries_run(ids, max_seconds=max(left, 0.0))
                spent = time.monotonic() - started
                if not again or claimed >= len(wanted) or spent >= self.max_seconds:
                    break
        except Exception:
            # Claimed and not run: its lease brings it back through the relay.
            logger.warning(
                "the consumer could not run what it stored; the relay dispatches", exc_info=True
            )
            close_old_connections()
        if claimed and metrics.enabled:
            metrics.bus_consumer_ran(service=bus_settings().SERVICE, deliveries=claimed)
        if claimed < len(wanted):
            relay_wake()


def _ordered(name: str) -> bool:
    try:
        return subscriber_get(name).ordered
    except UnknownSubscriber:
        return False


def consumer_run() -> ConsumerRun | None:
    """The consumer's run as ``EVENT_BUS`` sets it (None: off, ``RUN`` false or
    ``RUN_MAX_EVENTS`` 0). Bad settings raise ``ImproperlyConfigured``, naming them."""
    conf = bus_settings()
    if conf.RUN_MAX_EVENTS < 0 or conf.RUN_MAX_SECONDS < 0:
        raise ImproperlyConfigured(
            "EVENT_BUS RUN_MAX_EVENTS and RUN_MAX_SECONDS must not be negative, got "
            f"{conf.RUN_MAX_EVENTS} and {conf.RUN_MAX_SECONDS}"
        )
    if not conf.RUN or conf.RUN_MAX_EVENTS == 0:
        return None
    queues = subscriber_queues()
    if conf.RUN_QUEUES is not None:
        unknown = sorted(set(conf.RUN_QUEUES) - set(queues))
        if unknown:
            raise ImproperlyConfigured(
                f"EVENT_BUS RUN_QUEUES names {', '.join(unknown)}, not a queue of this "
                f"service's subscribers ({', '.join(queues) or 'none'})"
            )
        queues = list(conf.RUN_QUEUES)
    return ConsumerRun(
        queues=queues, max_events=conf.RUN_MAX_EVENTS, max_seconds=conf.RUN_MAX_SECONDS
    )


def bus_event_store(*, event: IncomingEvent, run: ConsumerRun | None = None) -> str:
    """Store ``event`` and its local deliveries in a transaction of its own (``bus_events_store``
    for one event); returns ``stored`` or ``duplicate``."""
    try:
        return bus_events_store(events=[event], run=run)[0]
    except IntegrityError:
        # Another consumer stored it between the check and the insert.
        if Event.objects.filter(event_id=event.event_id).exists():
            return "duplicate"
        raise


def bus_events_store(
    *, events: Sequence[IncomingEvent], run: ConsumerRun | None = None
) -> list[str]:
    """Store ``events`` (distinct ids, in the broker's order) and their local deliveries in one
    transaction; returns, per event, ``stored`` or ``duplicate`` (already in the store).

    One query for the ids already stored, one insert of the new events (in the given order, so
    ``position`` keeps the broker's order within an aggregate) and one of all their deliveries,
    one commit, and one relay wake-up for the deliveries ``run`` does not keep (all of them
    without it): by ``pg_notify`` in the transaction where ``wake_by_notify()`` holds, else
    after the commit. Raises what the transaction raised (an ``IntegrityError`` when another
    consumer stored one of them meanwhile); nothing is then written.
    """
    ids = [event.event_id for event in events]
    with transaction.atomic():
        taken = set(Event.objects.filter(event_id__in=ids).values_list("event_id", flat=True))
        rows = [
            Event(
                event_id=event.event_id,
                type=event.type,
                version=event.version,
                aggregate_type=event.aggregate_type,
                aggregate_id=event.aggregate_id,
                payload=event.payload,
                correlation_id=event.correlation_id,
                causation_id=event.causation_id,
                headers=event.headers,
                occurred_at=event.occurred_at,
            )
            for event in events
            if event.event_id not in taken
        ]
        if rows:
            sql.sequences_assign(connection, rows)
            # Both backends return the new positions (PostgreSQL, and SQLite 3.35+ on Django
            # 5.2): the deliveries need them.
            Event.objects.bulk_create(rows)
            now = timezone.now()
            targets = [(row, sub) for row in rows for sub in subscribers_for(row.type)]
            Delivery.objects.bulk_create([delivery_new(row, sub, now=now) for row, sub in targets])
            kept = run.keep(rows, targets) if run is not None else 0
            if kept < len(targets):
                _relay_wake_in_transaction()
    return ["duplicate" if event_id in taken else "stored" for event_id in ids]


def _relay_wake_in_transaction() -> None:
    """Wake the relay for what this transaction leaves it: a ``pg_notify`` in the transaction
    (delivered on commit, once however many statements notify: outbox/wake.py), else the flag
    and the message after the commit."""
    if wake_by_notify():
        with connection.cursor() as cursor:
            cursor.execute(NOTIFY_SQL)
    else:
        transaction.on_commit(relay_wake)


def bus_message_receive(*, message: ReceivedMessage, adapter: BusAdapter) -> Verdict:
    """What the consumer does with one message alone; never raises."""
    return bus_messages_receive(messages=[message], adapter=adapter)[0]


def bus_messages_receive(
    *, messages: Sequence[ReceivedMessage], adapter: BusAdapter, run: ConsumerRun | None = None
) -> list[Verdict]:
    """What the consumer does with a batch of messages, in the broker's order: a verdict per
    message; never raises.

    Malformed messages and types this service does not take are settled alone; the others are
    stored in one transaction (``bus_events_store``). Should that fail, each is stored in a
    transaction of its own (``bus_event_store``), its failure its own ``RETRY``. A second copy
    of an event within the batch is a duplicate, acknowledged only once its first copy is
    stored: were the first retried, the copy is retried too, never acknowledged into nothing.
    """
    service = bus_settings().SERVICE
    consumed = set(bus_types_consumed())
    verdicts: list[Verdict | None] = [None] * len(messages)
    batch: list[tuple[int, IncomingEvent]] = []
    first_copy: dict = {}  # event id -> index of its first message in this batch
    copies: list[tuple[int, int]] = []  # (index, index of the first copy)
    for index, message in enumerate(messages):
        try:
            event = adapter.decode(message)
        except MalformedMessage as exc:
            logger.error(
                "bus message dead-lettered: %s (headers %s, %s bytes)",
                exc,
                _short(message.headers),
                len(message.body or b""),
            )
            _count(service, "dead")
            verdicts[index] = Verdict.DEAD
            continue
        if event.type not in consumed:
            _count(service, "ignored")
            verdicts[index] = Verdict.ACK
            continue
        if event.event_id in first_copy:
            copies.append((index, first_copy[event.event_id]))
            continue
        first_copy[event.event_id] = index
        batch.append((index, event))
    if batch:
        _batch_store(batch, verdicts, service, run)
    for index, first in copies:
        if verdicts[first] is Verdict.ACK:
            logger.debug("bus message %s: a second copy in the same batch", index)
            _count(service, "duplicate")
            verdicts[index] = Verdict.ACK
        else:
            _count(service, "retry")
            verdicts[index] = Verdict.RETRY
    return verdicts


def _batch_store(
    batch: list[tuple[int, IncomingEvent]],
    verdicts: list[Verdict | None],
    service: str,
    run: ConsumerRun | None,
) -> None:
    if len(batch) > 1:
        try:
            outcomes = bus_events_store(events=[event for _, event in batch], run=run)
        except Exception as exc:
            # A racing consumer's insert, or the database: one message per transaction, so
            # that each gets its own verdict (a database that is down: RETRY for each).
            logger.warning(
                "storing a batch of %s bus events failed (%s); storing them one at a time",
                len(batch),
                exc,
            )
            close_old_connections()  # a broken connection is replaced before the next try
        else:
            for (index, event), outcome in zip(batch, outcomes, strict=True):
                logger.debug("bus event %s %s %s", event.type, event.event_id, outcome)
                _count(service, outcome)
                verdicts[index] = Verdict.ACK
            _stored_batch(service, outcomes.count("stored"))
            return
    for index, event in batch:
        verdicts[index] = _one_store(event, service, run)


def _one_store(event: IncomingEvent, service: str, run: ConsumerRun | None) -> Verdict:
    try:
        outcome = bus_event_store(event=event, run=run)
    except Exception:
        logger.exception("could not store %s %s; redelivering", event.type, event.event_id)
        _count(service, "retry")
        close_old_connections()  # a broken connection is replaced before the redelivery
        return Verdict.RETRY
    logger.debug("bus event %s %s %s", event.type, event.event_id, outcome)
    _count(service, outcome)
    if outcome == "stored":
        _stored_batch(service, 1)
    return Verdict.ACK


def _stored_batch(service: str, stored: int) -> None:
    if stored and metrics.enabled:
        metrics.bus_stored_batch(service=service, events=stored)


def _count(service: str, outcome: str) -> None:
    if metrics.enabled:
        metrics.bus_received(service=service, outcome=outcome)


def _short(headers: dict | None) -> str:
    text = repr(headers or {})
    return text if len(text) < 500 else text[:500] + "..."
