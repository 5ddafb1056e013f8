"""Threads racing to run or recover one execution: leases are ignored on purpose, so only
the version checks stand between them and a step done twice. Each racer works through a
factory of its own, as workers in separate processes do: within one process, on one
factory, a running step is never taken over at all (test_orchestrator)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from adapters.faults import FaultInjector
from domain.model.errors import InvalidState
from domain.model.execution import WorkflowExecution
from domain.model.lifecycle import ExecutionState
from domain.model.policy import ImpactTier
from domain.orchestration.definition import (
    RetryableError,
    RetryPolicy,
    Step,
    StepContext,
    WorkflowDefinition,
)
from domain.orchestration.orchestrator import Orchestrator
from domain.services.governance import ApprovalRequired
from domain.workflows import knowledge_publication as kp
from ports.clock import FixedClock
from ports.storage import CommitReceipt
from ports.unit_of_work import UnitOfWork, WrappingUnitOfWork
from tests.workflow.harness import (
    T0,
    WORKFLOW,
    BackDoor,
    Calls,
    assert_exactly_once,
    definitions,
    open_store,
    orchestrator,
    request,
    service,
    variant,
)

THREADS = 4
STEPS = ("ingest", "analyse", "publish", "verify")


def _dawdle(n: int, uow: UnitOfWork, ctx: StepContext) -> None:
    time.sleep(0.002)


ROUNDS = {"memory": 8, "surreal": 4}


def _race(workers: list[Orchestrator], act: Callable[[Orchestrator], object]) -> list[str]:
    barrier = threading.Barrier(len(workers))
    errors: list[str] = []

    def go(worker: Orchestrator) -> None:
        barrier.wait()
        try:
            act(worker)
        except Exception as exc:  # every error is a finding
            errors.append(f"{worker.worker_id}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=go, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a racing worker hung"
    return errors


@pytest.mark.parametrize("kind", ["memory", "surreal"])
@pytest.mark.parametrize("how", ["run", "recover"])
def test_racing_workers_do_each_step_exactly_once(kind: str, how: str) -> None:
    # Commits attempted beyond the four that win: proof that the workers really raced.
    lost = sum(_round(kind, how, n) for n in range(ROUNDS[kind]))
    assert lost > 0, "the workers never overlapped; the race proved nothing"


def _round(kind: str, how: str, n: int) -> int:
    store = open_store(kind)
    try:
        door = BackDoor(store)
        clock = FixedClock(T0)
        starter = orchestrator(store.unit_of_work, clock, worker_id="starter")
        pending = starter.start(
            WORKFLOW, request(f"pub-race-{n}"), idempotency_key="race", run=False
        )
        # No plan: each only counts.
        countings = [FaultInjector(store.unit_of_work) for _ in range(THREADS)]
        # Every step dawdles a little after staging its writes (releasing the GIL), so the
        # racers really overlap instead of one finishing before the others start.
        workers = [
            orchestrator(
                counting,
                clock,
                worker_id=f"racer-{i}",
                workflows={
                    WORKFLOW: variant(
                        kp.definition(service(counting)),
                        WORKFLOW,
                        {name: Calls().wrap(_dawdle) for name in STEPS},
                    )
                },
            )
            for i, counting in enumerate(countings)
        ]
        if how == "run":
            errors = _race(workers, lambda w: w.run(pending.id, ignore_leases=True))
        else:
            errors = _race(workers, lambda w: w.recover(ignore_leases=True))
        assert errors == [], errors

        done = starter.get(pending.id)
        assert done.state is ExecutionState.SUCCEEDED
        assert_exactly_once(door, starter)
        # Each step was checkpointed once, whoever won it.
        steps = Counter(
            d.get("step") for d in door.table("audit").values() if d["to_state"] == "running"
        )
        assert steps == Counter({None: 1, "ingest": 1, "analyse": 1, "publish": 1, "verify": 1})
        return sum(c.commits for c in countings) - 4
    finally:
        store.close()


def _blocking_workflow(
    entered: threading.Event, release: threading.Event, log: list[str]
) -> WorkflowDefinition:
    def slow(uow: UnitOfWork, ctx: StepContext) -> dict[str, bool]:
        log.append("slow begins")
        entered.set()
        assert release.wait(30), "the test never released the step"
        log.append("slow ends")
        return {"done": True}

    def undo(uow: UnitOfWork, ctx: StepContext) -> dict[str, bool]:
        log.append("undo")
        return {"undone": True}

    def first(uow: UnitOfWork, ctx: StepContext) -> dict[str, bool]:
        return {"first": True}

    return WorkflowDefinition(
        name="blocking",
        version="1",
        metadata=kp.METADATA,
        steps=(Step("first", first, side_effecting=True), Step("slow", slow)),
        compensation=Step("undo", undo),
    )


@pytest.mark.parametrize("command", ["cancel", "run", "recover"])
def test_threads_of_one_worker_never_drive_one_execution_at_once(command: str) -> None:
    """A service's request handler and its worker thread share one orchestrator, and so one
    lease: a cancel (or a run, or a recover) there must leave the step under way to its
    thread, and the undo to after it, as it does on another worker."""
    entered, release = threading.Event(), threading.Event()
    log: list[str] = []
    store = open_store("memory")
    definition = _blocking_workflow(entered, release, log)
    orch = orchestrator(store.unit_of_work, FixedClock(T0), workflows={"blocking": definition})
    ended: list[ExecutionState] = []
    worker = threading.Thread(target=lambda: ended.append(orch.start("blocking", {}).state))
    worker.start()
    try:
        assert entered.wait(30), "the slow step never began"
        xid = _only_execution(store)
        if command == "recover":
            assert orch.recover(ignore_leases=True) == []  # not interrupted: driven here
        elif command == "cancel":
            found = orch.cancel(xid)
            assert found.state is ExecutionState.CANCELLING
        elif command == "run":
            found = orch.run(xid, ignore_leases=True)
            assert found.state is ExecutionState.RUNNING
        assert log == ["slow begins"]  # nothing ran beside the step under way
    finally:
        release.set()
        worker.join(30)
    assert not worker.is_alive()
    if command == "cancel":
        assert log == ["slow begins", "slow ends", "undo"]
        assert ended == [ExecutionState.COMPENSATED]
    else:
        assert log == ["slow begins", "slow ends"] and ended == [ExecutionState.SUCCEEDED]


def _only_execution(store: Any) -> str:
    (key,) = BackDoor(store).table("execution")
    return key


def _undoable(name: str, then: Step, undone: list[str]) -> WorkflowDefinition:
    """A first step with a side effect, then `then`; the undo notes each execution undone."""

    def undo(uow: UnitOfWork, ctx: StepContext) -> dict[str, bool]:
        undone.append(ctx.execution.id)
        return {"undone": True}

    first = Step("first", lambda uow, ctx: {}, side_effecting=True)
    return WorkflowDefinition(
        name=name,
        version="1",
        metadata=kp.METADATA,
        steps=(first, then),
        compensation=Step("undo", undo),
    )


@pytest.mark.parametrize("command", ["approve", "cancel"])
def test_a_command_given_while_its_worker_stops_driving_is_acted_on(command: str) -> None:
    """Thread A has just stopped (awaiting approval, or a retry due in an hour) and not yet
    let go when thread B of the same worker approves or cancels: B leaves the execution to
    A, so A must drive it once more rather than leave it running under the lease."""
    store = open_store("memory")
    undone: list[str] = []

    def later(uow: UnitOfWork, ctx: StepContext) -> dict[str, bool]:
        raise RetryableError("not yet")

    hourly = RetryPolicy(max_attempts=5, backoff=timedelta(hours=1))
    retrying = _undoable("retrying", Step("later", later, retry=hourly), undone)
    orch = orchestrator(
        store.unit_of_work, FixedClock(T0), workflows=definitions(store.unit_of_work, retrying)
    )
    given: list[WorkflowExecution] = []
    run_once = orch._run

    def stopping_then_b_acts(execution_id: str, **kwargs: Any) -> WorkflowExecution:
        stopped = run_once(execution_id, **kwargs)
        if not given:  # thread B, between A's stop and A letting go

            def act() -> None:
                if command == "approve":
                    given.append(orch.acting_as("alice").approve(execution_id, role="reviewer"))
                else:
                    given.append(orch.cancel(execution_id))

            b = threading.Thread(target=act)
            b.start()
            b.join(30)
        return stopped

    orch._run = stopping_then_b_acts  # type: ignore[method-assign]
    if command == "approve":
        ended = orch.start(WORKFLOW, request("pub-1"), risk_tier=ImpactTier.TIER1)
        assert ended.state is ExecutionState.SUCCEEDED
    else:
        ended = orch.start("retrying", {})
        assert ended.state is ExecutionState.COMPENSATED and undone == [ended.id]
    assert [x.state for x in given] != [ExecutionState.SUCCEEDED]  # B left it to A
    stored = orch.get(ended.id)
    assert stored.state is ended.state and stored.lease_owner is None


def test_a_rejected_execution_is_undone_by_the_rejecting_worker_alone() -> None:
    """`reject` after a side effect leaves the execution compensating under the rejecting
    worker's lease, as `approve` and `cancel` leave theirs: another worker's `recover` in
    that moment must not run the undo too."""
    store = open_store("memory")
    undone: list[str] = []

    def gate(uow: UnitOfWork, ctx: StepContext) -> dict[str, bool]:
        raise ApprovalRequired("pay", ["needs an approval"])

    gated = _undoable("gated", Step("gate", gate), undone)
    workflows = definitions(store.unit_of_work, gated)
    other = orchestrator(store.unit_of_work, FixedClock(T0), worker_id="w2", workflows=workflows)
    recovered: list[str] = []
    tried: list[bool] = []

    def meanwhile(x: WorkflowExecution) -> None:
        if x.state is ExecutionState.COMPENSATING and not tried:
            tried.append(True)
            recovered.extend(r.id for r in other.recover())

    rejecting = orchestrator(
        store.unit_of_work,
        FixedClock(T0),
        worker_id="w1",
        workflows=workflows,
        on_transition=meanwhile,
    )
    waiting = rejecting.start("gated", {})
    assert waiting.state is ExecutionState.AWAITING_APPROVAL
    assert rejecting.reject(waiting.id, reason="no").state is ExecutionState.COMPENSATED
    assert tried and undone == [waiting.id] and recovered == []


def test_a_second_approver_arriving_as_the_first_approval_lands_waits_for_its_gate() -> None:
    """The first approval lands between the second approver's wait and its read: the
    execution is running the gate again, and the second approval waits for that, as it does
    when it arrives a moment later, instead of being refused and lost."""
    store = open_store("memory")
    entered, release = threading.Event(), threading.Event()

    def gate(uow: UnitOfWork, ctx: StepContext) -> dict[str, bool]:
        approvers = {a.approver for a in ctx.execution.approvals}
        if len(approvers) == 1:  # the first approval's run of the gate: held a while
            entered.set()
            assert release.wait(30)
        if len(approvers) < 2:
            raise ApprovalRequired("pay", ["two approvals"])
        return {"approved": True}

    two = WorkflowDefinition(
        name="two", version="1", metadata=kp.METADATA, steps=(Step("gate", gate),)
    )
    workflows = definitions(store.unit_of_work, two)
    first = orchestrator(store.unit_of_work, FixedClock(T0), worker_id="w1", workflows=workflows)

    def pause(seconds: float) -> None:
        release.set()
        time.sleep(0.01)

    second = orchestrator(
        store.unit_of_work, FixedClock(T0), worker_id="w2", workflows=workflows, sleep=pause
    )
    waiting = first.start("two", {})
    bob = threading.Thread(target=lambda: first.acting_as("bob").approve(waiting.id, role="r"))
    wait_once = second._await_regate

    def then_bob_lands(execution_id: str, driving: bool) -> bool:
        waited = wait_once(execution_id, driving)
        if not bob.is_alive() and not entered.is_set():
            bob.start()
            assert entered.wait(30)
        return waited

    second._await_regate = then_bob_lands  # type: ignore[method-assign]
    done = second.acting_as("carol").approve(waiting.id, role="r")
    bob.join(30)
    assert done.state is ExecutionState.SUCCEEDED
    assert {a.approver for a in done.approvals} == {"bob", "carol"}


def test_an_approval_past_the_gate_is_refused_at_once() -> None:
    """The execution runs a later step under an approval already given: a second approver
    is refused at once, not after waiting for a gate that never comes back."""
    store = open_store("memory")
    entered, release = threading.Event(), threading.Event()

    def gate(uow: UnitOfWork, ctx: StepContext) -> dict[str, bool]:
        if not ctx.execution.approvals:
            raise ApprovalRequired("pay", ["one approval"])
        return {}

    def slow(uow: UnitOfWork, ctx: StepContext) -> dict[str, bool]:
        entered.set()
        assert release.wait(30)
        return {}

    steps = (Step("gate", gate), Step("slow", slow))
    paying = WorkflowDefinition(name="paying", version="1", metadata=kp.METADATA, steps=steps)
    workflows = definitions(store.unit_of_work, paying)
    first = orchestrator(store.unit_of_work, FixedClock(T0), worker_id="w1", workflows=workflows)
    slept: list[float] = []
    second = orchestrator(
        store.unit_of_work,
        FixedClock(T0),
        worker_id="w2",
        workflows=workflows,
        sleep=slept.append,
    )
    waiting = first.start("paying", {})
    bob = threading.Thread(target=lambda: first.acting_as("bob").approve(waiting.id, role="r"))
    bob.start()
    try:
        assert entered.wait(30)
        with pytest.raises(InvalidState, match="not awaiting approval"):
            second.acting_as("carol").approve(waiting.id, role="r")
        assert slept == []  # no max_inline_wait (5 s) waited for a gate already passed
    finally:
        release.set()
        bob.join(30)


@pytest.mark.parametrize("command", ["reject", "approve"])
def test_a_command_and_a_run_on_two_threads_of_one_worker_run_nothing_twice(
    command: str,
) -> None:
    """Thread B's command has committed but not yet driven the execution when thread C runs
    it to its end: B must not then run the undo (or the approved step) again from the copy
    it committed."""
    store = open_store("memory")
    undone: list[str] = []
    paid: list[int] = []

    def gate(uow: UnitOfWork, ctx: StepContext) -> dict[str, bool]:
        if not ctx.execution.approvals:
            raise ApprovalRequired("pay", ["one approval"])
        paid.append(ctx.execution.version)
        return {}

    gated = _undoable("gated", Step("gate", gate, side_effecting=True), undone)
    slow = threading.local()

    class SlowAfterCommit(WrappingUnitOfWork):
        def commit(self) -> CommitReceipt:
            receipt = super().commit()
            if getattr(slow, "on", False):
                time.sleep(0.3)  # thread B, between its command's commit and its drive
            return receipt

    orch = orchestrator(
        lambda: SlowAfterCommit(store.unit_of_work()),
        FixedClock(T0),
        workflows=definitions(store.unit_of_work, gated),
    )
    waiting = orch.start("gated", {})
    done: list[WorkflowExecution] = []

    def b() -> None:
        slow.on = True
        if command == "reject":
            done.append(orch.reject(waiting.id, reason="no"))
        else:
            done.append(orch.acting_as("alice").approve(waiting.id, role="r"))

    thread = threading.Thread(target=b)
    thread.start()
    while orch.get(waiting.id).version == waiting.version:
        time.sleep(0.001)
    orch.run(waiting.id)  # thread C
    thread.join(30)
    assert undone == ([waiting.id] if command == "reject" else [])
    assert len(paid) == (0 if command == "reject" else 1)
    assert orch.verify(waiting.id).ok


def test_two_workers_resuming_one_unleased_execution_run_its_step_once() -> None:
    """A pending start (or a retry fallen due, or a crashed worker's) holds no live lease:
    the worker that resumes it claims it in a commit of its own before the step runs, so a
    second worker arriving meanwhile finds it leased instead of running the step too."""
    store = open_store("memory")
    entered, release = threading.Event(), threading.Event()
    charged: list[str] = []

    def charge(uow: UnitOfWork, ctx: StepContext) -> dict[str, bool]:
        charged.append(threading.current_thread().name)
        entered.set()
        release.wait(5)
        return {"charged": True}

    paying = WorkflowDefinition(
        name="paying",
        version="1",
        metadata=kp.METADATA,
        steps=(Step("charge", charge, side_effecting=True),),
    )
    workflows = definitions(store.unit_of_work, paying)
    one = orchestrator(store.unit_of_work, FixedClock(T0), worker_id="w1", workflows=workflows)
    two = orchestrator(store.unit_of_work, FixedClock(T0), worker_id="w2", workflows=workflows)
    pending = one.start("paying", {}, run=False)
    first = threading.Thread(target=lambda: one.run(pending.id), name="w1")
    first.start()
    try:
        assert entered.wait(30)
        assert two.run(pending.id).state is ExecutionState.RUNNING  # leased to w1: left alone
        assert charged == ["w1"]
    finally:
        release.set()
        first.join(30)
    assert one.get(pending.id).state is ExecutionState.SUCCEEDED and charged == ["w1"]
