"""Declaring events: typed, frozen, versioned dataclasses, and upcasters for old versions.

An app declares its events in its own ``events.py``::

    @dataclass(frozen=True, kw_only=True)
    class OrderPlaced(DomainEvent):
        version: ClassVar[int] = 1
        aggregate_type: ClassVar[str] = "order"

        order_id: int
        total: str

The type name defaults to ``"<app>.<ClassName>"`` (here ``orders.OrderPlaced``); the aggregate
id is read from the ``<aggregate_type>_id`` field unless the class overrides ``aggregate_id``.
A payload holds JSON values only: ids and small facts, never model instances.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import importlib
import json
import types
import typing
import uuid
from collections.abc import Callable
from typing import Any, ClassVar

from outbox.crypto import REDACTED, is_sealed, payload_open
from outbox.errors import EventDeclarationError, EventPayloadError, UnknownEventType, UpcastError

_event_types: dict[str, type[DomainEvent]] = {}
_upcasters: dict[tuple[str, int], Callable[[dict], dict]] = {}


@dataclasses.dataclass(frozen=True)
class EventMeta:
    """What the outbox knows about a stored event, handed to handlers on ``event.meta``."""

    event_id: uuid.UUID
    type: str
    version: int
    stored_version: int
    occurred_at: dt.datetime
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None
    headers: dict


class DomainEvent:
    """Base class of every event. Subclasses must be ``@dataclass(frozen=True, kw_only=True)``."""

    event_type: ClassVar[str]
    version: ClassVar[int] = 1
    aggregate_type: ClassVar[str]
    # Published to the event bus too, when one is configured (docs/bus.md).
    externalised: ClassVar[bool] = False
    # Fields encrypted in the event store and on the bus, opened only for a handler, and
    # redacted everywhere else (outbox/crypto.py): e.g. ``sensitive = ("payment_token",)``.
    sensitive: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "event_type" not in cls.__dict__:
            cls.event_type = f"{cls.__module__.split('.')[0]}.{cls.__name__}"
        if not isinstance(cls.version, int) or cls.version < 1:
            raise EventDeclarationError(f"{cls.__qualname__}.version must be an int >= 1")
        if not isinstance(getattr(cls, "aggregate_type", None), str) or not cls.aggregate_type:
            raise EventDeclarationError(
                f"{cls.__qualname__} must declare aggregate_type: ClassVar[str] = '...'"
            )
        existing = _event_types.get(cls.event_type)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise EventDeclarationError(
                f"event type {cls.event_type!r} is declared twice: by {existing.__module__}."
                f"{existing.__qualname__} and {cls.__module__}.{cls.__qualname__}"
            )
        if isinstance(cls.sensitive, str) or not all(
            isinstance(name, str) for name in cls.sensitive
        ):
            raise EventDeclarationError(
                f"{cls.__qualname__}.sensitive must be a tuple of field names, "
                f"got {cls.sensitive!r}"
            )
        cls.sensitive = tuple(cls.sensitive)
        if "__repr__" not in cls.__dict__:
            # Set before @dataclass runs, which then keeps it: a logged or traced event shows
            # its sensitive fields redacted.
            cls.__repr__ = _repr_redacted
        _event_types[cls.event_type] = cls

    @property
    def aggregate_id(self) -> str:
        field = f"{self.aggregate_type}_id"
        if not hasattr(self, field):
            raise EventDeclarationError(
                f"{type(self).__qualname__} has no field {field!r}: declare it or override "
                "the aggregate_id property"
            )
        return str(getattr(self, field))

    @property
    def meta(self) -> EventMeta | None:
        """Stored-event facts, set when the outbox hands the event to a handler."""
        return self.__dict__.get("_meta")

    def to_payload(self) -> dict[str, Any]:
        """The JSON payload; raises EventPayloadError when a value is not plain JSON."""
        check_declared(type(self))
        payload = {}
        shape = _shape(type(self))
        for name in shape.names:
            path = f"{self.event_type}.{name}"
            try:
                payload[name] = _encode(getattr(self, name), shape.hints[name], path)
            except EventPayloadError:
                if name in self.sensitive:
                    raise _hidden(path) from None
                raise
        try:
            json.dumps(payload, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise EventPayloadError(f"{self.event_type}: payload is not JSON: {exc}") from None
        return payload

    @classmethod
    def from_payload(cls, payload: Any) -> DomainEvent:
        """Build the event from a payload of this version; raises EventPayloadError."""
        check_declared(cls)
        if not isinstance(payload, dict):
            raise EventPayloadError(f"{cls.event_type}: payload must be an object, got {payload!r}")
        return _decode(payload, cls, cls.event_type)


def _repr_redacted(self) -> str:
    shown = ", ".join(
        f"{f.name}={'[redacted]' if f.name in self.sensitive else repr(getattr(self, f.name))}"
        for f in dataclasses.fields(self)
        if f.repr
    )
    return f"{type(self).__qualname__}({shown})"


def _hidden(path: str) -> EventPayloadError:
    """The error about a sensitive field's value: what is wrong, never the value."""
    return EventPayloadError(f"{path}: not a valid value (sensitive: not shown)")


def event_types_all() -> list[type[DomainEvent]]:
    """Every declared event class, by type name (the registry the AsyncAPI document reads)."""
    return [_event_types[name] for name in sorted(_event_types)]


def check_declared(cls: type) -> None:
    if not (isinstance(cls, type) and issubclass(cls, DomainEvent)):
        raise UnknownEventType(f"{cls!r} is not a DomainEvent subclass")
    if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:
        raise EventDeclarationError(
            f"{cls.__qualname__} must be decorated with @dataclass(frozen=True, kw_only=True)"
        )
    if cls.sensitive and not set(cls.sensitive) <= {f.name for f in dataclasses.fields(cls)}:
        unknown = sorted(set(cls.sensitive) - {f.name for f in dataclasses.fields(cls)})
        raise EventDeclarationError(
            f"{cls.__qualname__}.sensitive names no field: {', '.join(unknown)}"
        )


def event_type_get(name: str) -> type[DomainEvent]:
    """The event class for a type name such as ``orders.OrderPlaced``.

    Importing the publishing app's ``events`` module on demand, so a type name works before
    that module has been imported elsewhere.
    """
    if name not in _event_types and "." in name:
        with contextlib.suppress(ImportError):
            importlib.import_module(f"{name.split('.')[0]}.events")
    try:
        return _event_types[name]
    except KeyError:
        raise UnknownEventType(
            f"unknown event type {name!r}; known types: {', '.join(sorted(_event_types)) or 'none'}"
        ) from None


def payload_redact(event_type: str, payload: Any) -> Any:
    """What a person may read of a stored payload: sealed values and declared sensitive fields
    (in clear in rows written before the declaration) are shown as :data:`REDACTED`."""
    if not isinstance(payload, dict):
        return payload
    names = set(sensitive_fields(event_type))
    return {
        key: REDACTED if key in names or is_sealed(value) else value
        for key, value in payload.items()
    }


def sensitive_fields(event_type: str) -> tuple[str, ...]:
    try:
        return tuple(event_type_get(event_type).sensitive)
    except UnknownEventType:
        return ()


def upcaster(event_type: str | type[DomainEvent], *, from_version: int):
    """Register ``fn(payload) -> payload`` turning version ``from_version`` into the next one.

    Stored events are never rewritten: an old event is upcast, step by step, each time it is
    read, so a handler only ever sees the current shape.
    """
    name = event_type if isinstance(event_type, str) else event_type.event_type

    def register(fn: Callable[[dict], dict]) -> Callable[[dict], dict]:
        cls = event_type_get(name)
        if not isinstance(from_version, int) or not 1 <= from_version < cls.version:
            raise UpcastError(
                f"upcaster for {name}: from_version must be between 1 and {cls.version - 1}, "
                f"got {from_version!r}"
            )
        if (name, from_version) in _upcasters:
            raise UpcastError(f"{name} already has an upcaster from version {from_version}")
        _upcasters[(name, from_version)] = fn
        return fn

    return register


def payload_upcast(name: str, version: int, payload: dict) -> tuple[type[DomainEvent], dict]:
    """Bring a stored payload of ``version`` up to the class's current version."""
    cls = event_type_get(name)
    if version > cls.version:
        raise UpcastError(
            f"{name} v{version} is newer than this code's v{cls.version}: deploy the newer code"
        )
    if version < cls.version and not isinstance(payload, dict):
        # An upcaster reads an object; anything else is refused as the decoder refuses it.
        raise EventPayloadError(f"{name}: payload must be an object, got {payload!r}")
    while version < cls.version:
        step = _upcasters.get((name, version))
        if step is None:
            raise UpcastError(
                f"{name} v{version} cannot be read: no upcaster from v{version} "
                f"(the class is at v{cls.version})"
            )
        payload = step(dict(payload))
        version += 1
    return cls, payload


def event_load(*, type: str, version: int, payload: dict, meta: EventMeta) -> DomainEvent:
    """The typed event a handler receives: sensitive fields decrypted (handlers are the only
    code that gets them in clear), upcast, validated, with ``meta`` attached."""
    payload = payload_open(payload, event_type=type, event_id=meta.event_id)
    cls, payload = payload_upcast(type, version, payload)
    event = cls.from_payload(payload)
    object.__setattr__(event, "_meta", meta)
    return event


# --- payload codec ----------------------------------------------------------------------------
# Small on purpose: the types an event field may have are JSON's (str, int, float, bool, None,
# list, dict), optionals of them, and nested frozen dataclasses or sequences of them.

_PRIMITIVES = (str, int, float, bool)


@functools.cache  # per class: resolving annotations is most of the cost of a payload
def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception as exc:  # an annotation that does not resolve is a declaration bug
        raise EventDeclarationError(f"{cls.__qualname__}: cannot read field types: {exc}") from None


@dataclasses.dataclass(frozen=True)
class _Shape:
    """What encoding and decoding need of a dataclass, read once per class (``_shape``)."""

    hints: dict[str, Any]  # every field's type, resolved
    names: tuple[str, ...]  # the fields, in declaration order
    accepted: frozenset[str]  # the fields a payload may carry (init=True)
    required: frozenset[str]  # of those, the ones without a default


@functools.cache
def _shape(cls: type) -> _Shape:
    """Resolving a class's annotations (``typing.get_type_hints``) costs more than encoding or
    decoding a whole event: done once per class. A class whose annotations do not resolve
    raises each time (an exception is not cached)."""
    fields = dataclasses.fields(cls)
    accepted = [f for f in fields if f.init]
    return _Shape(
        hints=_hints(cls),
        names=tuple(f.name for f in fields),
        accepted=frozenset(f.name for f in accepted),
        required=frozenset(
            f.name
            for f in accepted
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ),
    )


def _encode(value: Any, hint: Any, path: str) -> Any:
    if type(value) is hint and hint in _PRIMITIVES:  # the common case, all checks passed
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        shape = _shape(type(value))
        return {
            name: _encode(getattr(value, name), shape.hints[name], f"{path}.{name}")
            for name in shape.names
        }
    if isinstance(value, (list, tuple)):
        args = typing.get_args(hint)
        item_hint = args[0] if args else Any
        return [_encode(v, item_hint, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): _encode(v, Any, f"{path}.{k}") for k, v in value.items()}
    if value is None or isinstance(value, _PRIMITIVES):
        _check(value, hint, path)
        return value
    raise EventPayloadError(
        f"{path}: {type(value).__name__} is not JSON-serialisable; "
        "events carry ids and small facts (use str for decimals, UUIDs and datetimes)"
    )


def _check(value: Any, hint: Any, path: str) -> None:
    """Reject a primitive whose type does not match the field's annotation."""
    if hint is Any:
        return
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            try:
                _check(value, arg, path)
                return
            except EventPayloadError:
                continue
        raise EventPayloadError(f"{path}: {value!r} does not match {hint}")
    if hint is type(None):
        if value is not None:
            raise EventPayloadError(f"{path}: expected null, got {value!r}")
        return
    if hint in _PRIMITIVES:
        ok = isinstance(value, hint) and not (hint is int and isinstance(value, bool))
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise EventPayloadError(f"{path}: expected {hint.__name__}, got {value!r}")


def _decode(value: Any, hint: Any, path: str) -> Any:
    if type(value) is hint and hint in _PRIMITIVES:  # the common case, all checks passed
        return value
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise EventPayloadError(f"{path}: expected an object, got {value!r}")
        shape = _shape(hint)
        unknown = sorted(value.keys() - shape.accepted)
        missing = sorted(shape.required - value.keys())
        if unknown or missing:
            problems = []
            if missing:
                problems.append(f"missing {', '.join(missing)}")
            if unknown:
                problems.append(f"unknown {', '.join(unknown)}")
            raise EventPayloadError(f"{path}: {'; '.join(problems)}")
        hidden = getattr(hint, "sensitive", ())
        kwargs = {}
        for k, v in value.items():
            try:
                kwargs[k] = _decode(v, shape.hints[k], f"{path}.{k}")
            except EventPayloadError:
                if k in hidden:
                    raise _hidden(f"{path}.{k}") from None
                raise
        return hint(**kwargs)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise EventPayloadError(f"{path}: expected a list, got {value!r}")
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        item_hint = args[0] if args else Any
        items = [_decode(v, item_hint, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        non_null = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(non_null) == 1:
            return _decode(value, non_null[0], path)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise EventPayloadError(f"{path}: expected an object, got {value!r}")
        return value
    _check(value, hint, path)
    return value
