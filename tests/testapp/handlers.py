import logging
import time

from outbox import subscribe, upcaster
from outbox.context import handling_current
from tests.testapp.events import (
    Confided,
    Counted,
    FlakyThing,
    OrderedThing,
    Reshaped,
    RoutedThing,
    SlowThing,
    Stranded,
    ThingHappened,
)
from tests.testapp.faults import fault_point
from tests.testapp.models import Effect, HandlerRun

logger = logging.getLogger(__name__)

# Tests flip this to make FlakyThing's handler fail until they "deploy the fix".
BROKEN = {"flaky": False}


def _record(event, name: str, **data) -> None:
    current = handling_current()
    Effect.objects.create(
        subscriber=name,
        event_id=event.meta.event_id,
        aggregate_id=event.aggregate_id,
        seq=getattr(event, "seq", 0),
        attempt=current.attempt,
        data=data,
    )


def _fail_on_early_attempts(fail_times: int) -> None:
    attempt = handling_current().attempt
    if attempt <= fail_times:
        raise RuntimeError(f"planned failure on attempt {attempt} of {fail_times}")


@subscribe(ThingHappened)
def record_a(event: ThingHappened) -> None:
    _record(event, "a")


@subscribe(ThingHappened)
def record_b(event: ThingHappened) -> None:
    _record(event, "b")


@subscribe(ThingHappened)
def record_c(event: ThingHappened) -> None:
    _record(event, "c")


@subscribe(FlakyThing, max_attempts=3)
def flaky(event: FlakyThing) -> None:
    # The effect is written first: a failure must roll it back.
    _record(event, "flaky")
    if BROKEN["flaky"]:
        raise RuntimeError("the flaky handler is broken")
    _fail_on_early_attempts(event.fail_times)


@subscribe(OrderedThing, ordered=True)
def in_order(event: OrderedThing) -> None:
    _fail_on_early_attempts(event.fail_times)
    _record(event, "in_order")


@subscribe(RoutedThing, queue="payments")
def routed_payments(event: RoutedThing) -> None:
    _record(event, "payments")


@subscribe(RoutedThing, queue="inventory")
def routed_inventory(event: RoutedThing) -> None:
    _record(event, "inventory")


@subscribe(SlowThing)
def slow(event: SlowThing) -> None:
    time.sleep(event.seconds)
    _record(event, "slow")


def _count_run(event: Counted, name: str) -> None:
    # Deliberately not idempotent: every run adds a row, in the handler's transaction.
    HandlerRun.objects.create(subscriber=name, event_id=event.meta.event_id)
    fault_point("after_handler_writes")


@subscribe(Counted)
def count_one(event: Counted) -> None:
    _count_run(event, "tests.count_one")


@subscribe(Counted)
def count_two(event: Counted) -> None:
    _count_run(event, "tests.count_two")


@upcaster(Reshaped, from_version=1)
def reshaped_v1_to_v2(payload: dict) -> dict:
    given, _, family = payload.pop("name").partition(" ")
    return {**payload, "given": given, "family": family}


@subscribe(Reshaped)
def reshaped(event: Reshaped) -> None:
    _record(event, "reshaped", given=event.given, family=event.family, version=event.meta.version)


@upcaster(Stranded, from_version=2)
def stranded_v2_to_v3(payload: dict) -> dict:
    return {**payload, "label": payload.pop("tag")}


@subscribe(Stranded, max_attempts=2)
def stranded(event: Stranded) -> None:
    _record(event, "stranded")


@upcaster(Confided, from_version=1)
def confided_v1_to_v2(payload: dict) -> dict:
    payload = dict(payload)
    payload["secret"] = payload.pop("pin")
    return payload


@subscribe(Confided)
def confided(event: Confided) -> None:
    # A careless handler: it logs the event, and fails with the event in its message.
    logger.info("confided: %r", event)
    if event.secret.startswith("fail-"):
        raise RuntimeError(f"cannot take {event!r}")
    _record(event, "confided", secret=event.secret, contact=event.contact)
