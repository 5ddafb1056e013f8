"""The partial-write proof: fail one mutation at every position, then look at the store.

A mutation writes a domain record, its evidence manifest and its event in one unit of work.
Whatever position fails, the back door must show the store exactly as before, except for an
ambiguous commit, after which it must show the whole mutation. `check_fault_case` raises
AssertionError otherwise, which is how the suite proves it can catch a non-atomic adapter.
"""

from __future__ import annotations

from attrs import frozen

from adapters.contract import samples, state
from adapters.contract.backdoor import Backdoor, Snapshot
from adapters.faults import FaultInjector, FaultPlan
from ports import records
from ports.errors import CommitOutcomeUnknown, InjectedFault
from ports.unit_of_work import UnitOfWorkFactory

WRITES = 3  # source, evidence manifest, event


@frozen
class FaultCase:
    name: str
    plan: FaultPlan
    applied: bool = False  # an ambiguous commit did happen: everything must be there


FAULT_CASES: tuple[FaultCase, ...] = (
    *(FaultCase(f"staged-write-{n}", FaultPlan(fail_at_write=n)) for n in range(1, WRITES + 1)),
    FaultCase("commit-before-storage", FaultPlan(fail_at_commit=1)),
    *(
        FaultCase(f"abort-in-transaction-after-{k}", FaultPlan(abort_in_commit=(1, k)))
        for k in range(WRITES + 1)
    ),
    FaultCase("ambiguous-commit", FaultPlan(ambiguous_commit=1), applied=True),
)


def check_fault_case(
    uow_factory: UnitOfWorkFactory, backdoor: Backdoor, case: FaultCase
) -> Snapshot:
    """Run the mutation under `case`; return the state it proved the store to be in."""
    source = samples.source()
    manifest = samples.evidence(source.id)
    event = samples.event()
    before = backdoor.snapshot()
    expected = state.copied(before)
    if case.applied:
        state.put(expected, "knowledge_source", source.id, records.source_doc(source))
        state.put(expected, "evidence", manifest.id, records.evidence_doc(manifest))
        state.put_event(expected, event)

    injector = FaultInjector(uow_factory, case.plan)
    raised: Exception | None = None
    try:
        with injector() as uow:
            uow.sources.add(source)
            uow.evidence.add(manifest)
            uow.events.append(event)
            uow.commit()
    except (InjectedFault, CommitOutcomeUnknown) as exc:
        raised = exc
    # A check whose fault never fired would pass vacuously.
    assert injector.fired, f"{case.name}: the planned fault never fired"
    wanted = CommitOutcomeUnknown if case.applied else InjectedFault
    assert isinstance(raised, wanted), f"{case.name}: expected {wanted.__name__}, got {raised!r}"

    problems = state.diff(expected, backdoor.snapshot())
    outcome = "the mutation is not fully applied" if case.applied else "a partial write survived"
    assert not problems, f"{case.name}: {outcome}:\n  " + "\n  ".join(problems)
    # The read path must agree with storage: no cache may remember a failed unit's records.
    with uow_factory() as uow:
        seen = [
            uow.sources.get(source.id) == source,
            uow.evidence.get(manifest.id) == manifest,
            uow.events.read_after(state.last_position(before), 1) != [],
        ]
    assert seen == [case.applied] * WRITES, f"{case.name}: reads disagree with storage: {seen}"
    return expected
