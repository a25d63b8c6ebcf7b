"""The transactional outbox: publish events with your change, handle them exactly once.

Its public surface for the apps, the only names they import from it (an import-linter
contract in pyproject.toml holds them to it)::

    from outbox import DomainEvent, EventMeta, upcaster        # declaring events
    from outbox import publish, publish_many                   # in the writing transaction
    from outbox import atomic, insert_or_nothing               # a service's transaction, cheap
    from outbox import row_get, row_update, rows_load, model_columns  # statements written once
    from outbox import subscribe                               # handlers
    from outbox import timeline_for_correlation, TimelineEvent, TimelineDelivery  # a saga's story
    from outbox import deliveries_open_for_correlations, OpenDelivery, ...  # a saga's open steps
    from outbox import correlation_dead_replay                 # retry a saga's dead letters
    from outbox import OutboxError, NotInTransaction, ...      # the errors (outbox.errors)

The host project (settings, health, metrics, commands) reads and runs the outbox through a
second surface, ``outbox.ops``; ``outbox.queues`` names the Celery queues. Everything else in
the package is internal.

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
    "atomic": "outbox.transactions",
    "insert_or_nothing": "outbox.transactions",
    "row_get": "outbox.rows",
    "row_update": "outbox.rows",
    "rows_load": "outbox.rows",
    "model_columns": "outbox.rows",
    "timeline_for_correlation": "outbox.selectors",
    "TimelineEvent": "outbox.selectors",
    "TimelineDelivery": "outbox.selectors",
    "OpenDelivery": "outbox.selectors",
    "deliveries_open_for_correlations": "outbox.selectors",
    "correlations_with_dead_deliveries": "outbox.selectors",
    "correlations_active_since": "outbox.selectors",
    "correlation_dead_replay": "outbox.replay",
    "OutboxError": "outbox.errors",
    "NotInTransaction": "outbox.errors",
    "UnknownEventType": "outbox.errors",
    "EventDeclarationError": "outbox.errors",
    "EventPayloadError": "outbox.errors",
    "UpcastError": "outbox.errors",
    "EventDecryptionError": "outbox.errors",
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
