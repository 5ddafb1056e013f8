"""Names and identifiers: nothing may ride along after them, not even a final newline
(Python's `$` would let one through)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from attrs import evolve

from domain.model.environment import Environment
from domain.model.errors import InvalidInput, shown
from domain.model.runtime import RuntimeContext
from domain.model.validation import actor_name, aware, identifier, same_person, text
from ports.clock import FixedClock, SequentialIds
from ports.storage import count


@pytest.mark.parametrize("check", [actor_name, identifier])
@pytest.mark.parametrize("value", ["alice\n", "alice\r\n", "\nalice", "al ice", "", "a" * 129])
def test_a_name_with_anything_extra_is_refused(check: object, value: str) -> None:
    with pytest.raises(InvalidInput):
        check("name", value)  # type: ignore[operator]


@pytest.mark.parametrize("check", [actor_name, identifier])
def test_a_plain_name_passes_unchanged(check: object) -> None:
    assert check("name", "alice.b-2") == "alice.b-2"  # type: ignore[operator]


def test_people_compare_case_insensitively_and_never_match_nobody() -> None:
    assert same_person("Alice", "alice")
    assert not same_person("alice", "bob")
    assert not same_person(None, None)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("environment", "production"),
        ("tenant", "ac\x00me"),
        ("tenant", "acme corp"),
        ("service", ""),
        ("actor", "al ice"),
        ("actor", "alice\n"),
        ("trace_id", "trace\nforged line"),
        ("clock", "2025-01-01"),
        ("change_freeze", "no"),
        ("record_denials", None),
        ("ids", 7),
    ],
)
def test_a_runtime_context_built_by_hand_is_held_to_the_settings_rules(
    field: str, value: object
) -> None:
    """What a context says is written into every record a workflow makes."""
    good = RuntimeContext(
        environment=Environment.TEST,
        tenant="acme",
        service="svc",
        actor="alice@example.org",
        clock=FixedClock(datetime(2025, 1, 1, tzinfo=UTC)),
        ids=SequentialIds(),
        trace_id="trace-1",
    )
    with pytest.raises(InvalidInput) as refused:
        evolve(good, **{field: value})  # type: ignore[arg-type]
    assert refused.value.field == field


@pytest.mark.parametrize("blank", ["", " ", "\u200b", " \u2060\ufeff ", "\u3000"])
def test_text_that_shows_nothing_is_empty(blank: str) -> None:
    """A reason of a zero-width space reads as none in the audit trail."""
    with pytest.raises(InvalidInput, match="must not be empty"):
        text("reason", blank, max_len=100, single_line=True)
    assert text("reason", "\u200bwhy", max_len=100, single_line=True) == "\u200bwhy"


def test_bytes_that_are_not_utf8_are_said_to_be() -> None:
    given = b"\xff\xfe".decode("utf-8", "surrogateescape")  # as a command-line argument
    with pytest.raises(InvalidInput, match="no bytes that are not UTF-8"):
        text("title", given, max_len=100)


class _Unshowable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_a_refusal_holds_even_when_the_value_cannot_be_shown() -> None:
    """Before, the value's own failure replaced the refusal."""
    assert shown(_Unshowable()) == "<a _Unshowable>"
    with pytest.raises(ValueError, match=r"^limit must be an integer >= 1, got <a _Unshowable>"):
        count("limit", _Unshowable(), least=1)


class _Elsewhen(datetime):
    """An instant whose own properties and arithmetic say another time."""

    @property
    def year(self) -> int:
        return 2030

    def __rsub__(self, other: object) -> timedelta:
        return timedelta(0)


def test_an_instant_of_a_datetime_subclass_is_taken_as_the_instant_it_holds() -> None:
    taken = aware("granted_at", _Elsewhen(2025, 1, 2, 3, 4, 5, 6, tzinfo=UTC))
    assert type(taken) is datetime
    assert taken == datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    assert datetime(2025, 1, 3, tzinfo=UTC) - taken > timedelta(hours=20)
