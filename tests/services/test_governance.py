"""The gate and the audit trail the mutations leave: decisions, evidence and intact events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from domain.model.environment import Environment
from domain.model.errors import InvalidInput, PolicyDenied
from domain.model.knowledge import Classification, KnowledgeSource
from domain.model.policy import (
    APPROVAL_REASON,
    APPROVAL_TTL,
    Action,
    Approval,
    GuardedMutation,
    ImpactTier,
    approvals,
)
from domain.model.runtime import DerivedIds
from domain.services.governance import ApprovalRequired, Gate, enforcement_context
from domain.services.knowledge import KnowledgeService
from ports import records
from ports.clock import FixedClock, SequentialIds
from ports.errors import DuplicateRecord
from ports.storage import EVENT_TABLE
from tests.services.harness import (
    ALLOWED_URLS,
    POLICY_REFS,
    START,
    TENANT,
    Backend,
    Harness,
    Snapshot,
    draft,
    make_runtime,
)


def run_every_mutation(backend: Backend, *, clock: FixedClock) -> None:
    runtime = make_runtime(clock=clock, ids=SequentialIds(), environment=Environment.STAGING)
    service = KnowledgeService(Gate(backend.factory))
    enforcement = enforcement_context(runtime, tier=ImpactTier.TIER0, policy_refs=POLICY_REFS)
    with backend.factory() as uow:
        ingested = service.ingest(
            uow,
            runtime,
            enforcement,
            [
                draft(title="'; DELETE knowledge_source; --"),
                draft(kind="fred", source_url=ALLOWED_URLS["fred"], content_text="CPI rose."),
            ],
        )
        uow.commit()
    source_ids = [s.id for s in ingested.sources]
    clock.advance(timedelta(minutes=5))
    with backend.factory() as uow:
        analysis = service.generate_analysis(uow, runtime, enforcement, source_ids)
        uow.commit()
    with backend.factory() as uow:
        capsule = service.publish(
            uow,
            runtime,
            enforcement,
            publication_id="pub-1",
            title="{`capsule`}",
            source_ids=source_ids,
            analysis_ids=[analysis.id],
        ).capsule
        uow.commit()
    clock.advance(timedelta(hours=1))
    with backend.factory() as uow:
        service.retract(uow, runtime, enforcement, capsule_id=capsule.id, reason="superseded")
        uow.commit()


def assert_events_are_governed(snap: Snapshot) -> None:
    events = sorted(snap[EVENT_TABLE].values(), key=lambda d: d["position"])
    assert [e["type"] for e in events] == [
        "knowledge.source_ingested",
        "knowledge.source_ingested",
        "knowledge.analysis_generated",
        "knowledge.capsule_published",
        "knowledge.capsule_retracted",
    ]
    assert [e["position"] for e in events] == [1, 2, 3, 4, 5]
    for doc in events:
        event = records.event_from(doc)
        assert event.intact, f"event {event.id} does not match its integrity hash"
        decision = snap["decision"][event.decision_ref]
        assert decision["allowed"] is True
        assert decision["tenant"] == event.tenant == TENANT
        evidence = snap["evidence"][event.causation_id]
        assert evidence["decision_ids"] == [event.decision_ref]
        assert event.payload["evidence_id"] == event.causation_id
    # Every decision the events rely on is distinct per mutation.
    assert len({e["decision_ref"] for e in events}) == 4


@pytest.mark.parametrize(
    "tz", [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-7, minutes=-30))]
)
def test_every_event_points_to_a_stored_allowed_decision_and_is_intact(
    backend: Backend, tz: timezone
) -> None:
    """On both stores, whatever the clock's time zone (SurrealDB hands instants back in UTC)."""
    before = backend.snapshot()
    assert before[EVENT_TABLE] == {}
    run_every_mutation(backend, clock=FixedClock(START.astimezone(tz)))
    assert_events_are_governed(backend.snapshot())


def test_an_edited_event_is_no_longer_intact(h: Harness) -> None:
    h.ingest(draft())
    doc = h.store.events[0]
    assert records.event_from(doc).intact
    doc["payload_json"] = doc["payload_json"].replace("imf", "bis")  # tamper via the back door
    assert not records.event_from(doc).intact


def test_a_forged_decision_ref_is_detected(h: Harness) -> None:
    h.ingest(draft())
    doc = dict(h.store.events[0]) | {"decision_ref": "dec-forged"}
    assert not records.event_from(doc).intact
    assert "dec-forged" not in h.table("decision")


class TestGate:
    def mutation(self, h: Harness, **context: object) -> GuardedMutation:
        return GuardedMutation(
            action=Action.INGEST_SOURCES,
            workflow="knowledge_publication",
            target="knowledge_source:batch of 1",
            classification=Classification.PUBLIC,
            context=h.enforcement(**context),  # type: ignore[arg-type]
            source_urls=(),
        )

    def test_an_allowed_decision_is_returned_and_not_written_by_the_gate(self, h: Harness) -> None:
        decision = h.gate.decide(self.mutation(h), h.runtime)
        assert decision.allowed
        assert (decision.id, decision.decided_at) == ("dec-000001", START)
        assert h.counts()["decision"] == 0  # the mutation stages it in its own unit

    def test_a_denial_is_recorded_in_a_unit_of_its_own(self, h: Harness) -> None:
        with h.store.unit_of_work() as uow:
            source = KnowledgeSource.acquire(
                draft(), source_id="src-x", tenant=TENANT, acquired_at=START
            )
            uow.sources.add(source)
            with pytest.raises(PolicyDenied) as caught:
                h.gate.decide(self.mutation(h, policy_refs=()), h.runtime)
            # the caller's unit is left uncommitted and rolls back
        assert h.table("knowledge_source") == {}
        assert list(h.table("decision")) == [caught.value.decision_id]
        (evidence,) = h.table("evidence").values()
        assert evidence["decision_ids"] == [caught.value.decision_id]
        assert evidence["recorded_at"] == START

    def test_only_a_lack_of_approvals_raises_approval_required(self, h: Harness) -> None:
        with pytest.raises(ApprovalRequired) as waiting:
            h.gate.decide(self.mutation(h, tier=ImpactTier.TIER1), h.runtime)
        assert waiting.value.reasons == ("approval: Tier1 needs 1 distinct valid approvals, has 0",)
        with pytest.raises(PolicyDenied) as denied:
            h.gate.decide(self.mutation(h, tier=ImpactTier.TIER1, policy_refs=()), h.runtime)
        assert type(denied.value) is PolicyDenied
        assert len(denied.value.reasons) == 2

    def test_a_replayed_denial_is_recorded_once(self, h: Harness) -> None:
        """A workflow step replayed with derived ids re-derives the same decision id."""
        for _ in range(2):
            replay = h.runtime.with_ids(DerivedIds("exe-1", "ingest"))
            with pytest.raises(PolicyDenied) as caught:
                h.gate.decide(self.mutation(h, policy_refs=()), replay)
        assert list(h.table("decision")) == [caught.value.decision_id]
        assert len(h.table("evidence")) == 1

    def test_a_denial_whose_id_another_decision_holds_is_not_passed_as_recorded(
        self, h: Harness
    ) -> None:
        """Ids repeated (SequentialIds over a store that is not empty): the denial must not
        be taken for recorded because some decision holds its id (found by a new user)."""
        allowed = h.gate.decide(self.mutation(h), h.runtime.with_ids(DerivedIds("x", "s")))
        with h.store.unit_of_work() as uow:
            uow.decisions.add(allowed)
            uow.commit()
        with pytest.raises(DuplicateRecord, match="the denial was not recorded"):
            h.gate.decide(
                self.mutation(h, policy_refs=()), h.runtime.with_ids(DerivedIds("x", "s"))
            )
        assert list(h.table("decision")) == [allowed.id] and not h.table("evidence")

    def test_approvals_expire_against_the_injected_clock(self, h: Harness) -> None:
        granted = [Approval("bob", "risk", START)]
        h.clock.advance(timedelta(hours=24) - timedelta(microseconds=1))
        assert h.gate.decide(
            self.mutation(h, tier=ImpactTier.TIER1, approvals=granted), h.runtime
        ).allowed
        h.clock.advance(timedelta(microseconds=1))
        with pytest.raises(ApprovalRequired):
            h.gate.decide(self.mutation(h, tier=ImpactTier.TIER1, approvals=granted), h.runtime)


@pytest.mark.parametrize(
    ("given", "field", "problem"),
    [
        ({"tier": "Tier0"}, "tier", "must be an ImpactTier"),
        ({"policy_refs": "POL-1"}, "policy_refs", "must be a list, got str"),
        ({"policy_refs": ["POL-\x00"]}, "policy_refs[0]", "NUL"),
        ({"required_roles": ["legal team"]}, "required_roles[0]", "ASCII letters"),
        ({"approvals": [("bob", "risk")]}, "approvals[0]", "must be an Approval, got tuple"),
        (
            {"approvals": [Approval("bob", "risk", START.replace(tzinfo=None))]},
            "approvals[0].granted_at",
            "timezone-aware",
        ),
        ({"roles": ["ops", 3]}, "roles[1]", "ASCII letters"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_an_enforcement_context_names_what_a_caller_got_wrong(
    given: dict[str, object], field: str, problem: str
) -> None:
    """Services build it from what their own callers send: a policy then judges what it
    was meant to, or nothing is judged at all."""
    args: dict[str, object] = {"tier": ImpactTier.TIER0, "policy_refs": POLICY_REFS} | given
    with pytest.raises(InvalidInput) as refused:
        enforcement_context(make_runtime(), **args)  # type: ignore[arg-type]
    assert refused.value.field == field and problem in refused.value.problem


class _Posing(str):
    """A name whose own methods say it is something else."""

    def casefold(self) -> str:
        return "legal"


class _Forever(datetime):
    """An instant whose own arithmetic says it was always just now."""

    def __rsub__(self, other: object) -> timedelta:
        return timedelta(0)


def _approval_problems(approval: Approval, required_roles: list[str]) -> list[str]:
    """What the approvals policy says of a Tier1 mutation holding `approval`, built as a
    service builds its enforcement context."""
    context = enforcement_context(
        make_runtime(),
        tier=ImpactTier.TIER1,
        policy_refs=POLICY_REFS,
        required_roles=required_roles,
        approvals=[approval],
    )
    judged = GuardedMutation(
        action=Action.INGEST_SOURCES,
        workflow="knowledge_publication",
        target="target:1",
        classification=Classification.INTERNAL,
        context=context,
    )
    return approvals(judged, START)


def test_a_granted_at_of_a_datetime_subclass_is_judged_as_the_instant_it_holds() -> None:
    old = START - APPROVAL_TTL * 10
    forever = _Forever(old.year, old.month, old.day, tzinfo=UTC)
    assert _approval_problems(Approval("bob", "legal", forever), []) == [
        f"{APPROVAL_REASON}Tier1 needs 1 distinct valid approvals, has 0"
    ]


def test_a_role_of_a_str_subclass_is_judged_as_the_text_it_holds() -> None:
    # A role "intern" whose casefold says "legal" met the legal requirement.
    intern = Approval("bob", _Posing("intern"), START)
    assert _approval_problems(intern, ["legal"]) == [
        f"{APPROVAL_REASON}role 'legal' has not approved (or approval expired)"
    ]
