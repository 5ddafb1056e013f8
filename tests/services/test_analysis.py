"""Analysis generation through the service: deterministic, citing its inputs, and gated."""

from __future__ import annotations

import pytest

from domain.model import analysis as analysis_model
from domain.model.errors import InvalidInput, PolicyDenied, UnknownReference
from ports import records
from tests.services.harness import ALLOWED_URLS, OTHER_TENANT, START, TENANT, Harness, draft

# Two sentences each, so each source yields both as claims; one sentence is shared.
SHARED = "Inflation expectations are anchored."
IMF_TEXT = f"Global inflation is easing as energy prices fall. {SHARED}"
BIS_TEXT = f"{SHARED}\nBank capital buffers are rising across regions."


def two_sources(h: Harness) -> list[str]:
    result = h.ingest(
        draft(content_text=IMF_TEXT),
        draft(kind="bis", source_url=ALLOWED_URLS["bis"], content_text=BIS_TEXT),
    )
    return list(result.created)


class TestAnalysisGeneration:
    def test_writes_analysis_evidence_event_and_decision_in_one_unit(self, h: Harness) -> None:
        source_ids = two_sources(h)  # ids 1..7
        commits, before = h.store.commits, h.counts()

        analysis = h.analyse(source_ids)

        assert h.store.commits == commits + 1
        assert h.counts() == before | {
            "analysis": 1,
            "decision": before["decision"] + 1,
            "evidence": before["evidence"] + 1,
            "event": before["event"] + 1,
        }
        assert analysis.id == "ana-000009"
        assert analysis.tenant == TENANT
        assert analysis.generated_at == START
        assert analysis.source_ids == tuple(sorted(source_ids))
        assert analysis.generator_name == analysis_model.GENERATOR_NAME
        assert analysis.generator_version == analysis_model.GENERATOR_VERSION
        stored = records.analysis_from(analysis.id, h.table("analysis")[analysis.id])
        assert stored == analysis

        decision = h.table("decision")["dec-000008"]
        assert (decision["action"], decision["allowed"]) == ("generate_analysis", True)
        evidence = h.table("evidence")["evd-000010"]
        assert evidence["subject"] == f"analysis:{analysis.id}"
        assert evidence["artifact_hash"] == analysis.inputs_digest
        assert evidence["decision_ids"] == ["dec-000008"]
        event = records.event_from(h.store.events[-1])
        assert (event.id, event.type.value) == ("evt-000011", "knowledge.analysis_generated")
        assert event.decision_ref == "dec-000008"
        assert event.payload["analysis_id"] == analysis.id
        assert event.payload["source_ids"] == list(analysis.source_ids)
        assert event.intact

    def test_claims_cite_only_the_input_sources(self, h: Harness) -> None:
        source_ids = two_sources(h)
        # A source outside the inputs holding the shared sentence is never cited.
        h.ingest(draft(source_url=ALLOWED_URLS["imf"] + "/other", content_text=SHARED))
        analysis = h.analyse(source_ids)
        assert analysis.claims
        for claim in analysis.claims:
            assert set(claim.cited_source_ids) <= set(source_ids)
        (claim,) = [c for c in analysis.claims if c.text == SHARED]
        assert claim.cited_source_ids == tuple(sorted(source_ids))

    def test_same_inputs_give_the_same_claims_and_rendering(self) -> None:
        one, two = Harness.build(), Harness.build()
        ids_one, ids_two = two_sources(one), two_sources(two)
        assert ids_one == ids_two
        first = one.analyse(ids_one)
        second = two.analyse(list(reversed(ids_two)))  # input order does not matter
        assert first.claims == second.claims
        assert first.rendered == second.rendered
        assert first.key_terms == second.key_terms
        assert first.inputs_digest == second.inputs_digest

    def test_regenerating_the_same_inputs_returns_the_existing_analysis(self, h: Harness) -> None:
        source_ids = two_sources(h)
        first = h.analyse(source_ids)
        before = h.snapshot()
        again = h.analyse([*reversed(source_ids), source_ids[0]])  # order and repeats ignored
        assert again == first
        assert h.snapshot() == before


class TestAnalysisGoverned:
    def test_sources_of_another_tenant_are_denied_and_the_denial_recorded(self, h: Harness) -> None:
        source_ids = two_sources(h)
        before = h.counts()
        intruder = h.as_tenant(OTHER_TENANT)

        with pytest.raises(PolicyDenied) as caught:
            h.analyse(source_ids, runtime=intruder)

        assert caught.value.reasons == ("tenant: references records of another tenant (1)",)
        assert h.counts() == before | {
            "decision": before["decision"] + 1,
            "evidence": before["evidence"] + 1,
        }
        decision = h.table("decision")[str(caught.value.decision_id)]
        assert decision["tenant"] == OTHER_TENANT
        assert decision["action"] == "generate_analysis"
        assert decision["allowed"] is False
        assert h.table("analysis") == {}

    def test_analysis_is_denied_without_policy_refs(self, h: Harness) -> None:
        source_ids = two_sources(h)
        with pytest.raises(PolicyDenied) as caught:
            h.analyse(source_ids, enforcement=h.enforcement(policy_refs=()))
        assert caught.value.reasons == ("policy refs: at least one policy ref is required",)
        assert h.table("decision")[str(caught.value.decision_id)]["allowed"] is False
        assert h.table("analysis") == {}

    def test_unknown_sources_are_refused_and_nothing_is_written(self, h: Harness) -> None:
        source_ids = two_sources(h)
        before = h.snapshot()
        with pytest.raises(UnknownReference) as caught:
            h.analyse([*source_ids, "src-999999"])
        assert (caught.value.kind, caught.value.ref) == ("knowledge source", "src-999999")
        assert h.snapshot() == before

    def test_no_sources_is_invalid_input(self, h: Harness) -> None:
        with pytest.raises(InvalidInput) as caught:
            h.analyse([])
        assert caught.value.field == "source_ids"
        assert h.table("decision") == {}
