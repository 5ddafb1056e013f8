"""Pure model pieces the mutations rely on: the generator, artifact hash, chunks, envelopes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from attrs import evolve
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.model import analysis as analysis_model
from domain.model import capsule as capsule_model
from domain.model.capsule import Capsule, CapsuleStatus
from domain.model.errors import InvalidInput, InvalidState
from domain.model.evidence import EventEnvelope, EventType
from domain.model.knowledge import Classification, KnowledgeSource, SourceDraft
from domain.model.lifecycle import AuditEntry, ExecutionState
from tests.services.harness import START
from tests.services.strategies import hostile_text


def source(source_id: str, text: str, *, classification: str = "public") -> KnowledgeSource:
    d = SourceDraft.parse(
        kind="imf",
        title=f"title of {source_id}",
        source_url=f"https://www.imf.org/{source_id}",
        format="text",
        classification=classification,
        content_text=text,
    )
    return KnowledgeSource.acquire(d, source_id=source_id, tenant="t", acquired_at=START)


# -- the extractive generator ---------------------------------------------------------------

corpora = st.lists(hostile_text(max_pieces=8), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(texts=corpora, data=st.data())
def test_extract_is_a_pure_function_of_the_sources_not_of_their_order(
    texts: list[str], data: st.DataObject
) -> None:
    sources = [source(f"src-{i:03d}", t) for i, t in enumerate(texts)]
    shuffled = data.draw(st.permutations(sources))
    first = analysis_model.extract(sources)
    assert analysis_model.extract(sources) == first
    assert analysis_model.extract(shuffled) == first
    assert analysis_model.inputs_digest(shuffled) == analysis_model.inputs_digest(sources)


@settings(max_examples=60, deadline=None)
@given(texts=corpora)
def test_claims_cite_only_input_sources_that_contain_them(texts: list[str]) -> None:
    sources = [source(f"src-{i:03d}", t) for i, t in enumerate(texts)]
    by_id = {s.id: s for s in sources}
    claims, terms, rendered = analysis_model.extract(sources)
    assert claims, "every non-blank source yields at least one claim"
    assert len(terms) <= 10
    for claim in claims:
        assert claim.cited_source_ids
        assert set(claim.cited_source_ids) <= set(by_id)
        assert len(claim.cited_source_ids) == len(set(claim.cited_source_ids))
        for cited in claim.cited_source_ids:
            normalised = " ".join(by_id[cited].content_text.split())
            assert claim.text[:200] in normalised
        assert claim.text in rendered
    assert rendered.startswith("Key terms: ")


def test_a_sentence_shared_by_sources_cites_all_of_them() -> None:
    shared = "Inflation expectations remain firmly anchored."
    a = source("src-a", f"{shared} Growth slows in Europe.")
    b = source("src-b", f"Commodity prices rise. {shared}")
    claims, _, _ = analysis_model.extract([b, a])
    cited = {c.text: c.cited_source_ids for c in claims}
    assert cited[shared] == ("src-a", "src-b")


def test_inputs_digest_depends_on_content_and_generator() -> None:
    a, b = source("src-a", "One. Two."), source("src-b", "Three. Four.")
    changed = source("src-b", "Three. Five.")
    assert analysis_model.inputs_digest([a, b]) != analysis_model.inputs_digest([a, changed])
    assert analysis_model.inputs_digest([a]) != analysis_model.inputs_digest([a, b])


# -- capsule artifacts ----------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(texts=corpora, data=st.data())
def test_artifact_hash_and_chunks_ignore_source_order(
    texts: list[str], data: st.DataObject
) -> None:
    sources = [source(f"src-{i:03d}", t) for i, t in enumerate(texts)]
    shuffled = data.draw(st.permutations(sources))
    assert capsule_model.artifact_hash(shuffled) == capsule_model.artifact_hash(sources)
    assert capsule_model.chunk(shuffled) == capsule_model.chunk(sources)


def test_artifact_hash_changes_with_any_source_content() -> None:
    a, b = source("src-a", "One."), source("src-b", "Two.")
    assert capsule_model.artifact_hash([a, b]) != capsule_model.artifact_hash(
        [a, source("src-b", "Two!")]
    )


def test_chunks_cover_each_source_in_order_with_running_indexes() -> None:
    long = source("src-b", "x" * (capsule_model.CHUNK_SIZE * 2 + 5))
    short = source("src-a", "short")
    chunks = capsule_model.chunk([long, short], size=capsule_model.CHUNK_SIZE)
    assert [(c.index, c.source_id, len(c.text)) for c in chunks] == [
        (0, "src-a", 5),
        (1, "src-b", capsule_model.CHUNK_SIZE),
        (2, "src-b", capsule_model.CHUNK_SIZE),
        (3, "src-b", 5),
    ]
    assert "".join(c.text for c in chunks if c.source_id == "src-b") == long.content_text


def test_the_capsule_takes_the_highest_classification() -> None:
    sources = [
        source("a", "A.", classification="internal"),
        source("b", "B.", classification="confidential"),
        source("c", "C.", classification="public"),
    ]
    assert capsule_model.highest_classification(sources) is Classification.CONFIDENTIAL


def test_only_a_published_capsule_can_be_retracted() -> None:
    capsule = Capsule(
        id="cap-1",
        tenant="t",
        publication_id="pub-1",
        title="t",
        source_ids=("a",),
        analysis_ids=(),
        artifact_hash="h",
        chunks=(),
        classification=Classification.PUBLIC,
        retention_class="standard",
        status=CapsuleStatus.PUBLISHED,
        published_at=START,
    )
    later = START + timedelta(hours=1)
    retracted = capsule.retract(at=later, reason="wrong data")
    assert (retracted.status, retracted.retracted_at, retracted.retraction_reason) == (
        CapsuleStatus.RETRACTED,
        later,
        "wrong data",
    )
    assert capsule.status is CapsuleStatus.PUBLISHED  # frozen: a changed copy
    with pytest.raises(InvalidState):
        retracted.retract(at=later, reason="again")


# -- event envelopes ------------------------------------------------------------------------


def envelope(**overrides: object) -> EventEnvelope:
    fields: dict[str, object] = {
        "id": "evt-1",
        "tenant": "t",
        "type": EventType.SOURCE_INGESTED,
        "actor": "alice",
        "occurred_at": START,
        "correlation_id": "trace-1",
        "causation_id": "evd-1",
        "decision_ref": "dec-1",
        "classification": Classification.PUBLIC,
        "payload": {"source_id": "src-1", "list": [1, 2], "text": "é'; --{}"},
    }
    fields.update(overrides)
    return EventEnvelope(**fields)  # type: ignore[arg-type]


def test_a_sealed_event_is_intact_and_an_unsealed_one_is_not() -> None:
    raw = envelope()
    assert not raw.intact
    sealed = raw.sealed()
    assert sealed.intact
    assert sealed.integrity_hash == raw.compute_hash()


@pytest.mark.parametrize(
    "payload",
    [
        {"rate": float("nan")},
        {"rate": float("inf")},
        {"at": START},
        {"text": "lone \udc00"},
        {1: "a", "1": "b"},
    ],
    ids=["nan", "infinity", "datetime", "surrogate", "mixed-keys"],
)
def test_an_event_whose_payload_is_not_json_is_refused_when_sealed(payload: Any) -> None:
    with pytest.raises(InvalidInput, match=r"^payload"):
        envelope(payload=payload).sealed()


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("type", "knowledge.source_ingested", "must be an EventType, got a str"),
        ("tenant", b"t", "must be a str, got a bytes"),
        ("actor", "al\ud800ice", "contains a lone surrogate"),
        (
            "occurred_at",
            datetime.min.replace(tzinfo=timezone(timedelta(hours=14))),
            "past the ends of time in UTC",
        ),
    ],
    ids=["type-as-text", "bytes", "surrogate", "no-utc-instant"],
)
def test_an_event_with_a_field_that_cannot_be_hashed_is_refused_by_name(
    field: str, value: object, problem: str
) -> None:
    """Before, each was an AttributeError, TypeError, UnicodeEncodeError or OverflowError."""
    with pytest.raises(InvalidInput, match=problem) as caught:
        envelope(**{field: value}).sealed()
    assert caught.value.field == field


def test_a_payload_nested_past_what_can_be_encoded_is_refused_when_sealed() -> None:
    deep: dict[str, Any] = {}
    for _ in range(5000):
        deep = {"d": deep}
    with pytest.raises(InvalidInput, match=r"^payload.*nested too deeply"):
        envelope(payload=deep).sealed()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tenant", "other"),
        ("type", EventType.CAPSULE_PUBLISHED),
        ("actor", "mallory"),
        ("occurred_at", START + timedelta(microseconds=1)),
        ("correlation_id", "trace-2"),
        ("causation_id", "evd-2"),
        ("decision_ref", "dec-forged"),
        ("classification", Classification.RESTRICTED),
        ("payload", {"source_id": "src-2", "list": [1, 2], "text": "é'; --{}"}),
        ("schema_version", 2),
    ],
)
def test_any_edit_to_a_sealed_event_is_detected(field: str, value: Any) -> None:
    tampered = evolve(envelope().sealed(), **{field: value})
    assert not tampered.intact


def test_the_position_is_not_part_of_the_hash() -> None:
    sealed = envelope().sealed()
    assert evolve(sealed, position=7).intact


def test_the_integrity_hash_does_not_depend_on_the_time_zone_of_the_instant() -> None:
    """A store that hands instants back in UTC (SurrealDB does) must not break `intact`."""
    local = START.astimezone(timezone(timedelta(hours=2)))
    sealed = envelope(occurred_at=local).sealed()
    assert evolve(sealed, occurred_at=local.astimezone(UTC)).intact


def test_the_audit_hash_does_not_depend_on_the_time_zone_of_the_instant() -> None:
    fields = {
        "execution_id": "exe-1",
        "sequence": 1,
        "from_state": None,
        "to_state": ExecutionState.PENDING,
        "actor": "alice",
        "reason": "start",
        "step": None,
        "correlation_id": "trace-1",
        "prev_hash": "",
    }
    local = START.astimezone(timezone(timedelta(hours=-5)))
    assert AuditEntry.digest(at=local, **fields) == AuditEntry.digest(  # type: ignore[arg-type]
        at=local.astimezone(UTC),
        **fields,  # type: ignore[arg-type]
    )


# Computed by the digest before entries could pin anything: stored trails keep verifying.
_OLD_FORMAT = {
    "execution_id": "wfx-1",
    "sequence": 2,
    "from_state": ExecutionState.PENDING,
    "to_state": ExecutionState.RUNNING,
    "at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    "actor": "alice",
    "reason": "started",
    "step": None,
    "correlation_id": "trace-1",
    "prev_hash": "a" * 64,
}
_OLD_HASH = "330e113ffacf23bd40876ec608d0b85b137c8b2c9374eed2e2fd01673639efdd"


def test_an_entry_that_pins_nothing_hashes_as_entries_always_did() -> None:
    assert AuditEntry.digest(**_OLD_FORMAT) == _OLD_HASH  # type: ignore[arg-type]


def test_what_an_entry_pins_is_covered_by_its_hash() -> None:
    pinned = AuditEntry.digest(**_OLD_FORMAT, pinned='{"input_sha256":"x"}')  # type: ignore[arg-type]
    assert pinned != _OLD_HASH
    assert pinned != AuditEntry.digest(**_OLD_FORMAT, pinned='{"input_sha256":"y"}')  # type: ignore[arg-type]


def test_approval_times_are_stored_in_utc_as_the_same_instant() -> None:
    from adapters.contract import samples
    from domain.model.policy import Approval
    from ports import records

    x = samples.execution()
    granted = START.astimezone(timezone(timedelta(hours=5, minutes=45)))
    x.approvals = (Approval("alice", "reviewer", granted),)
    doc = records.execution_doc(x, 1)
    assert "+05:45" not in doc["approvals_json"] and "+00:00" in doc["approvals_json"]
    (read,) = records.execution_from(x.id, doc, records.execution_input_doc(x)).approvals
    assert read.granted_at == granted and read.granted_at.utcoffset() == timedelta(0)


def test_a_fixed_clock_starts_at_an_aware_instant() -> None:
    """A naive one was refused only as a record was written, or compared with an aware
    approval as a TypeError (found by a new user building a runtime by hand)."""
    from datetime import UTC, datetime

    from domain.model.errors import InvalidInput
    from ports.clock import FixedClock

    with pytest.raises(InvalidInput, match="start: must be a timezone-aware datetime"):
        FixedClock(datetime(2026, 11, 25))
    clock = FixedClock(datetime(2026, 11, 25, tzinfo=UTC))
    assert clock.now().tzinfo is UTC
    with pytest.raises(InvalidInput, match="delta: must be a timedelta, got int"):
        clock.advance(5)  # type: ignore[arg-type]  # (a TypeError from inside, h155)
    assert clock.now() == datetime(2026, 11, 25, tzinfo=UTC)
