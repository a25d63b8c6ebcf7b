"""The outbox's database check of the sensitive-field keys (``outbox.E002``): the configured keys
open what is stored (docs/outbox.md, Sensitive fields). Registered by ``outbox.apps``."""

from __future__ import annotations

from django.core.checks import Error

from outbox.crypto import KEYS_SETTING, payload_open
from outbox.errors import EventDecryptionError
from outbox.events import event_types_all


def stored_sample_problem() -> str | None:
    """Whether the configured keys open the newest stored event of each type with sensitive
    fields: None when they do (or there is none), else what is wrong. One indexed query per
    such type; run by the ``outbox.E002`` system check (``manage.py check --database default``,
    and before ``migrate``)."""
    from outbox.models import Event

    for cls in event_types_all():
        if not cls.sensitive:
            continue
        row = Event.objects.filter(type=cls.event_type).order_by("-position").first()
        if row is None:
            continue
        try:
            payload_open(row.payload, event_type=row.type, event_id=row.event_id)
        except EventDecryptionError as exc:
            return str(exc)
    return None


def keys_stored_check(app_configs=None, databases=None, **kwargs) -> list:
    """System check ``outbox.E002`` (database-tagged): the keys open what is stored."""
    if not databases or "default" not in databases:
        return []
    try:
        problem = stored_sample_problem()
    except Exception:  # no table yet (before migrate), or the database is away: not our check
        return []
    if problem is None:
        return []
    return [
        Error(
            problem,
            hint=f"Put the key that wrote these events back into {KEYS_SETTING} (any position "
            "but the first reads); docs/outbox.md, Sensitive fields.",
            id="outbox.E002",
        )
    ]
