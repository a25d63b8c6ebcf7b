"""Running one delivery: the subscriber's handler and the delivery's record, in one transaction.

That shared transaction is the whole exactly-once argument: the handler's writes and "this
subscriber has handled this event" commit together or not at all, so a delivery dispatched
twice (a lost acknowledgement, an expired lease, a duplicated message) has its effect once.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

from django.db import connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Now
from django.utils import timezone

from outbox import metrics, sql
from outbox.conf import outbox_settings
from outbox.context import Handling, born_forget, born_mark, handling
from outbox.errors import UnknownSubscriber
from outbox.events import DomainEvent, EventMeta, event_load
from outbox.logcontext import log_fields
from outbox.models import Delivery
from outbox.registry import Subscriber, subscriber_get, subscribers_all
from outbox.tracing import handler_span, handler_span_end

logger = logging.getLogger(__name__)

# How long a delivery of an ordered subscriber waits before looking again at its predecessor.
ORDERED_RECHECK = dt.timedelta(seconds=1)


def backoff_delay(*, attempt: int, base: float, cap: float) -> float:
    """Seconds before retry ``attempt + 1``: capped exponential, with jitter in [50%, 100%]."""
    return min(cap, base * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


@dataclass(frozen=True)
class _Run:
    """What running the handler once came to: ``error`` is None when it returned."""

    attempt: int
    max_attempts: int
    seconds: float
    error: BaseException | None = None


def delivery_handle(*, delivery_id: int) -> str:
    """Handle one delivery; returns what happened: done, retry, dead, waiting, stale or skipped.

    Three steps in one transaction: load and lock the delivery, run its handler, record the
    outcome (on PostgreSQL the lock is also the done mark, so that a handler that returns
    leaves nothing to record; one that raises rolls the mark back with its writes). A
    subscriber with ``prepare=`` has it run first, in a transaction of its own that locks the
    delivery the same way and commits before the handler's begins.
    ``skipped`` means there was nothing to do: already done or dead, not due yet (a
    duplicate message during the retry backoff), or another worker holds it right now (its row
    is locked), which on PostgreSQL is how a duplicate steps aside. ``stale``: an ordered
    subscriber has already handled a later event of the aggregate, so this one is not applied.

    The transaction can still fail after the handler returned: at COMMIT (a deferred foreign key,
    a serialisation failure) or in the bookkeeping. Then nothing of the run is kept, and the
    attempt and its error are recorded in a transaction of their own, so that such a delivery is
    retried with backoff and dead-lettered like any other failure instead of running forever.
    """
    ran: _Run | None = None
    delivery: Delivery | None = None
    prepared = False
    mark = born_mark()
    try:
        while True:
            mark = born_mark()
            with transaction.atomic():
                # Locked and, unless a check or prepare comes first, marked done already: the
                # run failing rolls the mark back with the rest.
                delivery = _pending_lock(delivery_id, mark=True, unmarked=[] if prepared else None)
                if delivery is None:
                    return "skipped"
                if delivery.ordered and _has_undone_predecessor(delivery):
                    return _waiting_record(delivery)
                if delivery.ordered and _has_done_successor(delivery):
                    return _stale_record(delivery)
                if not prepared and (prepare := _prepare_of(delivery)) is not None:
                    # Commit what prepare wrote, then lock the delivery again and run.
                    prepared = True
                    failed = _prepare_run(delivery, prepare)
                    if failed is not None:
                        return failed
                    continue
                with _run_context(delivery) as span:
                    ran = _run(delivery)
                    if ran.error is not None:
                        # What the failure will record, unless a duplicate got there first.
                        expected = "dead" if ran.attempt >= ran.max_attempts else "retry"
                        handler_span_end(span, expected, ran.error)
                        raise _HandlerFailed(ran)
                    outcome = _outcome_record(delivery, ran)
                    handler_span_end(span, outcome)
                    return outcome
    except Exception as exc:
        born_forget(mark)  # what the run published was rolled back with it
        if ran is None:
            raise  # the handler never ran: nothing to count (the database is unreachable)
        with log_fields(**_fields(delivery)):
            if isinstance(exc, _HandlerFailed):
                return _failure_record(
                    delivery_id=delivery_id, error=ran.error, seconds=ran.seconds
                )
            return _failure_record(delivery_id=delivery_id, error=exc)


class BatchAbandoned(Exception):
    """A batch's transaction could not go on (a handler met a deadlock or a serialization
    failure, which no savepoint can answer): it was rolled back whole, and nothing of it is
    kept or recorded. Its deliveries are to be handled one per transaction."""


# deadlock_detected, serialization_failure, lock_not_available: another transaction's locks,
# not the handler's fault; alone, the delivery may well go through.
_CONTENTION = {"40P01", "40001", "55P03"}


def deliveries_handle_together(*, delivery_ids: list[int]) -> tuple[dict[int, str], list[int]]:
    """Handle several deliveries in one transaction; returns each one's outcome (as
    ``delivery_handle``'s) and the ids to be handled one by one instead, with ``delivery_handle``.

    One statement locks every delivery that is pending and past its backoff, in the order of
    their ids (``ORDER BY id``): two workers' batches that share rows take them in the same
    order and queue, they cannot deadlock on them. Each handler runs in a savepoint: one that
    raises rolls back its own writes only, and its failed attempt is recorded in the batch
    (retry or dead, as ``delivery_handle`` records it). A batch with a single handler to run
    (the others done already, or to run alone) runs it without a savepoint: if it raises, the
    batch's transaction is rolled back whole and the attempt recorded in a transaction of its
    own, as ``delivery_handle`` does. Those that returned are marked done in
    one statement, and the batch commits once: each handler's writes and its delivery's done
    mark still commit together or not at all, which is the whole exactly-once argument.

    Left to be handled one by one: deliveries of ``prepare=`` subscribers (prepare commits
    before its handler's transaction begins) and of ordered subscribers (the predecessor and
    successor checks read the done marks, which a batch writes at its end).

    ``BatchAbandoned`` when a handler met a deadlock or a serialization failure (the locks a
    batch's earlier handlers hold are often part of it: inventory's stock rows, each order's
    taken in sku order, but two batches' orders interleaved): the whole batch is rolled back.
    Any other exception (at COMMIT, in the bookkeeping, the database gone) likewise leaves
    nothing of the batch. The caller then handles each delivery on its own.
    """
    outcomes: dict[int, str] = {}
    alone: list[int] = []
    done: list[tuple[Delivery, _Run]] = []
    failed: _Run | None = None
    try:
        with transaction.atomic():
            locked = _pending_lock_many(delivery_ids)
            runnable = [delivery for delivery in locked if not _runs_alone(delivery)]
            alone.extend(delivery.pk for delivery in locked if _runs_alone(delivery))
            # One runnable delivery needs no savepoint: if its handler raises, the batch's
            # transaction is rolled back whole (it holds nothing else but row locks of those
            # that run alone) and the attempt is recorded in one of its own, as alone.
            single = len(runnable) == 1
            for delivery in runnable:
                with _run_context(delivery) as span:
                    ran = _run_single(delivery) if single else _run_in_savepoint(delivery)
                    if ran.error is None:
                        outcomes[delivery.pk] = "done"
                        done.append((delivery, ran))
                        handler_span_end(span, "done")
                        continue
                    if _contended(ran.error):
                        handler_span_end(span, "abandoned", ran.error)
                        raise BatchAbandoned(str(ran.error)) from ran.error
                    if single:
                        expected = "dead" if ran.attempt >= ran.max_attempts else "retry"
                        handler_span_end(span, expected, ran.error)
                        failed = ran
                        raise _HandlerFailed(ran)
                    outcome = outcomes[delivery.pk] = _outcome_record(delivery, ran)
                    handler_span_end(span, outcome, ran.error)
            if done:
                _done_save_many(done)
            if not outcomes:
                # Only row locks taken (every delivery is to run alone, or none was pending):
                # a rollback releases them without a commit to flush.
                transaction.set_rollback(True)
    except BatchAbandoned:
        raise
    except _HandlerFailed as exc:
        if exc.run is not failed:
            raise BatchAbandoned(f"{type(exc).__name__}: {exc}") from exc
        (delivery,) = runnable
        with log_fields(**_fields(delivery)):
            outcomes[delivery.pk] = _failure_record(
                delivery_id=delivery.pk, error=failed.error, seconds=failed.seconds
            )
    except Exception as exc:
        raise BatchAbandoned(f"{type(exc).__name__}: {exc}") from exc
    for delivery_id in delivery_ids:
        if delivery_id not in outcomes and delivery_id not in alone:
            outcomes[delivery_id] = "skipped"
    return outcomes, alone


def _runs_alone(delivery: Delivery) -> bool:
    return delivery.ordered or _prepare_of(delivery) is not None


def _run_single(delivery: Delivery) -> _Run:
    """``_run`` without a savepoint, for a batch's only runnable delivery: what a handler that
    raised published is forgotten, and its writes go with the batch's rollback."""
    mark = born_mark()
    ran = _run(delivery)
    if ran.error is not None:
        born_forget(mark)
    return ran


def _run_in_savepoint(delivery: Delivery) -> _Run:
    """``_run`` in a savepoint of the batch's transaction, rolled back if the handler raised."""
    mark = born_mark()
    try:
        with transaction.atomic():
            ran = _run(delivery)
            if ran.error is not None:
                raise _HandlerFailed(ran)
    except _HandlerFailed as failed:
        born_forget(mark)
        return failed.run
    return ran


def _contended(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 10:
        if getattr(exc, "sqlstate", None) in _CONTENTION:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _pending_lock_many(delivery_ids: list[int]) -> list[Delivery]:
    """The batch's deliveries, locked in the order of their ids; on PostgreSQL marked done in
    the same statement (``sql.deliveries_done_lock``) unless they run alone: a handler that
    raises has its attempt recorded over the mark (``_outcome_record``), and the batch rolled
    back takes every mark with it."""
    if connection.vendor != "postgresql":
        return list(
            Delivery.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("event")
            .filter(pk__in=delivery_ids, status=Delivery.Status.PENDING)
            .filter(Q(backoff_until__isnull=True) | Q(backoff_until__lte=Now()))
            .order_by("pk")
        )
    found = sql.deliveries_done_lock(
        connection, delivery_ids, now=timezone.now(), unmarked=_prepared_names()
    )
    missing = set(delivery_ids) - {delivery.pk for delivery in found}
    more = sql.deliveries_pending_lock_waiting(
        connection, sorted(missing), wait_seconds=outbox_settings().LOCK_WAIT_SECONDS
    )
    locked = [_mark_noted(delivery) for delivery in found]
    return sorted([*locked, *more], key=lambda delivery: delivery.pk) if more else locked


def _done_save_many(done: list[tuple[Delivery, _Run]]) -> None:
    now = timezone.now()
    # Those their lock marked done already (PostgreSQL) need nothing more.
    ids = [delivery.pk for delivery, _ in done if not _marked(delivery)]
    if ids and connection.vendor != "postgresql":
        Delivery.objects.filter(pk__in=ids).update(
            status=Delivery.Status.DONE,
            attempts=F("attempts") + 1,
            completed_at=now,
            updated_at=now,
        )
    elif ids:
        sql.deliveries_done_save(connection, ids, now=now)
    for delivery, ran in done:
        logger.debug(
            "delivery %s done in %.3fs: %s %s -> %s",
            delivery.pk,
            ran.seconds,
            delivery.event.type,
            delivery.event.event_id,
            delivery.subscriber,
        )
        _count_on_commit(delivery.subscriber, "done", ran.seconds)


class _HandlerFailed(Exception):
    """The handler raised: its writes go with the whole transaction (there is no savepoint
    around it), and the attempt is recorded in a transaction of its own."""

    def __init__(self, run: _Run):
        super().__init__(str(run.error))
        self.run = run


def _fields(delivery: Delivery) -> dict:
    event_row = delivery.event
    return {
        "delivery_id": delivery.pk,
        "event_id": str(event_row.event_id),
        "event_type": event_row.type,
        "correlation_id": str(event_row.correlation_id),
        "causation_id": str(event_row.causation_id) if event_row.causation_id else None,
        "subscriber": delivery.subscriber,
        "attempt": delivery.attempts + 1,
    }


@contextmanager
def _run_context(delivery: Delivery):
    # Every log line of this run, the handler's own included, carries these fields; the run's
    # span is a child of the span that published the event (its headers).
    event_row = delivery.event
    fields = _fields(delivery)
    with (
        log_fields(**fields),
        handler_span(
            headers=event_row.headers, event_type=event_row.type, attributes=fields
        ) as span,
    ):
        yield span


def _run(delivery: Delivery) -> _Run:
    """Run the subscriber's handler on the delivery's event; the exception of a handler that
    raises is returned, not raised. No savepoint of its own (two statements per delivery): the
    caller rolls the whole transaction back when the handler failed, which undoes its writes,
    and records the attempt in a transaction of its own."""
    event_row = delivery.event
    attempt = delivery.attempts + 1
    max_attempts = _max_attempts(delivery.subscriber)
    started = time.perf_counter()
    try:
        subscriber = subscriber_get(delivery.subscriber)
        event = _event_of(delivery, subscriber)
        context = Handling(
            event_id=event_row.event_id,
            event_type=event_row.type,
            correlation_id=event_row.correlation_id,
            subscriber=delivery.subscriber,
            attempt=attempt,
        )
        with handling(context):
            subscriber.handler(event)
    except Exception as exc:
        return _Run(attempt, max_attempts, time.perf_counter() - started, exc)
    return _Run(attempt, max_attempts, time.perf_counter() - started)


def _event_of(delivery: Delivery, subscriber: Subscriber) -> DomainEvent:
    """The delivery's stored event, typed and upcast for its subscriber."""
    event_row = delivery.event
    return event_load(
        type=event_row.type,
        version=event_row.version,
        payload=event_row.payload,
        meta=EventMeta(
            event_id=event_row.event_id,
            type=event_row.type,
            version=subscriber.event_class.version,
            stored_version=event_row.version,
            occurred_at=event_row.occurred_at,
            correlation_id=event_row.correlation_id,
            causation_id=event_row.causation_id,
            headers=event_row.headers,
        ),
    )


def _prepare_of(delivery: Delivery):
    try:
        return subscriber_get(delivery.subscriber).prepare
    except UnknownSubscriber:
        return None  # the run records it


def _prepare_run(delivery: Delivery, prepare) -> str | None:
    """Run the subscriber's ``prepare`` in a savepoint of the locking transaction, which then
    commits before the handler runs. None to go on; a failure is recorded as a failed attempt."""
    mark = born_mark()
    try:
        with transaction.atomic():
            prepare(_event_of(delivery, subscriber_get(delivery.subscriber)))
    except Exception as exc:
        born_forget(mark)
        attempt, max_attempts = delivery.attempts + 1, _max_attempts(delivery.subscriber)
        return _outcome_record(delivery, _Run(attempt, max_attempts, 0.0, exc))
    return None


def _outcome_record(delivery: Delivery, run: _Run) -> str:
    """Record the run on the locked delivery: done, or the failed attempt (retry or dead)."""
    if run.error is None:
        delivery.status = Delivery.Status.DONE
        delivery.attempts = run.attempt
        delivery.completed_at = delivery.updated_at = timezone.now()
        if not _marked(delivery):
            _done_save(delivery)
        logger.debug(
            "delivery %s done in %.3fs: %s %s -> %s",
            delivery.pk,
            run.seconds,
            delivery.event.type,
            delivery.event.event_id,
            delivery.subscriber,
        )
        _count_on_commit(delivery.subscriber, "done", run.seconds)
        return "done"

    conf = outbox_settings()
    exc = run.error
    delivery.attempts = run.attempt
    delivery.dispatches = 0  # the retry starts with a plain lease again
    delivery.last_error = error_text(exc)
    if run.attempt >= run.max_attempts:
        delivery.status = Delivery.Status.DEAD
        outcome = "dead"
        logger.error(
            "delivery %s dead-lettered after %s attempts: %s %s -> %s: %s",
            delivery.pk,
            run.attempt,
            delivery.event.type,
            delivery.event.event_id,
            delivery.subscriber,
            exc,
        )
    else:
        delay = backoff_delay(
            attempt=run.attempt, base=conf.BACKOFF_BASE_SECONDS, cap=conf.BACKOFF_CAP_SECONDS
        )
        # On the database's clock, which the relay's claim and the worker's lock compare with.
        due = Now() + dt.timedelta(seconds=delay)
        delivery.next_attempt_at = delivery.backoff_until = due
        outcome = "retry"
        logger.warning(
            "delivery %s attempt %s/%s failed, retry in %.2fs: %s %s -> %s: %s",
            delivery.pk,
            run.attempt,
            run.max_attempts,
            delay,
            delivery.event.type,
            delivery.event.event_id,
            delivery.subscriber,
            exc,
        )
    # Over a done mark its lock wrote (a batch's handler that raised): status and
    # ``completed_at`` as they were, the attempt counted once.
    delivery.save(
        update_fields=[
            "attempts",
            "dispatches",
            "last_error",
            "status",
            "next_attempt_at",
            "backoff_until",
            "updated_at",
            *(["completed_at"] if _marked(delivery) else []),
        ]
    )
    _count_on_commit(delivery.subscriber, outcome, run.seconds)
    return outcome


def _failure_record(*, delivery_id: int, error: BaseException, seconds: float = 0.0) -> str:
    """The handler raised, or the run's transaction failed after it: that transaction is rolled
    back; count the attempt in one of its own."""
    with transaction.atomic():
        delivery = _pending_lock(delivery_id)
        if delivery is None:
            return "skipped"  # a duplicate finished it meanwhile
        run = _Run(delivery.attempts + 1, _max_attempts(delivery.subscriber), seconds, error)
        return _outcome_record(delivery, run)


def _waiting_record(delivery: Delivery) -> str:
    delivery.next_attempt_at = Now() + ORDERED_RECHECK
    delivery.save(update_fields=["next_attempt_at", "updated_at"])
    _count_on_commit(delivery.subscriber, "waiting")
    return "waiting"


def _stale_record(delivery: Delivery) -> str:
    """Done without running the handler: applying it now would undo a later event's effect."""
    delivery.status = Delivery.Status.DONE
    delivery.completed_at = delivery.updated_at = timezone.now()
    delivery.last_error = (
        f"stale: not handled, because this subscriber has already handled a later event of "
        f"{delivery.aggregate_key} (this event is number {delivery.sequence})"
    )
    delivery.save(update_fields=["status", "completed_at", "last_error", "updated_at"])
    logger.warning(
        "delivery %s skipped as stale: %s handled a later event of %s than number %s",
        delivery.pk,
        delivery.subscriber,
        delivery.aggregate_key,
        delivery.sequence,
    )
    _count_on_commit(delivery.subscriber, "stale")
    return "stale"


def _max_attempts(name: str) -> int:
    conf = outbox_settings()
    try:
        return subscriber_get(name).max_attempts or conf.MAX_ATTEMPTS
    except UnknownSubscriber:
        return conf.MAX_ATTEMPTS


def _pending_lock(
    delivery_id: int, *, mark: bool = False, unmarked: list[str] | None = None
) -> Delivery | None:
    """The delivery with its event, locked, if it is pending, past its retry backoff, and no
    other worker holds it. Both conditions are re-checked by the database on the locked row.

    With ``mark`` (PostgreSQL), the lock is also the done mark (``sql.deliveries_done_lock``)
    unless the delivery is ordered or its subscriber is named there (None: those with
    ``prepare=``): the run's transaction commits it with the handler's writes or rolls it back
    with them (``_marked``). A delivery that statement skipped (locked by another transaction)
    is asked for once more, waiting for the lock, and is not marked."""
    if connection.vendor != "postgresql":
        return (
            Delivery.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("event")
            .filter(pk=delivery_id, status=Delivery.Status.PENDING)
            .filter(Q(backoff_until__isnull=True) | Q(backoff_until__lte=Now()))
            .first()
        )
    # The same query, written once (outbox/sql.py): compiling it through the ORM was about a
    # third of the CPU a worker spent per delivery.
    wait_seconds = outbox_settings().LOCK_WAIT_SECONDS
    if not mark:
        return sql.delivery_pending_lock(connection, delivery_id, wait_seconds=wait_seconds)
    names = _prepared_names() if unmarked is None else unmarked
    found = sql.deliveries_done_lock(connection, [delivery_id], now=timezone.now(), unmarked=names)
    if found:
        return _mark_noted(found[0])
    return sql.delivery_pending_lock(
        connection, delivery_id, wait_seconds=wait_seconds, skipped=True
    )


def _prepared_names() -> list[str]:
    return [subscriber.name for subscriber in subscribers_all() if subscriber.prepare is not None]


def _mark_noted(delivery: Delivery) -> Delivery:
    """A delivery ``sql.deliveries_done_lock`` returned, as it was before its mark (what the run
    and its record read: the attempt about to run, pending), noted as marked."""
    if delivery.status == Delivery.Status.DONE:
        delivery.status = Delivery.Status.PENDING
        delivery.attempts -= 1
        delivery.completed_at = None
        delivery._outbox_marked = True
    return delivery


def _marked(delivery: Delivery) -> bool:
    """Whether the delivery's lock marked it done (``_mark_noted``): nothing more to write if
    its run returned."""
    return getattr(delivery, "_outbox_marked", False)


def _done_save(delivery: Delivery) -> None:
    if connection.vendor != "postgresql":
        delivery.save(update_fields=["status", "attempts", "completed_at", "updated_at"])
        return
    sql.delivery_done_save(connection, delivery)


def _count_on_commit(subscriber: str, outcome: str, seconds: float | None = None) -> None:
    # Counted when the outcome is committed, so a run whose transaction fails is not.
    if metrics.enabled:
        transaction.on_commit(partial(metrics.delivery_finished, subscriber, outcome, seconds))


def _has_undone_predecessor(delivery: Delivery) -> bool:
    # Every earlier delivery of the aggregate to this subscriber, ordered or not: one stored
    # before the subscriber was switched to ordered=True still comes first.
    return (
        Delivery.objects.filter(
            subscriber=delivery.subscriber,
            aggregate_key=delivery.aggregate_key,
            sequence__lt=delivery.sequence,
        )
        .exclude(status=Delivery.Status.DONE)
        .exists()
    )


def _has_done_successor(delivery: Delivery) -> bool:
    return Delivery.objects.filter(
        subscriber=delivery.subscriber,
        aggregate_key=delivery.aggregate_key,
        sequence__gt=delivery.sequence,
        status=Delivery.Status.DONE,
    ).exists()


def error_text(exc: BaseException) -> str:
    """What a delivery records of a failure: the one-line summary first (what the admin's list
    shows), then the traceback. Any character may come from a library's message; NUL, which
    PostgreSQL text cannot hold, is written as ``\\x00``."""
    summary = f"{type(exc).__name__}: {exc}"
    trace = "".join(traceback.format_exception(exc))
    return f"{summary}\n\n{trace[-8000:]}".replace("\x00", "\\x00")
