"""Every governed mutation is all-or-nothing at every fault position, on memory and SurrealDB.

For each mutation the test first stages it in a probing unit to learn N (the staged writes)
and the batch length (staged writes plus version checks). It then fails the mutation at each
staged write 1..N, at the commit before storage, inside the storage transaction after k
writes for every k, and finally with an ambiguous commit, which must be fully applied. Stored
state is read through a back door (never through a unit of work) before and after.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.faults import FaultInjector, FaultPlan
from adapters.memory import MemoryStore
from domain.model.analysis import Analysis
from domain.model.capsule import Capsule, CapsuleStatus
from domain.model.policy import ImpactTier
from domain.model.runtime import RuntimeContext
from domain.services.governance import Gate, enforcement_context
from domain.services.knowledge import IngestResult, KnowledgeService
from ports.errors import CommitOutcomeUnknown, InjectedFault
from ports.storage import EVENT_TABLE, Batch, CommitReceipt, Op, Write
from ports.unit_of_work import UnitOfWork
from tests.services.harness import (
    POLICY_REFS,
    Backend,
    BatchProbe,
    Mutation,
    draft,
    expected_after,
    make_runtime,
    memory_snapshot,
    without_positions,
)
from tests.services.strategies import SourceSpec, hostile_text, source_specs

T = TypeVar("T")
specs_lists = st.lists(source_specs, min_size=1, max_size=3)


def examples(backend: Backend) -> settings:
    return settings(
        max_examples=backend.max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


def assert_atomic(backend: Backend, mutation: Mutation) -> tuple[Write, ...]:
    """Fail `mutation` at every position; return the writes of its (applied) ambiguous run."""
    before = backend.snapshot()

    probe = BatchProbe(backend.factory())
    with pytest.raises(InjectedFault, match="probe"), probe:
        mutation(probe)
        staged = probe.staged
        probe.commit()
    assert probe.batch is not None
    n, batch_length = len(staged), len(probe.batch.writes)
    assert n >= 1, "the mutation staged nothing: the example tests no fault position"
    assert backend.snapshot() == before

    plans = [(FaultPlan(fail_at_write=i), f"write {i}") for i in range(1, n + 1)]
    plans.append((FaultPlan(fail_at_commit=1), "commit 1"))
    plans += [
        (FaultPlan(abort_in_commit=(1, k)), f"abort in commit 1 after {k}")
        for k in range(batch_length + 1)
    ]
    for plan, label in plans:
        injector = FaultInjector(backend.factory, plan)
        with pytest.raises(InjectedFault), injector() as uow:
            mutation(uow)
            uow.commit()
        assert injector.fired == [label]
        assert backend.snapshot() == before, f"{backend.name}: state changed, fault at {label}"

    injector = FaultInjector(backend.factory, FaultPlan(ambiguous_commit=1))
    applied: tuple[Write, ...] = ()
    with pytest.raises(CommitOutcomeUnknown), injector() as uow:
        mutation(uow)
        applied = uow.staged
        uow.commit()
    assert injector.fired == ["ambiguous commit 1"]
    assert len(applied) == n
    after = backend.snapshot()
    assert without_positions(after) == expected_after(without_positions(before), applied), (
        f"{backend.name}: the ambiguous commit was not applied exactly"
    )
    last = max((d["position"] for d in before[EVENT_TABLE].values()), default=0)
    positions = [after[EVENT_TABLE][w.key]["position"] for w in applied if w.op is Op.APPEND]
    assert positions == list(range(last + 1, last + 1 + len(positions)))
    return applied


def assert_no_writes(backend: Backend, mutation: Callable[[UnitOfWork], T]) -> T:
    """Re-running an applied mutation resolves the ambiguity by re-reading: nothing new."""
    before = backend.snapshot()
    with backend.factory() as uow:
        result = mutation(uow)
        assert uow.staged == ()
        uow.commit()
    assert backend.snapshot() == before
    return result


class Wiring:
    """The service on one backend, with ids unique across all examples of a test."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.runtime: RuntimeContext = make_runtime()
        self.service = KnowledgeService(Gate(backend.factory))
        self.enforcement = enforcement_context(
            self.runtime, tier=ImpactTier.TIER0, policy_refs=POLICY_REFS
        )
        self.unique = itertools.count(1)

    def ingest(self, specs: list[SourceSpec]) -> list[str]:
        drafts = [spec.draft(next(self.unique)) for spec in specs]
        with self.backend.factory() as uow:
            result = self.service.ingest(uow, self.runtime, self.enforcement, drafts)
            uow.commit()
        return [s.id for s in result.sources]


def test_ingestion_is_atomic_at_every_fault_position(backend: Backend) -> None:
    w = Wiring(backend)

    @examples(backend)
    @given(specs=specs_lists)
    def check(specs: list[SourceSpec]) -> None:
        drafts = [spec.draft(next(w.unique)) for spec in specs]

        def ingest(uow: UnitOfWork) -> IngestResult:
            return w.service.ingest(uow, w.runtime, w.enforcement, drafts)

        applied = assert_atomic(backend, ingest)
        tables = [x.table for x in applied]
        assert tables.count("decision") == 1
        assert (
            tables.count("knowledge_source")
            == tables.count("evidence")
            == len({(d.source_url, d.content_digest) for d in drafts})
        )
        again = assert_no_writes(backend, ingest)
        assert again.created == ()

    check()


def test_analysis_generation_is_atomic_at_every_fault_position(backend: Backend) -> None:
    w = Wiring(backend)

    @examples(backend)
    @given(specs=specs_lists)
    def check(specs: list[SourceSpec]) -> None:
        source_ids = w.ingest(specs)

        def analyse(uow: UnitOfWork) -> Analysis:
            return w.service.generate_analysis(uow, w.runtime, w.enforcement, source_ids)

        applied = assert_atomic(backend, analyse)
        assert [x.table for x in applied] == ["analysis", "decision", "evidence", EVENT_TABLE]
        again = assert_no_writes(backend, analyse)
        assert again.id == applied[0].key

    check()


def test_publication_is_atomic_at_every_fault_position(backend: Backend) -> None:
    w = Wiring(backend)

    @examples(backend)
    @given(specs=specs_lists, title=hostile_text(), with_analysis=st.booleans())
    def check(specs: list[SourceSpec], title: str, with_analysis: bool) -> None:
        source_ids = w.ingest(specs)
        analysis_ids: list[str] = []
        if with_analysis:
            with backend.factory() as uow:
                analysis = w.service.generate_analysis(uow, w.runtime, w.enforcement, source_ids)
                uow.commit()
            analysis_ids.append(analysis.id)
        publication_id = f"pub-{next(w.unique)}"

        def publish(uow: UnitOfWork) -> Capsule:
            return w.service.publish(
                uow,
                w.runtime,
                w.enforcement,
                publication_id=publication_id,
                title=title,
                source_ids=source_ids,
                analysis_ids=analysis_ids,
            ).capsule

        applied = assert_atomic(backend, publish)
        assert [x.table for x in applied] == ["capsule", "decision", "evidence", EVENT_TABLE]
        stored = backend.snapshot()["capsule"][applied[0].key]
        assert stored["title"] == title
        again = assert_no_writes(backend, publish)
        assert again.id == applied[0].key

    check()


def test_retraction_is_atomic_at_every_fault_position(backend: Backend) -> None:
    w = Wiring(backend)

    @examples(backend)
    @given(specs=st.lists(source_specs, min_size=1, max_size=2), reason=hostile_text())
    def check(specs: list[SourceSpec], reason: str) -> None:
        source_ids = w.ingest(specs)
        with backend.factory() as uow:
            capsule = w.service.publish(
                uow,
                w.runtime,
                w.enforcement,
                publication_id=f"pub-{next(w.unique)}",
                title="capsule",
                source_ids=source_ids,
            ).capsule
            uow.commit()

        def retract(uow: UnitOfWork) -> Capsule:
            return w.service.retract(
                uow, w.runtime, w.enforcement, capsule_id=capsule.id, reason=reason
            )

        applied = assert_atomic(backend, retract)
        assert [(x.op, x.table) for x in applied] == [
            (Op.UPDATE, "capsule"),
            (Op.CREATE, "decision"),
            (Op.CREATE, "evidence"),
            (Op.APPEND, EVENT_TABLE),
        ]
        stored = backend.snapshot()["capsule"][capsule.id]
        assert stored["status"] == CapsuleStatus.RETRACTED.value
        assert stored["retraction_reason"] == reason
        assert stored["version"] == 2
        again = assert_no_writes(backend, retract)
        assert again.status is CapsuleStatus.RETRACTED

    check()


class LeakyStore(MemoryStore):
    """A deliberately non-atomic store: applies writes one by one until something fails."""

    def apply(self, batch: Batch) -> CommitReceipt:
        for index, write in enumerate(batch.writes):
            if write.op is Op.ABORT:
                raise InjectedFault(f"injected fault inside the transaction at write {index}")
            if write.op is Op.APPEND:
                position = len(self.events) + 1
                self.events.append(copy.deepcopy(write.document or {}) | {"position": position})
            elif write.op in (Op.CREATE, Op.UPDATE):
                self.tables[write.table][write.key] = copy.deepcopy(write.document or {})
        return CommitReceipt()


def test_the_checks_catch_a_non_atomic_store() -> None:
    store = LeakyStore()
    w = Wiring(Backend("leaky", store.unit_of_work, lambda: memory_snapshot(store), 1))
    drafts = [draft()]

    with pytest.raises(AssertionError, match="state changed, fault at abort in commit 1 after 1"):
        assert_atomic(
            w.backend, lambda uow: w.service.ingest(uow, w.runtime, w.enforcement, drafts)
        )
    assert store.tables["knowledge_source"], "the leaky store kept a partial write"
