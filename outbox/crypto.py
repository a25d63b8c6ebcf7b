"""Sensitive event fields: sealed in the event store and on the bus, opened for handlers only.

An event class names its sensitive fields (``sensitive: ClassVar[tuple[str, ...]] =
("payment_token",)``). ``publish()`` stores each of them as ``{"$sealed": "<Fernet token>"}``:
the field's JSON value encrypted with the first key of ``settings.EVENT_ENCRYPTION_KEYS``
(Fernet: AES-128-CBC with an HMAC-SHA256, from the ``cryptography`` package). Every key of the
list opens a value (``MultiFernet``), so a key is rotated by putting a new one first and
dropping the old one once no stored event needs it (docs/outbox.md).

A sealed value says what it is, so opening does not depend on the class's current declaration:
an old stored version whose fields were sensitive then is opened before its upcasters run. A
sensitive field stored in clear (written before the field was declared sensitive) is read as
it is: nothing here rewrites a stored event.

Nothing outside a handler's event sees clear text: the admin, the timeline and the flow page
show :data:`REDACTED` for a sealed value and for any declared sensitive field.
"""

from __future__ import annotations

import binascii
import functools
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from outbox.errors import EventDecryptionError

SEALED = "$sealed"
REDACTED = "[redacted]"
KEYS_SETTING = "EVENT_ENCRYPTION_KEYS"
KEY_HINT = (
    "generate one with: python -c 'from cryptography.fernet import Fernet; "
    "print(Fernet.generate_key().decode())'"
)


def keys_configured() -> tuple[str, ...]:
    """The keys, newest (the one that writes) first; a comma-separated string is split."""
    keys = getattr(settings, KEYS_SETTING, None) or ()
    if isinstance(keys, str):
        keys = keys.split(",")
    return tuple(key.strip() for key in keys if key and key.strip())


def cipher() -> MultiFernet:
    """The keys as one cipher; ImproperlyConfigured names what is wrong with them."""
    return _cipher_for(keys_configured())


@functools.lru_cache(maxsize=8)
def _cipher_for(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured(
            f"{KEYS_SETTING} is empty: sensitive event fields cannot be encrypted; {KEY_HINT}"
        )
    fernets = []
    for number, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key))
        except (ValueError, TypeError, binascii.Error):
            raise ImproperlyConfigured(
                f"{KEYS_SETTING}: key {number} of {len(keys)} is not a Fernet key "
                f"(32 bytes, url-safe base64: 44 characters); {KEY_HINT}"
            ) from None
    return MultiFernet(fernets)


def is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(SEALED), str)


def payload_seal(cls: type, payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` with the class's sensitive fields encrypted (a new dict)."""
    names = getattr(cls, "sensitive", ())
    if not names:
        return payload
    box = cipher()
    sealed = dict(payload)
    for name in names:
        if name in sealed and not is_sealed(sealed[name]):
            text = json.dumps(sealed[name], separators=(",", ":"), ensure_ascii=False)
            sealed[name] = {SEALED: box.encrypt(text.encode()).decode("ascii")}
    return sealed


def payload_open(payload: dict[str, Any], *, event_type: str, event_id: Any = None) -> dict:
    """``payload`` with every sealed field decrypted (a new dict); clear fields as they are.

    A value no configured key opens is an EventDecryptionError naming the field, never its value,
    and never a fallback to anything.
    """
    if not isinstance(payload, dict) or not any(is_sealed(v) for v in payload.values()):
        return payload  # nothing sealed; a payload that is no object is refused by the decoder
    box = cipher()
    opened = dict(payload)
    for name, value in payload.items():
        if not is_sealed(value):
            continue
        try:
            opened[name] = json.loads(box.decrypt(value[SEALED].encode("ascii")))
        except (InvalidToken, UnicodeError, ValueError):
            raise EventDecryptionError(
                f"{event_type} {event_id or ''}: field {name!r} cannot be decrypted with any key "
                f"of {KEYS_SETTING} (the key that wrote it is missing, or the value is damaged)"
            ) from None
    return opened
