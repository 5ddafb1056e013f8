"""A fault at every write and every commit of a knowledge_publication, on memory and on
SurrealDB (mem://): whatever happens, recovery completes the workflow with each step's
effects exactly once.

An injected fault either escapes the orchestrator (a crash: the process would die here)
or, when raised while a step stages its writes, is recorded as a failed attempt and
retried. Either way nothing partial may be left at the moment of the fault, and a fresh
orchestrator must finish the job.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

import pytest

from adapters.faults import FaultInjector, FaultPlan
from domain.model.evidence import EventType
from domain.model.lifecycle import ExecutionState
from ports.clock import FixedClock
from ports.errors import InjectedFault
from tests.workflow.harness import (
    DOMAIN_TABLES,
    T0,
    WORKFLOW,
    BackDoor,
    Store,
    assert_exactly_once,
    census,
    open_store,
    orchestrator,
    request,
)

DOCUMENTS = 2
KEY = "fault-key"


@pytest.fixture(scope="module", params=["memory", "surreal"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def positions(kind: str) -> tuple[int, int]:
    """How many writes and commits a clean run makes (the positions to fault)."""
    with _store(kind) as store:
        injector = FaultInjector(store.unit_of_work)
        done = orchestrator(injector, FixedClock(T0)).start(WORKFLOW, _input(), idempotency_key=KEY)
        assert done.state is ExecutionState.SUCCEEDED
        assert injector.fired == []
        # the start commits with the first step, then one commit per step (the last step's
        # commit also records success)
        assert injector.commits == 4
        return injector.writes, injector.commits


def _input() -> dict[str, object]:
    return request("pub-fault", documents=DOCUMENTS)


class _store:
    def __init__(self, kind: str) -> None:
        self.store = open_store(kind)

    def __enter__(self) -> Store:
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.store.close()


def _plans(fault: str, writes: int, commits: int) -> Iterator[FaultPlan]:
    if fault == "write":
        yield from (FaultPlan(fail_at_write=n) for n in range(1, writes + 1))
    elif fault == "commit":
        yield from (FaultPlan(fail_at_commit=n) for n in range(1, commits + 1))
    elif fault == "abort":
        for n in range(1, commits + 1):
            for k in (0, 1, 10_000):  # before the first write, after one, after the last
                yield FaultPlan(abort_in_commit=(n, k))
    elif fault == "ambiguous":
        yield from (FaultPlan(ambiguous_commit=n) for n in range(1, commits + 1))


def assert_matches_checkpoint(door: BackDoor) -> None:
    """Stored effects are exactly those of the steps the execution records as committed."""
    executions = door.table("execution")
    c = census(door)
    audit = door.table("audit")
    if not executions:
        assert not any(c.counts.values()) and not c.positions and not audit, c
        return
    (doc,) = executions.values()
    done = set(json.loads(doc["outputs_json"]))
    ingest, analyse, publish = (int(s in done) for s in ("ingest", "analyse", "publish"))
    assert {name: c.counts[name] for name in DOMAIN_TABLES} == {
        "knowledge_source": DOCUMENTS * ingest,
        "analysis": analyse,
        "capsule": publish,
        "evidence": DOCUMENTS * ingest + analyse + publish,
        "decision": ingest + analyse + publish,
    }
    assert +c.events_by_type == +Counter(
        {
            EventType.SOURCE_INGESTED.value: DOCUMENTS * ingest,
            EventType.ANALYSIS_GENERATED.value: analyse,
            EventType.CAPSULE_PUBLISHED.value: publish,
        }
    )
    assert c.positions == list(range(1, len(c.positions) + 1))
    assert len(audit) == doc["audit_sequence"]  # transitions commit with their entries


def _run_with(kind: str, plan: FaultPlan) -> None:
    with _store(kind) as store:
        door = BackDoor(store)
        clock = FixedClock(T0)
        injector = FaultInjector(store.unit_of_work)
        injector.arm(plan)
        doomed = orchestrator(injector, clock, worker_id="doomed")
        try:
            outcome = doomed.start(WORKFLOW, _input(), idempotency_key=KEY)
        except InjectedFault:
            outcome = None  # the crash: this worker is gone, its lease left behind
        del doomed
        assert len(injector.fired) == 1, injector.fired

        if plan.ambiguous_commit is not None:
            # Applied but reported unknown: resolved by re-reading, no crash, no repeat.
            assert outcome is not None and outcome.state is ExecutionState.SUCCEEDED
        elif outcome is not None:
            # Raised while a step staged its writes: recorded as a failed attempt, retried.
            assert outcome.state is ExecutionState.SUCCEEDED
            assert any(d["to_state"] == "retry_scheduled" for d in door.table("audit").values())
        else:
            assert_matches_checkpoint(door)  # nothing partial at the moment of the crash

        fresh = orchestrator(injector, clock, worker_id="recovery")
        fresh.recover(ignore_leases=True)
        if not door.table("execution"):
            # The start itself never committed: the client retries it with its key.
            fresh.start(WORKFLOW, _input(), idempotency_key=KEY)
        again = fresh.start(WORKFLOW, _input(), idempotency_key=KEY)  # a later retry is a no-op
        (execution_id,) = door.table("execution")
        assert again.id == execution_id
        assert_exactly_once(door, fresh)


@pytest.mark.parametrize("fault", ["write", "commit", "abort", "ambiguous"])
def test_a_fault_at_every_position_ends_in_exactly_once(
    kind: str, positions: tuple[int, int], fault: str
) -> None:
    writes, commits = positions
    plans = list(_plans(fault, writes, commits))
    assert plans
    for plan in plans:
        try:
            _run_with(kind, plan)
        except AssertionError as exc:
            raise AssertionError(f"{kind} {plan}: {exc}") from exc


def test_faults_in_a_row_on_one_execution(kind: str, positions: tuple[int, int]) -> None:
    """A crash, a recovery that itself crashes, an ambiguous commit, then completion."""
    with _store(kind) as store:
        door = BackDoor(store)
        clock = FixedClock(T0)
        injector = FaultInjector(store.unit_of_work)
        injector.arm(FaultPlan(fail_at_commit=2))
        with pytest.raises(InjectedFault):
            orchestrator(injector, clock, worker_id="w1").start(
                WORKFLOW, _input(), idempotency_key=KEY
            )
        injector.arm(FaultPlan(abort_in_commit=(1, 1)))
        with pytest.raises(InjectedFault):
            orchestrator(injector, clock, worker_id="w2").recover(ignore_leases=True)
        assert_matches_checkpoint(door)
        injector.arm(FaultPlan(ambiguous_commit=1, fail_at_commit=3))
        with pytest.raises(InjectedFault):
            orchestrator(injector, clock, worker_id="w3").recover(ignore_leases=True)
        assert injector.fired == ["ambiguous commit 1", "commit 3"]
        assert_matches_checkpoint(door)
        final = orchestrator(store.unit_of_work, clock, worker_id="w4")
        (done,) = final.recover(ignore_leases=True)
        assert done.state is ExecutionState.SUCCEEDED
        assert_exactly_once(door, final)
