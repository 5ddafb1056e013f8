"""Edge validation helpers shared by the value objects."""

from __future__ import annotations

import re
from datetime import datetime

from domain.model.errors import InvalidInput

IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")


def text(field: str, value: object, *, max_len: int, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidInput(field, f"must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise InvalidInput(field, "must not be empty")
    if len(value) > max_len:
        raise InvalidInput(field, f"must be at most {max_len} characters, got {len(value)}")
    # NUL cannot be stored faithfully by every engine (SurrealDB core 2 writes it but cannot
    # read it back), so it is refused at the edge rather than half-written.
    if "\x00" in value:
        raise InvalidInput(field, "must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates: not Unicode text, cannot be hashed (UTF-8) nor stored by SurrealDB.
        raise InvalidInput(field, "must be valid Unicode (no lone surrogates)") from None
    return value


def identifier(field: str, value: object) -> str:
    if not isinstance(value, str) or not IDENTIFIER.match(value):
        raise InvalidInput(
            field, "must be 1-128 characters of letters, digits, '_', '.', ':' or '-'"
        )
    return value


def aware(field: str, value: object) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidInput(field, "must be a timezone-aware datetime")
    return value
