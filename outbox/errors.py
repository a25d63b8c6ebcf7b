"""Every error the outbox raises at a call site derives from OutboxError."""


class OutboxError(Exception):
    pass


class NotInTransaction(OutboxError):
    """publish() was called outside transaction.atomic(): the event could outlive a rollback."""


class UnknownEventType(OutboxError, TypeError):
    """The object or type name is not a declared DomainEvent."""


class EventDeclarationError(OutboxError, TypeError):
    """An event class is declared wrongly (not a frozen dataclass, no aggregate type, ...)."""


class EventPayloadError(OutboxError, ValueError):
    """A payload is not plain JSON, or does not match its event class."""


class EventDecryptionError(OutboxError):
    """A sealed (sensitive) field of a stored event cannot be opened with the configured keys."""


class UpcastError(OutboxError):
    """A stored event's version has no path to the version the code declares."""


class SubscriptionError(OutboxError, TypeError):
    """A handler is subscribed wrongly (duplicate name, bad options, not callable)."""


class UnknownSubscriber(OutboxError, LookupError):
    """A delivery or a command names a subscriber that is not registered."""
