"""Continuation: a worker runs straight away the deliveries its own runs have just committed.

A saga step's handler publishes the next event in its transaction; without continuation each
of that event's deliveries waits for a relay claim, a broker message and a Celery task. With it,
the worker that ran the step claims, once the step has committed, the new deliveries whose
subscribers' queues it serves, and runs them in the same task, one after the other (depth
first, so an order's saga runs to its end in one worker process).

Nothing about the guarantees changes, because the claim is the relay's (outbox/relay.py,
``deliveries_claim_of``): the same lease on each delivery, the same ``SKIP LOCKED``, the same rule
for ordered subscribers (a delivery with an undone predecessor is not claimed). A relay that
claimed a delivery first keeps it (the worker's claim skips it), and a worker killed after its
claim leaves leased deliveries that the relay dispatches again when the lease runs out, as for
any lost message. Each delivery still runs in a transaction of its own (outbox/handling.py):
retries, backoff and dead letters are as without continuation.

The relay's wake-up: a publish whose deliveries all go to the worker's queues leaves it to the
worker (outbox/publisher.py), which sends it only for those it did not claim (another process
got there first, an ordered predecessor is still undone, or the chain's bounds were reached).
If the worker dies between the commit and its claim, beat's tick finds them (every second).

A chain is bounded: no claim beyond ``CONTINUATION_MAX_DEPTH`` steps below a message's
delivery, nor after ``CONTINUATION_MAX_SECONDS`` since the task began; what is left is the
relay's, as without continuation. ``CONTINUATION``: False turns it off.
"""

from __future__ import annotations

import logging
import time

from outbox import metrics
from outbox.conf import outbox_settings
from outbox.context import Continuing, continuing
from outbox.handling import delivery_handle
from outbox.relay import deliveries_claim_of
from outbox.wake import relay_wake

logger = logging.getLogger(__name__)

# The queues this process's worker consumes from (set when the worker starts, outbox/tasks.py);
# empty outside a worker, which then never continues.
_queues: frozenset[str] = frozenset()


def queues_served_set(queues) -> None:
    global _queues
    _queues = frozenset(queues)


def deliveries_run(delivery_ids: list[int]) -> None:
    """Handle a message's deliveries, each in its own transaction and independently, and after
    each one the deliveries its run committed for this worker's queues (within the bounds)."""
    conf = outbox_settings()
    started = time.monotonic()
    stack = [(pk, 0) for pk in reversed(delivery_ids)]
    while stack:
        delivery_id, depth = stack.pop()
        if not (conf.CONTINUATION and _queues and depth < conf.CONTINUATION_MAX_DEPTH):
            _handle(delivery_id)
            continue
        current = Continuing(queues=_queues, deliveries=[])
        with continuing(current):
            outcome = _handle(delivery_id)
        in_time = time.monotonic() - started < conf.CONTINUATION_MAX_SECONDS
        claimed = _continuation_claim(current, claim=outcome == "done" and in_time)
        stack += [(pk, depth + 1) for pk in reversed(claimed)]


def _handle(delivery_id: int) -> str | None:
    try:
        return delivery_handle(delivery_id=delivery_id)
    except Exception:
        logger.exception("delivery %s not handled; its lease will bring it back", delivery_id)
        return None


def _continuation_claim(current: Continuing, *, claim: bool) -> list[int]:
    """Claim the run's deliveries for this worker (``claim``: its run committed, within the
    bounds); wake the relay if the run left it to the worker and something is left over."""
    wanted = current.deliveries
    claimed: list[int] = []
    if claim and wanted:
        events = {position for position, _ in wanted}
        subscribers = {name for _, name in wanted}
        try:
            claimed = [pk for pk, _ in deliveries_claim_of(events=events, subscribers=subscribers)]
        except Exception:
            logger.warning("continuation claim failed; the relay dispatches", exc_info=True)
    if claimed and metrics.enabled:
        metrics.deliveries_continued(len(claimed))
    if current.wake_owed and len(claimed) < len(wanted):
        relay_wake()
    return claimed
