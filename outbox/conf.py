"""The outbox's settings: ``settings.OUTBOX`` overrides these defaults key by key."""

from dataclasses import dataclass

from django.conf import settings

DEFAULTS = {
    # How long a dispatched delivery may stay unconfirmed before the relay sends it again.
    "LEASE_SECONDS": 30.0,
    # A delivery sent again before any worker ran it gets twice the lease, up to 2**this.
    "LEASE_MAX_DOUBLINGS": 5,
    # Attempts before a failing delivery is dead-lettered (a subscriber may override).
    "MAX_ATTEMPTS": 8,
    # Retry n waits about min(cap, base * 2**(n-1)) seconds, with jitter in [50%, 100%].
    "BACKOFF_BASE_SECONDS": 1.0,
    "BACKOFF_CAP_SECONDS": 300.0,
    # A worker or bus task whose delivery is locked by another transaction waits this long for
    # the lock before stepping aside (PostgreSQL): a relay's claim may hold a row it did not
    # take until its statement ends, and skipping it at once would leave it a whole lease.
    "LOCK_WAIT_SECONDS": 0.5,
    # Deliveries claimed per relay round trip.
    "RELAY_BATCH_SIZE": 500,
    # Deliveries per broker message (a worker process handles one message at a time).
    "DISPATCH_CHUNK_SIZE": 50,
    # The relay drains until it finds no work or has run this long.
    "RELAY_MAX_SECONDS": 5.0,
    # A woken relay whose previous run claimed something less than this long ago waits out the
    # rest first: under load each run then claims many commits, and each message carries
    # several ids. A wake-up after a quiet spell (or beat's tick) is never held back.
    "RELAY_GATHER_SECONDS": 0.01,
    # Continuation (outbox/continuation.py): a worker claims and runs the deliveries its own
    # runs commit for its queues, at most this many steps deep and this long after the task
    # began; past that they are the relay's.
    "CONTINUATION": True,
    "CONTINUATION_MAX_DEPTH": 10,
    "CONTINUATION_MAX_SECONDS": 2.0,
    # Within those bounds, a run's publish inserts the deliveries the worker will continue
    # (unordered subscribers of its queues) already leased to it, as its claim would lease
    # them, instead of the worker claiming them after the commit (one transaction less a step).
    "CONTINUATION_BORN_CLAIMED": True,
    # Several deliveries per transaction (outbox/handling.py, ``deliveries_handle_together``):
    # a message's deliveries, and those their runs commit for the worker's queues, are locked
    # in one statement and run in one transaction, each handler in a savepoint, at most this
    # many at a time (0 or 1: each delivery in a transaction of its own).
    "DELIVERY_BATCH_SIZE": 20,
    # PostgreSQL: publishers wake the relay with NOTIFY in their own transaction, and the relay
    # LISTENs (outbox/wake.py), instead of a Redis flag and a Celery message after commit.
    "WAKE_BY_NOTIFY": False,
    # Events whose deliveries are all done are deleted after this many days (0: keep forever).
    "RETENTION_DAYS": 30,
    # A relay or beat heartbeat older than this is reported stale (outbox_status, /readyz).
    # The relay beats at most every 5 s while it runs; beat's relay tick comes every second.
    "HEARTBEAT_STALE_SECONDS": 30.0,
}


@dataclass(frozen=True)
class OutboxSettings:
    LEASE_SECONDS: float
    LEASE_MAX_DOUBLINGS: int
    MAX_ATTEMPTS: int
    BACKOFF_BASE_SECONDS: float
    BACKOFF_CAP_SECONDS: float
    LOCK_WAIT_SECONDS: float
    RELAY_BATCH_SIZE: int
    DISPATCH_CHUNK_SIZE: int
    RELAY_MAX_SECONDS: float
    RELAY_GATHER_SECONDS: float
    CONTINUATION: bool
    CONTINUATION_MAX_DEPTH: int
    CONTINUATION_MAX_SECONDS: float
    CONTINUATION_BORN_CLAIMED: bool
    DELIVERY_BATCH_SIZE: int
    WAKE_BY_NOTIFY: bool
    RETENTION_DAYS: int
    HEARTBEAT_STALE_SECONDS: float


def outbox_settings() -> OutboxSettings:
    overrides = getattr(settings, "OUTBOX", {})
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"unknown OUTBOX settings: {', '.join(sorted(unknown))}")
    return OutboxSettings(**{**DEFAULTS, **overrides})
