"""Continuation: a worker runs straight away the deliveries its own runs have just committed.

A saga step's handler publishes the next event in its transaction; without continuation each
of that event's deliveries waits for a relay claim, a broker message and a Celery task. With it,
the worker that ran the step runs the new deliveries whose subscribers' queues it serves in the
same task, one after the other (depth first, so an order's saga runs to its end in one worker
process).

Most need no claim: the step's publish inserts the deliveries of unordered subscribers already
leased to this worker (``CONTINUATION_BORN_CLAIMED``; outbox/publisher.py), with the lease the
relay's first claim would give them, and nobody else sees them before the step commits. The
others (ordered subscribers, whose predecessor may be undone) the worker claims once the step
has committed, with the relay's claim (outbox/relay.py, ``deliveries_claim_of``): the same lease,
the same ``SKIP LOCKED``, the same rule for ordered subscribers (a delivery with an undone
predecessor is not claimed); a relay that claimed a delivery first keeps it. A worker killed
after the step's commit or after its claim leaves leased deliveries that the relay dispatches
again when the lease runs out, as for any lost message. Each delivery still runs in a
transaction of its own (outbox/handling.py): retries, backoff and dead letters are as without
continuation.

The relay's wake-up: a publish whose deliveries all go to the worker's queues leaves it to the
worker (outbox/publisher.py), which sends it only for those it did not claim (another process
got there first, an ordered predecessor is still undone, or the chain's bounds were reached).
If the worker dies between the commit and its claim, beat's tick finds those it was to claim
(every second); those born leased to it wait for their lease to run out, as after a claim.

A chain is bounded: no claim beyond ``CONTINUATION_MAX_DEPTH`` steps below a message's
delivery, nor after ``CONTINUATION_MAX_SECONDS`` since the task began; what is left is the
relay's, as without continuation. ``CONTINUATION``: False turns it off.
"""

from __future__ import annotations

import logging
import time

from outbox import metrics
from outbox.conf import outbox_settings
from outbox.context import Continuing, continuing, continuing_current
from outbox.handling import BatchAbandoned, deliveries_handle_together, delivery_handle
from outbox.relay import deliveries_claim_of
from outbox.wake import relay_wake

logger = logging.getLogger(__name__)

# The queues this process's worker consumes from (set when the worker starts, outbox/tasks.py);
# empty outside a worker, which then never continues.
_queues: frozenset[str] = frozenset()


def queues_served_set(queues) -> None:
    global _queues
    _queues = frozenset(queues)


def deliveries_run(delivery_ids: list[int], *, max_seconds: float | None = None) -> None:
    """Handle a message's deliveries, and after them the deliveries their runs committed for
    this worker's queues (within the bounds; ``max_seconds``, when given, in place of
    ``CONTINUATION_MAX_SECONDS``: the bus consumer's budget, outbox/bus/consuming.py).

    With ``DELIVERY_BATCH_SIZE`` above 1, up to that many run in one transaction
    (``_handle_batch``), and what a batch committed for this worker's queues is claimed as the
    next batch. Otherwise each runs in its own transaction and independently, followed by the
    deliveries its own run committed (depth first)."""
    conf = outbox_settings()
    started = time.monotonic()
    born_until = started + (conf.CONTINUATION_MAX_SECONDS if max_seconds is None else max_seconds)
    size = max(conf.DELIVERY_BATCH_SIZE, 1)
    stack = _batches(delivery_ids, size, 0)
    while stack:
        batch, depth = stack.pop()
        if not (conf.CONTINUATION and _queues and depth < conf.CONTINUATION_MAX_DEPTH):
            _handle_batch(batch)
            continue
        current = Continuing(
            queues=_queues,
            deliveries=[],
            born_until=born_until if conf.CONTINUATION_BORN_CLAIMED else 0.0,
        )
        with continuing(current):
            outcomes = _handle_batch(batch)
        in_time = time.monotonic() < born_until
        claimed = _continuation_claim(current, claim="done" in outcomes and in_time)
        stack += _batches(claimed, size, depth + 1)


def _batches(delivery_ids: list[int], size: int, depth: int) -> list[tuple[list[int], int]]:
    # Reversed: the stack pops them in the message's (or the claim's) order.
    chunks = [delivery_ids[i : i + size] for i in range(0, len(delivery_ids), size)]
    return [(chunk, depth) for chunk in reversed(chunks)]


def _handle_batch(delivery_ids: list[int]) -> set[str]:
    """The outcomes of handling ``delivery_ids``: in one transaction when there are several
    (``deliveries_handle_together``), else, and for what that leaves, one per transaction. A
    batch that could not commit is handled again one delivery per transaction, as without
    batches (its transaction left nothing behind, and what its runs published went with it)."""
    if len(delivery_ids) == 1:
        return {_handle(delivery_ids[0])}
    try:
        outcomes, alone = deliveries_handle_together(delivery_ids=delivery_ids)
        result = set(outcomes.values())
        if metrics.enabled:
            metrics.delivery_batch_finished("committed")
    except BatchAbandoned as exc:
        logger.warning(
            "batch of %s deliveries rolled back (%s); each runs in a transaction of its own",
            len(delivery_ids),
            exc,
        )
        if metrics.enabled:
            metrics.delivery_batch_finished("fallback")
        current = continuing_current()
        if current is not None:
            current.deliveries.clear()
            current.born.clear()
        result, alone = set(), delivery_ids
    for delivery_id in alone:
        result.add(_handle(delivery_id))
    return result


def _handle(delivery_id: int) -> str | None:
    try:
        return delivery_handle(delivery_id=delivery_id)
    except Exception:
        logger.exception("delivery %s not handled; its lease will bring it back", delivery_id)
        return None


def _continuation_claim(current: Continuing, *, claim: bool) -> list[int]:
    """The run's deliveries for this worker: those its publish inserted already leased to it
    (``born``: committed, since what a rollback undid is forgotten), and the others claimed
    (``claim``: its run committed, within the bounds); wake the relay if the run left it to the
    worker and something is left over."""
    wanted = current.deliveries
    born = current.born
    claimed: list[int] = []
    if claim and wanted:
        events = {position for position, _ in wanted}
        subscribers = {name for _, name in wanted}
        try:
            claimed = [pk for pk, _ in deliveries_claim_of(events=events, subscribers=subscribers)]
        except Exception:
            logger.warning("continuation claim failed; the relay dispatches", exc_info=True)
    if (born or claimed) and metrics.enabled:
        metrics.deliveries_continued(len(born) + len(claimed))
    if current.wake_owed and len(claimed) < len(wanted):
        relay_wake()
    return [*born, *claimed]
