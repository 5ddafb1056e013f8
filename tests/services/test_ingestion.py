"""Knowledge ingestion through the service, on the in-memory store (test_handlers style)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.model.errors import InvalidInput, PolicyDenied
from domain.model.knowledge import sha256_hex
from domain.model.policy import Approval, ImpactTier
from domain.services.governance import ApprovalRequired
from domain.services.knowledge import MAX_BATCH
from ports import records
from ports.clock import FixedClock, SequentialIds
from tests.services.harness import (
    ACTOR,
    ALLOWED_URLS,
    OTHER_TENANT,
    POLICY_REFS,
    SERVICE,
    START,
    TENANT,
    TRACE,
    Harness,
    draft,
    make_runtime,
)

EMPTY = {
    "knowledge_source": 0,
    "analysis": 0,
    "capsule": 0,
    "evidence": 0,
    "decision": 0,
    "event": 0,
    "execution": 0,
    "audit": 0,
    "execution_input": 0,
}


class TestIngestion:
    def test_writes_source_evidence_event_and_decision_in_one_unit(self, h: Harness) -> None:
        d = draft()
        result = h.ingest(d)

        assert h.store.commits == 1
        assert h.counts() == EMPTY | {
            "knowledge_source": 1,
            "evidence": 1,
            "decision": 1,
            "event": 1,
        }
        assert result.created == ("src-000002",)
        assert [s.id for s in result.sources] == ["src-000002"]

        source = h.table("knowledge_source")["src-000002"]
        assert source["tenant"] == TENANT
        assert source["source_url"] == d.source_url
        assert source["content_digest"] == sha256_hex(d.content_text)
        assert source["acquired_at"] == START
        assert (source["provenance_tier"], source["evidence_use"]) == ("primary", "evidence")

        decision = h.table("decision")["dec-000001"]
        assert decision["allowed"] is True
        assert decision["action"] == "ingest_sources"
        assert decision["target"] == "knowledge_source:batch of 1"
        assert decision["policy_refs"] == list(POLICY_REFS)
        assert decision["decided_at"] == START

        evidence = h.table("evidence")["evd-000003"]
        assert evidence["subject"] == "knowledge_source:src-000002"
        assert evidence["artifact_hash"] == source["content_digest"]
        assert evidence["decision_ids"] == ["dec-000001"]
        assert (evidence["producer"], evidence["actor"]) == (SERVICE, ACTOR)
        assert evidence["recorded_at"] == START

        (event_doc,) = h.store.events
        event = records.event_from(event_doc)
        assert event.id == "evt-000004"
        assert event.type.value == "knowledge.source_ingested"
        assert event.position == 1
        assert (event.decision_ref, event.causation_id) == ("dec-000001", "evd-000003")
        assert (event.correlation_id, event.actor, event.tenant) == (TRACE, ACTOR, TENANT)
        assert event.occurred_at == START
        assert event.payload["source_id"] == "src-000002"
        assert event.payload["evidence_id"] == "evd-000003"
        assert event.intact

    def test_a_batch_gets_one_decision_and_evidence_and_an_event_per_source(
        self, h: Harness
    ) -> None:
        result = h.ingest(
            draft(),
            draft(kind="bis", source_url=ALLOWED_URLS["bis"], content_text="Basel III."),
        )
        assert result.created == ("src-000002", "src-000005")
        assert sorted(h.table("evidence")) == ["evd-000003", "evd-000006"]
        assert [e["event_id"] for e in h.store.events] == ["evt-000004", "evt-000007"]
        assert list(h.table("decision")) == ["dec-000001"]
        assert {e["decision_ref"] for e in h.store.events} == {"dec-000001"}
        assert h.store.commits == 1

    def test_ids_and_timestamps_come_from_the_injected_ports(self) -> None:
        clock, ids = FixedClock(START), SequentialIds(start=41)
        h = Harness.build()
        h.runtime = make_runtime(clock=clock, ids=ids)
        first = h.ingest(draft())
        clock.advance(timedelta(hours=3, microseconds=7))
        second = h.ingest(draft(content_text="A revised outlook."))

        assert first.created == ("src-000043",)
        assert second.created == ("src-000047",)
        assert sorted(h.table("decision")) == ["dec-000042", "dec-000046"]
        assert sorted(h.table("evidence")) == ["evd-000044", "evd-000048"]
        assert [e["event_id"] for e in h.store.events] == ["evt-000045", "evt-000049"]
        later = START + timedelta(hours=3, microseconds=7)
        assert h.table("knowledge_source")["src-000047"]["acquired_at"] == later
        assert h.table("decision")["dec-000046"]["decided_at"] == later
        assert h.table("evidence")["evd-000048"]["recorded_at"] == later
        assert h.store.events[1]["occurred_at"] == later
        assert h.table("knowledge_source")["src-000043"]["acquired_at"] == START

    def test_uncommitted_work_is_discarded(self, h: Harness) -> None:
        with h.store.unit_of_work() as uow:
            h.service.ingest(uow, h.runtime, h.enforcement(), [draft()])
            assert uow.sources.get("src-000002") is not None  # the unit sees its own writes
        assert h.counts() == EMPTY
        assert h.store.commits == 0

    def test_an_enforcement_context_of_another_tenant_is_refused(self, h: Harness) -> None:
        other = h.enforcement(h.as_tenant("globex"))
        with pytest.raises(InvalidInput) as refused:
            h.ingest(draft(), enforcement=other)
        assert refused.value.field == "tenant" and "globex" in refused.value.problem
        assert h.counts() == EMPTY

    def test_secondary_sources_are_context_only(self, h: Harness) -> None:
        result = h.ingest(
            draft(kind="secondary_context", source_url=ALLOWED_URLS["secondary_context"])
        )
        (source,) = result.sources
        assert source.provenance_tier.value == "secondary"
        assert source.evidence_use.value == "context_only"
        assert h.store.events[0]["payload_json"].count('"evidence_use":"context_only"') == 1


class TestIngestionDenied:
    def test_one_disallowed_source_rejects_the_whole_batch_naming_its_url(self, h: Harness) -> None:
        bad_url = "https://imf.org.evil.com/weo"
        batch = [
            draft(),
            draft(source_url=bad_url, content_text="Counterfeit outlook."),
            draft(kind="bis", source_url=ALLOWED_URLS["bis"], content_text="Basel III."),
        ]
        with pytest.raises(PolicyDenied) as caught:
            h.ingest(*batch)

        assert not isinstance(caught.value, ApprovalRequired)
        assert caught.value.reasons == (
            f"source url: {bad_url!r} is not allowed for kind imf (hosts under imf.org)",
        )
        assert bad_url in str(caught.value)
        assert caught.value.decision_id == "dec-000001"
        # Nothing written but the recorded denial: its decision and its evidence.
        assert h.counts() == EMPTY | {"decision": 1, "evidence": 1}
        decision = h.table("decision")["dec-000001"]
        assert decision["allowed"] is False
        assert decision["reasons"] == list(caught.value.reasons)
        (evidence,) = h.table("evidence").values()
        assert evidence["decision_ids"] == ["dec-000001"]
        assert evidence["subject"] == "knowledge_source:batch of 3"

    def test_social_media_is_denied_even_as_secondary_context(self, h: Harness) -> None:
        url = "https://twitter.com/imfnews/status/1"
        with pytest.raises(PolicyDenied) as caught:
            h.ingest(draft(kind="secondary_context", source_url=url))
        assert caught.value.reasons == (
            f"source url: {url!r} is not allowed for kind secondary_context"
            " (any host but social media)",
        )
        assert h.counts() == EMPTY | {"decision": 1, "evidence": 1}

    def test_a_change_freeze_denies_tier1_and_lets_tier0_through(self) -> None:
        h = Harness.build(change_freeze=True)
        with pytest.raises(PolicyDenied) as caught:
            h.ingest(draft(), enforcement=h.enforcement(tier=ImpactTier.TIER1))
        assert caught.value.reasons[0].startswith("change freeze:")
        assert h.table("knowledge_source") == {}

        result = h.ingest(draft(), enforcement=h.enforcement(tier=ImpactTier.TIER0))
        assert len(result.created) == 1

    def test_missing_approvals_raise_approval_required_and_are_recorded(self, h: Harness) -> None:
        with pytest.raises(ApprovalRequired) as caught:
            h.ingest(draft(), enforcement=h.enforcement(tier=ImpactTier.TIER2))
        assert isinstance(caught.value, PolicyDenied)
        assert h.counts() == EMPTY | {"decision": 1, "evidence": 1}
        assert h.table("decision")[str(caught.value.decision_id)]["allowed"] is False

        granted = [Approval("bob", "risk", START), Approval("carol", "legal", START)]
        enforcement = h.enforcement(tier=ImpactTier.TIER2, approvals=granted)
        result = h.ingest(draft(), enforcement=enforcement)
        (evidence,) = [
            e for e in h.table("evidence").values() if e["subject"].endswith(result.created[0])
        ]
        assert "bob" in evidence["approvals_json"]
        assert "carol" in evidence["approvals_json"]

    def test_missing_policy_refs_are_denied_and_recorded(self, h: Harness) -> None:
        with pytest.raises(PolicyDenied) as caught:
            h.ingest(draft(), enforcement=h.enforcement(policy_refs=()))
        assert caught.value.reasons == ("policy refs: at least one policy ref is required",)
        assert h.counts() == EMPTY | {"decision": 1, "evidence": 1}


class TestIngestionIdempotence:
    def test_identical_content_for_the_same_tenant_and_url_returns_the_existing_source(
        self, h: Harness
    ) -> None:
        first = h.ingest(draft())
        before = h.snapshot()

        again = h.ingest(draft())

        assert again.sources == first.sources
        assert again.created == ()
        assert h.snapshot() == before  # no new source, evidence, event or decision

    def test_an_existing_source_in_a_mixed_batch_is_reused_and_only_new_ones_recorded(
        self, h: Harness
    ) -> None:
        (existing,) = h.ingest(draft()).sources
        fresh = draft(kind="fsb", source_url=ALLOWED_URLS["fsb"], content_text="FSB note.")
        result = h.ingest(draft(), fresh)
        assert result.sources[0] == existing
        assert result.created == (result.sources[1].id,)
        assert len(h.table("knowledge_source")) == 2
        assert len(h.store.events) == 2
        assert len(h.table("evidence")) == 2

    def test_the_same_source_twice_in_one_batch_is_stored_once(self, h: Harness) -> None:
        result = h.ingest(draft(), draft())
        assert result.sources[0] == result.sources[1]
        assert len(result.created) == 1
        assert len(h.table("knowledge_source")) == 1
        assert len(h.store.events) == 1

    def test_changed_content_at_the_same_url_is_a_new_source(self, h: Harness) -> None:
        first = h.ingest(draft())
        second = h.ingest(draft(content_text="The outlook was revised."))
        assert second.created and second.created != first.created
        assert len(h.table("knowledge_source")) == 2

    def test_identical_content_for_another_tenant_is_a_new_source(self, h: Harness) -> None:
        first = h.ingest(draft())
        other = h.as_tenant(OTHER_TENANT)
        second = h.ingest(draft(), runtime=other)
        assert second.created and second.created != first.created
        assert h.table("knowledge_source")[second.created[0]]["tenant"] == OTHER_TENANT


class TestIngestionInput:
    def test_an_empty_batch_is_invalid_and_writes_nothing(self, h: Harness) -> None:
        with pytest.raises(InvalidInput) as caught:
            h.ingest()
        assert caught.value.field == "sources"
        assert h.counts() == EMPTY

    def test_an_oversized_batch_is_invalid_and_writes_nothing(self, h: Harness) -> None:
        drafts = [draft(content_text=f"Report number {i}.") for i in range(MAX_BATCH + 1)]
        with pytest.raises(InvalidInput) as caught:
            h.ingest(*drafts)
        assert caught.value.field == "sources"
        assert h.counts() == EMPTY

    def test_a_full_batch_is_accepted(self, h: Harness) -> None:
        drafts = [draft(content_text=f"Report number {i}.") for i in range(MAX_BATCH)]
        assert len(h.ingest(*drafts).created) == MAX_BATCH
        assert len(h.store.events) == MAX_BATCH
        assert len(h.table("decision")) == 1


def test_a_bare_id_or_draft_where_a_list_is_due_is_refused_naming_it(h: Harness) -> None:
    """A string would otherwise be read as its letters: "unknown knowledge source: s"."""
    (source,) = h.ingest(draft()).sources
    before = h.counts()
    with h.store.unit_of_work() as uow:
        for call, field in [
            (lambda: h.service.ingest(uow, h.runtime, h.enforcement(), draft()), "sources"),  # type: ignore[arg-type]
            (
                lambda: h.service.generate_analysis(uow, h.runtime, h.enforcement(), source.id),
                "source_ids",
            ),
            (
                lambda: h.service.ingest(uow, h.runtime, h.enforcement(), ["text"]),  # type: ignore[list-item]
                "sources[0]",
            ),
            (
                lambda: h.service.publish(
                    uow,
                    h.runtime,
                    h.enforcement(),
                    publication_id="p-1",
                    title="T",
                    source_ids=[source.id],
                    analysis_ids="ana-1",
                ),
                "analysis_ids",
            ),
        ]:
            with pytest.raises(InvalidInput) as refused:
                call()  # type: ignore[no-untyped-call]
            assert refused.value.field == field
        uow.commit()
    assert h.counts() == before


def test_ids_may_come_in_any_collection(h: Harness) -> None:
    (source,) = h.ingest(draft()).sources
    with h.store.unit_of_work() as uow:  # a set, as a caller deduplicating them has it
        analysis = h.service.generate_analysis(uow, h.runtime, h.enforcement(), {source.id})  # type: ignore[arg-type]
        uow.commit()
    assert analysis.source_ids == (source.id,)
