"""The outbox is also the event store: events are kept for RETENTION_DAYS, then deleted once
every delivery of theirs is done. An event with a pending or dead delivery is never deleted."""

import datetime as dt

from django.db.models import Exists, OuterRef
from django.utils import timezone

from outbox.conf import outbox_settings
from outbox.models import Delivery, Event

PURGE_BATCH = 1000


def events_purge(*, now: dt.datetime | None = None) -> int:
    days = outbox_settings().RETENTION_DAYS
    if days <= 0:
        return 0
    cutoff = (now or timezone.now()) - dt.timedelta(days=days)
    unfinished = Delivery.objects.filter(event=OuterRef("pk")).exclude(status=Delivery.Status.DONE)
    deleted = 0
    while True:
        batch = list(
            Event.objects.filter(occurred_at__lt=cutoff)
            .exclude(Exists(unfinished))
            .values_list("pk", flat=True)[:PURGE_BATCH]
        )
        if not batch:
            return deleted
        Event.objects.filter(pk__in=batch).delete()
        deleted += len(batch)
