"""The unit-of-work contract: shared test cases every adapter must pass.

Subclass `UnitOfWorkContract` in a test module and provide two fixtures (as methods or in a
conftest): `uow_factory`, a zero-argument callable returning a fresh unit of work, and
`backdoor`, an object whose `snapshot()` reads stored state without the unit of work.

    class TestMemory(UnitOfWorkContract):
        @pytest.fixture
        def store(self) -> MemoryStore:
            return MemoryStore()

        @pytest.fixture
        def uow_factory(self, store: MemoryStore) -> UnitOfWorkFactory:
            return store.unit_of_work

        @pytest.fixture
        def backdoor(self, store: MemoryStore) -> Backdoor:
            return MemoryBackdoor(store)

Every expectation about storage is checked through the back door, never through the unit
of work under test. The cases never assume an empty store.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, ClassVar

import pytest
from attrs import evolve

from adapters.contract import atomicity, samples, state, violations
from adapters.contract.backdoor import Backdoor, Snapshot
from adapters.faults import FaultInjector, FaultPlan
from domain.model.errors import InvalidState
from domain.model.evidence import EventEnvelope
from domain.model.execution import WorkflowExecution
from domain.model.lifecycle import ExecutionState
from ports import records
from ports.errors import (
    ConcurrencyConflict,
    DuplicateRecord,
    InjectedFault,
    InvalidRecord,
    RecordNotFound,
    UnitOfWorkClosed,
    UnitOfWorkEntered,
    UnitOfWorkLent,
)
from ports.storage import EVENT_TABLE, TABLES, AnyOf, Document, Op, Range, Write
from ports.unit_of_work import UnitOfWork, UnitOfWorkFactory, WrappingUnitOfWork

# `evolve` as code without type checks calls it: with a field of another type.
loosely: Any = evolve

LATER = samples.T0 + timedelta(minutes=5)


class Abandon(Exception):
    """Raised inside a unit to leave it through an exception."""


def assert_state(expected: Snapshot, backdoor: Backdoor, why: str = "") -> None:
    problems = state.diff(expected, backdoor.snapshot())
    assert not problems, (why or "stored state differs") + ":\n  " + "\n  ".join(problems)


def save_execution(uow: UnitOfWork, model: Snapshot, execution: WorkflowExecution) -> None:
    """Stage the execution and put what its commit must store into `model`."""
    state.put_execution(model, execution)
    uow.executions.save(execution)


def committed(uow_factory: UnitOfWorkFactory, stage: Callable[[UnitOfWork], object]) -> None:
    with uow_factory() as uow:
        stage(uow)
        uow.commit()


def _a_second_apart(uow_factory: UnitOfWorkFactory, tenant: str, count: int) -> list[str]:
    """Ids of `count` executions of `tenant` created a second apart from T0, oldest first."""
    made = []
    with uow_factory() as uow:
        for n in range(count):
            x = samples.execution(tenant=tenant)
            x.created_at = samples.T0 + timedelta(seconds=n)
            uow.executions.save(x)
            made.append(x.id)
        uow.commit()
    return made


class UnitOfWorkContract:
    # Adapters with slow commits may lower these in their subclass.
    stateful_examples: ClassVar[int] = 40
    stateful_steps: ClassVar[int] = 25
    threads: ClassVar[int] = 4
    commits_per_thread: ClassVar[int] = 8

    # -- commit and discard --------------------------------------------------------------------

    def test_committed_records_are_stored_and_readable(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor
    ) -> None:
        expected = backdoor.snapshot()
        source = samples.source()
        manifest = samples.evidence(source.id)
        capsule = samples.capsule()
        analysis = samples.analysis()
        decision = samples.decision()
        event = samples.event()
        execution = samples.execution()
        entries = list(execution.new_audit)
        with uow_factory() as uow:
            uow.sources.add(source)
            uow.evidence.add(manifest)
            uow.capsules.add(capsule)
            uow.analyses.add(analysis)
            uow.decisions.add(decision)
            uow.events.append(event)
            save_execution(uow, expected, execution)
            receipt = uow.commit()
        state.put_source(expected, source)
        state.put_evidence(expected, manifest)
        state.put_capsule(expected, capsule)
        state.put(expected, "analysis", analysis.id, records.analysis_doc(analysis))
        state.put(expected, "decision", decision.id, records.decision_doc(decision))
        position = state.put_event(expected, event)
        assert receipt.event_positions == (position,)
        assert_state(expected, backdoor)

        with uow_factory() as uow:
            assert uow.sources.get(source.id) == source
            assert uow.evidence.get(manifest.id) == manifest
            assert uow.capsules.get(capsule.id) == capsule
            assert uow.analyses.get(analysis.id) == analysis
            assert uow.decisions.get(decision.id) == decision
            assert uow.executions.require(execution.id) == execution
            assert uow.audit.for_execution(execution.id) == entries
            assert uow.events.read_after(position - 1, 1) == [evolve(event, position=position)]

    def test_empty_commit_writes_nothing(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor
    ) -> None:
        before = backdoor.snapshot()
        with uow_factory() as uow:
            assert uow.commit().event_positions == ()
        assert_state(before, backdoor)

    @pytest.mark.parametrize("ending", ["no-commit", "exception", "rollback"])
    def test_a_unit_that_does_not_commit_leaves_nothing(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor, ending: str
    ) -> None:
        before = backdoor.snapshot()
        uow = uow_factory()
        escaped = False
        try:
            with uow:
                source = samples.source()
                uow.sources.add(source)
                uow.evidence.add(samples.evidence(source.id))
                uow.events.append(samples.event())
                uow.executions.save(samples.execution())
                if ending == "exception":
                    raise Abandon()
                if ending == "rollback":
                    uow.rollback()
        except Abandon:
            escaped = True
        assert escaped == (ending == "exception"), "the unit must not swallow exceptions"
        assert uow.closed
        assert_state(before, backdoor, f"{ending}: something was written")

    @pytest.mark.parametrize("ending", ["commit", "rollback", "failed-commit"])
    def test_a_finished_unit_is_closed(self, uow_factory: UnitOfWorkFactory, ending: str) -> None:
        existing = samples.source()
        committed(uow_factory, lambda uow: uow.sources.add(existing))
        with uow_factory() as uow:
            if ending == "commit":
                uow.sources.add(samples.source())
                uow.commit()
            elif ending == "rollback":
                uow.rollback()
            else:
                uow.sources.add(existing)
                with pytest.raises(DuplicateRecord):
                    uow.commit()
        assert uow.closed
        attempts: list[Callable[[], object]] = [
            uow.commit,
            lambda: uow.sources.get(existing.id),
            lambda: uow.sources.add(samples.source()),
            lambda: uow.capsules.by_publication(samples.TENANT, "p"),
            lambda: uow.events.read_after(0),
            uow.__enter__,
        ]
        for attempt in attempts:
            with pytest.raises(UnitOfWorkClosed):
                attempt()
        uow.rollback()  # rolling back a closed unit is harmless

    def test_a_unit_entered_again_in_its_own_block_is_refused_and_keeps_its_writes(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        # The inner block's end rolled the unit back: the outer block's writes were gone,
        # said only by UnitOfWorkClosed at its commit (found by a conformance review).
        source = samples.source()
        with uow_factory() as uow:
            uow.sources.add(source)
            with pytest.raises(UnitOfWorkEntered, match="already in a `with` block"), uow:
                pass  # pragma: no cover - refused as it is entered
            uow.commit()
        with uow_factory() as again:  # committed whole
            assert again.sources.get(source.id) == source

    def test_a_lent_unit_is_committed_by_its_lender_only(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor
    ) -> None:
        before = backdoor.snapshot()
        source = samples.source()
        with uow_factory() as uow:
            uow.lend("step borrow")
            uow.sources.add(source)
            for refused in (uow.commit, uow.rollback):
                with pytest.raises(UnitOfWorkLent, match="step borrow may not"):
                    refused()
            with uow:  # the borrower's own block ends; the unit stays open
                pass
            assert not uow.closed
            assert_state(before, backdoor, "a lent unit wrote")
            # Taken back, it says what its borrower was refused, once: the next borrower's
            # take-back is not blamed for it.
            assert "step borrow may not roll back" in (uow.lend(None) or "")
            uow.lend("next borrow")
            assert uow.lend(None) is None
            uow.commit()
        expected = state.copied(before)
        state.put(expected, "knowledge_source", source.id, records.source_doc(source))
        assert_state(expected, backdoor)

    # -- reads -----------------------------------------------------------------------------------

    def test_a_unit_reads_its_own_writes(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor
    ) -> None:
        stored_capsule, doomed = samples.capsule(), samples.capsule()
        with uow_factory() as uow:
            uow.capsules.add(stored_capsule)
            uow.capsules.add(doomed)
            uow.commit()
        before = backdoor.snapshot()
        with uow_factory() as uow:
            source = samples.source()
            uow.sources.add(source)
            assert uow.sources.get(source.id) == source
            found = uow.sources.find_identical(
                source.tenant, source.source_url, source.content_digest
            )
            assert found == source
            manifest = samples.evidence(source.id)
            uow.evidence.add(manifest)
            assert uow.evidence.get(manifest.id) == manifest
            assert uow.evidence.for_subject(manifest.tenant, source.id) == [manifest]
            capsule = samples.capsule()
            uow.capsules.add(capsule)
            assert uow.capsules.by_publication(capsule.tenant, capsule.publication_id) == capsule
            execution = samples.execution()
            entries = list(execution.new_audit)
            uow.executions.save(execution)
            assert uow.executions.require(execution.id) == execution
            by_key = uow.executions.by_idempotency_key(execution.tenant, execution.idempotency_key)
            assert by_key == execution
            assert execution.id in [x.id for x in uow.executions.in_state(ExecutionState.PENDING)]
            assert uow.audit.for_execution(execution.id) == entries

            # An update of a stored record is what this unit reads from then on.
            current = uow.capsules.get(stored_capsule.id)
            assert current == stored_capsule
            uow.capsules.update(evolve(current, title="retitled"))
            expected = evolve(stored_capsule, title="retitled", version=2)
            assert uow.capsules.get(stored_capsule.id) == expected
            assert (
                uow.capsules.by_publication(stored_capsule.tenant, stored_capsule.publication_id)
                == expected
            )
            # A deleted record is gone for this unit, by key and by finder.
            uow.stage(Write(Op.DELETE, "capsule", doomed.id, None, doomed.version))
            assert uow.capsules.get(doomed.id) is None
            assert uow.capsules.by_publication(doomed.tenant, doomed.publication_id) is None
        assert_state(before, backdoor, "reading must not write")

    def test_other_units_see_nothing_before_commit(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor
    ) -> None:
        stored = samples.capsule()
        committed(uow_factory, lambda uow: uow.capsules.add(stored))
        source, capsule, execution = samples.source(), samples.capsule(), samples.execution()
        manifest = samples.evidence(source.id)
        with uow_factory() as writer, uow_factory() as reader:
            writer.sources.add(source)
            writer.evidence.add(manifest)
            writer.capsules.add(capsule)
            writer.capsules.update(evolve(stored, title="changed"))
            writer.executions.save(execution)
            writer.events.append(samples.event())

            assert reader.sources.get(source.id) is None
            assert (
                reader.sources.find_identical(
                    source.tenant, source.source_url, source.content_digest
                )
                is None
            )
            assert reader.evidence.for_subject(manifest.tenant, source.id) == []
            assert reader.capsules.get(capsule.id) is None
            assert reader.capsules.by_publication(capsule.tenant, capsule.publication_id) is None
            assert reader.capsules.get(stored.id) == stored
            assert reader.executions.get(execution.id) is None
            assert (
                reader.executions.by_idempotency_key(execution.tenant, execution.idempotency_key)
                is None
            )
            assert reader.audit.for_execution(execution.id) == []
            writer.commit()

        with uow_factory() as later:
            assert later.sources.get(source.id) == source
            assert later.capsules.get(capsule.id) == capsule
            assert later.capsules.get(stored.id) == evolve(stored, title="changed", version=2)
            assert later.executions.require(execution.id) == execution

    # -- versions ----------------------------------------------------------------------------------

    def test_second_writer_of_an_execution_conflicts_and_writes_nothing(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor
    ) -> None:
        start = samples.execution()
        committed(uow_factory, lambda uow: uow.executions.save(start))
        with uow_factory() as first, uow_factory() as second:
            a = first.executions.require(start.id)
            b = second.executions.require(start.id)
            a.transition(ExecutionState.RUNNING, at=LATER, actor="worker-a", reason="claimed")
            first.executions.save(a)
            b.transition(ExecutionState.CANCELLED, at=LATER, actor="worker-b", reason="cancel")
            second.executions.save(b)
            second.sources.add(samples.source())  # must not survive the conflict either
            first.commit()
            before = backdoor.snapshot()
            with pytest.raises(ConcurrencyConflict) as conflict:
                second.commit()
        assert (conflict.value.table, conflict.value.key) == ("execution", start.id)
        assert_state(before, backdoor, "a conflicting commit wrote something")
        with uow_factory() as uow:
            stored = uow.executions.require(start.id)
            assert (stored.state, stored.version) == (ExecutionState.RUNNING, 2)
            assert [e.actor for e in uow.audit.for_execution(start.id)][1:] == ["worker-a"]

    def test_two_claims_of_one_version_one_conflicts(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor
    ) -> None:
        """A claim changes the lease alone: it is version-checked all the same (a store that
        merged lease-only changes let two workers both hold one execution)."""
        start = samples.execution()
        committed(uow_factory, lambda uow: uow.executions.save(start))
        with uow_factory() as first, uow_factory() as second:
            a = first.executions.require(start.id)
            b = second.executions.require(start.id)
            a.claim("worker-a", now=LATER, ttl=timedelta(seconds=30))
            first.executions.save(a)
            b.claim("worker-b", now=LATER, ttl=timedelta(seconds=30))
            second.executions.save(b)
            first.commit()
            before = backdoor.snapshot()
            with pytest.raises(ConcurrencyConflict):
                second.commit()
        assert_state(before, backdoor, "a second claim of one version wrote something")
        with uow_factory() as uow:
            assert uow.executions.require(start.id).lease_owner == "worker-a"

    @pytest.mark.parametrize("second_op", ["update", "delete"])
    def test_second_writer_of_a_capsule_conflicts_and_writes_nothing(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor, second_op: str
    ) -> None:
        capsule = samples.capsule()
        committed(uow_factory, lambda uow: uow.capsules.add(capsule))
        with uow_factory() as first, uow_factory() as second:
            a, b = first.capsules.get(capsule.id), second.capsules.get(capsule.id)
            assert a is not None and b is not None
            first.capsules.update(evolve(a, title="first"))
            if second_op == "update":
                second.capsules.update(evolve(b, title="second"))
            else:
                second.stage(Write(Op.DELETE, "capsule", b.id, None, b.version))
            second.evidence.add(samples.evidence(capsule.id))
            first.commit()
            before = backdoor.snapshot()
            with pytest.raises(ConcurrencyConflict) as conflict:
                second.commit()
        assert (conflict.value.table, conflict.value.key) == ("capsule", capsule.id)
        assert_state(before, backdoor, "a conflicting commit wrote something")
        with uow_factory() as uow:
            assert uow.capsules.get(capsule.id) == evolve(capsule, title="first", version=2)

    @pytest.mark.parametrize("change", ["updated", "deleted"])
    @pytest.mark.parametrize("writes", [True, False], ids=["with-writes", "read-only"])
    @pytest.mark.parametrize("again", [False, True], ids=["read-once", "read-again"])
    def test_a_record_only_read_is_checked_at_commit(
        self,
        uow_factory: UnitOfWorkFactory,
        backdoor: Backdoor,
        change: str,
        writes: bool,
        again: bool,
    ) -> None:
        """Against the version first read: a unit that reads the record again after another
        changed it still decided on what it read first."""
        capsule = samples.capsule()
        committed(uow_factory, lambda uow: uow.capsules.add(capsule))
        with uow_factory() as reader:
            assert reader.capsules.get(capsule.id) == capsule
            if writes:
                reader.sources.add(samples.source())
                reader.events.append(samples.event())
            with uow_factory() as writer:
                if change == "updated":
                    writer.capsules.update(evolve(capsule, title="changed"))
                else:
                    writer.stage(Write(Op.DELETE, "capsule", capsule.id, None, capsule.version))
                writer.commit()
            if again:
                assert reader.capsules.get(capsule.id) != capsule  # it sees the change now
            before = backdoor.snapshot()
            with pytest.raises(ConcurrencyConflict) as conflict:
                reader.commit()
        assert (conflict.value.table, conflict.value.key) == ("capsule", capsule.id)
        assert_state(before, backdoor, "a commit whose read went stale wrote something")

    @pytest.mark.parametrize("raced", [False, True], ids=["alone", "raced"])
    def test_an_execution_saved_twice_in_a_unit_is_checked_against_the_version_read(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor, raced: bool
    ) -> None:
        """The second save folds into the first: one update, guarded by the version read."""
        start = samples.execution()
        committed(uow_factory, lambda uow: uow.executions.save(start))
        with uow_factory() as uow:
            execution = uow.executions.require(start.id)
            read = execution.version
            for step in ("a", "b"):
                execution.begin_attempt(step)
                uow.executions.save(execution)
            if raced:
                _increment(uow_factory, start.id, "other", 1)
                before = backdoor.snapshot()
                with pytest.raises(ConcurrencyConflict):
                    uow.commit()
                assert_state(before, backdoor, "a unit that saved a stale execution wrote")
                return
            uow.commit()
        with uow_factory() as uow:
            final = uow.executions.require(start.id)
        assert final.attempts == {**start.attempts, "a": 1, "b": 1}
        assert final.version == backdoor.snapshot()["execution"][start.id]["version"] == read + 2

    def test_no_update_is_lost_between_racing_threads(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor
    ) -> None:
        start = samples.execution()
        committed(uow_factory, lambda uow: uow.executions.save(start))
        rounds = 5
        _run_threads(self.threads, lambda n: _increment(uow_factory, start.id, f"t{n}", rounds))
        with uow_factory() as uow:
            final = uow.executions.require(start.id)
        # Every increment survived: a lost update would leave a thread's count short.
        assert final.attempts == {f"t{n}": rounds for n in range(self.threads)}
        assert final.version == 1 + self.threads * rounds
        doc = backdoor.snapshot()["execution"][start.id]
        assert doc["version"] == final.version

    @pytest.mark.parametrize("op", [Op.UPDATE, Op.DELETE], ids=lambda op: op.value)
    @pytest.mark.parametrize("table", [t for t, spec in TABLES.items() if spec.immutable])
    def test_immutable_records_refuse_change(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor, table: str, op: Op
    ) -> None:
        # Adapters may cache immutable records, so a change must never reach storage.
        key = samples.new_id(table)
        creators: dict[str, Callable[[UnitOfWork], object]] = {
            "knowledge_source": lambda uow: uow.sources.add(samples.source(id=key)),
            "evidence": lambda uow: uow.evidence.add(samples.evidence("s", id=key)),
            "analysis": lambda uow: uow.analyses.add(samples.analysis(id=key)),
            "decision": lambda uow: uow.decisions.add(samples.decision(id=key)),
            "execution_input": lambda uow: uow.executions.save(samples.execution(id=key)),
        }
        committed(uow_factory, creators[table])
        before = backdoor.snapshot()
        with uow_factory() as uow:
            doc = uow.get(table, key)
            assert doc is not None
            changed = None if op is Op.DELETE else doc | {"version": doc["version"] + 1}
            with pytest.raises(InvalidRecord, match="immutable"):
                uow.stage(Write(op, table, key, changed, doc["version"]))
            uow.commit()
        assert_state(before, backdoor, f"an immutable {table} record changed")
        with uow_factory() as uow:
            assert uow.get(table, key) == doc

    # -- duplicates ---------------------------------------------------------------------------

    def test_creating_an_existing_id_is_a_duplicate_and_writes_nothing(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor
    ) -> None:
        source = samples.source()
        committed(uow_factory, lambda uow: uow.sources.add(source))
        before = backdoor.snapshot()
        manifest = samples.evidence(source.id)
        with uow_factory() as uow:
            uow.evidence.add(manifest)
            uow.events.append(samples.event())
            uow.sources.add(evolve(source, title="again"))
            with pytest.raises(DuplicateRecord) as duplicate:
                uow.commit()
        assert (duplicate.value.table, duplicate.value.key) == ("knowledge_source", source.id)
        assert str(duplicate.value) == f"duplicate knowledge_source {source.id!r}"
        assert_state(before, backdoor, "a duplicate commit wrote something")
        with uow_factory() as uow:  # nor may any read path (a cache, say) remember it
            assert uow.evidence.get(manifest.id) is None
            assert uow.sources.get(source.id) == source

    def test_arguments_of_the_wrong_kind_are_refused_by_name_and_write_nothing(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor
    ) -> None:
        """Each was an AttributeError or a TypeError from deep inside. (A key no record can
        have is simply not found: see below.)"""
        before = backdoor.snapshot()
        refusals: list[tuple[Callable[[Any], object], str]] = [  # Any: typed, none would pass
            (
                lambda uow: uow.sources.add(None),
                "sources.add takes a KnowledgeSource, got NoneType",
            ),
            (lambda uow: uow.executions.save("x"), "executions.save takes a WorkflowExecution"),
            (lambda uow: uow.evidence.add(samples.source()), "takes an EvidenceManifest, got K"),
            (lambda uow: uow.get(["x"], "k"), "unknown table ['x']"),
        ]
        for call, said in refusals:
            with uow_factory() as uow, pytest.raises(InvalidRecord) as refused:
                call(uow)
            assert said in str(refused.value)
        with uow_factory() as uow, pytest.raises(ValueError, match="descending must be True"):
            uow.select("execution", {}, descending="yes")  # type: ignore[arg-type]
        assert_state(before, backdoor, "a refused call wrote something")

    def test_staging_the_same_id_twice_is_a_duplicate(self, uow_factory: UnitOfWorkFactory) -> None:
        source = samples.source()
        with uow_factory() as uow:
            uow.sources.add(source)
            with pytest.raises(DuplicateRecord):
                uow.sources.add(source)

    @pytest.mark.parametrize("same_unit", [False, True], ids=["across-units", "same-unit"])
    def test_a_taken_publication_id_is_a_duplicate(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor, same_unit: bool
    ) -> None:
        first = samples.capsule()
        second = samples.capsule(publication_id=first.publication_id)
        if not same_unit:
            committed(uow_factory, lambda uow: uow.capsules.add(first))
        before = backdoor.snapshot()
        with uow_factory() as uow:
            if same_unit:
                uow.capsules.add(first)
            uow.capsules.add(second)
            uow.evidence.add(samples.evidence(second.id))
            with pytest.raises(DuplicateRecord) as duplicate:
                uow.commit()
        assert duplicate.value.table == "capsule"
        assert duplicate.value.key in (first.id, second.id)
        # In the same words on every adapter: not the engine's, which quote the values
        # refused and the other record's id (they reach a failed step's recorded error).
        said = f"duplicate capsule {duplicate.value.key!r}: unique tenant+publication_id"
        assert str(duplicate.value) == said
        assert_state(before, backdoor, "a duplicate commit wrote something")
        # Another tenant may use the same publication id.
        other = samples.capsule(tenant="tenant-b", publication_id=first.publication_id)
        committed(uow_factory, lambda uow: uow.capsules.add(other))

    def test_a_taken_idempotency_key_is_a_duplicate(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor
    ) -> None:
        first = samples.execution()
        committed(uow_factory, lambda uow: uow.executions.save(first))
        before = backdoor.snapshot()
        second = samples.execution(idempotency_key=first.idempotency_key)
        with uow_factory() as uow:
            uow.executions.save(second)  # also stages its first audit entry
            with pytest.raises(DuplicateRecord) as duplicate:
                uow.commit()
        assert (duplicate.value.table, duplicate.value.key) == ("execution", second.id)
        said = f"duplicate execution {second.id!r}: unique tenant+idempotency_key"
        assert str(duplicate.value) == said
        assert_state(before, backdoor, "a duplicate commit wrote something")

    @pytest.mark.parametrize("field", ["tenant", "publication_id"])
    def test_a_natural_key_is_fixed_at_creation(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor, field: str
    ) -> None:
        capsule = samples.capsule()
        committed(uow_factory, lambda uow: uow.capsules.add(capsule))
        before = backdoor.snapshot()
        with uow_factory() as uow:
            moved = samples.new_id("moved")
            changed = (
                evolve(capsule, tenant=moved)
                if field == "tenant"
                else evolve(capsule, publication_id=moved)
            )
            uow.capsules.update(changed)
            with pytest.raises(InvalidRecord, match=field):
                uow.commit()
        assert_state(before, backdoor, "a natural key was changed")
        with uow_factory() as uow:
            assert uow.capsules.by_publication(capsule.tenant, capsule.publication_id) == capsule

    @pytest.mark.parametrize("same_unit", [False, True], ids=["across-units", "same-unit"])
    def test_a_deleted_record_gives_its_natural_key_up(
        self, uow_factory: UnitOfWorkFactory, same_unit: bool
    ) -> None:
        first = samples.capsule()
        second = samples.capsule(publication_id=first.publication_id)
        committed(uow_factory, lambda uow: uow.capsules.add(first))

        def delete(uow: UnitOfWork) -> None:
            uow.stage(Write(Op.DELETE, "capsule", first.id, None, first.version))

        if not same_unit:
            committed(uow_factory, delete)
            with uow_factory() as uow:
                assert uow.capsules.by_publication(first.tenant, first.publication_id) is None
        with uow_factory() as uow:
            if same_unit:
                delete(uow)
            uow.capsules.add(second)
            uow.commit()
        with uow_factory() as uow:
            assert uow.capsules.by_publication(first.tenant, first.publication_id) == second
            assert uow.capsules.get(first.id) is None

    @pytest.mark.parametrize("order", ["delete-first", "create-first"])
    def test_a_unit_may_delete_a_record_and_make_it_again_or_hand_its_key_on(
        self, uow_factory: UnitOfWorkFactory, order: str
    ) -> None:
        """Whatever order the unit staged them in: SurrealDB runs a batch in order, and a
        new holder of a unique value staged before the old one's deletion was refused there
        (and a record made again after its deletion refused by the in-memory adapter)."""
        first = samples.capsule()
        again = samples.capsule(id=first.id, publication_id=first.publication_id, text="again")
        heir = samples.capsule(publication_id=first.publication_id)
        committed(uow_factory, lambda uow: uow.capsules.add(first))
        delete = Write(Op.DELETE, "capsule", first.id, None, first.version)
        with uow_factory() as uow:
            if order == "delete-first":
                uow.stage(delete)
                uow.capsules.add(again)
            else:
                uow.capsules.add(heir)
                uow.stage(delete)
            uow.commit()
        with uow_factory() as uow:
            expected = again if order == "delete-first" else heir
            assert uow.capsules.by_publication(first.tenant, first.publication_id) == expected

    @pytest.mark.parametrize(
        "words",
        [
            "conflict",
            "already exists",
            "not found",
            "The query was not executed due to a failed transaction",
            "An error occurred: uow-abort:0",
            "Failed to commit transaction due to a read or write conflict",
        ],
    )
    def test_a_refused_value_is_refused_whatever_words_it_holds(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor, words: str
    ) -> None:
        """SurrealDB's refusals quote the value refused: its words are not the engine's (a
        digest of the wrong length was a conflict, a duplicate, not found, an unknown outcome
        or an injected fault there)."""
        before = backdoor.snapshot()
        with uow_factory() as uow:
            uow.sources.add(evolve(samples.source(), content_digest=words))
            with pytest.raises(InvalidRecord, match="content_digest"):
                uow.commit()
        assert_state(before, backdoor)

    def test_a_record_deleted_made_again_and_deleted_again_in_one_unit_is_gone(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        first = samples.capsule()
        committed(uow_factory, lambda uow: uow.capsules.add(first))
        delete = Write(Op.DELETE, "capsule", first.id, None, first.version)
        with uow_factory() as uow:
            uow.stage(delete)
            uow.capsules.add(samples.capsule(id=first.id, publication_id=first.publication_id))
            uow.stage(delete)  # folds the create away: the stored one's deletion stands
            assert uow.capsules.get(first.id) is None
            assert uow.select("capsule", {"tenant": first.tenant}) == []
            with pytest.raises(RecordNotFound):
                uow.capsules.update(evolve(first, title="changed"))
            uow.commit()
        with uow_factory() as uow:
            assert uow.capsules.get(first.id) is None

    @pytest.mark.parametrize("op", [Op.UPDATE, Op.DELETE])
    def test_a_record_read_then_deleted_by_another_unit_is_a_race_lost(
        self, uow_factory: UnitOfWorkFactory, op: Op
    ) -> None:
        """A conflict, as for a version changed (what the orchestrator retries): not a
        record not found, which says the request itself was wrong."""
        capsule = samples.capsule()
        committed(uow_factory, lambda uow: uow.capsules.add(capsule))
        with uow_factory() as uow:
            found = uow.capsules.get(capsule.id)
            assert found is not None
            delete = Write(Op.DELETE, "capsule", capsule.id, None, found.version)
            committed(uow_factory, lambda other: other.stage(delete))
            if op is Op.UPDATE:
                uow.capsules.update(evolve(found, title="changed"))
            else:
                uow.stage(delete)
            with pytest.raises(ConcurrencyConflict, match="deleted since it was read"):
                uow.commit()

    def test_text_of_a_str_subclass_is_checked_as_text(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor
    ) -> None:
        class Title(str):
            pass

        before = backdoor.snapshot()
        for bad in ("a\x00b", "a\ud800b"):
            doc = records.capsule_doc(samples.capsule()) | {"title": Title(bad)}
            with uow_factory() as uow, pytest.raises(InvalidRecord, match="NUL or a lone"):
                uow.stage(Write(Op.CREATE, "capsule", "cap-subclassed", doc))
        assert backdoor.snapshot() == before

    def test_several_values_of_one_field_of_a_natural_key_find_their_records(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """SurrealDB found nothing for `IN` on a field of a unique index after an equality
        on the one before it."""
        one, other = samples.source(), samples.source()

        def add(uow: UnitOfWork) -> None:
            uow.sources.add(one)
            uow.sources.add(other)

        committed(uow_factory, add)
        urls = AnyOf([one.source_url, other.source_url])
        with uow_factory() as uow:
            found = uow.select("knowledge_source", {"tenant": one.tenant, "source_url": urls})
            assert {key for key, _ in found} == {one.id, other.id}

    @pytest.mark.parametrize("op", [Op.DELETE, Op.UPDATE], ids=lambda op: op.value)
    def test_a_bounded_listing_is_full_past_the_units_own_writes(
        self, uow_factory: UnitOfWorkFactory, op: Op
    ) -> None:
        """The unit's writes take the place of rows the store lists: the store is asked for
        as many more, or a page came back short and read as the listing's end (h170)."""
        capsules = [samples.capsule() for _ in range(5)]
        with uow_factory() as uow:
            for capsule in capsules:
                uow.capsules.add(capsule)
            uow.commit()
        first = min(capsules, key=lambda c: c.id)  # listed first, by key
        with uow_factory() as uow:
            if op is Op.DELETE:
                uow.stage(Write(Op.DELETE, "capsule", first.id, None, first.version))
            else:  # moved out of the listing's filter
                uow.capsules.update(first.retract(at=LATER, reason="withdrawn"))
            listed = uow.select("capsule", {"status": first.status.value}, limit=2)
        assert len(listed) == 2 and first.id not in dict(listed)

    def test_a_listing_by_state_follows_a_transition(self, uow_factory: UnitOfWorkFactory) -> None:
        """Listed by what it is now, not by what it was (an index left stale listed a running
        execution as pending)."""
        start = samples.execution()
        committed(uow_factory, lambda uow: uow.executions.save(start))
        with uow_factory() as uow:
            moved = uow.executions.require(start.id)
            moved.transition(ExecutionState.RUNNING, at=LATER, actor="worker", reason="claimed")
            uow.executions.save(moved)
            uow.commit()
        with uow_factory() as uow:
            pending = [x.id for x in uow.executions.in_state(ExecutionState.PENDING)]
            running = [x.id for x in uow.executions.in_state(ExecutionState.RUNNING)]
        assert start.id not in pending and start.id in running

    def test_a_count_is_the_length_of_the_listing_it_counts(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """Counted by the store, through the same index paths (and the same engine
        workarounds) as a listing: equalities, several values, ranges of instants and of a
        unique index's fields, and nothing to filter on."""
        running = [samples.execution(tenant="t-count") for _ in range(3)]
        pending = [samples.execution(tenant="t-count", text="other_flow") for _ in range(2)]
        elsewhere = samples.execution(tenant="t-count-other")
        capsules = [samples.capsule(publication_id=f"pub-count-{n}") for n in range(4)]

        def add(uow: UnitOfWork) -> None:
            for x in running:
                x.transition(ExecutionState.RUNNING, at=LATER, actor="worker", reason="claimed")
            for x in (*running, *pending, elsewhere):
                uow.executions.save(x)
            for capsule in capsules:
                uow.capsules.add(capsule)

        committed(uow_factory, add)
        t, day, x, c = "t-count", timedelta(days=1), "execution", "capsule"
        expected: dict[str, tuple[str, dict[str, Any], int]] = {
            "running": (x, {"tenant": t, "state": "running"}, 3),
            "tenant": (x, {"tenant": t}, 5),
            "workflow": (x, {"tenant": t, "workflow_name": "other_flow"}, 2),
            "several": (x, {"tenant": AnyOf([t, "t-count-other"]), "state": "pending"}, 3),
            "instants": (x, {"tenant": t, "created_at": Range(above=samples.T0 - day)}, 5),
            "none yet": (x, {"tenant": t, "created_at": Range(above=LATER + day)}, 0),
            "unique": (c, {"publication_id": Range(above="pub-count-1", below="pub-count-3")}, 1),
            "NUL": (x, {"tenant": "t-\x00count"}, 0),
        }
        with uow_factory() as uow:
            counted = {
                name: uow.count(table, where) for name, (table, where, _) in expected.items()
            }
            listed = {
                name: len(uow.select(table, where)) for name, (table, where, _) in expected.items()
            }
            assert counted == listed == {name: n for name, (_, _, n) in expected.items()}
            assert uow.count("capsule", {}) == len(uow.select("capsule", {})) >= 4
            assert uow.executions.count(ExecutionState.RUNNING, tenant=t) == 3
            assert uow.executions.count(tenant=t, workflow="other_flow") == 2

    def test_a_count_sees_the_units_own_writes(self, uow_factory: UnitOfWorkFactory) -> None:
        kept, dropped = samples.capsule(), samples.capsule()

        def add(uow: UnitOfWork) -> None:
            uow.capsules.add(kept)
            uow.capsules.add(dropped)

        committed(uow_factory, add)
        tenant = kept.tenant
        with uow_factory() as uow:
            before = uow.count("capsule", {"tenant": tenant})
            uow.capsules.add(samples.capsule())
            uow.stage(Write(Op.DELETE, "capsule", dropped.id, None, dropped.version))
            assert uow.count("capsule", {"tenant": tenant}) == before  # one in, one out
            uow.capsules.add(samples.capsule())
            assert uow.count("capsule", {"tenant": tenant}) == before + 1
        with uow_factory() as uow:  # and discarded with them
            assert uow.count("capsule", {"tenant": tenant}) == before

    def test_a_count_of_what_no_table_has_is_refused(self, uow_factory: UnitOfWorkFactory) -> None:
        with uow_factory() as uow:
            with pytest.raises(InvalidRecord, match="unknown table"):
                uow.count("no_such_table", {})
            with pytest.raises(InvalidRecord, match="no_such_field"):
                uow.count("capsule", {"no_such_field": 1})
            with pytest.raises(ValueError, match="mapping"):
                uow.count("capsule", [("tenant", "a")])  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="ExecutionState"):
                uow.executions.count("running")  # type: ignore[arg-type]

    @pytest.mark.parametrize("staged", [False, True], ids=["committed", "staged"])
    def test_a_document_read_is_the_callers_own_copy(
        self, uow_factory: UnitOfWorkFactory, staged: bool
    ) -> None:
        """Changing what a read returned changes nothing stored or staged (a list changed
        in a staged record reached the commit past the checks made when it was staged)."""
        capsule = samples.capsule()
        if not staged:
            committed(uow_factory, lambda uow: uow.capsules.add(capsule))
        with uow_factory() as uow:
            if staged:
                uow.capsules.add(capsule)
            read = [
                uow.get("capsule", capsule.id),
                uow.get_many("capsule", [capsule.id])[capsule.id],
                uow.select("capsule", {"tenant": capsule.tenant})[0][1],
            ]
            for doc in read:
                assert doc is not None
                doc["title"] = "changed by a caller"
                for value in doc.values():
                    if isinstance(value, list):
                        value.append("added by a caller")
            assert uow.capsules.get(capsule.id) == capsule
            uow.commit()
        with uow_factory() as uow:
            assert uow.capsules.get(capsule.id) == capsule

    @pytest.mark.parametrize("op", [Op.UPDATE, Op.DELETE])
    def test_a_change_to_a_record_never_stored_is_not_found(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor, op: Op
    ) -> None:
        before = backdoor.snapshot()
        ghost = samples.capsule(id="never-stored")
        doc = records.capsule_doc(ghost) if op is Op.UPDATE else None
        with uow_factory() as uow:
            uow.stage(Write(op, "capsule", ghost.id, doc, 1))
            with pytest.raises(RecordNotFound):
                uow.commit()
        assert_state(before, backdoor)

    def test_the_event_log_takes_appends_only(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor
    ) -> None:
        """Positions are the adapter's to give: a create with one of its own wedged SurrealDB's
        log, and an update or delete of an event rewrote or cut it there."""
        event = samples.event()
        committed(uow_factory, lambda uow: uow.events.append(event))
        before = backdoor.snapshot()
        doc = records.event_doc(samples.event()) | {"position": 2}
        with uow_factory() as uow:
            for write in (
                Write(Op.CREATE, EVENT_TABLE, "evt-planted", doc),
                Write(Op.UPDATE, EVENT_TABLE, event.id, doc, None),
                Write(Op.DELETE, EVENT_TABLE, event.id, None, None),
                Write(Op.APPEND, "capsule", "cap-appended", records.capsule_doc(samples.capsule())),
            ):
                with pytest.raises(InvalidRecord, match="append-only"):
                    uow.stage(write)
            uow.commit()
        assert_state(before, backdoor)

    def test_a_range_on_a_unique_field_finds_past_the_500th(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """SurrealDB core 2.3.10 left the 501st out of a scan with a strict bound there."""
        made = [samples.capsule(publication_id=f"pub-{n:04d}") for n in range(520)]

        def add_all(uow: UnitOfWork) -> None:
            for capsule in made:
                uow.capsules.add(capsule)

        committed(uow_factory, add_all)
        with uow_factory() as uow:
            every = {key for key, _ in uow.select("capsule", {"tenant": Range()})}
            assert len(every) == len(made)
            for bounds in (Range(above="a"), Range(below="z"), Range(above="a", below="z")):
                assert {key for key, _ in uow.select("capsule", {"tenant": bounds})} == every

    def test_orderings_cut_by_a_limit_agree(self, uow_factory: UnitOfWorkFactory) -> None:
        """The limit is applied by the store, before the port's own sort: what is cut must be
        what the same order leaves out everywhere (a missing value sorts first, as SurrealDB
        sorts NONE; without `order_by`, descending is by key)."""
        plain, retracted = samples.capsule(id="cap-a"), samples.capsule(id="cap-b")
        retracted = evolve(retracted, retracted_at=samples.T0)
        older, newer = (samples.execution(id=f"x-{n}") for n in (0, 1))
        # One second apart from its start: SurrealDB's index orders those wrongly.
        older.created_at = samples.T0.replace(microsecond=0)
        newer.created_at = older.created_at + timedelta(microseconds=500_000)

        def stage(uow: UnitOfWork) -> None:
            uow.capsules.add(plain)
            uow.capsules.add(retracted)
            uow.executions.save(older)
            uow.executions.save(newer)

        committed(uow_factory, stage)
        with uow_factory() as uow:
            for descending, expected in ((False, "cap-a"), (True, "cap-b")):
                [(key, _)] = uow.select(
                    "capsule", {}, order_by="retracted_at", descending=descending, limit=1
                )
                assert key == expected, descending
            [(key, _)] = uow.select("capsule", {}, descending=True, limit=1)
            assert key == "cap-b"
            [(key, _)] = uow.select("execution", {}, order_by="created_at", limit=1)
            assert key == "x-0"

    def test_a_filter_of_several_values_takes_a_list_not_text(self) -> None:
        with pytest.raises(ValueError, match="AnyOf takes a list or tuple"):
            AnyOf("abc")
        assert AnyOf(["a", "b"]).values == ("a", "b")

    def test_every_natural_key_finds_its_record(self, uow_factory: UnitOfWorkFactory) -> None:
        source, analysis = samples.source(), samples.analysis(text=samples.new_id("claim"))
        capsule, execution = samples.capsule(), samples.execution()

        def add(uow: UnitOfWork) -> None:
            uow.sources.add(source)
            uow.analyses.add(analysis)
            uow.capsules.add(capsule)
            uow.executions.save(execution)

        committed(uow_factory, add)
        with uow_factory() as uow:
            found = uow.sources.find_identical(
                source.tenant, source.source_url, source.content_digest
            )
            assert found == source
            assert uow.analyses.find_by_inputs(analysis.tenant, analysis.inputs_digest) == analysis
            assert uow.capsules.by_publication(capsule.tenant, capsule.publication_id) == capsule
            assert execution.idempotency_key is not None
            by_key = uow.executions.by_idempotency_key(execution.tenant, execution.idempotency_key)
            assert by_key == execution
            # One value off is another key.
            assert uow.sources.find_identical(source.tenant, source.source_url, "0" * 64) is None
            assert uow.analyses.find_by_inputs("tenant-other", analysis.inputs_digest) is None
            assert uow.capsules.by_publication(capsule.tenant, capsule.publication_id + "x") is None

    def test_listings_can_leave_inputs_unread(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor
    ) -> None:
        execution = samples.execution()
        committed(uow_factory, lambda uow: uow.executions.save(execution))
        read: list[str] = []

        class Reads(WrappingUnitOfWork):
            def _load(self, table: str, key: str) -> Document | None:
                read.append(table)
                return super()._load(table, key)

            def _load_many(
                self, table: str, keys: list[str], *, fresh: bool = False
            ) -> dict[str, Document]:
                read.append(table)
                return super()._load_many(table, keys, fresh=fresh)

        with Reads(uow_factory()) as uow:
            listed = uow.executions.every(execution.tenant, with_input=False)
            [found] = [x for x in listed if x.id == execution.id]
            assert found.state is execution.state and found.audit_head == execution.audit_head
            assert "execution_input" not in read
            for reading in (lambda: dict(found.input), lambda: found.input == execution.input):
                with pytest.raises(InvalidState, match="without its input"):
                    reading()  # compared too: False would say the inputs differ
            assert uow.executions.every(execution.tenant, with_input=False) == listed
            uow.executions.require(execution.id, with_input=False)
            assert "execution_input" not in read
            assert uow.executions.require(execution.id).input == execution.input

    def test_recent_executions_are_newest_first_across_look_back_windows(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        now = samples.T0 + timedelta(days=400)
        ages = [timedelta(minutes=5), timedelta(hours=3), timedelta(days=3), timedelta(days=90)]
        made = []
        for n, age in enumerate(ages):
            x = samples.execution()
            x.created_at = now - age
            if n % 2:
                x.transition(ExecutionState.CANCELLED, at=now - age, actor="op", reason="test")
            made.append(x)
            with uow_factory() as uow:
                uow.executions.save(x)
                uow.commit()
        with uow_factory() as uow:
            newest = [x.id for x in uow.executions.recent(now=now, limit=10)]
            two = [x.id for x in uow.executions.recent(now=now, limit=2)]
            cancelled = uow.executions.recent(now=now, state=ExecutionState.CANCELLED)
        assert newest[:4] == [x.id for x in made]  # the oldest needs the unbounded window
        assert two == [made[0].id, made[1].id]
        assert [x.id for x in cancelled][:2] == [made[1].id, made[3].id]

    def test_the_newest_of_a_look_back_window_come_first(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """More executions in the last hour than are asked for: the newest are listed, not
        the oldest (SurrealDB's range scans once cut before they sorted)."""
        tenant = samples.new_id("tenant")
        made = _a_second_apart(uow_factory, tenant, 6)
        now = samples.T0 + timedelta(minutes=1)
        with uow_factory() as uow:
            newest = uow.executions.recent(now=now, limit=3, tenant=tenant, with_input=False)
        assert [x.id for x in newest] == made[::-1][:3]

    def test_a_bounded_newest_first_select_over_a_range_returns_the_newest(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """The port's select itself, not only the listings built on it (SurrealDB cut a range
        scan by its LIMIT before sorting it)."""
        tenant = samples.new_id("tenant")
        made = _a_second_apart(uow_factory, tenant, 6)
        where = {"tenant": tenant, "created_at": Range(above=samples.T0 - timedelta(hours=1))}
        with uow_factory() as uow:
            rows = uow.select("execution", where, order_by="created_at", descending=True, limit=3)
        assert [key for key, _ in rows] == made[::-1][:3]

    def test_listings_break_ties_in_time_by_key(self, uow_factory: UnitOfWorkFactory) -> None:
        """Executions started at one instant list in key order (newest-first listings in
        reverse), so every adapter shows the same page."""
        tenant = samples.new_id("tenant")
        keys = [f"x-{tenant}-{n}" for n in (3, 1, 4, 0, 2)]
        with uow_factory() as uow:
            for key in keys:
                uow.executions.save(samples.execution(id=key, tenant=tenant))
            uow.commit()
        ordered = sorted(keys)
        now = samples.T0 + timedelta(minutes=1)
        with uow_factory() as uow:
            assert [x.id for x in uow.executions.every(tenant, with_input=False)] == ordered
            newest = uow.executions.recent(now=now, limit=3, tenant=tenant, with_input=False)
            assert [x.id for x in newest] == ordered[::-1][:3]

    @pytest.mark.parametrize("page", [1, 2, 3, 20])
    def test_pages_of_a_listing_continue_where_the_last_ended(
        self, uow_factory: UnitOfWorkFactory, page: int
    ) -> None:
        """Each page starts after the last execution of the one before, so paging shows
        every execution once, in the listing's order: ties in time included, instants on a
        whole second beside others in that second (SurrealDB's index orders them wrongly),
        and a day's gap (a window of its own) between them."""
        tenant = samples.new_id("tenant")
        instants = [0, 0.001, 0.1, 0.15, 1, 1, 1, 1.000005, 2, 86_400 * 3, 86_400 * 3 + 1]
        made = []
        with uow_factory() as uow:
            for n, seconds in enumerate(instants):
                x = samples.execution(id=f"x-{tenant}-{(n * 5) % 11}", tenant=tenant)
                x.created_at = samples.T0.replace(microsecond=0) + timedelta(seconds=seconds)
                uow.executions.save(x)
                made.append(x)
            uow.commit()
        whole = [x.id for x in sorted(made, key=lambda x: (x.created_at, x.id), reverse=True)]
        now = samples.T0 + timedelta(days=4)
        seen: list[str] = []
        last = None
        with uow_factory() as uow:
            for _ in range(len(made) + 1):
                found = uow.executions.recent(
                    now=now, limit=page, tenant=tenant, before=last, with_input=False
                )
                seen += [x.id for x in found]
                if len(found) < page:
                    break
                last = found[-1]
        assert seen == whole

    def test_a_listing_of_one_workflow_pages_through_its_executions_only(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        tenant = samples.new_id("tenant")
        made = []
        with uow_factory() as uow:
            for n in range(7):
                x = samples.execution(tenant=tenant, text="payout" if n % 3 else "kp")
                x.created_at = samples.T0 + timedelta(seconds=n)
                if n == 4:
                    x.transition(ExecutionState.CANCELLED, at=x.created_at, actor="op", reason="t")
                uow.executions.save(x)
                made.append(x)
            uow.commit()
        payouts = [x.id for x in made[::-1] if x.workflow_name == "payout"]
        now = samples.T0 + timedelta(days=1)
        seen: list[str] = []
        last = None
        with uow_factory() as uow:
            for _ in range(len(made) + 1):  # bounded: a cursor ignored would page for good
                found = uow.executions.recent(
                    now=now, limit=2, tenant=tenant, workflow="payout", before=last
                )
                if not found:
                    break
                seen += [x.id for x in found]
                last = found[-1]
            cancelled = uow.executions.recent(
                now=now, tenant=tenant, workflow="payout", state=ExecutionState.CANCELLED
            )
            assert uow.executions.recent(now=now, tenant=tenant, workflow="nope") == []
        assert seen == payouts and len(payouts) == 4
        assert [x.id for x in cancelled] == [made[4].id]

    @pytest.mark.parametrize("same_unit", [False, True], ids=["across-units", "same-unit"])
    def test_a_repeated_event_id_is_a_duplicate_and_uses_no_position(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor, same_unit: bool
    ) -> None:
        event = samples.event()
        if not same_unit:
            committed(uow_factory, lambda uow: uow.events.append(event))
        before = backdoor.snapshot()
        with uow_factory() as uow:
            if same_unit:
                uow.events.append(event)
            uow.sources.add(samples.source())
            repeated = evolve(event, actor="someone else").sealed()
            if same_unit:  # refused as it is staged, as a repeated create is
                with pytest.raises(DuplicateRecord, match="already staged") as duplicate:
                    uow.events.append(repeated)
            else:
                uow.events.append(repeated)
                with pytest.raises(DuplicateRecord) as duplicate:
                    uow.commit()
        assert (duplicate.value.table, duplicate.value.key) == (EVENT_TABLE, event.id)
        assert_state(before, backdoor, "a duplicate commit wrote something")
        # The failed commit consumed no position: the next event takes the next one.
        expected = state.copied(before)
        following = samples.event()
        with uow_factory() as uow:
            uow.events.append(following)
            assert uow.commit().event_positions == (state.put_event(expected, following),)
        assert_state(expected, backdoor)

    # -- events ------------------------------------------------------------------------------

    def test_an_event_not_sealed_is_refused_when_staged(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor
    ) -> None:
        """Its hash is what `events` checks: the refusal says so, not the field spec's words."""
        before = backdoor.snapshot()
        with uow_factory() as uow:
            with pytest.raises(InvalidRecord, match=r"not sealed .*append event\.sealed\(\)"):
                uow.events.append(evolve(samples.event(), integrity_hash=""))
            uow.commit()
        assert_state(before, backdoor, "a refused event was written")

    def test_events_are_read_by_key_and_by_field_as_any_table_is(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """The log is also a table: a reader of `event` finds the same records everywhere
        (found by a service's invariant check: the in-memory adapter's table was empty)."""
        event = samples.event()
        committed(uow_factory, lambda uow: uow.events.append(event))
        with uow_factory() as uow:
            by_key = uow.get(EVENT_TABLE, event.id)
            by_field = uow.select(EVENT_TABLE, {"event_id": event.id, "tenant": event.tenant})
            many = uow.get_many(EVENT_TABLE, [event.id, "no-such-event"])
        assert by_key is not None and by_key["event_id"] == event.id and by_key["position"] >= 1
        assert by_field == [(event.id, by_key)]
        assert list(many) == [event.id]

    def test_units_open_together_get_distinct_positions(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor
    ) -> None:
        """Positions are taken at commit, not when a unit opens: two open at once, each
        appending, get one after the other (numbered from the head each read, both had 1)."""
        first, second = uow_factory(), uow_factory()
        a, b = samples.event(), samples.event()
        first.events.append(a)
        second.events.append(b)
        (pa,) = first.commit().event_positions
        assert second.commit().event_positions == (pa + 1,)
        with uow_factory() as uow:
            assert [(e.id, e.position) for e in uow.events.read_after(pa - 1, 10)] == [
                (a.id, pa),
                (b.id, pa + 1),
            ]
        assert state.last_position(backdoor.snapshot()) == pa + 1

    def test_event_positions_have_no_gaps_under_concurrent_commits(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor
    ) -> None:
        base = state.last_position(backdoor.snapshot())
        receipts: list[tuple[list[EventEnvelope], tuple[int, ...]]] = []
        lock = threading.Lock()

        def commit_events(thread: int) -> int:
            for i in range(self.commits_per_thread):
                events = [samples.event(text=f"t{thread}") for _ in range(1 + (thread + i) % 3)]
                with uow_factory() as uow:
                    for event in events:
                        uow.events.append(event)
                    positions = uow.commit().event_positions
                with lock:
                    receipts.append((events, positions))
            return 0

        _run_threads(self.threads, commit_events)
        total = sum(len(events) for events, _ in receipts)
        every = sorted(p for _, positions in receipts for p in positions)
        assert every == list(range(base + 1, base + total + 1)), "gaps or repeats"
        for events, positions in receipts:
            assert len(positions) == len(events)
            assert list(positions) == list(range(positions[0], positions[0] + len(events)))
        stored = backdoor.snapshot()[EVENT_TABLE]
        by_id = {e.id: p for events, ps in receipts for e, p in zip(events, ps, strict=True)}
        assert {key: stored[key]["position"] for key in by_id} == by_id
        with uow_factory() as uow:
            read = uow.events.read_after(base, total)
        assert [(e.id, e.position) for e in read] == sorted(by_id.items(), key=lambda kv: kv[1])
        assert all(e.intact for e in read)

    # -- hostile values ----------------------------------------------------------------------

    @pytest.mark.parametrize("name", list(samples.HOSTILE))
    def test_hostile_text_round_trips_verbatim(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor, name: str
    ) -> None:
        text = samples.HOSTILE[name]
        # Ids and unique values carry a random tail so a shared store never sees them twice.
        unique = samples.new_id(text)
        source = samples.hostile_source(unique)
        manifest = samples.evidence(unique, id=unique, tenant=text, text=text)
        event = samples.event(id=unique, tenant=text, text=text)
        capsule = samples.capsule(id=unique, tenant=text, publication_id=unique, text=text)
        analysis = samples.analysis(id=unique, tenant=text, text=text)
        decision = samples.decision(id=unique, tenant=text, text=text)
        execution = samples.execution(id=unique, tenant=text, idempotency_key=unique, text=text)
        entries = list(execution.new_audit)
        expected = backdoor.snapshot()
        with uow_factory() as uow:
            uow.sources.add(source)
            uow.evidence.add(manifest)
            uow.events.append(event)
            uow.capsules.add(capsule)
            uow.analyses.add(analysis)
            uow.decisions.add(decision)
            save_execution(uow, expected, execution)
            uow.commit()
        state.put_source(expected, source)
        state.put_evidence(expected, manifest)
        position = state.put_event(expected, event)
        state.put_capsule(expected, capsule)
        state.put(expected, "analysis", unique, records.analysis_doc(analysis))
        state.put(expected, "decision", unique, records.decision_doc(decision))
        assert_state(expected, backdoor, f"{name}: not stored verbatim")

        with uow_factory() as uow:
            assert uow.sources.get(unique) == source
            assert uow.sources.find_identical(unique, unique, source.content_digest) == source
            assert uow.evidence.for_subject(text, unique) == [manifest]
            assert uow.events.read_after(position - 1, 1) == [evolve(event, position=position)]
            assert uow.capsules.by_publication(text, unique) == capsule
            assert uow.analyses.get(unique) == analysis
            assert uow.decisions.get(unique) == decision
            assert uow.executions.by_idempotency_key(text, unique) == execution
            assert uow.audit.for_execution(unique) == entries

    def test_a_long_log_reads_whole_in_one_page(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor
    ) -> None:
        """More events than the engine's index scans fetch at once (500), read from before the
        first position and from the middle: none may be skipped."""
        with uow_factory() as uow:
            for _ in range(1100):
                uow.events.append(samples.event())
            uow.commit()
        last = max(int(d["position"]) for d in backdoor.snapshot()[EVENT_TABLE].values())
        first = last - 1100
        before_first = max(first - 5, 0)
        for after, limit in ((first, 1100), (first, 1000), (first + 400, 650), (before_first, 700)):
            with uow_factory() as uow:
                read = [e.position for e in uow.events.read_after(after, limit)]
            expected = list(range(max(after, 0) + 1, min(after + limit, last) + 1))
            assert read == expected, f"after {after}, limit {limit}: {len(read)} read"
        with uow_factory() as uow:
            assert uow.events.head() == last

    @pytest.mark.parametrize(
        ("position", "limit"), [(1.5, 2), (True, 2), ("1", 2), (0, 2.0), (0, 0), (-1, 2)]
    )
    def test_a_position_or_limit_that_is_not_a_whole_number_is_refused(
        self, uow_factory: UnitOfWorkFactory, position: Any, limit: Any
    ) -> None:
        committed(uow_factory, lambda uow: uow.events.append(samples.event()))
        with uow_factory() as uow, pytest.raises(ValueError, match="must be an integer >="):
            uow.events.read_after(position, limit)

    def test_a_limit_or_position_past_any_store_reads_as_no_limit_or_nothing(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """SurrealDB's integers stop at 64 bits, its LIMIT at 32: no adapter fails, or finds
        nothing where there is something, for a number larger than that."""

        def two_events(uow: UnitOfWork) -> None:
            uow.events.append(samples.event())
            uow.events.append(samples.event())

        committed(uow_factory, two_events)
        with uow_factory() as uow:
            last = uow.events.head()
            for limit in (2**32, 2**63, 2**70):
                assert [e.position for e in uow.events.read_after(last - 2, limit)] == [
                    last - 1,
                    last,
                ]
            for position in (2**63 - 2, 2**63, 2**64):
                assert uow.events.read_after(position, 2**63) == []
            listed = uow.executions.recent(now=samples.T0, limit=2**63)
            assert listed == uow.executions.recent(now=samples.T0, limit=10_000)
            # Windows that would reach back past the first instant there is: no bound.
            assert uow.executions.recent(now=datetime(2, 1, 1, tzinfo=UTC)) == []

    @pytest.mark.parametrize(
        ("argument", "value"),
        [
            ("limit", -1),
            ("limit", 0),
            ("limit", True),
            ("limit", "5"),
            ("limit", 1.5),
            ("now", datetime(2025, 1, 1)),
            ("now", "2025-01-01"),
            ("state", "running"),
            ("before", "x-1"),
            ("tenant", 7),
            ("workflow", b"kp"),
        ],
    )
    def test_a_listing_argument_of_the_wrong_kind_is_refused_alike_everywhere(
        self, uow_factory: UnitOfWorkFactory, argument: str, value: Any
    ) -> None:
        committed(uow_factory, lambda uow: uow.executions.save(samples.execution()))
        arguments: dict[str, Any] = {"now": samples.T0, argument: value}
        with uow_factory() as uow, pytest.raises(ValueError, match=f"^{argument}"):
            uow.executions.recent(**arguments)
        if argument in ("limit", "state"):
            in_state = {"state": ExecutionState.PENDING, argument: value}
            with uow_factory() as uow, pytest.raises(ValueError, match=f"^{argument}"):
                uow.executions.in_state(**in_state)

    def test_listing_in_no_state_is_refused(self, uow_factory: UnitOfWorkFactory) -> None:
        with uow_factory() as uow, pytest.raises(ValueError, match=r"^state must be an Exec"):
            uow.executions.in_state(None)  # type: ignore[arg-type]

    def test_text_of_a_str_subclass_is_stored_and_compared_as_its_text(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """Before, the in-memory adapter kept the caller's object and matched filters with
        its own __eq__ and __hash__, SurrealDB with the text: they answered differently."""

        class Anything(str):
            def __eq__(self, other: object) -> bool:
                return True

            def __hash__(self) -> int:
                return 42

        capsule = evolve(samples.capsule(), id=Anything("cap-sub"), title=Anything("titled"))
        committed(uow_factory, lambda uow: uow.capsules.add(capsule))
        with uow_factory() as uow:
            assert uow.select("capsule", {"status": Anything("nothing has this status")}) == []
            assert uow.select("capsule", {"status": AnyOf([Anything("nor this")])}) == []
            assert uow.capsules.by_publication(capsule.tenant, Anything("no such")) is None
            found = uow.capsules.by_publication(capsule.tenant, Anything(capsule.publication_id))
            assert found is not None and found.id == "cap-sub"
            [(key, doc)] = uow.select("capsule", {"tenant": capsule.tenant})
            assert type(key) is str and type(doc["title"]) is str and doc["title"] == "titled"
            got = uow.get("capsule", Anything("cap-sub"))
            assert got is not None and type(got["title"]) is str

    @pytest.mark.parametrize(
        ("make", "problem"),
        [
            (lambda: loosely(samples.source(), kind="imf"), "field kind must be a SourceKind"),
            (lambda: loosely(samples.source(), id=5), "record key must be non-empty"),
            # Text for a list was stored as its letters.
            (lambda: loosely(samples.decision(), reasons="abc"), "field reasons must be a list"),
            (lambda: loosely(samples.capsule(), chunks=None), "field chunks must be a list"),
            (lambda: loosely(samples.capsule(), status="published"), "field status must be a"),
            (
                lambda: loosely(samples.execution().new_audit[0], sequence="1"),
                "field sequence must be an int",
            ),
        ],
        ids=["enum-as-text", "number-id", "text-for-list", "none-for-list", "status", "sequence"],
    )
    def test_an_entity_built_with_a_field_of_another_type_is_refused_by_name(
        self,
        uow_factory: UnitOfWorkFactory,
        backdoor: Backdoor,
        make: Callable[[], Any],
        problem: str,
    ) -> None:
        entity = make()
        repository = {
            "KnowledgeSource": "sources",
            "PolicyDecision": "decisions",
            "Capsule": "capsules",
            "AuditEntry": "audit",
        }[type(entity).__name__]
        before = backdoor.snapshot()
        with uow_factory() as uow, pytest.raises(InvalidRecord, match=problem):
            getattr(uow, repository).add(entity)
            uow.commit()
        assert backdoor.snapshot() == before

    def test_reads_given_nothing_where_something_is_needed_are_refused(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        with uow_factory() as uow:
            with pytest.raises(ValueError, match=r"^limit"):
                uow.executions.recent(now=samples.T0, limit=None)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="keys must be a list"):
                uow.get_many("capsule", None)  # type: ignore[arg-type]

    @pytest.mark.parametrize("text", ["ac\x00me", "ac\udc00me"], ids=["nul", "surrogate"])
    def test_a_value_no_record_can_hold_finds_nothing_everywhere(
        self, uow_factory: UnitOfWorkFactory, text: str
    ) -> None:
        execution = samples.execution()
        committed(uow_factory, lambda uow: uow.executions.save(execution))
        with uow_factory() as uow:
            assert uow.executions.by_idempotency_key(text, "k") is None
            assert uow.executions.by_idempotency_key(execution.tenant, text) is None
            assert uow.evidence.for_subjects(text, ["a", text]) == []
            either = uow.select("execution", {"tenant": AnyOf((text, execution.tenant))})
            assert execution.id in dict(either)
            either = uow.select("execution", {"state": AnyOf((text, execution.state.value))})
            assert execution.id in dict(either)
            assert uow.executions.recent(now=samples.T0, tenant=text) == []

    def test_the_head_is_the_last_position_committed(self, uow_factory: UnitOfWorkFactory) -> None:
        with uow_factory() as uow:
            before = uow.events.head()
            uow.events.append(samples.event())
            uow.events.append(samples.event())
            assert uow.events.head() == before  # staged is not committed
            uow.commit()
        with uow_factory() as uow:
            assert uow.events.head() == before + 2
            assert [e.position for e in uow.events.read_after(before, 5)] == [
                before + 1,
                before + 2,
            ]
            uow.events.append(samples.event())
        with uow_factory() as uow:  # rolled back: no position used
            assert uow.events.head() == before + 2

    @pytest.mark.parametrize(
        "zone",
        [
            timezone(timedelta(hours=5, minutes=45)),
            timezone(timedelta(minutes=19, seconds=32)),
            timezone(-timedelta(hours=23)),
            timezone(timedelta(0), "GMT"),
        ],
        ids=["+05:45", "+00:19:32", "-23:00", "GMT"],
    )
    def test_a_datetime_in_any_zone_is_stored_as_the_same_instant(
        self, uow_factory: UnitOfWorkFactory, zone: timezone
    ) -> None:
        """Historical zones have offsets with seconds in them, which SurrealDB cannot parse:
        every datetime is stored in UTC, on every adapter alike (a zone at offset zero too)."""
        at = datetime(1930, 6, 1, 12, 0, 0, 250000, tzinfo=zone)
        source = evolve(samples.source(), acquired_at=at)
        with uow_factory() as uow:
            uow.sources.add(source)
            uow.commit()
        with uow_factory() as uow:
            found = uow.sources.get(source.id)
        assert found is not None
        stored = found.acquired_at
        assert stored == at and stored.tzinfo == UTC

    def test_reads_take_instants_in_any_zone_and_at_the_ends_of_time(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """A filter's instant is compared as the instant it is, on every adapter alike:
        SurrealDB could not parse an offset with seconds in it, and widening a bound at the
        first or last instant there is overflowed."""
        at = datetime(1930, 6, 1, 12, tzinfo=timezone(timedelta(minutes=19, seconds=32)))
        source = evolve(samples.source(), acquired_at=at)
        committed(uow_factory, lambda uow: uow.sources.add(source))
        first = datetime.min.replace(tzinfo=UTC)
        last = datetime.max.replace(tzinfo=UTC)
        with uow_factory() as uow:
            assert [k for k, _ in uow.select("knowledge_source", {"acquired_at": at})] == [
                source.id
            ]
            around = Range(above=at - timedelta(seconds=1), below=at + timedelta(seconds=1))
            assert len(uow.select("knowledge_source", {"acquired_at": around})) == 1
            assert len(uow.select("knowledge_source", {"acquired_at": Range(first, last)})) == 1
            assert uow.select("knowledge_source", {"acquired_at": Range(above=last)}) == []
            assert uow.executions.recent(now=first + timedelta(seconds=1)) == []
            assert uow.executions.recent(now=at) == []
            behind = timezone(-timedelta(hours=23, minutes=59, seconds=59))
            assert uow.executions.recent(now=last.replace(tzinfo=behind)) == []

    def test_instants_and_integers_past_the_ends_of_their_kind_bound_nothing_and_match_nothing(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """Records at the very first and last instants there are; filters by instants whose
        UTC reading is past them, or by integers past 64 bits, answer as those values would,
        alike on every adapter (SurrealDB could not even decode them)."""
        first = datetime.min.replace(tzinfo=UTC)
        last = datetime.max.replace(tzinfo=UTC)
        behind = timezone(-timedelta(hours=23, minutes=59, seconds=59))
        ahead = timezone(timedelta(hours=23, minutes=59, seconds=59))
        past_last, before_first = last.replace(tzinfo=behind), first.replace(tzinfo=ahead)
        early = evolve(samples.source(), acquired_at=first)
        late = evolve(samples.source(), acquired_at=last)
        with uow_factory() as uow:
            uow.sources.add(early)
            uow.sources.add(late)
            uow.commit()

        def found(where: Any) -> set[str]:
            with uow_factory() as uow:
                return {k for k, _ in uow.select("knowledge_source", {"acquired_at": where})}

        assert found(past_last) == found(before_first) == set()
        assert found(AnyOf((past_last, last))) == {late.id}
        assert found(Range(below=past_last)) == found(Range(above=before_first))
        assert found(Range(below=past_last)) == {early.id, late.id}
        assert found(Range(above=past_last)) == found(Range(below=before_first)) == set()
        assert found(Range()) == {early.id, late.id}
        with uow_factory() as uow:
            for where in ({"version": 2**70}, {"version": AnyOf((2**70,))}):
                assert uow.select("knowledge_source", where) == []
            assert len(uow.select("knowledge_source", {"version": Range(below=2**70)})) == 2
            assert uow.select("knowledge_source", {"version": Range(above=2**64)}) == []
            with pytest.raises(ValueError, match="range bound no text can be"):
                uow.select("knowledge_source", {"tenant": Range(above="\x00")})

    def test_an_empty_range_finds_every_record_holding_the_field(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        capsule = samples.capsule()
        committed(uow_factory, lambda uow: uow.capsules.add(capsule))
        with uow_factory() as uow:
            assert uow.select("capsule", {"retracted_at": Range()}) == []  # not retracted
            assert len(uow.select("capsule", {"published_at": Range()})) == 1

    def test_an_instant_past_the_ends_of_time_in_utc_is_refused_and_nothing_is_written(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor
    ) -> None:
        before = backdoor.snapshot()
        late = datetime(9999, 12, 31, 23, 59, tzinfo=timezone(-timedelta(hours=14)))
        with uow_factory() as uow, pytest.raises(InvalidRecord, match="past the ends of time"):
            uow.sources.add(evolve(samples.source(), acquired_at=late))
        assert backdoor.snapshot() == before

    def test_a_write_refused_while_staging_leaves_the_unit_as_it_was(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor
    ) -> None:
        """A refused write (here by fault injection) must not take an earlier one with it,
        even the one it would have replaced."""
        capsule = samples.capsule()
        committed(uow_factory, lambda uow: uow.capsules.add(capsule))
        injector = FaultInjector(uow_factory, FaultPlan(fail_at_write=2))
        with injector() as uow:
            found = uow.capsules.get(capsule.id)
            assert found is not None
            first = evolve(found, title="first change")
            uow.capsules.update(first)
            with pytest.raises(InjectedFault):
                uow.capsules.update(evolve(found, title="second change"))
            assert [w.document["title"] for w in uow.staged if w.document] == ["first change"]
            uow.commit()
        assert backdoor.snapshot()["capsule"][capsule.id]["title"] == "first change"

    @pytest.mark.parametrize("key", [None, b"src-1", 1.5, "", "lone \ud800", "nul\x00"])
    def test_a_key_no_record_could_have_is_simply_not_found(
        self, uow_factory: UnitOfWorkFactory, key: Any
    ) -> None:
        with uow_factory() as uow:
            assert uow.get("knowledge_source", key) is None
            assert uow.get_many("knowledge_source", [key]) == {}
            with pytest.raises(InvalidRecord, match="unknown table"):
                uow.get("no_such_table", "x")
            with pytest.raises(InvalidRecord, match="unknown table"):
                uow.select("no_such_table", {})

    def test_reads_by_what_no_record_has_are_refused_alike(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """A field the table does not have, a filter value of no comparable kind, a
        sequence that is no number: the same error on every adapter (SurrealDB answered
        nothing where memory raised TypeError, or the other way round)."""
        with uow_factory() as uow:
            with pytest.raises(InvalidRecord, match="no field 'bad`field'"):
                uow.select("capsule", {"bad`field": 1})
            with pytest.raises(ValueError, match=r"capsule\.publication_id: a filter compares"):
                uow.capsules.by_publication("t1", ["p"])  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="a filter compares"):
                uow.executions.by_idempotency_key("t1", {"k": 1})  # type: ignore[arg-type]
            for sequence in ("1", True, 0):
                with pytest.raises(ValueError, match="sequence"):
                    uow.audit.entry("wfx-1", sequence)  # type: ignore[arg-type]
            # Values of another kind than the field's: True is not 1, "2000" no instant.
            naive = datetime(2026, 1, 1)
            for where in (
                {"version": True},
                {"version": AnyOf((1, True))},
                {"status": 1},
                {"published_at": naive},
                {"published_at": Range(above=naive)},
                {"published_at": Range(above="2000")},
                {"title": Range(above=0)},
            ):
                with pytest.raises(ValueError, match="cannot compare"):
                    uow.select("capsule", where)
            with pytest.raises(InvalidRecord, match="no field 'nope' to order by"):
                uow.select("capsule", {}, order_by="nope")
            with pytest.raises(ValueError, match="where must be a mapping"):
                uow.select("capsule", [("title", "x")])  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="keys must be a list"):
                uow.get_many("capsule", "cap-1")

    @pytest.mark.parametrize(
        ("field", "value", "problem"),
        [
            ("source_ids", ("src-1",), "give a list"),
            ("version", 2**70, "64 bits"),
            # SurrealDB's schema would store these as what its types make of them...
            ("version", 1.0, "`version` must be int, got float"),
            ("version", Decimal(1), "`version` must be int, got Decimal"),
            ("title", uuid.UUID(int=1), "`title` must be string, got UUID"),
            # ...and fail to send these, the commit's outcome then unknown.
            ("title", timedelta(days=1), "`title` must be string, got timedelta"),
            ("source_ids", ["src-1", b"src-2"], "`source_ids` must be array<string>"),
            # SurrealDB's `TYPE string` took an instant and stored it as its text.
            ("title", datetime(2026, 1, 1, tzinfo=UTC), "`title` must be string, got datetime"),
            ("retraction_reason", samples.T0, "`retraction_reason` must be option<string>"),
            # Refused at commit before: now as staged too.
            ("version", "1", "`version` must be int, got str"),
            (
                "published_at",
                "2026-01-01T00:00:00Z",
                "`published_at` must be option<datetime>, got str",
            ),
        ],
    )
    def test_a_value_no_adapter_could_keep_as_given_is_refused(
        self,
        uow_factory: UnitOfWorkFactory,
        backdoor: Backdoor,
        field: str,
        value: Any,
        problem: str,
    ) -> None:
        before = backdoor.snapshot()
        capsule = samples.capsule()
        doc = records.capsule_doc(capsule) | {field: value}
        with uow_factory() as uow, pytest.raises(InvalidRecord, match=problem):
            uow.stage(Write(Op.CREATE, "capsule", capsule.id, doc))
        assert backdoor.snapshot() == before

    def test_a_datetime_without_a_zone_is_refused_and_nothing_is_written(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor
    ) -> None:
        before = backdoor.snapshot()
        source = evolve(samples.source(), acquired_at=datetime(2026, 1, 1, 12))
        with uow_factory() as uow, pytest.raises(InvalidRecord, match="without a zone"):
            uow.sources.add(source)
        assert backdoor.snapshot() == before

    @pytest.mark.parametrize("where", ["text-field", "list-item", "record-id", "event-field"])
    def test_nul_is_refused_and_nothing_is_written(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor, where: str
    ) -> None:
        before = backdoor.snapshot()
        with pytest.raises(InvalidRecord), uow_factory() as uow:
            uow.sources.add(samples.source())  # a valid write first: it must go too
            if where == "text-field":
                uow.sources.add(evolve(samples.source(), title="before\x00after"))
            elif where == "list-item":
                uow.evidence.add(evolve(samples.evidence("s"), decision_ids=("ok", "a\x00b")))
            elif where == "record-id":
                uow.capsules.add(samples.capsule(id="cap\x00-1"))
            else:
                uow.events.append(samples.event(text="actor\x00"))
            uow.commit()
        assert_state(before, backdoor, f"NUL in {where}: something was written")

    @pytest.mark.parametrize("violation", list(violations.FIELD_VIOLATIONS))
    @pytest.mark.parametrize("position", ["first", "last"])
    def test_a_record_breaking_the_field_spec_is_refused_and_writes_nothing(
        self,
        uow_factory: UnitOfWorkFactory,
        backdoor: Backdoor,
        violation: str,
        position: str,
    ) -> None:
        field, stage_bad = violations.FIELD_VIOLATIONS[violation]
        with uow_factory() as uow:
            uow.events.append(samples.event())
            last = uow.commit().event_positions[-1]
        before = backdoor.snapshot()

        def stage_good(uow: UnitOfWork) -> None:
            source = samples.source()
            uow.sources.add(source)
            uow.evidence.add(samples.evidence(source.id))
            uow.events.append(samples.event())

        with uow_factory() as uow:
            first, second = (
                (stage_bad, stage_good) if position == "first" else (stage_good, stage_bad)
            )
            # Refused as it is staged (a value of another kind) or at commit (a constraint).
            with pytest.raises(InvalidRecord) as refused:
                first(uow)
                second(uow)
                uow.commit()
        assert f"`{field}`" in str(refused.value), refused.value
        assert_state(before, backdoor, f"{violation}: something was written")
        with uow_factory() as uow:  # the refused batch took no event position either
            uow.events.append(samples.event())
            assert uow.commit().event_positions == (last + 1,)

    def test_a_field_outside_the_spec_is_refused_when_staged(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor
    ) -> None:
        before = backdoor.snapshot()
        doc = records.capsule_doc(samples.capsule()) | {"note": "dropped silently elsewhere"}
        with uow_factory() as uow, pytest.raises(InvalidRecord, match="`note`"):
            uow.stage(Write(Op.CREATE, "capsule", "extra-field", doc))
        assert_state(before, backdoor)

    def test_a_refused_record_never_reaches_storage(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor
    ) -> None:
        expected = backdoor.snapshot()
        good = samples.source()
        with uow_factory() as uow:
            uow.sources.add(good)
            with pytest.raises(InvalidRecord):
                uow.sources.add(evolve(samples.source(), content_text="\x00"))
            uow.commit()
        state.put_source(expected, good)
        assert_state(expected, backdoor)

    # -- atomicity ---------------------------------------------------------------------------

    @pytest.mark.parametrize("case", atomicity.FAULT_CASES, ids=lambda c: c.name)
    def test_a_fault_at_any_position_leaves_no_partial_write(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor, case: atomicity.FaultCase
    ) -> None:
        atomicity.check_fault_case(uow_factory, backdoor, case)

    def test_random_units_match_a_dict_model(
        self, uow_factory: UnitOfWorkFactory, backdoor: Backdoor
    ) -> None:
        # Imported here so loading the plugin never requires hypothesis.
        from adapters.contract import stateful

        stateful.run(
            uow_factory,
            backdoor,
            examples=self.stateful_examples,
            steps=self.stateful_steps,
        )


def _increment(uow_factory: UnitOfWorkFactory, execution_id: str, step: str, rounds: int) -> int:
    """Bump one attempt counter `rounds` times, retrying conflicts; return how many there were."""
    conflicts = 0
    done = 0
    while done < rounds:
        with uow_factory() as uow:
            execution = uow.executions.require(execution_id)
            time.sleep(0.001)  # let the other threads read the same version meanwhile
            execution.begin_attempt(step)
            uow.executions.save(execution)
            try:
                uow.commit()
            except ConcurrencyConflict:
                conflicts += 1
                continue
        done += 1
    return conflicts


def _run_threads(count: int, work: Callable[[int], int]) -> list[int]:
    """Start `count` threads together; re-raise the first failure in the calling thread."""
    barrier = threading.Barrier(count)
    results: list[int] = [0] * count
    errors: list[BaseException] = []

    def target(n: int) -> None:
        try:
            barrier.wait()
            results[n] = work(n)
        except BaseException as exc:  # reported below, in the test's own thread
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a worker thread hung"
    if errors:
        raise errors[0]
    return results
