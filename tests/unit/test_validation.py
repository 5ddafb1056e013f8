"""Names and identifiers: nothing may ride along after them, not even a final newline
(Python's `$` would let one through)."""

from __future__ import annotations

import pytest

from domain.model.errors import InvalidInput
from domain.model.validation import actor_name, identifier, same_person


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
