"""The outbox's operations surface, for the host project only (``shop/``: health, metrics,
management): status, gauges, heartbeats, settings, the registry's subscribers and queues.

Domain apps never import it (pyproject.toml's contracts): they use ``outbox``'s public names.
Names are imported lazily, as in ``outbox/__init__.py``.
"""

from importlib import import_module

_OPS = {
    "OutboxCollector": "outbox.metrics",
    "OutboxGauges": "outbox.selectors",
    "OutboxStatus": "outbox.selectors",
    "outbox_status": "outbox.selectors",
    "outbox_gauges": "outbox.selectors",
    "HEARTBEAT_ROLES": "outbox.selectors",
    "heartbeat_ages": "outbox.selectors",
    "heartbeat_problems": "outbox.selectors",
    "event_counts_by_type": "outbox.selectors",
    "event_counts_by_payload_field": "outbox.selectors",
    "timeline_for_correlation": "outbox.selectors",
    "outbox_settings": "outbox.conf",
    "subscribers_all": "outbox.registry",
    "RELAY_QUEUE": "outbox.queues",
    "subscriber_queues": "outbox.registry",
}

__all__ = sorted(_OPS)


def __getattr__(name: str):
    try:
        module = _OPS[name]
    except KeyError:
        raise AttributeError(f"module 'outbox.ops' has no attribute {name!r}") from None
    return getattr(import_module(module), name)
