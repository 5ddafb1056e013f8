"""Capsule publication (exactly once per publication id) and its compensation, retraction."""

from __future__ import annotations

from datetime import timedelta

import pytest
from attrs import evolve

from domain.model import capsule as capsule_model
from domain.model.capsule import CapsuleStatus
from domain.model.environment import Environment
from domain.model.errors import AlreadyPublished, InvalidInput, PolicyDenied, UnknownReference
from domain.model.knowledge import KnowledgeSource
from ports import records
from ports.errors import DuplicateRecord
from tests.services.harness import (
    ALLOWED_URLS,
    OTHER_TENANT,
    START,
    TENANT,
    Harness,
    QueryProbe,
    draft,
)


def sources(h: Harness) -> list[str]:
    result = h.ingest(
        draft(content_text="Global inflation is easing. Growth is resilient."),
        draft(
            kind="bis",
            source_url=ALLOWED_URLS["bis"],
            classification="confidential",
            content_text="Capital buffers are rising. Liquidity improved.",
        ),
    )
    return list(result.created)  # src-000002, src-000005 (dec-1, evd/evt 3-4, 6-7)


def stored_sources(h: Harness, ids: list[str]) -> list[KnowledgeSource]:
    return [records.source_from(i, h.table("knowledge_source")[i]) for i in ids]


def legacy_source(h: Harness) -> KnowledgeSource:
    """A source that reached storage without evidence (e.g. a legacy import)."""
    bare = KnowledgeSource.acquire(
        draft(source_url=ALLOWED_URLS["imf"] + "/legacy"),
        source_id="src-legacy",
        tenant=TENANT,
        acquired_at=START,
    )
    with h.store.unit_of_work() as uow:
        uow.sources.add(bare)
        uow.commit()
    return bare


class TestPublication:
    def test_writes_capsule_evidence_event_and_decision_in_one_unit(self, h: Harness) -> None:
        source_ids = sources(h)
        commits, before = h.store.commits, h.counts()

        capsule = h.publish(source_ids, publication_id="pub-1", title="Inflation capsule")

        assert h.store.commits == commits + 1
        assert h.counts() == before | {
            "capsule": 1,
            "decision": before["decision"] + 1,
            "evidence": before["evidence"] + 1,
            "event": before["event"] + 1,
        }
        assert capsule.id == "cap-000009"
        assert (capsule.tenant, capsule.publication_id) == (TENANT, "pub-1")
        assert capsule.status is CapsuleStatus.PUBLISHED
        assert capsule.published_at == START
        assert capsule.source_ids == tuple(sorted(source_ids))
        assert capsule.classification.value == "confidential"  # the highest of its sources
        expected_hash = capsule_model.artifact_hash(stored_sources(h, source_ids))
        assert capsule.artifact_hash == expected_hash
        assert capsule.chunks == capsule_model.chunk(stored_sources(h, source_ids))
        assert records.capsule_from(capsule.id, h.table("capsule")[capsule.id]) == capsule

        decision = h.table("decision")["dec-000008"]
        assert (decision["action"], decision["allowed"]) == ("publish_capsule", True)
        assert decision["target"] == "capsule:pub-1"
        evidence = h.table("evidence")["evd-000010"]
        assert evidence["subject"] == "capsule:cap-000009"
        assert evidence["artifact_hash"] == expected_hash
        assert evidence["decision_ids"] == ["dec-000008"]
        event = records.event_from(h.store.events[-1])
        assert (event.id, event.type.value) == ("evt-000011", "knowledge.capsule_published")
        assert event.decision_ref == "dec-000008"
        assert event.payload["artifact_hash"] == expected_hash
        assert event.payload["publication_id"] == "pub-1"
        assert event.intact

    def test_the_artifact_hash_does_not_depend_on_source_order(self, h: Harness) -> None:
        a, b = sources(h)
        first = h.publish([a, b], publication_id="pub-1")
        second = h.publish([b, a], publication_id="pub-2")
        assert first.artifact_hash == second.artifact_hash
        assert first.source_ids == second.source_ids
        assert first.chunks == second.chunks


class TestExactlyOnce:
    def test_the_same_content_again_returns_the_existing_capsule(self, h: Harness) -> None:
        a, b = sources(h)
        first = h.publish([a, b], publication_id="pub-1")
        before = h.snapshot()

        again = h.publish([b, a, a], publication_id="pub-1", title="Another title")

        assert again == first
        assert h.snapshot() == before

    def test_different_content_under_a_used_publication_id_is_refused(self, h: Harness) -> None:
        a, b = sources(h)
        first = h.publish([a], publication_id="pub-1")
        before = h.snapshot()

        with pytest.raises(AlreadyPublished) as caught:
            h.publish([a, b], publication_id="pub-1")

        assert (caught.value.publication_id, caught.value.capsule_id) == ("pub-1", first.id)
        assert h.snapshot() == before
        assert len(h.table("capsule")) == 1

    def test_concurrent_publications_of_one_id_leave_a_single_capsule(self, h: Harness) -> None:
        a, b = sources(h)
        enforcement = h.enforcement()
        with h.store.unit_of_work() as first, h.store.unit_of_work() as second:
            h.service.publish(
                first, h.runtime, enforcement, publication_id="pub-1", title="A", source_ids=[a]
            )
            h.service.publish(
                second, h.runtime, enforcement, publication_id="pub-1", title="B", source_ids=[b]
            )
            first.commit()
            before = h.snapshot()
            with pytest.raises(DuplicateRecord):
                second.commit()
        assert h.snapshot() == before
        (capsule,) = h.table("capsule").values()
        assert capsule["title"] == "A"

    def test_a_retracted_publication_id_cannot_be_published_again(self, h: Harness) -> None:
        a, _ = sources(h)
        capsule = h.publish([a], publication_id="pub-1")
        h.retract(capsule.id)
        with pytest.raises(AlreadyPublished, match="since retracted") as refused:
            h.publish([a], publication_id="pub-1")
        assert refused.value.retracted and refused.value.capsule_id == capsule.id
        assert len(h.table("capsule")) == 1

    def test_publication_ids_are_per_tenant(self, h: Harness) -> None:
        a, _ = sources(h)
        other = h.as_tenant(OTHER_TENANT)
        (theirs,) = h.ingest(draft(), runtime=other).created
        mine = h.publish([a], publication_id="pub-1")
        their_capsule = h.publish([theirs], publication_id="pub-1", runtime=other)
        assert mine.id != their_capsule.id
        assert len(h.table("capsule")) == 2


class TestPublicationRefused:
    def test_unknown_sources_are_refused_and_nothing_is_written(self, h: Harness) -> None:
        a, _ = sources(h)
        before = h.snapshot()
        with pytest.raises(UnknownReference) as caught:
            h.publish([a, "src-404"], publication_id="pub-1")
        assert (caught.value.kind, caught.value.ref) == ("knowledge source", "src-404")
        assert h.snapshot() == before

    def test_unknown_analyses_are_refused_and_nothing_is_written(self, h: Harness) -> None:
        a, _ = sources(h)
        before = h.snapshot()
        with pytest.raises(UnknownReference) as caught:
            h.publish([a], publication_id="pub-1", analysis_ids=["ana-404"])
        assert (caught.value.kind, caught.value.ref) == ("analysis", "ana-404")
        assert h.snapshot() == before

    def test_sources_of_another_tenant_are_denied_and_recorded(self, h: Harness) -> None:
        a, _ = sources(h)
        before = h.counts()
        with pytest.raises(PolicyDenied) as caught:
            h.publish([a], publication_id="pub-x", runtime=h.as_tenant(OTHER_TENANT))
        assert caught.value.reasons == ("tenant: references records of another tenant (1)",)
        assert h.counts() == before | {
            "decision": before["decision"] + 1,
            "evidence": before["evidence"] + 1,
        }
        decision = h.table("decision")[str(caught.value.decision_id)]
        assert (decision["tenant"], decision["allowed"]) == (OTHER_TENANT, False)
        assert decision["target"] == "capsule:pub-x"
        assert h.table("capsule") == {}

    def test_an_analysis_of_another_tenant_is_denied(self, h: Harness) -> None:
        a, _ = sources(h)
        other = h.as_tenant(OTHER_TENANT)
        (theirs,) = h.ingest(draft(), runtime=other).created
        their_analysis = h.analyse([theirs], runtime=other)
        with pytest.raises(PolicyDenied) as caught:
            h.publish([a], publication_id="pub-1", analysis_ids=[their_analysis.id])
        assert caught.value.reasons == ("tenant: references records of another tenant (1)",)
        assert h.table("capsule") == {}

    @pytest.mark.parametrize(
        "publication_id",
        ["", "pub 1", "'; DELETE knowledge_source; --", "pub\x00", "pub/1", "é", "x" * 129],
    )
    def test_an_invalid_publication_id_is_refused_by_name(
        self, h: Harness, publication_id: str
    ) -> None:
        a, _ = sources(h)
        before = h.snapshot()
        with pytest.raises(InvalidInput) as caught:
            h.publish([a], publication_id=publication_id)
        assert caught.value.field == "publication_id"
        assert h.snapshot() == before

    @pytest.mark.parametrize("title", ["", "   ", "x" * 501, "nul\x00", "lone \ud800", None])
    def test_an_invalid_title_is_refused_by_name(self, h: Harness, title: object) -> None:
        a, _ = sources(h)
        before = h.snapshot()
        with pytest.raises(InvalidInput) as caught:
            h.publish([a], title=title)  # type: ignore[arg-type]
        assert caught.value.field == "title"
        assert h.snapshot() == before

    def test_no_sources_is_invalid_input(self, h: Harness) -> None:
        with pytest.raises(InvalidInput) as caught:
            h.publish([])
        assert caught.value.field == "source_ids"
        assert h.counts()["decision"] == 0


class TestProductionPublication:
    def test_production_needs_an_analysis(self) -> None:
        h = Harness.build(environment=Environment.PRODUCTION)
        source_ids = sources(h)
        with pytest.raises(PolicyDenied) as caught:
            h.publish(source_ids)
        assert caught.value.reasons == (
            "analysis: production publication needs at least one analysis",
        )
        assert h.table("capsule") == {}
        assert h.table("decision")[str(caught.value.decision_id)]["environment"] == "production"

        analysis = h.analyse(source_ids)
        capsule = h.publish(source_ids, analysis_ids=[analysis.id])
        assert capsule.analysis_ids == (analysis.id,)

    def test_production_needs_evidence_for_every_source(self) -> None:
        h = Harness.build(environment=Environment.PRODUCTION)
        source_ids = sources(h)
        analysis = h.analyse(source_ids)
        bare = legacy_source(h)

        with pytest.raises(PolicyDenied) as caught:
            h.publish([*source_ids, bare.id], analysis_ids=[analysis.id])
        assert caught.value.reasons == ("evidence: source src-legacy carries no evidence",)
        assert h.table("capsule") == {}

    def test_evidence_named_by_id_is_read_instead_of_looked_up(self) -> None:
        h = Harness.build(environment=Environment.PRODUCTION)
        ingested = h.ingest(draft(), draft(source_url=ALLOWED_URLS["imf"] + "/2"))
        assert len(ingested.evidence_ids) == 2
        assert {h.table("evidence")[e]["subject"] for e in ingested.evidence_ids} == {
            f"knowledge_source:{s}" for s in ingested.created
        }
        analysis_ids = [h.analyse(ingested.created).id]
        queried: list[str] = []
        capsule = h.publish(
            ingested.created,
            analysis_ids=analysis_ids,
            evidence_ids=ingested.evidence_ids,
            uow_factory=lambda: QueryProbe(h.store.unit_of_work(), queried),
        )
        assert capsule.status is CapsuleStatus.PUBLISHED
        assert "evidence" not in queried  # read by id: no look-up by subject
        queried.clear()
        h.publish(
            ingested.created,
            publication_id="pub-2",
            analysis_ids=analysis_ids,
            uow_factory=lambda: QueryProbe(h.store.unit_of_work(), queried),
        )
        assert "evidence" in queried  # without them, looked up as before

    @pytest.mark.parametrize(
        "wrong",
        ["other-tenant", "capsule-evidence", "evd-nowhere", "", "sources-own-but-one"],
    )
    def test_evidence_ids_that_prove_nothing_change_nothing(self, wrong: str) -> None:
        h = Harness.build(environment=Environment.PRODUCTION)
        ingested = h.ingest(draft())
        bare = legacy_source(h)
        # Evidence whose subject is the bare source, but recorded for another tenant.
        (own,) = ingested.evidence_ids
        stranger = evolve(
            records.evidence_from(own, h.table("evidence")[own]),
            id="evd-stranger",
            tenant=OTHER_TENANT,
            subject=f"knowledge_source:{bare.id}",
        )
        with h.store.unit_of_work() as uow:
            uow.evidence.add(stranger)
            uow.commit()
        analysis_ids = [h.analyse(ingested.created).id]
        capsule = h.publish(
            ingested.created, analysis_ids=analysis_ids, evidence_ids=ingested.evidence_ids
        )
        given = {
            "other-tenant": [*ingested.evidence_ids, stranger.id],
            "capsule-evidence": [
                e for e, d in h.table("evidence").items() if "capsule" in d["subject"]
            ],
            "evd-nowhere": ["evd-nowhere"],
            "": [""],
            "sources-own-but-one": list(ingested.evidence_ids),
        }[wrong]
        assert given and capsule.id
        with pytest.raises(PolicyDenied) as caught:
            h.publish(
                [*ingested.created, bare.id],
                publication_id="pub-2",
                analysis_ids=analysis_ids,
                evidence_ids=given,
            )
        assert caught.value.reasons == ("evidence: source src-legacy carries no evidence",)

    @pytest.mark.parametrize("environment", [Environment.DEVELOPMENT, Environment.STAGING])
    def test_the_same_facts_pass_outside_production(self, environment: Environment) -> None:
        h = Harness.build(environment=environment)
        source_ids = sources(h)
        bare = legacy_source(h)
        capsule = h.publish([*source_ids, bare.id])  # no analysis, one source without evidence
        assert capsule.status is CapsuleStatus.PUBLISHED


class TestRetraction:
    def test_writes_its_own_decision_evidence_and_event(self, h: Harness) -> None:
        a, b = sources(h)
        published = h.publish([a, b])  # dec-8, cap-9, evd-10, evt-11
        h.clock.advance(timedelta(days=2))
        before = h.counts()

        retracted = h.retract(published.id, reason="data error")

        later = START + timedelta(days=2)
        assert retracted.status is CapsuleStatus.RETRACTED
        assert (retracted.retracted_at, retracted.retraction_reason) == (later, "data error")
        assert retracted.version == 1  # the version it was read at; storage moves on to 2
        stored = h.table("capsule")[published.id]
        assert (stored["status"], stored["version"]) == ("retracted", 2)
        assert stored["retraction_reason"] == "data error"
        assert h.counts() == before | {
            "decision": before["decision"] + 1,
            "evidence": before["evidence"] + 1,
            "event": before["event"] + 1,
        }
        decision = h.table("decision")["dec-000012"]
        assert (decision["action"], decision["allowed"]) == ("retract_capsule", True)
        assert decision["decided_at"] == later
        evidence = h.table("evidence")["evd-000013"]
        assert evidence["subject"] == f"capsule:{published.id}"
        assert evidence["artifact_hash"] == published.artifact_hash
        assert evidence["decision_ids"] == ["dec-000012"]
        event = records.event_from(h.store.events[-1])
        assert (event.id, event.type.value) == ("evt-000014", "knowledge.capsule_retracted")
        assert (event.decision_ref, event.causation_id) == ("dec-000012", "evd-000013")
        assert event.payload == {
            "capsule_id": published.id,
            "reason": "data error",
            "evidence_id": "evd-000013",
        }
        assert event.occurred_at == later
        assert event.intact

    def test_retracting_twice_writes_nothing_more(self, h: Harness) -> None:
        a, _ = sources(h)
        capsule = h.publish([a])
        first = h.retract(capsule.id)
        before = h.snapshot()
        again = h.retract(capsule.id, reason="another reason")
        assert again.status is CapsuleStatus.RETRACTED
        assert again.retraction_reason == first.retraction_reason
        assert h.snapshot() == before

    def test_an_unknown_or_foreign_capsule_is_refused_and_nothing_written(self, h: Harness) -> None:
        a, _ = sources(h)
        capsule = h.publish([a])
        before = h.snapshot()
        with pytest.raises(UnknownReference):
            h.retract("cap-404")
        with pytest.raises(UnknownReference):
            h.retract(capsule.id, runtime=h.as_tenant(OTHER_TENANT))
        assert h.snapshot() == before

    @pytest.mark.parametrize("reason", ["", "  ", "x" * 1001, "a\x00b"])
    def test_an_invalid_reason_is_refused_by_name(self, h: Harness, reason: str) -> None:
        a, _ = sources(h)
        capsule = h.publish([a])
        before = h.snapshot()
        with pytest.raises(InvalidInput) as caught:
            h.retract(capsule.id, reason=reason)
        assert caught.value.field == "reason"
        assert h.snapshot() == before

    def test_retraction_is_gated(self, h: Harness) -> None:
        a, _ = sources(h)
        capsule = h.publish([a])
        with pytest.raises(PolicyDenied) as caught:
            h.retract(capsule.id, enforcement=h.enforcement(policy_refs=()))
        assert h.table("decision")[str(caught.value.decision_id)]["action"] == "retract_capsule"
        assert h.table("capsule")[capsule.id]["status"] == "published"
