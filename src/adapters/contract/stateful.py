"""A Hypothesis state machine: random units of work against a plain dict model.

Each rule runs whole units (create, update, delete, append; commit, roll back, raise, race
a stale version, inject a fault) and applies to the model only what a correct store must
keep. After every step the back door must show exactly the model.

The model starts from the store's current snapshot and every run uses its own key prefix,
so one store can serve every example (fixtures are made once per test, not per example).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from datetime import timedelta

from attrs import evolve
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from adapters.contract import atomicity, samples, state
from adapters.contract.backdoor import Backdoor
from domain.model.lifecycle import ExecutionState
from ports import records
from ports.errors import ConcurrencyConflict, DuplicateRecord, InvalidRecord, PortError
from ports.storage import CommitReceipt, Op, Write
from ports.unit_of_work import UnitOfWork, UnitOfWorkFactory

POOL = st.integers(min_value=0, max_value=3)  # small, so ids collide and records get reused
ENDINGS = st.sampled_from(["commit", "commit", "rollback", "raise"])
TITLES = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=24
)
Stage = Callable[[UnitOfWork], None]


class _Abandon(Exception):
    pass


def run(uow_factory: UnitOfWorkFactory, backdoor: Backdoor, *, examples: int, steps: int) -> None:
    run_state_machine_as_test(
        machine(uow_factory, backdoor),
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,  # storage latency varies; this machine checks behaviour, not speed
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


def machine(uow_factory: UnitOfWorkFactory, backdoor: Backdoor) -> type[RuleBasedStateMachine]:
    class UnitOfWorkMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.model = backdoor.snapshot()
            self.run = uuid.uuid4().hex[:12]
            self.tenant = f"tenant-{self.run}"
            self.fresh = itertools.count()
            self.clock = itertools.count(1)

        def key(self, kind: str, n: int) -> str:
            return f"{kind}-{self.run}-{n}"

        def new_key(self, kind: str) -> str:
            return f"{kind}-{self.run}-new{next(self.fresh)}"

        def unit(self, stage: Stage, ending: str, error: type[PortError] | None) -> bool:
            """Run one unit of work; True if it committed."""
            if ending == "rollback":
                with uow_factory() as uow:
                    stage(uow)
                return False
            if ending == "raise":
                try:
                    with uow_factory() as uow:
                        stage(uow)
                        raise _Abandon()
                except _Abandon:
                    return False
            with uow_factory() as uow:
                stage(uow)
                try:
                    uow.commit()
                except PortError as exc:
                    assert error is not None and isinstance(exc, error), f"unexpected {exc!r}"
                    return False
            assert error is None, f"the commit should have raised {error.__name__}"
            return True

        # -- creates -------------------------------------------------------------------------

        @rule(n=POOL, with_event=st.booleans(), ending=ENDINGS)
        def ingest(self, n: int, with_event: bool, ending: str) -> None:
            source = samples.source(id=self.key("src", n), tenant=self.tenant)
            manifest = samples.evidence(source.id, id=self.new_key("ev"), tenant=self.tenant)
            event = samples.event(id=self.new_key("evt"), tenant=self.tenant)

            def stage(uow: UnitOfWork) -> None:
                uow.sources.add(source)
                uow.evidence.add(manifest)
                if with_event:
                    uow.events.append(event)

            taken = source.id in self.model["knowledge_source"]
            if self.unit(stage, ending, DuplicateRecord if taken else None):
                state.put_source(self.model, source)
                state.put_evidence(self.model, manifest)
                if with_event:
                    state.put_event(self.model, event)

        @rule(n=POOL, publication=POOL, title=TITLES, ending=ENDINGS)
        def publish(self, n: int, publication: int, title: str, ending: str) -> None:
            capsule = samples.capsule(
                id=self.key("cap", n),
                tenant=self.tenant,
                publication_id=self.key("pub", publication),
                text=title,
            )
            capsules = self.model["capsule"]
            taken = capsule.id in capsules or any(
                (d["tenant"], d["publication_id"]) == (capsule.tenant, capsule.publication_id)
                for d in capsules.values()
            )
            if self.unit(
                lambda uow: uow.capsules.add(capsule), ending, DuplicateRecord if taken else None
            ):
                state.put_capsule(self.model, capsule)

        @rule(n=POOL, idem=POOL, ending=ENDINGS)
        def start_execution(self, n: int, idem: int, ending: str) -> None:
            execution = samples.execution(
                id=self.key("x", n), tenant=self.tenant, idempotency_key=self.key("idem", idem)
            )
            executions = self.model["execution"]
            taken = execution.id in executions or any(
                (d["tenant"], d["idempotency_key"]) == (self.tenant, execution.idempotency_key)
                for d in executions.values()
            )
            expected = state.copied(self.model)
            state.put_execution(expected, execution)
            if self.unit(
                lambda uow: uow.executions.save(execution),
                ending,
                DuplicateRecord if taken else None,
            ):
                self.model = expected

        @rule(count=st.integers(1, 3), repeat_id=st.booleans())
        def append_events(self, count: int, repeat_id: bool) -> None:
            mine = [k for k in self.model["event"] if self.run in k]
            events = [
                samples.event(id=self.new_key("evt"), tenant=self.tenant) for _ in range(count)
            ]
            if repeat_id and mine:
                events[-1] = samples.event(id=mine[-1], tenant=self.tenant)
            expected = state.copied(self.model)
            positions = tuple(state.put_event(expected, e) for e in events)
            with uow_factory() as uow:
                for event in events:
                    uow.events.append(event)
                try:
                    receipt: CommitReceipt | None = uow.commit()
                except DuplicateRecord:
                    receipt = None
            if repeat_id and mine:
                assert receipt is None, "a repeated event id was accepted"
            else:
                assert receipt is not None and receipt.event_positions == positions
                self.model = expected

        # -- updates and deletes ---------------------------------------------------------------

        @rule(n=POOL, title=TITLES)
        def retitle(self, n: int, title: str) -> None:
            key = self.key("cap", n)
            with uow_factory() as uow:
                current = uow.capsules.get(key)
                if current is None:
                    assert key not in self.model["capsule"]
                    return
                assert current == records.capsule_from(key, self.model["capsule"][key])
                changed = evolve(current, title=title)
                uow.capsules.update(changed)
                uow.commit()
            state.put_capsule(self.model, evolve(changed, version=changed.version + 1))

        @rule(n=POOL)
        def advance_execution(self, n: int) -> None:
            key = self.key("x", n)
            at = samples.T0 + timedelta(seconds=next(self.clock))
            with uow_factory() as uow:
                execution = uow.executions.get(key)
                if execution is None:
                    assert key not in self.model["execution"]
                    return
                if execution.state is ExecutionState.PENDING:
                    execution.transition(ExecutionState.RUNNING, at=at, actor="w", reason="go")
                else:
                    step = f"step-{execution.current_step}"
                    execution.checkpoint(step, {"n": execution.current_step}, at=at, actor="w")
                expected = state.copied(self.model)
                state.put_execution(expected, execution)
                uow.executions.save(execution)
                uow.commit()
            self.model = expected

        @rule(n=POOL, stale=st.booleans())
        def delete_capsule(self, n: int, stale: bool) -> None:
            key = self.key("cap", n)
            with uow_factory() as uow:
                doc = uow.get("capsule", key)
                if doc is None:
                    assert key not in self.model["capsule"]
                    return
                version = doc["version"] + (1 if stale else 0)
                uow.stage(Write(Op.DELETE, "capsule", key, None, version))
                try:
                    uow.commit()
                except ConcurrencyConflict:
                    assert stale, "a delete at the version read conflicted"
                    return
            assert not stale, "a delete at a stale version was applied"
            del self.model["capsule"][key]

        @rule(n=POOL, op=st.sampled_from([Op.UPDATE, Op.DELETE]))
        def change_a_source(self, n: int, op: Op) -> None:
            """Sources are immutable: the change is refused and the rest of the unit commits."""
            key = self.key("src", n)
            extra = samples.source(id=self.new_key("src"), tenant=self.tenant)
            with uow_factory() as uow:
                doc = uow.get("knowledge_source", key)
                if doc is None:
                    assert key not in self.model["knowledge_source"]
                    return
                uow.sources.add(extra)
                changed = None if op is Op.DELETE else doc | {"title": "changed"}
                try:
                    uow.stage(Write(op, "knowledge_source", key, changed, doc["version"]))
                except InvalidRecord:
                    pass
                else:
                    raise AssertionError(f"{op.value} of an immutable source was staged")
                uow.commit()
            state.put_source(self.model, extra)

        # -- races -------------------------------------------------------------------------------

        @rule(n=POOL, mine=TITLES, theirs=TITLES, read_only=st.booleans())
        def lose_a_race(self, n: int, mine: str, theirs: str, read_only: bool) -> None:
            """Another unit updates a capsule this unit read; this unit must write nothing."""
            key = self.key("cap", n)
            with uow_factory() as loser:
                current = loser.capsules.get(key)
                if current is None:
                    return
                if read_only:
                    # The capsule is only read, so a version CHECK must guard it.
                    loser.sources.add(samples.source(id=self.new_key("src"), tenant=self.tenant))
                else:
                    loser.capsules.update(evolve(current, title=mine))
                with uow_factory() as winner:
                    winner.capsules.update(evolve(current, title=theirs))
                    winner.commit()
                try:
                    loser.commit()
                except ConcurrencyConflict as exc:
                    assert (exc.table, exc.key) == ("capsule", key)
                else:
                    raise AssertionError("a commit based on a stale read was accepted")
            state.put_capsule(
                self.model, evolve(current, title=theirs, version=current.version + 1)
            )

        # -- several records at once, and faults -------------------------------------------------

        @rule(sources=st.integers(0, 3), retitles=st.sets(POOL, max_size=3), ending=ENDINGS)
        def mixed_unit(self, sources: int, retitles: set[int], ending: str) -> None:
            new = [
                samples.source(id=self.new_key("src"), tenant=self.tenant) for _ in range(sources)
            ]
            expected = state.copied(self.model)
            for source in new:
                state.put_source(expected, source)
            event = samples.event(id=self.new_key("evt"), tenant=self.tenant)
            state.put_event(expected, event)

            def stage(uow: UnitOfWork) -> None:
                for source in new:
                    uow.sources.add(source)
                for n in sorted(retitles):
                    current = uow.capsules.get(self.key("cap", n))
                    if current is not None:
                        changed = evolve(current, title=f"mixed {n}")
                        uow.capsules.update(changed)
                        state.put_capsule(expected, evolve(changed, version=changed.version + 1))
                uow.events.append(event)

            if self.unit(stage, ending, None):
                self.model = expected

        @rule(case=st.sampled_from(atomicity.FAULT_CASES))
        def fault(self, case: atomicity.FaultCase) -> None:
            # The check proves the store equals the model (or model + mutation) itself.
            self.model = atomicity.check_fault_case(uow_factory, backdoor, case)

        @invariant()
        def store_matches_model(self) -> None:
            problems = state.diff(self.model, backdoor.snapshot())
            assert not problems, "stored state differs from the model:\n  " + "\n  ".join(problems)

    return UnitOfWorkMachine
