"""The bus's settings: ``EVENT_BUS_URL`` selects it (unset: no bus), ``EVENT_BUS`` tunes it."""

from __future__ import annotations

from dataclasses import dataclass

from django.apps import apps
from django.conf import settings

DEFAULTS = {
    # This service's name: the CloudEvents source (/<service>/<app>), its queue and its
    # durable consumer are named after it.
    "SERVICE": "shop",
    # Prefix of every exchange, queue, stream and subject, so that several shops (or test
    # runs) can share one broker without meeting.
    "NAMESPACE": "shop",
    # Externalise every event type, not only those declared ``externalised = True``.
    "EXTERNALISE_ALL": False,
    # Apps whose events this service publishes itself (None: every installed app). Their
    # events are never consumed from the bus: they are already in the local event store.
    "LOCAL_APPS": None,
    # The deployment's services and the apps each installs ({"payments": ["payments"], ...}),
    # for a replay addressed to one service (``outbox_replay --to-service``): a service whose
    # apps are installed here is replayed to locally (the monolith), any other through the bus.
    # None: this service alone is known by its apps.
    "SERVICES": None,
    # The bus target keeps each aggregate's events in order (one in flight per aggregate).
    "ORDERED": True,
    # Bus deliveries sent to the broker per batch (one confirm round trip).
    "BATCH_SIZE": 500,
    # Seconds to wait for the broker's confirms of a batch before counting it failed.
    "CONFIRM_TIMEOUT": 10.0,
    # A relay claim with at most this many bus deliveries is published by a thread of the
    # relay's own process instead of the ``bus`` queue's worker (outbox/bus/relaying.py): one
    # Celery hop less from a commit to the broker's confirm. 0: every claim goes to the queue.
    "RELAY_PUBLISH_MAX": 50,
    # Failed publish attempts before a bus delivery is dead-lettered; 0: never. A broker outage
    # should delay events, not leave them to an operator, so the default retries for ever
    # (capped backoff, OUTBOX BACKOFF_CAP_SECONDS apart at most).
    "MAX_ATTEMPTS": 0,
    # Seconds a consumer may hold a message unacknowledged before the broker redelivers it
    # (JetStream ack_wait; RabbitMQ redelivers when the consumer's connection drops).
    "ACK_WAIT_SECONDS": 30.0,
    # Messages a consumer may hold unacknowledged (RabbitMQ prefetch, JetStream max_ack_pending
    # and fetch batch).
    "PREFETCH": 100,
    # The consumer runs what it stored itself (outbox/bus/consuming.py, ``ConsumerRun``): once a
    # batch is committed and acknowledged, it claims the batch's deliveries with the relay's
    # claim and runs them in its own process, as a worker would, instead of leaving them to
    # the relay and a worker. Only a batch that stored at most RUN_MAX_EVENTS events (a burst
    # is the relay's and the workers'), and for no longer than RUN_MAX_SECONDS after its first
    # claim (a handler that has begun runs to its end). RUN_QUEUES: the subscribers' queues it
    # runs (None: every queue of this service's subscribers).
    "RUN": True,
    "RUN_MAX_EVENTS": 10,
    "RUN_MAX_SECONDS": 0.5,
    "RUN_QUEUES": None,
}


@dataclass(frozen=True)
class BusSettings:
    url: str
    SERVICE: str
    NAMESPACE: str
    EXTERNALISE_ALL: bool
    LOCAL_APPS: list[str] | None
    SERVICES: dict[str, list[str]] | None
    ORDERED: bool
    BATCH_SIZE: int
    CONFIRM_TIMEOUT: float
    RELAY_PUBLISH_MAX: int
    MAX_ATTEMPTS: int
    ACK_WAIT_SECONDS: float
    PREFETCH: int
    RUN: bool
    RUN_MAX_EVENTS: int
    RUN_MAX_SECONDS: float
    RUN_QUEUES: list[str] | None

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def local_apps(self) -> set[str]:
        if self.LOCAL_APPS is not None:
            return set(self.LOCAL_APPS)
        return {config.name.split(".")[0] for config in apps.get_app_configs()}


def bus_settings() -> BusSettings:
    overrides = getattr(settings, "EVENT_BUS", {})
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"unknown EVENT_BUS settings: {', '.join(sorted(unknown))}")
    url = getattr(settings, "EVENT_BUS_URL", "") or ""
    return BusSettings(url=url, **{**DEFAULTS, **overrides})
