"""The outbox is also the event store: events are kept for RETENTION_DAYS, then deleted once
every delivery of theirs is done. An event with a pending or dead delivery is never deleted."""

import datetime as dt

from django.db import transaction
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
    deleted = 0
    while True:
        batch = list(
            Event.objects.filter(occurred_at__lt=cutoff)
            .exclude(Exists(_unfinished()))
            .values_list("pk", flat=True)[:PURGE_BATCH]
        )
        if not batch:
            return deleted
        deleted += _events_delete(batch)
        if len(batch) < PURGE_BATCH:
            return deleted


def _events_delete(candidates: list[int]) -> int:
    """Delete those of ``candidates`` whose deliveries are still all done, re-checked under lock.

    A replay may have made a delivery due again since the candidates were chosen. The
    deliveries are locked first (waiting for such a replay to commit), then the events (a
    backfill inserting a delivery holds a share lock on its event), and only then is each event
    checked again: nothing can change what the check saw before the delete.
    """
    with transaction.atomic():
        list(
            Delivery.objects.select_for_update()
            .filter(event_id__in=candidates)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        list(
            Event.objects.select_for_update()
            .filter(pk__in=candidates)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        finished = list(
            Event.objects.filter(pk__in=candidates)
            .exclude(Exists(_unfinished()))
            .values_list("pk", flat=True)
        )
        Delivery.objects.filter(event_id__in=finished).delete()
        Event.objects.filter(pk__in=finished).delete()
    return len(finished)


def _unfinished():
    return Delivery.objects.filter(event=OuterRef("pk")).exclude(status=Delivery.Status.DONE)
