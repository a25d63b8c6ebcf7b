"""The event store and its deliveries.

``Event`` is written in the publisher's transaction and never changed afterwards. ``Delivery``
is one (event, subscriber) pair: created with the event, claimed by the relay, and marked done
in the same transaction as the handler's own writes, which makes it the subscriber's inbox.
"""

import uuid

from django.db import models
from django.db.models import Q


class Event(models.Model):
    # ``position`` orders events as they were published; ``event_id`` is the public identity.
    position = models.BigAutoField(primary_key=True)
    event_id = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    type = models.CharField(max_length=200, db_index=True)
    version = models.PositiveIntegerField()
    aggregate_type = models.CharField(max_length=100)
    aggregate_id = models.CharField(max_length=100)
    payload = models.JSONField()
    correlation_id = models.UUIDField(db_index=True)
    # Not indexed: nothing looks events up by their cause (the timeline reads a saga by its
    # correlation id; the admin's search pairs it with a substring match, which scans anyway).
    causation_id = models.UUIDField(null=True, blank=True)
    # Trace context (traceparent, tracestate) and any other header a publisher adds.
    headers = models.JSONField(default=dict, blank=True)
    occurred_at = models.DateTimeField(db_index=True)
    # The event's place among its aggregate's events: 1, 2, 3, ... taken from AggregateSequence
    # in the publishing transaction, so it follows commit order whatever ``position`` says.
    sequence = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["position"]
        # No index on the aggregate: nothing queries by it but the admin's search, which pairs
        # it with a substring match of the type and scans anyway; every publish paid for it.

    def __str__(self) -> str:
        return f"{self.type} v{self.version} {self.aggregate_key}"

    @property
    def aggregate_key(self) -> str:
        """What a delivery's ``aggregate_key`` holds: ordering is per this key."""
        return f"{self.aggregate_type}:{self.aggregate_id}"


class Delivery(models.Model):
    class Status(models.TextChoices):
        # Waiting for its next attempt, or dispatched and leased until next_attempt_at.
        PENDING = "pending"
        DONE = "done"
        DEAD = "dead"

    # Its index is the uniqueness constraint's (event, subscriber): a second one on event alone
    # cost every publish an insert and bought no query.
    event = models.ForeignKey(
        Event, on_delete=models.CASCADE, related_name="deliveries", db_index=False
    )
    subscriber = models.CharField(max_length=200)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    # Eligible for dispatch from this moment. The relay pushes it one lease ahead when it
    # dispatches, so a delivery whose message is lost becomes eligible again by itself.
    next_attempt_at = models.DateTimeField()
    # No attempt before this moment: the retry backoff, which a worker checks on the locked row
    # (a duplicate message for a delivery that is not due yet does nothing). Apart from the
    # lease, which only the relay reads.
    backoff_until = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # Copied from the subscriber and the event so the relay's claim reads one table.
    ordered = models.BooleanField(default=False)
    aggregate_key = models.CharField(max_length=201)
    sequence = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    # Dispatches since the last attempt: each one doubles the next lease (see relay.py).
    dispatches = models.PositiveIntegerField(default=0)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "deliveries"
        # Replaying runs a handler again (a charge at the gateway): not part of viewing.
        permissions = [("replay_delivery", "Can replay deliveries and dead letters")]
        constraints = [
            models.UniqueConstraint(fields=["event", "subscriber"], name="outbox_delivery_once")
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status="pending"),
                name="outbox_delivery_due",
            ),
            # An ordered delivery's predecessors (not done, lower sequence) and successors
            # (done, higher sequence) for the same subscriber and aggregate.
            models.Index(
                fields=["subscriber", "aggregate_key", "sequence"],
                name="outbox_delivery_aggregate",
            ),
            # Pending and dead ones only (the gauges, the dead letters, the sagas in flight): done
            # deliveries, nearly all of them, are not looked up by status.
            models.Index(
                fields=["status", "subscriber"],
                condition=~Q(status="done"),
                name="outbox_delivery_undone",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.subscriber} <- {self.event_id} ({self.status})"


class AggregateSequence(models.Model):
    """The last sequence number given to an aggregate's events.

    ``publish()`` increments the row in the publishing transaction, which keeps it locked until
    that transaction ends: two transactions publishing for one aggregate take their numbers one
    after the other, in the order they commit.
    """

    aggregate_key = models.CharField(max_length=201, primary_key=True)
    last = models.PositiveBigIntegerField()

    def __str__(self) -> str:
        return f"{self.aggregate_key} @ {self.last}"


class DeadLetter(Delivery):
    """Dead-lettered deliveries, for the operator's list in the admin."""

    class Meta:
        proxy = True
        verbose_name = "dead letter"


class Heartbeat(models.Model):
    """When each long-running role (relay, beat) last showed it was alive."""

    name = models.CharField(max_length=100, primary_key=True)
    beat_at = models.DateTimeField()
    detail = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"{self.name} @ {self.beat_at:%Y-%m-%d %H:%M:%S}"
