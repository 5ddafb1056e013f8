"""Edge validation helpers shared by the value objects."""

from __future__ import annotations

import functools
import re
import types
import typing
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeGuard, TypeVar

import attrs

from domain.model.errors import InvalidInput
from domain.model.frozen import FrozenDict, FrozenList

T = TypeVar("T")

IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}\Z")
IDENTIFIER_RULE = (
    "1-128 ASCII letters, digits, '_', '.', ':' or '-', starting with a letter or digit"
)
# People and roles: what GOVKERNEL_ACTOR accepts. No spaces, look-alike invisible characters
# or control codes, so one person cannot pass for another by spelling.
ACTOR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@\-]{0,127}\Z")
ACTOR_RULE = (
    "1-128 ASCII letters, digits, '_', '.', ':', '@' or '-', starting with a letter or digit"
)
_LINE_BREAKS = ("\u2028", "\u2029")


def text(
    field: str, value: object, *, max_len: int, allow_empty: bool = False, single_line: bool = False
) -> str:
    """Free text. `single_line` also refuses control characters and line breaks: for short
    values shown in audit trails, where they could forge a line or drive a terminal."""
    if not isinstance(value, str):
        raise InvalidInput(field, f"must be a string, got {type_name(value)}")
    value = plain(value)
    # A one-line label (a reason) of invisible characters alone reads as none in a trail.
    if not allow_empty and not (visible(value) if single_line else value.strip()):
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
        # (A command-line argument holding bytes that are no UTF-8 arrives as them too.)
        raise InvalidInput(
            field, "must be valid Unicode text (no lone surrogates, no bytes that are not UTF-8)"
        ) from None
    if single_line and any(unicodedata.category(c) == "Cc" or c in _LINE_BREAKS for c in value):
        raise InvalidInput(field, "must be one line without control characters")
    return value


def visible(value: str) -> bool:
    """Whether the text shows anything: not only spaces, invisible format characters and
    letters that show as nothing (the Hangul fillers, the blank braille cell)."""
    if value.isascii():
        return bool(value.strip())
    return any(
        not c.isspace() and unicodedata.category(c) != "Cf" and c not in _BLANK_LETTERS
        for c in value
    )


def one_line(value: str) -> str:
    """Any text made one storable line: line breaks become spaces, and other control
    characters, NUL and lone surrogates are written as escapes (`\\x00`, `\\udcff`).

    For text govkernel records but does not choose, such as what a failing step's error
    says: refusing it would leave nothing said at all."""
    joined = " ".join(value.replace("\t", " ").splitlines())
    return "".join(_escaped(c) for c in joined)


def _escaped(c: str) -> str:
    if unicodedata.category(c) in ("Cc", "Cs"):
        return c.encode("unicode_escape", "backslashreplace").decode("ascii")
    return c


def mistyped(instance: object) -> tuple[str, str] | None:
    """The first field of an attrs instance that does not hold what its type says, and what
    is wrong with it; None if none is found. Only asked once something built from the
    instance failed, to say which field was wrong: the value objects check their fields
    where they parse input, not where code builds them."""
    cls: Any = type(instance)
    if not attrs.has(cls):
        return None
    hints = _hints(cls)
    for attribute in attrs.fields(cls):
        problem = _mismatch(getattr(instance, attribute.name), hints.get(attribute.name))
        if problem is not None:
            return attribute.name, problem
    return None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # a name only a type checker sees: nothing to say then
        return {}


def _mismatch(value: object, hint: object) -> str | None:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if any(_mismatch(value, option) is None for option in options):
            return None
        return _mismatch(value, next(o for o in options if o is not type(None)))
    if origin in (tuple, list):
        if not several(value):
            return f"must be a list, got {_named(value)}"
        item = next(iter(typing.get_args(hint)), None)
        for i, element in enumerate(value):
            problem = _mismatch(element, item)
            if problem is not None:
                return f"[{i}] {problem}"
        return None
    if origin in (dict, Mapping):
        return None if isinstance(value, Mapping) else f"must be a mapping, got {_named(value)}"
    if not isinstance(hint, type):
        return None  # Any, a type alias: nothing to hold the value to
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        return f"must be {with_article(hint.__name__)}, got {_named(value)}"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "contains a lone surrogate"
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return "is a datetime without a zone"
        try:
            value.astimezone(UTC)
        except OverflowError:
            return "is past the ends of time in UTC"
    return None


def type_name(value: object) -> str:
    """The type an error says a value has: a stored input is read as read-only dicts and
    lists, and is named so (not by the classes that keep it read-only)."""
    kind = type(value)
    return "dict" if kind is FrozenDict else "list" if kind is FrozenList else kind.__name__


def _named(value: object) -> str:
    return "None" if value is None else with_article(type(value).__name__)


def with_article(name: str) -> str:
    """`name` after a or an: what an error says a value must be."""
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def identifier(field: str, value: object) -> str:
    if not isinstance(value, str) or not IDENTIFIER.match(value):
        raise InvalidInput(field, f"must be {IDENTIFIER_RULE}")
    return plain(value)


def actor_name(field: str, value: object) -> str:
    if not isinstance(value, str) or not ACTOR_NAME.match(value):
        raise InvalidInput(field, f"must be {ACTOR_RULE}")
    return plain(value)


def plain(value: str) -> str:
    """The text a str subclass holds, as a str: its own methods (`casefold`, `__eq__`,
    `__hash__`) would otherwise decide who a name is, or fail, wherever it is compared."""
    return value if type(value) is str else str.__str__(value)


def same_person(a: str | None, b: str | None) -> bool:
    """Names compare case-insensitively: 'Operator' is the operator."""
    return a is not None and b is not None and person_key(a) == person_key(b)


def person_key(name: str) -> str:
    """What tells one person from another: case, width, accents, spaces and invisible
    characters aside. Commands take ASCII names only; this is for names a service hands the
    policies itself, where 'alice\u200b' or alice in full-width letters must not pass for
    someone other than alice (two people taken for one only ever refuses an approval)."""
    name = plain(name)
    if name.isascii() and name.isalnum():
        return name.casefold()
    # Folded first, as `casefold` alone compares: a letter with a subscript folds to two.
    decomposed = unicodedata.normalize("NFKD", name.casefold())
    kept = (
        c
        for c in decomposed
        if unicodedata.category(c) not in _NOT_TELLING and c not in _BLANK_LETTERS
    )
    return unicodedata.normalize("NFKC", "".join(kept).casefold())


# Marks, format (zero-width, bidi) and control characters, and separators (spaces).
_NOT_TELLING = frozenset(("Mn", "Me", "Cf", "Cc", "Zs", "Zl", "Zp"))
# Letters and symbols that show as nothing: the Hangul fillers and the blank braille cell.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def aware(field: str, value: object) -> datetime:
    """A timezone-aware instant, as a plain datetime: a subclass's own arithmetic (its
    `__rsub__`) would decide how old it is, and so whether an approval has expired."""
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidInput(field, "must be a timezone-aware datetime")
    if type(value) is datetime:
        return value
    # Read through datetime's own descriptors: a subclass may override the properties too.
    held = [getattr(datetime, name).__get__(value) for name in _DATETIME_FIELDS]
    return datetime(*held[:-1], fold=held[-1])


_DATETIME_FIELDS = (
    "year",
    "month",
    "day",
    "hour",
    "minute",
    "second",
    "microsecond",
    "tzinfo",
    "fold",
)


def several(values: object) -> TypeGuard[Iterable[Any]]:
    """Whether `values` is a collection of values, as a list is: not text (read as its
    letters), bytes or a mapping (its keys), and not a single value."""
    return isinstance(values, Iterable) and not isinstance(values, str | bytes | Mapping)


def listed(field: str, values: object, check: Callable[[str, Any], T]) -> tuple[T, ...]:
    """A list from a caller, each item checked as `field[i]`: a single value passed bare (a
    string would read as its letters) is refused. Any collection is taken (a set of ids)."""
    if not several(values):
        raise InvalidInput(field, f"must be a list, got {type_name(values)}")
    return tuple(check(f"{field}[{i}]", value) for i, value in enumerate(values))


def instance_of(kind: type[T]) -> Callable[[str, Any], T]:
    """A `listed` check that each item is a `kind`."""

    def check(field: str, value: Any) -> T:
        if not isinstance(value, kind):
            raise InvalidInput(field, f"must be a {kind.__name__}, got {type(value).__name__}")
        return value

    return check
