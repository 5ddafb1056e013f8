"""Audit seals: a keyed MAC of each execution's audit head, made with a secret kept outside
the store.

The hash chain shows any entry edited, deleted or swapped, but someone who can write the
store can also recompute every hash after an edit and set the execution's head to match:
the chain then verifies. A seal is an HMAC-SHA256 of the execution's id and head (sequence
and hash), which covers every entry through the chain. Without the key, a trail rewritten
(or rolled back to a head never sealed) cannot be given a matching seal.
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from typing import TypeGuard

from attrs import field, frozen

from domain.model.errors import InvalidInput
from domain.model.evidence import canonical_json

MIN_KEY_BYTES = 32
MIN_DISTINCT = 8  # not "x" repeated, nor a run of spaces
_ID_LABEL = b"govkernel audit key id"
# What a seal covers, and how: a change of either makes every seal made before it fail.
_SEAL_LABEL = "govkernel audit seal 1"
_SEAL_CHARS = 16 + 1 + 64
_HEX = frozenset("0123456789abcdef")


def _secret(_: object, __: object, value: bytes) -> None:
    # Typed and checked here, not only by the settings: a service builds keys in code too.
    if not isinstance(value, bytes):
        raise InvalidInput("audit key", f"must be bytes, got {type(value).__name__}")
    if len(value) < MIN_KEY_BYTES or len(set(value)) < MIN_DISTINCT:
        raise InvalidInput(
            "audit key",
            f"must be at least {MIN_KEY_BYTES} bytes, of at least {MIN_DISTINCT} different"
            " values: e.g. the output of `python -c 'import secrets;"
            " print(secrets.token_hex(32))'`",
        )
    if value != value.strip():  # a line break or a space pasted with it, most likely
        raise InvalidInput("audit key", "begins or ends with white space")


def _key_bytes(text: object) -> bytes:
    if not isinstance(text, str):
        raise InvalidInput("audit key", f"must be text, got {type(text).__name__}")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise InvalidInput("audit key", "holds a control character (a line break?)")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("audit key", "is not valid Unicode text") from None


def _earlier_secret(_: object, __: object, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) < MIN_KEY_BYTES:
        raise InvalidInput("audit key", f"must be at least {MIN_KEY_BYTES} bytes")


# Letters and symbols that print as nothing: Hangul fillers, the braille blank.
_BLANK = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def _invisible(char: str) -> bool:
    # Unicode white space (no-break space, line separator), format characters (zero-width
    # space, byte order mark), C1 controls, and blanks.
    return char.isspace() or unicodedata.category(char) in ("Cf", "Cc") or char in _BLANK


@frozen(repr=False)
class AuditKey:
    """The secret that seals audit heads. Its repr never shows it; `key_id` names it."""

    secret: bytes = field(validator=_secret, repr=False)

    @classmethod
    def from_text(cls, text: str) -> AuditKey:
        key = cls(_key_bytes(text))
        if text and (_invisible(text[0]) or _invisible(text[-1])):
            # A no-break space, a byte order mark or a zero-width space pasted with the key
            # makes another key, whose seals every other worker refuses.
            raise InvalidInput(
                "audit key", "begins or ends with white space or an invisible character"
            )
        return key

    @classmethod
    def earlier(cls, text: str) -> AuditKey:
        """A key as govkernels before keys were checked for variety and white space took
        it (32 bytes or more, whatever they hold): never to seal with, only named as the
        previous key, so that `audit seal` moves the seals it made to a new key."""
        return _EarlierAuditKey(_key_bytes(text))

    @property
    def key_id(self) -> str:
        """16 hex digits naming the key without revealing it: which key made a seal."""
        return hmac.new(self.secret, _ID_LABEL, hashlib.sha256).hexdigest()[:16]

    def seal(self, execution_id: str, sequence: int, head: str) -> str:
        message = canonical_json([_SEAL_LABEL, execution_id, sequence, head]).encode("utf-8")
        mac = hmac.new(self.secret, message, hashlib.sha256).hexdigest()
        return f"{self.key_id}:{mac}"

    def problem(self, seal: str | None, execution_id: str, sequence: int, head: str) -> str | None:
        """What is wrong with `seal` for this head, or None when it is this key's seal of it."""
        if seal is None:
            # The two read alike: a store's own record cannot tell them apart.
            return (
                "not sealed: written without the audit key, or its seal removed (the two"
                " read alike)"
            )
        if not _well_formed(seal):
            return "its seal is not one this kernel makes"
        if seal[:16] != self.key_id:
            return f"sealed with another audit key (key id {seal[:16]}; this one is {self.key_id})"
        if not hmac.compare_digest(seal, self.seal(execution_id, sequence, head)):
            return (
                "its seal does not match its audit head: the trail or the head was rewritten"
                " by someone without the audit key"
            )
        return None

    def names_another(self, seal: object) -> bool:
        """Whether `seal` is a well-formed seal made with another key."""
        return _well_formed(seal) and seal[:16] != self.key_id

    def __repr__(self) -> str:
        return f"AuditKey(key_id={self.key_id!r})"


def key_or_none(value: object) -> AuditKey | None:
    """A store's `audit_key` as given, checked when the store is made: the key's text in its
    place would otherwise fail only at the first execution written."""
    if value is None or isinstance(value, AuditKey):
        return value
    raise InvalidInput(
        "audit_key",
        f"must be an AuditKey or None, got {type(value).__name__}"
        " (AuditKey.from_text reads one from its text)",
    )


def _well_formed(seal: object) -> TypeGuard[str]:
    return (
        isinstance(seal, str)
        and len(seal) == _SEAL_CHARS
        and seal[16] == ":"
        and all(c in _HEX for c in seal[:16] + seal[17:])
    )


@frozen(repr=False)
class _EarlierAuditKey(AuditKey):
    secret: bytes = field(validator=_earlier_secret, repr=False)
