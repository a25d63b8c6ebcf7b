"""The transactional outbox: publish events with your change, handle them exactly once.

Public API::

    from outbox import DomainEvent, publish, subscribe, upcaster

Names are imported lazily so that app modules can import them before Django's apps are ready.
"""

from importlib import import_module

_PUBLIC = {
    "DomainEvent": "outbox.events",
    "EventMeta": "outbox.events",
    "upcaster": "outbox.events",
    "publish": "outbox.publisher",
    "publish_many": "outbox.publisher",
    "subscribe": "outbox.registry",
    "OutboxError": "outbox.errors",
    "NotInTransaction": "outbox.errors",
    "UnknownEventType": "outbox.errors",
    "EventDeclarationError": "outbox.errors",
    "EventPayloadError": "outbox.errors",
    "UpcastError": "outbox.errors",
    "SubscriptionError": "outbox.errors",
    "UnknownSubscriber": "outbox.errors",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    try:
        module = _PUBLIC[name]
    except KeyError:
        raise AttributeError(f"module 'outbox' has no attribute {name!r}") from None
    return getattr(import_module(module), name)
