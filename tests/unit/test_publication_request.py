"""PublicationRequest.parse: any untrusted input is either a request or a typed InvalidInput."""

from __future__ import annotations

from typing import Any

import pytest

from domain.model.errors import InvalidInput
from domain.model.frozen import read_only
from domain.workflows.knowledge_publication import PublicationRequest


def raw_request(**changes: Any) -> dict[str, Any]:
    document = {
        "kind": "imf",
        "title": "Note",
        "source_url": "https://www.imf.org/en/x",
        "format": "text",
        "classification": "public",
        "content_text": "Inflation eased. Growth held up.",
    }
    return {
        "documents": [document],
        "title": "Briefing",
        "publication_id": "pub-1",
        "policy_refs": ["POL-KNOWLEDGE-1"],
        "required_roles": [],
    } | changes


def document(**changes: Any) -> dict[str, Any]:
    return dict(raw_request()["documents"][0]) | changes


def test_a_valid_request_round_trips_through_its_input() -> None:
    request = PublicationRequest.parse(raw_request())
    assert PublicationRequest.parse(request.to_input()) == request
    assert PublicationRequest.parse(raw_request(documents=(document(),))) == request


@pytest.mark.parametrize("raw", [None, [], "x", 3, ("documents",)])
def test_a_request_that_is_not_a_mapping_is_invalid_input(raw: object) -> None:
    with pytest.raises(InvalidInput) as refused:
        PublicationRequest.parse(raw)
    assert refused.value.field == "input"
    assert "publication request must be an object" in refused.value.problem
    assert type(raw).__name__ in refused.value.problem


def test_unknown_keys_are_refused_and_named() -> None:
    with pytest.raises(InvalidInput) as refused:
        PublicationRequest.parse(raw_request(titel="Typo", extra=1))
    assert refused.value.field == "input"
    assert "unknown keys 'extra', 'titel'" in refused.value.problem
    assert "allowed: documents, title" in refused.value.problem


def test_unknown_document_keys_are_refused_and_named() -> None:
    with pytest.raises(InvalidInput) as refused:
        PublicationRequest.parse(raw_request(documents=[document(url="https://x.org")]))
    assert refused.value.field == "documents[0]"
    assert "unknown key 'url'" in refused.value.problem


@pytest.mark.parametrize("key", ["kind", "format", "classification", "title", "content_text"])
@pytest.mark.parametrize("absent", ["removed", "null"])
def test_a_missing_document_field_is_reported_as_missing(key: str, absent: str) -> None:
    doc = document()
    if absent == "removed":
        del doc[key]
    else:
        doc[key] = None
    with pytest.raises(InvalidInput) as refused:
        PublicationRequest.parse(raw_request(documents=[document(), doc]))
    assert refused.value.field == f"documents[1].{key}"
    assert refused.value.problem == "missing"


@pytest.mark.parametrize("key", ["title", "publication_id"])
@pytest.mark.parametrize("absent", ["removed", "null"])
def test_a_missing_request_field_is_reported_as_missing(key: str, absent: str) -> None:
    raw = raw_request()
    if absent == "removed":
        del raw[key]
    else:
        raw[key] = None
    with pytest.raises(InvalidInput) as refused:  # was "must be a string, got NoneType"
        PublicationRequest.parse(raw)
    assert (refused.value.field, refused.value.problem) == (key, "missing")


def test_a_value_of_a_read_only_input_is_named_by_its_json_type() -> None:
    stored = read_only(raw_request(policy_refs=[{"a": 1}, ["b"]]))
    with pytest.raises(InvalidInput, match=r"policy_refs\[0\]: must be a string, got dict$"):
        PublicationRequest.parse(stored)
    with pytest.raises(InvalidInput, match=r"policy_refs\[0\]: must be a string, got list$"):
        PublicationRequest.parse(read_only(raw_request(policy_refs=[["b"]])))


@pytest.mark.parametrize("doc", [None, "text", ["kind", "imf"]])
def test_a_document_that_is_not_a_mapping_is_named_by_position(doc: object) -> None:
    with pytest.raises(InvalidInput) as refused:
        PublicationRequest.parse(raw_request(documents=[doc]))
    assert refused.value.field == "documents[0]"
    assert "must be an object" in refused.value.problem


def test_a_bad_value_is_still_named_by_its_path() -> None:
    with pytest.raises(InvalidInput) as refused:
        PublicationRequest.parse(raw_request(documents=[document(kind="nope")]))
    assert refused.value.field == "documents[0].kind"
    assert "'nope' is not one of" in refused.value.problem


@pytest.mark.parametrize(
    ("documents", "problem"),
    [("zzz", "must be a list of documents"), ({"a": 1}, "must be a list"), ([], "at least one")],
)
def test_documents_must_be_a_non_empty_list(documents: object, problem: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        PublicationRequest.parse(raw_request(documents=documents))
    assert refused.value.field == "documents" and problem in refused.value.problem


@pytest.mark.parametrize("role", ["legal team", "légal", "_reviewer"])
def test_a_required_role_no_approver_could_name_is_refused(role: str) -> None:
    """`approve --role` takes actor names only: any other role could never be satisfied."""
    with pytest.raises(InvalidInput) as refused:
        PublicationRequest.parse(raw_request(required_roles=["reviewer", role]))
    assert refused.value.field == "required_roles[1]"
    assert "starting with a letter or digit" in refused.value.problem


def test_required_roles_that_are_actor_names_are_kept() -> None:
    request = PublicationRequest.parse(raw_request(required_roles=["risk_officer", "legal.eu"]))
    assert request.required_roles == ("risk_officer", "legal.eu")


def test_the_steps_of_a_run_parse_its_input_once_and_keep_nothing_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gc
    from types import SimpleNamespace
    from typing import cast

    from domain.model.frozen import read_only
    from domain.orchestration.definition import StepContext
    from domain.workflows import knowledge_publication as kp

    parsed: list[object] = []
    parse = PublicationRequest.parse

    def counting(raw: object, *, bounded: bool = True) -> PublicationRequest:
        parsed.append(raw)
        return parse(raw, bounded=bounded)

    monkeypatch.setattr(PublicationRequest, "parse", counting)

    def step(given: object) -> StepContext:
        return cast(StepContext, SimpleNamespace(input=given))

    run_input = read_only(raw_request())  # as every step of one run reads it
    assert kp._request(step(run_input)) is kp._request(step(run_input))
    assert len(parsed) == 1
    mutable = raw_request()
    kp._request(step(mutable))
    kp._request(step(mutable))
    assert len(parsed) == 3  # a mutable input may change between steps: parsed each time
    kp._request(step(run_input))
    assert len(parsed) == 3
    del run_input, parsed[:]
    gc.collect()
    assert kp._parsed is None  # the input gone, its parsed copy goes with it


@pytest.mark.parametrize(("key", "most"), [("policy_refs", 100), ("required_roles", 20)])
def test_lists_every_decision_records_are_bounded(key: str, most: int) -> None:
    """Every decision and manifest of the run records them; SurrealDB's time for a list of
    tens of thousands grows far faster than the list."""
    assert len(getattr(PublicationRequest.parse(raw_request(**{key: ["r"] * most})), key)) == most
    with pytest.raises(InvalidInput) as refused:
        PublicationRequest.parse(raw_request(**{key: ["r"] * (most + 1)}))
    assert refused.value.field == key and f"at most {most} allowed" in refused.value.problem


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"title": "two\nlines"}, "title"),
        ({"documents": [document(title="a\x1b[2Jb")]}, "documents[0].title"),
        (
            {"documents": [document(source_url="https://www.imf.org/\u202ex")]},
            "documents[0].source_url",
        ),
        ({"documents": [document(content_text="\u200b")]}, "documents[0].content_text"),
    ],
)
def test_texts_a_new_request_may_not_hold_are_read_from_a_stored_one(
    changes: dict[str, Any], field: str
) -> None:
    """Checks added since an execution was stored must not fail it half-way through its run."""
    with pytest.raises(InvalidInput) as refused:
        PublicationRequest.parse(raw_request(**changes))
    assert refused.value.field == field
    assert PublicationRequest.parse(raw_request(**changes), bounded=False)


def test_one_document_given_twice_is_refused_naming_both() -> None:
    twice = raw_request(documents=[document(), document(title="Same, retitled"), document()])
    with pytest.raises(InvalidInput) as refused:
        PublicationRequest.parse(twice)
    assert refused.value.field == "documents[1]"
    assert refused.value.problem == "repeats documents[0] (the same source_url and content)"
    assert PublicationRequest.parse(twice, bounded=False)  # stored before: still read
    other = raw_request(documents=[document(), document(content_text="A later edition.")])
    assert len(PublicationRequest.parse(other).documents) == 2


@pytest.mark.parametrize("ref", ["\x1b]0;PWN\x07", "POL-1\nPOL-2", "\u202eRTL\x85"])
def test_a_new_requests_policy_references_are_one_line_without_control_characters(
    ref: str,
) -> None:
    """Title, key, reason and role refused them; a policy reference took an escape sequence
    into the audit-chained input (found by an operator's pass)."""
    with pytest.raises(InvalidInput, match=r"policy_refs\[1\]: must be one line"):
        PublicationRequest.parse(raw_request(policy_refs=["POL-KNOWLEDGE-1", ref]))
    stored = PublicationRequest.parse(raw_request(policy_refs=[ref]), bounded=False)
    assert stored.policy_refs == (ref,)  # one stored before is still read
