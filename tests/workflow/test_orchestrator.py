"""Orchestrator behaviour on the memory adapter: idempotency, retries, compensation,
approvals, cancellation and leases."""

from __future__ import annotations

import asyncio
import copy
import functools
import gc
import itertools
import logging
import os
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from attrs import define, evolve

from adapters.contract import samples
from adapters.faults import FaultInjector, FaultPlan
from adapters.memory import MemoryStore, MemoryUnitOfWork
from adapters.surrealdb import SurrealConfig, SurrealStore
from domain.model import execution as execution_model
from domain.model.environment import Environment
from domain.model.errors import InvalidInput, InvalidState
from domain.model.evidence import EventType
from domain.model.execution import RollbackStrategy, WorkflowExecution
from domain.model.lifecycle import ExecutionState
from domain.model.policy import APPROVAL_CLOCK_SKEW, Approval, ImpactTier
from domain.orchestration.definition import (
    RetryableError,
    RetryPolicy,
    Step,
    StepContext,
    StepFn,
    WorkflowDefinition,
)
from domain.orchestration.orchestrator import (
    MAX_OUTPUT_CHARS,
    MAX_UNKNOWN_COMMITS,
    Orchestrator,
    RecoveryIncomplete,
)
from domain.services.governance import ApprovalRequired
from domain.workflows import knowledge_publication as kp
from ports import records
from ports.clock import FixedClock, SequentialIds, SystemClock
from ports.errors import (
    CommitOutcomeUnknown,
    ExecutionNotFound,
    InjectedFault,
    InvalidRecord,
    RecordNotFound,
    StorageUnavailable,
    UnitOfWorkLent,
)
from ports.records import audit_key
from ports.repositories import Executions
from ports.storage import TABLES, Batch, CommitReceipt, Document, Op, Write
from ports.unit_of_work import UnitOfWork, WrappingUnitOfWork
from tests.workflow.harness import (
    T0,
    WORKFLOW,
    BackDoor,
    Calls,
    Wrapper,
    assert_exactly_once,
    census,
    definitions,
    expected_effects,
    orchestrator,
    request,
    runtime,
    service,
    variant,
)

S = ExecutionState
FLAKY = "flaky_publication"


@define
class World:
    store: MemoryStore
    clock: FixedClock
    door: BackDoor
    ids: SequentialIds  # shared by every worker, as a real id generator would be

    def orch(self, worker_id: str = "worker-1", **wrappers: Wrapper) -> Orchestrator:
        return self.orch_with(worker_id, wrappers)

    def orch_with(
        self,
        worker_id: str,
        wrappers: dict[str, Wrapper],
        retry: RetryPolicy | None = None,
        factory: Any = None,
        compensation: Wrapper | None = None,
    ) -> Orchestrator:
        factory = factory or self.store.unit_of_work
        base = kp.definition(service(factory))
        flaky = variant(base, FLAKY, wrappers, retry=retry)
        if compensation is not None and flaky.compensation is not None:
            retract = flaky.compensation
            flaky = evolve(flaky, compensation=evolve(retract, run=compensation(retract.run)))
        return orchestrator(
            factory,
            self.clock,
            worker_id=worker_id,
            workflows=definitions(factory, flaky),
            ids=self.ids,
        )

    def transitions(self, execution_id: str) -> list[tuple[str | None, str, str | None]]:
        rows = [d for d in self.door.table("audit").values() if d["execution_id"] == execution_id]
        rows.sort(key=lambda d: int(d["sequence"]))
        return [(d.get("from_state"), d["to_state"], d.get("step")) for d in rows]


@pytest.fixture
def world() -> World:
    store = MemoryStore()
    return World(store, FixedClock(T0), BackDoor(store), SequentialIds())


def _raise(error: Exception, times: int | None = None) -> Any:
    def then(n: int, uow: UnitOfWork, ctx: StepContext) -> None:
        if times is None or n <= times:
            raise error

    return then


# -- idempotency ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"documents": []}, "documents"),
        ({"publication_id": "x'; DROP"}, "publication_id"),
        ({"policy_refs": "POL-1"}, "policy_refs"),
        ({"title": "ok", "extra": object()}, "input"),
    ],
)
def test_a_bad_input_is_refused_before_anything_is_written(
    world: World, change: dict[str, Any], field: str
) -> None:
    good = request("pub-1")
    with pytest.raises(InvalidInput) as refused:
        world.orch().start(WORKFLOW, good | change)
    assert refused.value.field == field
    assert world.door.table("execution") == {}
    assert world.door.table("audit") == {}


def test_a_bad_document_is_named_by_its_position(world: World) -> None:
    good = request("pub-1")
    documents = [dict(d) for d in good["documents"]]
    documents[1]["source_url"] = "ftp://www.imf.org/x"
    with pytest.raises(InvalidInput) as refused:
        world.orch().start(WORKFLOW, good | {"documents": documents})
    assert refused.value.field == "documents[1].source_url"
    assert world.door.table("execution") == {}


def test_a_known_idempotency_key_returns_the_same_execution(world: World) -> None:
    orch = world.orch()
    first = orch.start(WORKFLOW, request("pub-1"), idempotency_key="idem-1")
    assert first.state is S.SUCCEEDED
    before = census(world.door)
    audit_before = world.door.table("audit")
    commits = world.store.commits

    again = orch.start(WORKFLOW, request("pub-1"), idempotency_key="idem-1")
    other_input = world.orch("worker-2").start(
        WORKFLOW, request("pub-2", documents=3), idempotency_key="idem-1"
    )

    # Nor is a retry's input checked first: the checks may have been tightened since.
    refused_now = orch.start(WORKFLOW, {}, idempotency_key="idem-1")
    assert again.id == other_input.id == refused_now.id == first.id
    assert again.state is other_input.state is S.SUCCEEDED
    assert world.store.commits == commits  # nothing was written at all
    assert census(world.door) == before
    assert world.door.table("audit") == audit_before
    assert_exactly_once(world.door, orch)


def test_a_known_key_does_not_run_the_first_steps_code_again(world: World) -> None:
    """Whatever a step does beyond its unit (a call to another system) is not repeated."""
    calls: list[str] = []

    def charge(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
        calls.append(ctx.execution.id)
        return {"charged": ctx.input["amount"]}

    steps = (Step("charge", charge, side_effecting=True), Step("done", lambda uow, ctx: {}))
    pay = WorkflowDefinition("pay", "1", kp.METADATA, steps)
    orch = orchestrator(world.store.unit_of_work, world.clock, workflows={"pay": pay})
    ids = {orch.start("pay", {"amount": 5}, idempotency_key="order-1").id for _ in range(3)}
    assert len(ids) == 1 and calls == list(ids)


def test_a_workflow_that_rolls_nothing_back_is_not_compensated(world: World) -> None:
    """`RollbackStrategy.NONE`: what its steps did stands when a later one fails (h169)."""
    undone: list[str] = []

    def fails(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
        raise ValueError("fatal")

    def undo(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
        undone.append(ctx.execution.workflow_name)
        return {}

    steps = (Step("charge", lambda uow, ctx: {"charged": 5}, side_effecting=True), Step("b", fails))
    flows = {
        f"pay-{strategy.value}": WorkflowDefinition(
            f"pay-{strategy.value}",
            "1",
            evolve(kp.METADATA, rollback_strategy=strategy),
            steps,
            compensation=Step("refund", undo),
        )
        for strategy in RollbackStrategy
    }
    orch = orchestrator(world.store.unit_of_work, world.clock, workflows=flows)
    ended = {name: orch.start(name, {}).state for name in flows}
    assert ended == {
        f"pay-{RollbackStrategy.NONE.value}": S.FAILED,
        f"pay-{RollbackStrategy.COMPENSATE.value}": S.COMPENSATED,
    }
    assert undone == [f"pay-{RollbackStrategy.COMPENSATE.value}"]


def test_a_step_changing_its_executions_attempts_does_not_steer_the_run(world: World) -> None:
    """A step is handed a copy of the execution: its attempt counts, which bound retries,
    stay the orchestrator's (h169)."""

    def meddle(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
        ctx.execution.attempts["a"] = 99
        return {}

    flow = WorkflowDefinition("meddle", "1", kp.METADATA, (Step("a", meddle),))
    orch = orchestrator(world.store.unit_of_work, world.clock, workflows={flow.name: flow})
    done = orch.start(flow.name, {})
    assert done.attempts == orch.get(done.id).attempts == {"a": 1}


def test_a_known_key_does_not_run_a_pending_execution(world: World) -> None:
    orch = world.orch()
    pending = orch.start(WORKFLOW, request("pub-1"), idempotency_key="idem-1", run=False)
    assert pending.state is S.PENDING
    again = orch.start(WORKFLOW, request("pub-1"), idempotency_key="idem-1")
    assert (again.id, again.state) == (pending.id, S.PENDING)
    c = census(world.door)
    assert len(c.executions) == 1 and not c.positions and not any(c.counts.values())
    assert orch.run(pending.id).state is S.SUCCEEDED
    assert_exactly_once(world.door, orch)


def test_distinct_keys_start_distinct_executions(world: World) -> None:
    orch = world.orch()
    a = orch.start(WORKFLOW, request("pub-1"), idempotency_key="idem-1")
    b = orch.start(WORKFLOW, request("pub-2"), idempotency_key="idem-2")
    assert a.id != b.id
    assert_exactly_once(world.door, orch)


# -- retries -------------------------------------------------------------------------------------

POLICY = RetryPolicy(max_attempts=3, backoff=timedelta(seconds=1), multiplier=2.0)


def test_retryable_errors_are_retried_with_backoff_then_succeed(world: World) -> None:
    calls = Calls()
    wrappers = {"analyse": calls.wrap(_raise(RetryableError("upstream busy"), times=2))}
    orch = world.orch_with("worker-1", wrappers, retry=POLICY)
    done = orch.start(FLAKY, request("pub-1"))

    assert done.state is S.SUCCEEDED
    assert orch.get(done.id).retry_at is None  # no retry left waiting
    assert done.last_error is orch.get(done.id).last_error is None  # the failure is past
    assert calls.n == 3
    assert done.attempts["analyse"] == 3 and done.attempts["ingest"] == 1
    assert world.clock.now() - T0 == timedelta(seconds=1 + 2)  # backoff 1 s, then 2 s
    path = world.transitions(done.id)
    assert path.count(("running", "retry_scheduled", "analyse")) == 2
    assert path.count(("retry_scheduled", "running", None)) == 2
    reasons = [e.reason for e in orch.trail(done.id) if e.to_state is S.RETRY_SCHEDULED]
    assert reasons == [
        f"step analyse attempt {n} failed: RetryableError: upstream busy" for n in (1, 2)
    ]
    # The failed attempts staged the real analysis first: none of it survived.
    assert_exactly_once(world.door, orch)


def test_a_failed_first_step_is_recorded_on_the_start_stored_alone(world: World) -> None:
    """The first step normally commits with the start; when it fails, the start is stored
    on its own and the failure recorded like any other attempt's."""
    calls = Calls()
    wrappers = {"ingest": calls.wrap(_raise(RetryableError("upstream busy"), times=1))}
    orch = world.orch_with("worker-1", wrappers, retry=POLICY)
    done = orch.start(FLAKY, request("pub-1"))

    assert done.state is S.SUCCEEDED
    assert calls.n == 2 and done.attempts["ingest"] == 2
    assert world.transitions(done.id)[:5] == [
        (None, "pending", None),
        ("pending", "running", None),
        ("running", "retry_scheduled", "ingest"),
        ("retry_scheduled", "running", None),
        ("running", "running", "ingest"),
    ]
    assert_exactly_once(world.door, orch)


def test_retries_are_bounded_then_the_execution_fails(world: World) -> None:
    calls = Calls()
    wrappers = {"analyse": calls.wrap(_raise(RetryableError("upstream down")))}
    orch = world.orch_with("worker-1", wrappers, retry=POLICY)
    done = orch.start(FLAKY, request("pub-1"))

    assert done.state is S.FAILED
    assert orch.get(done.id).retry_at is None  # no retry is coming
    assert calls.n == POLICY.max_attempts
    assert done.attempts["analyse"] == POLICY.max_attempts
    assert world.clock.now() - T0 == timedelta(seconds=1 + 2)  # no wait after the last one
    assert done.last_error and "upstream down" in done.last_error
    path = world.transitions(done.id)
    assert path[-1] == ("running", "failed", "analyse")
    assert path.count(("running", "retry_scheduled", "analyse")) == POLICY.max_attempts - 1
    # ingest committed before the failure and stays; nothing of analyse, nothing to undo.
    c = census(world.door)
    assert c.counts["knowledge_source"] == 2 and c.counts["analysis"] == 0
    assert c.counts["capsule"] == 0
    assert c.events_by_type == Counter({EventType.SOURCE_INGESTED.value: 2})
    assert orch.verify(done.id).ok


@pytest.mark.parametrize(
    "error", [ValueError("bug in step"), InvalidInput("documents", "rejected downstream")]
)
def test_non_retryable_errors_fail_at_once(world: World, error: Exception) -> None:
    calls = Calls()
    orch = world.orch_with("worker-1", {"analyse": calls.wrap(_raise(error))}, retry=POLICY)
    done = orch.start(FLAKY, request("pub-1"))

    assert done.state is S.FAILED
    assert calls.n == 1
    assert world.clock.now() == T0  # no backoff
    assert all(to != "retry_scheduled" for _, to, _ in world.transitions(done.id))
    assert done.last_error and type(error).__name__ in done.last_error
    assert census(world.door).counts["analysis"] == 0
    assert orch.verify(done.id).ok


def test_a_failed_step_is_logged_with_its_traceback_and_a_wait_for_approval_is_not(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    def bug(uow: UnitOfWork, ctx: StepContext) -> None:
        raise ValueError("bug")

    orch = world.orch_with("worker-1", {"analyse": lambda _: bug})
    with (
        caplog.at_level(logging.INFO, logger="govkernel.orchestrator"),
        caplog.at_level(logging.INFO, logger="govkernel.outcomes"),
    ):
        failed = orch.start(FLAKY, request("pub-1"))
        waiting = world.orch().start(WORKFLOW, request("pub-2"), risk_tier=ImpactTier.TIER1)
    [logged] = [r for r in caplog.records if r.exc_info]  # the wait for approval is no failure
    assert logged.getMessage() == f"execution {failed.id}: analyse raised"
    assert logged.exc_info is not None and str(logged.exc_info[1]) == "bug"
    assert waiting.state is S.AWAITING_APPROVAL
    # And one line for each outcome, a failure's a warning, for a service's alerts.
    outcomes = [(r.levelname, r.getMessage()) for r in caplog.records if not r.exc_info]
    assert outcomes == [
        (
            "WARNING",
            f"execution {failed.id} ({FLAKY} v1, tenant {failed.tenant}) failed"
            f" (2 step attempts): {failed.last_error}",
        ),
        (
            "INFO",
            f"execution {waiting.id} ({WORKFLOW} v1, tenant {waiting.tenant}) awaiting_approval"
            " (0 step attempts)",
        ),
    ]


def test_a_retry_scheduled_beyond_the_inline_wait_is_left_for_later(world: World) -> None:
    slow = RetryPolicy(max_attempts=2, backoff=timedelta(minutes=10))
    calls = Calls()
    wrappers = {"analyse": calls.wrap(_raise(RetryableError("later"), times=1))}
    orch = world.orch_with("worker-1", wrappers, retry=slow)
    waiting = orch.start(FLAKY, request("pub-1"))
    assert waiting.state is S.RETRY_SCHEDULED and calls.n == 1
    assert world.clock.now() == T0
    # Which step is retried, as once it fails ("RetryableError: later" alone, h155).
    assert waiting.last_error == "step analyse attempt 1 failed: RetryableError: later"
    # A worker that could never run it says so now, not when the retry is due.
    stranger = orchestrator(world.store.unit_of_work, world.clock, workflows={})
    with pytest.raises(RecoveryIncomplete) as caught:
        stranger.recover()
    assert [xid for xid, _ in caught.value.failures] == [waiting.id]
    # Not due: left for a later recover, not slept on (the test clock moves only by sleeps).
    assert orch.recover() == [] and world.clock.now() == T0 and calls.n == 1
    # ...but one whose steps changed under its version is said now, as a run would say it.
    flaky = next(d for d in orch.definitions() if d.name == FLAKY)
    changed = evolve(flaky, steps=flaky.steps[::-1])
    other = orchestrator(world.store.unit_of_work, world.clock, workflows={FLAKY: changed})
    with pytest.raises(RecoveryIncomplete, match="with steps"):
        other.recover()
    world.clock.advance(timedelta(minutes=10))
    assert [x.state for x in orch.recover()] == [S.SUCCEEDED]
    assert_exactly_once(world.door, orch)


@pytest.mark.parametrize("zone", [UTC, timezone(-timedelta(hours=5))], ids=["UTC", "UTC-5"])
def test_a_clock_at_the_end_of_time_is_named_and_nothing_is_written(
    world: World, zone: timezone
) -> None:
    """A lease past the year 9999 (in UTC, where it is stored) cannot be written down: the
    clock is said to be at fault before anything is stored, and a retry due past it is
    simply never due."""
    end = datetime.max.replace(tzinfo=UTC).astimezone(zone)
    world.clock = FixedClock(end - timedelta(seconds=10))
    with pytest.raises(InvalidInput, match="clock") as caught:
        world.orch().start(FLAKY, request("pub-1"))
    assert caught.value.field == "clock"
    assert world.door.table("execution") == {} and world.door.table("audit") == {}

    world.clock.advance(-timedelta(days=1))  # room for a lease, none for a year's backoff
    yearly = RetryPolicy(max_attempts=2, backoff=timedelta(days=365), max_delay=timedelta(days=365))
    wrappers = {"analyse": Calls().wrap(_raise(RetryableError("later"), times=1))}
    waiting = world.orch_with("worker-1", wrappers, retry=yearly).start(FLAKY, request("pub-1"))
    assert waiting.state is S.RETRY_SCHEDULED
    assert waiting.retry_at == datetime.max.replace(tzinfo=UTC)


@pytest.mark.parametrize(
    "reading",
    [
        datetime.min.replace(tzinfo=timezone(timedelta(hours=14))),
        datetime.max.replace(tzinfo=timezone(-timedelta(hours=12))),
    ],
    ids=["first-instant-ahead-of-UTC", "last-instant-behind-UTC"],
)
def test_a_clock_whose_reading_has_no_utc_instant_is_named_and_nothing_is_written(
    world: World, reading: datetime
) -> None:
    """Before, `start` raised a bare OverflowError from the execution's identity."""
    world.clock = FixedClock(reading)
    with pytest.raises(InvalidInput, match="past the ends of time in UTC") as caught:
        world.orch().start(FLAKY, request("pub-1"))
    assert caught.value.field == "clock"
    assert world.door.table("execution") == {} and world.door.table("audit") == {}


class _Reading:
    def __init__(self, reading: object) -> None:
        self.reading = reading

    def now(self) -> Any:
        return self.reading


@pytest.mark.parametrize(
    ("clock", "said"),
    [
        (_Reading(datetime(2026, 1, 1)), "gave a datetime without a zone"),
        (datetime(2026, 1, 1, tzinfo=UTC), "gave a datetime without a zone"),  # now() naive
        (_Reading("2026-01-01T00:00:00Z"), "gave a str"),
    ],
    ids=["naive", "a-datetime-for-a-clock", "text"],
)
def test_a_clock_of_no_instants_is_named_and_nothing_is_written(
    world: World, clock: Any, said: str
) -> None:
    """Before, an InvalidRecord naming a stored field (created_at), or an AttributeError."""
    world.clock = clock
    with pytest.raises(InvalidInput, match=said) as caught:
        world.orch().start(FLAKY, request("pub-1"))
    assert caught.value.field == "clock"
    assert world.door.table("execution") == {} and world.door.table("audit") == {}


def test_a_worker_whose_step_outlasted_its_lease_and_lost_the_execution_stops(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """A lease that ran out while a step ran (here the runtime clock jumps: no renewal can
    keep up) lets another process's worker's `recover` take the execution over and run the
    step too; the first worker's commit then loses. Before, that worker took the execution
    back as soon as the other's lease had expired in turn (the other still in the step): the
    two ran the step in turn, for as long as it outlasted a lease. (The rival works through a
    factory of its own, as one in another process does: see the next test for one here.)"""
    calls = Calls()
    rival_in_step, released = threading.Event(), threading.Event()
    recovered: list[list[WorkflowExecution]] = []

    def long_step(n: int, uow: UnitOfWork, ctx: StepContext) -> None:
        world.clock.advance(timedelta(minutes=2))  # past the 30 s lease of whoever runs it
        if n == 1:
            threading.Thread(target=lambda: recovered.append(rival.recover())).start()
            assert rival_in_step.wait(10)
        elif n == 2:
            rival_in_step.set()
            assert released.wait(10)

    elsewhere = FaultInjector(world.store.unit_of_work)  # (armed with nothing)
    rival = world.orch_with("worker-2", {"analyse": calls.wrap(long_step)}, factory=elsewhere)
    with caplog.at_level(logging.WARNING, logger="govkernel.orchestrator"):
        first = world.orch("worker-1", analyse=calls.wrap(long_step)).start(FLAKY, request("pub-1"))
        released.set()
        for _ in range(100):
            if recovered:
                break
            time.sleep(0.1)
    assert first.state is S.RUNNING and first.lease_owner == "worker-2"
    assert [x.state for x in recovered[0]] == [S.SUCCEEDED]
    assert calls.n == 2  # once by each worker: never again by the one that lost
    lost = f"worker worker-1's step analyse of execution {first.id} was not committed"
    assert lost in caplog.text and "is running (leased by worker worker-2)" in caplog.text
    assert_exactly_once(world.door, world.orch())


def test_a_step_that_lost_to_a_worker_which_finished_the_execution_is_said(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """The warning came only while the other worker still held the lease: one that had
    finished the execution meanwhile left the first worker's lost step unsaid, and its
    caller was handed the other's success as if its own (an operations pass, h166)."""
    calls = Calls()

    def long_step(n: int, uow: UnitOfWork, ctx: StepContext) -> None:
        if n == 1:
            world.clock.advance(timedelta(minutes=2))  # past the 30 s lease
            done = rival.recover()  # as another process's worker, to the end, meanwhile
            assert [x.state for x in done] == [S.SUCCEEDED]

    elsewhere = FaultInjector(world.store.unit_of_work)  # (armed with nothing)
    rival = world.orch_with("worker-2", {"analyse": calls.wrap(long_step)}, factory=elsewhere)
    with caplog.at_level(logging.WARNING, logger="govkernel.orchestrator"):
        first = world.orch("worker-1", analyse=calls.wrap(long_step)).start(FLAKY, request("pub-1"))
    assert first.state is S.SUCCEEDED and calls.n == 2
    said = f"worker worker-1's step analyse of execution {first.id} was not committed"
    assert said in caplog.text and "the execution is succeeded (leased by none)" in caplog.text
    assert_exactly_once(world.door, world.orch())


@pytest.mark.parametrize("ignore_leases", [False, True])
@pytest.mark.parametrize("rival_id", ["worker-2", "worker-1"])
def test_a_step_running_in_this_process_is_never_taken_over_here(
    world: World, ignore_leases: bool, rival_id: str
) -> None:
    """Another orchestrator of this process, on this store, took over a running step once
    the clock jumped past its lease (or ignoring leases), and ran it again (found by a
    long-running service pass: a recover loop beside its workers); one with the same
    worker id too (found by a review)."""
    calls = Calls()
    recovered: list[list[WorkflowExecution]] = []

    def long_step(n: int, uow: UnitOfWork, ctx: StepContext) -> None:
        if n == 1:
            world.clock.advance(timedelta(minutes=10))  # the lease long run out, by the clock
            recovered.append(rival.recover(ignore_leases=ignore_leases))

    rival = world.orch(rival_id, analyse=calls.wrap(long_step))
    done = world.orch("worker-1", analyse=calls.wrap(long_step)).start(FLAKY, request("pub-1"))
    assert recovered == [[]] and calls.n == 1
    assert done.state is S.SUCCEEDED
    assert_exactly_once(world.door, world.orch())


def test_a_step_run_ignoring_leases_is_not_taken_over_here_either(world: World) -> None:
    """Run with leases ignored, a step holds no lease of its worker's: another orchestrator
    of this process claimed the execution and ran the step too (found by a review)."""
    calls = Calls()
    recovered: list[list[WorkflowExecution]] = []

    def step(n: int, uow: UnitOfWork, ctx: StepContext) -> None:
        if n == 1:
            raise KeyboardInterrupt  # leaves it running, its lease let go
        if n == 2:
            recovered.append(world.orch("worker-3", analyse=calls.wrap(step)).recover())

    with pytest.raises(KeyboardInterrupt):
        world.orch("worker-0", analyse=calls.wrap(step)).start(FLAKY, request("pub-1"))
    ((xid, _),) = world.door.table("execution").items()
    done = world.orch("worker-1", analyse=calls.wrap(step)).run(xid, ignore_leases=True)
    assert recovered == [[]] and calls.n == 2
    assert done.state is S.SUCCEEDED
    assert_exactly_once(world.door, world.orch())


LEASE = timedelta(seconds=1.2)


def _leased(
    world: World, name: str, wrappers: dict[str, Wrapper], factory: Any = None, **kwargs: Any
) -> Orchestrator:
    """A worker with a lease of 1.2 s: renewed about every 0.4 s of real time."""
    factory = factory or world.store.unit_of_work
    flaky = variant(kp.definition(service(factory)), FLAKY, wrappers)
    workflows = definitions(factory, flaky)
    return orchestrator(
        factory,
        world.clock,
        worker_id=name,
        workflows=workflows,
        ids=world.ids,
        lease_ttl=LEASE,
        **kwargs,
    )


def _long(world: World, calls: Calls, at_tick: dict[int, Callable[[], object]]) -> Wrapper:
    """A step of 2.4 s, twice the lease, the runtime clock keeping pace; `at_tick` says what
    else happens meanwhile, at which tenth of a second, as it first runs."""

    def then(n: int, uow: UnitOfWork, ctx: StepContext) -> None:
        for tick in range(24):
            time.sleep(0.1)
            world.clock.advance(timedelta(seconds=0.1))
            if n == 1 and tick in at_tick:
                at_tick[tick]()

    return calls.wrap(then)


@pytest.mark.parametrize(
    "fault",
    [None, FaultPlan(fail_at_commit=2), FaultPlan(ambiguous_commit=2)],
    ids=["renewed", "a-renewal-failed-once", "a-renewal-outcome-unknown"],
)
def test_a_step_longer_than_the_lease_keeps_it_while_it_runs(
    world: World, fault: FaultPlan | None
) -> None:
    """The lease is renewed while a step runs (about three times a lease), so another
    worker's `recover` finds it held and runs nothing. Before, a step longer than the lease
    was taken over and run again by the first `recover` after the lease ran out. A renewal
    that fails is tried again, and one whose outcome is unknown is read back (the stress
    pass saw the first give the execution away, the second run the step again)."""
    found: list[list[WorkflowExecution]] = []
    rival = _leased(world, "worker-2", {})
    injector = FaultInjector(world.store.unit_of_work)
    calls = Calls()
    long_step = _long(world, calls, {15: lambda: found.append(rival.recover())})
    stored_leases: list[bool] = []

    def lease_live(execution: WorkflowExecution) -> None:
        if not execution.state.terminal:
            stored_leases.append(execution.lease_expires_at > world.clock.now())  # type: ignore[operator]

    worker = _leased(
        world, "worker-1", {"analyse": long_step}, factory=injector, on_transition=lease_live
    )
    if fault is not None:
        injector.arm(fault)  # commit 1: the start with its first step; 2: the first renewal
    done = worker.start(FLAKY, request("pub-1"))
    assert fault is None or len(injector.fired) == 1
    assert done.state is S.SUCCEEDED
    assert calls.n == 1 and found == [[]]
    # Before, the step's commit wrote the lease as of the step's start: already run out.
    assert stored_leases and all(stored_leases)
    assert_exactly_once(world.door, world.orch())


def test_one_thread_keeps_the_leases_of_every_orchestrator_and_ends_when_idle(
    world: World,
) -> None:
    """A service may make an orchestrator per request: before, each had a thread of its own
    (a thousand requests, a thousand threads), living ten seconds past its last step. One
    thread per store now, which ends a second after its last step."""

    def keepers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("govkernel-lease")]

    def idle() -> bool:
        for _ in range(40):  # an earlier test's keeper ends a second after its last step
            if not keepers():
                return True
            time.sleep(0.1)
        return False

    assert idle()
    for i in range(20):
        _leased(world, f"worker-{i}", {}).start(FLAKY, request(f"pub-{i}"))
    assert len(keepers()) <= 1
    assert idle()


def test_a_renewal_of_unknown_outcome_whose_read_back_fails_is_settled_at_the_next(
    world: World,
) -> None:
    """A renewal that landed with its reply lost, then the read that settles it failed too:
    before, the step kept its stale version, its commit lost to its own worker's renewal,
    and the step ran again."""
    injector = FaultInjector(world.store.unit_of_work)
    keeper_units = itertools.count(1)

    def factory() -> UnitOfWork:
        uow = injector()
        if threading.current_thread().name == "govkernel-lease-keeper" and next(keeper_units) == 2:

            def lost(*args: Any, **kwargs: Any) -> Any:
                raise StorageUnavailable("connection lost (read)")

            uow.executions.require = lost  # type: ignore[method-assign]
        return uow

    calls = Calls()
    worker = _leased(world, "worker-1", {"analyse": _long(world, calls, {})}, factory=factory)
    injector.arm(FaultPlan(ambiguous_commit=2))  # 1: the start; 2: the first renewal
    done = worker.start(FLAKY, request("pub-1"))
    assert injector.fired == ["ambiguous commit 2"]
    assert done.state is S.SUCCEEDED and calls.n == 1
    assert_exactly_once(world.door, world.orch())


def test_a_store_slow_to_commit_delays_no_other_stores_renewals(world: World) -> None:
    """Before, one thread renewed the leases of every store: a renewal that took 2 s on one
    (a server under load) let another store's lease run out, and its step be taken over."""
    slow_store, slow_clock = MemoryStore(), FixedClock(T0)
    slowed, in_step = threading.Event(), threading.Event()

    def slow_factory() -> UnitOfWork:
        if slowed.is_set():
            time.sleep(2.0)  # every unit of work on this store from now: renewals included
        return slow_store.unit_of_work()

    def slow_step(n: int, uow: UnitOfWork, ctx: StepContext) -> None:
        slowed.set()
        in_step.set()
        time.sleep(3.0)

    slow_flaky = variant(
        kp.definition(service(slow_factory)), FLAKY, {"analyse": Calls().wrap(slow_step)}
    )
    slow = orchestrator(
        slow_factory,
        slow_clock,
        worker_id="slow",
        workflows=definitions(slow_factory, slow_flaky),
        lease_ttl=LEASE,
    )
    slow_run = threading.Thread(target=lambda: slow.start(FLAKY, request("pub-slow")))
    slow_run.start()
    assert in_step.wait(30)
    found: list[list[WorkflowExecution]] = []
    rival = _leased(world, "worker-2", {})
    long_step = _long(world, Calls(), {15: lambda: found.append(rival.recover())})
    done = _leased(world, "worker-1", {"analyse": long_step}).start(FLAKY, request("pub-1"))
    slow_run.join(60)
    assert done.state is S.SUCCEEDED and found == [[]]


def _sleeping(seconds: float) -> Wrapper:
    def then(n: int, uow: UnitOfWork, ctx: StepContext) -> None:
        time.sleep(seconds)

    return Calls().wrap(then)


def test_a_forked_child_keeps_its_own_leases(world: World) -> None:
    """Before, a child forked while the keeper's thread ran inherited it dead, and renewed
    nothing: its long step was taken over."""
    release = threading.Event()

    def held(n: int, uow: UnitOfWork, ctx: StepContext) -> None:
        release.wait(10)

    parent_step = _leased(world, "parent", {"analyse": Calls().wrap(held)})
    parent = threading.Thread(target=lambda: parent_step.start(FLAKY, request("pub-parent")))
    parent.start()
    time.sleep(0.3)  # the parent's step under way: its keeper's thread alive
    pid = os.fork()
    if pid == 0:  # the child: its own long step, a rival recovering meanwhile
        code = 1
        try:
            found: list[list[WorkflowExecution]] = []
            rival = _leased(world, "worker-2", {})
            step = _long(world, Calls(), {15: lambda: found.append(rival.recover())})
            done = _leased(world, "worker-1", {"analyse": step}).start(FLAKY, request("pub-1"))
            # (The parent's execution, which nobody renews here, it may take over.)
            taken = [x for x in found[0] if x.id == done.id]
            code = 0 if done.state is S.SUCCEEDED and not taken else 1
        finally:
            os._exit(code)  # whatever happened: never back into the parent's test session
    _, status = os.waitpid(pid, 0)
    release.set()
    parent.join(30)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_step_failing_after_a_cancel_landed_loses_to_the_cancel(world: World) -> None:
    """The step's failure is not recorded over the cancel (cancelling -> failed is illegal,
    and raised out of `start`): the worker loses, as a step that succeeds does (h169)."""
    others: list[Orchestrator] = []

    def cancelled_then_fails(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
        others[0].cancel(ctx.execution.id, reason="stop")
        raise ValueError("fatal")

    steps = (Step("a", lambda uow, ctx: {}), Step("b", cancelled_then_fails))
    flow = WorkflowDefinition("stopped", "1", kp.METADATA, steps)
    flows = {flow.name: flow}
    worker = orchestrator(world.store.unit_of_work, world.clock, workflows=flows)
    others.append(
        orchestrator(world.store.unit_of_work, world.clock, worker_id="worker-2", workflows=flows)
    )
    done = worker.start(flow.name, {})
    assert done.state is S.CANCELLED and "fatal" not in (done.last_error or "")
    assert [e.to_state for e in worker.trail(done.id)][-2:] == [S.CANCELLING, S.CANCELLED]


def test_a_cancel_during_a_long_step_waits_for_it_while_others_recover(world: World) -> None:
    """A cancel moves the execution's version, not its lease: renewals go on (the step's
    commit still loses to the cancel), so a third worker's `recover` cannot start the undo
    while the step runs. Before, renewals stopped at the cancel and the undo overlapped the
    step."""
    found: list[list[WorkflowExecution]] = []
    rival, canceller = _leased(world, "worker-3", {}), _leased(world, "worker-2", {})
    execution_ids: list[str] = []
    ended: list[str] = []

    def hook(execution: WorkflowExecution) -> None:
        execution_ids.append(execution.id)

    long_step = _long(
        world,
        Calls(),
        {
            3: lambda: canceller.cancel(execution_ids[0], reason="stop"),
            15: lambda: found.append(rival.recover()),
            19: lambda: found.append(rival.recover()),
        },
    )

    def then_mark(run: Any) -> Any:
        step = long_step(run)

        def marked(uow: UnitOfWork, ctx: StepContext) -> Any:
            output = step(uow, ctx)
            ended.append("step")
            return output

        return marked

    def undo_marked(run: Any) -> Any:
        def marked(uow: UnitOfWork, ctx: StepContext) -> Any:
            ended.append("undo")
            return run(uow, ctx)

        return marked

    factory = world.store.unit_of_work
    # The last step, after the publication the undo retracts.
    flaky = variant(kp.definition(service(factory)), FLAKY, {"verify": then_mark})
    retract = flaky.compensation
    assert retract is not None
    flaky = evolve(flaky, compensation=evolve(retract, run=undo_marked(retract.run)))
    worker = orchestrator(
        factory,
        world.clock,
        worker_id="worker-1",
        workflows=definitions(factory, flaky),
        ids=world.ids,
        lease_ttl=LEASE,
        on_transition=hook,
    )
    done = worker.start(FLAKY, request("pub-1"))
    assert found == [[], []]
    assert ended == ["step", "undo"]
    assert done.state is S.COMPENSATED


def test_a_step_is_recorded_completed_when_it_ends(world: World) -> None:
    """Before, its audit entry (and the lease its commit set) bore the time it started."""

    def five_minutes(n: int, uow: UnitOfWork, ctx: StepContext) -> None:
        world.clock.advance(timedelta(minutes=5))

    started = world.orch(analyse=Calls().wrap(five_minutes)).start(FLAKY, request("pub-1"))
    entries = {d["step"]: d for d in world.door.table("audit").values() if d.get("step")}
    assert entries["ingest"]["at"] == T0
    assert entries["analyse"]["at"] == T0 + timedelta(minutes=5)
    assert started.state is S.SUCCEEDED


def test_a_worker_that_leaves_a_retry_for_later_lets_go_so_a_cancel_compensates_at_once(
    world: World,
) -> None:
    slow = RetryPolicy(max_attempts=2, backoff=timedelta(minutes=10))
    wrappers = {"publish": Calls().wrap(_raise(RetryableError("later"), times=1))}
    waiting = world.orch_with("worker-1", wrappers, retry=slow).start(FLAKY, request("pub-1"))
    assert waiting.state is S.RETRY_SCHEDULED
    (doc,) = world.door.table("execution").values()
    assert doc.get("lease_owner") is None  # nobody drives it until the retry is due
    assert world.orch("handler").cancel(waiting.id).state is S.CANCELLED  # at once


# -- compensation --------------------------------------------------------------------------------


def test_a_failure_after_publication_retracts_the_capsule(world: World) -> None:
    broken = kp.VerificationFailed("capsule does not match")
    orch = world.orch_with("worker-1", {"verify": Calls().wrap(_raise(broken))})
    done = orch.start(FLAKY, request("pub-1"))

    assert done.state is S.COMPENSATED
    path = world.transitions(done.id)
    assert ("running", "compensating", "verify") in path
    assert path[-1] == ("compensating", "compensated", "retract")  # which undo ran
    capsules = world.door.table("capsule")
    (capsule,) = capsules.values()
    assert capsule["status"] == "retracted"
    assert "capsule does not match" in capsule["retraction_reason"]
    assert done.step_outputs["publish"]["capsule_id"] in capsules
    c = census(world.door)
    want = expected_effects([2], compensated=1)
    assert c.events_by_type == want["events"]
    assert c.counts["evidence"] == want["evidence"]
    assert c.counts["decision"] == want["decision"]
    assert c.positions == list(range(1, len(c.positions) + 1))
    retracted = [e for e in world.door.events() if e["type"] == "knowledge.capsule_retracted"]
    assert len(retracted) == 1 and capsule["publication_id"] == "pub-1"
    assert orch.verify(done.id).ok


def test_a_compensation_leaves_alone_a_capsule_another_execution_published(
    world: World,
) -> None:
    """The same publication, asked for twice: the second finds the first's capsule and
    publishes nothing, so failing afterwards has nothing of its own to undo."""
    first = world.orch().start(WORKFLOW, request("pub-1"), idempotency_key="first")
    assert first.step_outputs["publish"]["published"] is True
    broken = kp.VerificationFailed("capsule does not match")
    orch = world.orch_with("worker-2", {"verify": Calls().wrap(_raise(broken))})
    second = orch.start(FLAKY, request("pub-1"), idempotency_key="second")

    assert second.state is S.COMPENSATED
    assert second.step_outputs["publish"] == first.step_outputs["publish"] | {"published": False}
    (capsule,) = world.door.table("capsule").values()
    assert capsule["status"] == "published"
    assert not [e for e in world.door.events() if e["type"] == "knowledge.capsule_retracted"]
    assert orch.get(first.id).state is S.SUCCEEDED
    assert orch.verify(first.id).ok and orch.verify(second.id).ok


def test_a_storage_fault_during_compensation_is_retried(world: World) -> None:
    """One transient store failure while retracting should not leave a failed workflow's
    capsule published for good (steps get retries for this; the compensation does not)."""
    broken = kp.VerificationFailed("capsule does not match")
    hiccup = InjectedFault("the store hiccuped while retracting")
    orch = world.orch_with(
        "worker-1",
        {"verify": Calls().wrap(_raise(broken))},
        compensation=Calls().wrap(_raise(hiccup, times=1)),
    )
    done = orch.start(FLAKY, request("pub-1"))
    (capsule,) = world.door.table("capsule").values()
    assert (done.state, capsule["status"]) == (S.COMPENSATED, "retracted"), done.last_error
    # What it says went wrong, and why the capsule was retracted, is the failure undone, not
    # the undo's own hiccup.
    assert done.last_error is not None and "capsule does not match" in done.last_error
    assert "capsule does not match" in capsule["retraction_reason"]


def test_a_compensation_that_keeps_failing_ends_failed_after_its_attempts(world: World) -> None:
    broken = kp.VerificationFailed("capsule does not match")
    hiccup = InjectedFault("the store keeps failing while retracting")
    orch = world.orch_with(
        "worker-1",
        {"verify": Calls().wrap(_raise(broken))},
        compensation=Calls().wrap(_raise(hiccup, times=100)),
    )
    done = orch.start(FLAKY, request("pub-1"))
    (capsule,) = world.door.table("capsule").values()
    assert (done.state, capsule["status"]) == (S.FAILED, "published")
    assert done.attempts["retract"] == 3
    assert done.last_error is not None and "compensation retract failed" in done.last_error
    assert "it was undoing: step verify failed" in done.last_error
    with pytest.raises(InvalidState):
        orch.cancel(done.id)


def test_a_compensating_execution_cannot_be_cancelled(world: World) -> None:
    orch = world.orch_with("worker-1", {"verify": Calls().wrap(_raise(kp.VerificationFailed("x")))})
    x = orch.start(FLAKY, request("pub-1"), run=False)
    with world.store.unit_of_work() as uow:
        stored = uow.executions.require(x.id)
        stored.transition(S.RUNNING, at=T0, actor="op", reason="test")
        stored.transition(S.COMPENSATING, at=T0, actor="op", reason="test")
        uow.executions.save(stored)
        uow.commit()
    with pytest.raises(InvalidState, match="compensating"):
        orch.cancel(x.id)
    assert orch.get(x.id).version == stored.version


def test_a_failure_before_publication_needs_no_compensation(world: World) -> None:
    orch = world.orch_with("worker-1", {"analyse": Calls().wrap(_raise(ValueError("x")))})
    done = orch.start(FLAKY, request("pub-1"))
    assert done.state is S.FAILED
    assert "compensating" not in {to for _, to, _ in world.transitions(done.id)}
    assert census(world.door).events_by_type[EventType.CAPSULE_RETRACTED.value] == 0


# -- approvals -----------------------------------------------------------------------------------


def test_tier1_waits_for_one_approval_by_someone_else(world: World) -> None:
    orch = world.orch()
    waiting = orch.start(WORKFLOW, request("pub-1"), risk_tier=ImpactTier.TIER1)
    assert waiting.state is S.AWAITING_APPROVAL
    assert waiting.lease_owner is None
    assert census(world.door).counts["knowledge_source"] == 0

    # The requesting actor cannot approve their own mutation: refused, nothing recorded.
    with pytest.raises(InvalidInput) as refused:
        orch.acting_as("operator").approve(waiting.id, role="reviewer")
    assert refused.value.field == "approver"
    assert orch.get(waiting.id).version == waiting.version

    # Why it waits, and who asked, from its trail.
    *_, waits = orch.trail(waiting.id)
    assert (waits.to_state, waits.actor) == (S.AWAITING_APPROVAL, "operator")
    assert waits.reason.startswith("ApprovalRequired: ") and "approv" in waits.reason

    done = world.orch("worker-2").acting_as("alice").approve(waiting.id, role="reviewer")
    assert done.state is S.SUCCEEDED
    assert [a.approver for a in done.approvals] == ["alice"]
    assert_exactly_once(world.door, orch, denials=1)
    trail = orch.trail(waiting.id)
    assert [e.sequence for e in trail] == list(range(1, len(trail) + 1))
    assert trail[-1].to_state is S.SUCCEEDED and orch.verify(waiting.id).ok


def test_restarting_with_a_known_key_records_no_denial_of_its_own(world: World) -> None:
    """The first step runs before the start is known to land; a reused key must not leave
    the denial of a start that never was, in a row or from racing workers."""
    first = world.orch().start(
        WORKFLOW, request("pub-1"), idempotency_key="k", risk_tier=ImpactTier.TIER1
    )
    assert first.state is S.AWAITING_APPROVAL
    tables = ("decision", "evidence", "execution", "audit")
    before = {name: world.door.table(name) for name in tables}
    for worker in ("worker-1", "worker-2", "worker-3"):
        again = world.orch(worker).start(
            WORKFLOW, request("pub-1"), idempotency_key="k", risk_tier=ImpactTier.TIER1
        )
        assert again.id == first.id
    assert {name: world.door.table(name) for name in tables} == before
    assert len(before["decision"]) == 1


class _DenialReplyLost(WrappingUnitOfWork):
    """Applies the first unit that records a decision, then reports its outcome unknown."""

    lost = 0

    def _apply(self, batch: Batch) -> CommitReceipt:
        receipt = super()._apply(batch)
        if _DenialReplyLost.lost == 0 and any(w.table == "decision" for w in batch.writes):
            _DenialReplyLost.lost += 1
            raise CommitOutcomeUnknown("the reply was lost after the denial was applied")
        return receipt


class _DenialNeverLands(WrappingUnitOfWork):
    """Applies nothing of a unit that records a decision, and says the outcome is unknown."""

    def _apply(self, batch: Batch) -> CommitReceipt:
        if any(w.table == "decision" for w in batch.writes):
            raise CommitOutcomeUnknown("the reply was lost, and nothing was applied")
        return super()._apply(batch)


def test_a_denial_that_cannot_be_recorded_never_passes_for_one(world: World) -> None:
    factory = lambda: _DenialNeverLands(world.store.unit_of_work())  # noqa: E731
    orch = world.orch_with("worker-1", {}, factory=factory)
    x = orch.start(WORKFLOW, request("pub-1"), risk_tier=ImpactTier.TIER1)
    assert x.state is not S.AWAITING_APPROVAL  # waiting needs the denial on record
    assert "could not be recorded" in (x.last_error or "")
    assert world.door.table("decision") == {}


def test_a_denial_whose_reply_was_lost_still_awaits_approval(world: World) -> None:
    """The gate records a denial in a unit of its own; a lost reply is resolved by a re-read,
    not taken for a failed step."""
    _DenialReplyLost.lost = 0
    factory = lambda: _DenialReplyLost(world.store.unit_of_work())  # noqa: E731
    orch = world.orch_with("worker-1", {}, factory=factory)
    waiting = orch.start(WORKFLOW, request("pub-1"), risk_tier=ImpactTier.TIER1)
    assert _DenialReplyLost.lost == 1
    assert waiting.state is S.AWAITING_APPROVAL
    assert len(world.door.table("decision")) == 1


def test_steps_act_for_the_requester_whichever_worker_runs_them(world: World) -> None:
    waiting = world.orch().start(WORKFLOW, request("pub-1"), risk_tier=ImpactTier.TIER1)
    alices_worker = Orchestrator(
        world.store.unit_of_work,
        runtime(world.clock, world.ids, actor="alice"),
        definitions(world.store.unit_of_work),
        worker_id="worker-2",
    )
    done = alices_worker.acting_as("alice").approve(waiting.id, role="reviewer")
    assert done.state is S.SUCCEEDED
    actors = {e["actor"] for e in world.door.events()}
    assert actors == {waiting.requested_by} == {"operator"}
    approved = [a for a in world.door.table("audit").values() if a["reason"].startswith("approved")]
    assert [a["actor"] for a in approved] == ["alice"]


def test_tier2_needs_two_distinct_approvers(world: World) -> None:
    orch = world.orch()
    x = orch.start(WORKFLOW, request("pub-1"), risk_tier=ImpactTier.TIER2)
    assert x.state is S.AWAITING_APPROVAL
    assert orch.acting_as("alice").approve(x.id, role="reviewer").state is S.AWAITING_APPROVAL
    with pytest.raises(InvalidState, match="already approved"):  # one person is not two
        orch.acting_as("alice").approve(x.id, role="reviewer")
    done = orch.acting_as("bob").approve(x.id, role="reviewer")
    assert done.state is S.SUCCEEDED
    assert {a.approver for a in done.approvals} == {"alice", "bob"}
    assert_exactly_once(world.door, orch, denials=2)


@pytest.mark.parametrize("ahead", [timedelta(seconds=2), APPROVAL_CLOCK_SKEW])
def test_two_approvals_recorded_by_workers_whose_clocks_differ_pass_the_gate(
    world: World, ahead: timedelta
) -> None:
    """An approval recorded on a clock ahead of the gate's did not count there, while the
    approver was refused as having approved already: the execution waited for a day."""
    behind = world.orch()
    hurried = orchestrator(world.store.unit_of_work, FixedClock(world.clock.now() + ahead))
    x = behind.start(WORKFLOW, request("pub-1"), risk_tier=ImpactTier.TIER2)
    assert hurried.acting_as("alice").approve(x.id, role="reviewer").state is S.AWAITING_APPROVAL
    assert behind.acting_as("bob").approve(x.id, role="reviewer").state is S.SUCCEEDED
    assert behind.verify(x.id).ok


def test_an_approval_from_a_clock_past_the_skew_allowed_counts_once_its_time_comes(
    world: World,
) -> None:
    """Not counted before, and not given again either: replaced by one dated earlier, it
    would read in the trail as an approval taken away (found by a review)."""
    behind = world.orch()
    ahead = world.clock.now() + APPROVAL_CLOCK_SKEW + timedelta(seconds=1)
    hurried = orchestrator(world.store.unit_of_work, FixedClock(ahead))
    x = behind.start(WORKFLOW, request("pub-1"), risk_tier=ImpactTier.TIER2)
    hurried.acting_as("alice").approve(x.id, role="reviewer")
    assert behind.acting_as("bob").approve(x.id, role="reviewer").state is S.AWAITING_APPROVAL
    with pytest.raises(InvalidState, match="already approved"):
        behind.acting_as("alice").approve(x.id, role="reviewer")
    assert behind.verify(x.id).ok
    world.clock.advance(timedelta(seconds=2))  # its clock has come within the skew allowed
    done = behind.acting_as("carol").approve(x.id, role="reviewer")
    assert done.state is S.SUCCEEDED and behind.verify(x.id).ok


def test_a_second_approver_arriving_while_the_first_regates_waits_for_it(
    world: World,
) -> None:
    """Alice's approval resumes the execution and re-runs its gate, which still wants a
    second approver; Bob approving at that moment waits for the gate instead of being told
    the execution is running."""
    bob_done: list[WorkflowExecution | Exception] = []

    def bob() -> None:
        theirs = Orchestrator(
            world.store.unit_of_work,
            runtime(world.clock, world.ids),
            definitions(world.store.unit_of_work),
            worker_id="bob-shell",
            sleep=time.sleep,
        )
        try:
            bob_done.append(theirs.acting_as("bob").approve(x.id, role="legal"))
        except Exception as exc:
            bob_done.append(exc)

    threads: list[threading.Thread] = []

    def regating(execution: WorkflowExecution) -> None:
        if execution.state is S.RUNNING and execution.approvals and not threads:
            threads.append(threading.Thread(target=bob))
            threads[0].start()
            time.sleep(0.3)  # Bob arrives while the gate is still being evaluated

    alice = world.orch_with("alice-shell", {})
    req = request("pub-1", required_roles=["reviewer", "legal"])
    x = alice.start(WORKFLOW, req, risk_tier=ImpactTier.TIER2)
    alice = orchestrator(
        world.store.unit_of_work, world.clock, ids=world.ids, on_transition=regating
    )
    assert alice.acting_as("alice").approve(x.id, role="reviewer").state is S.AWAITING_APPROVAL
    threads[0].join(10)
    (outcome,) = bob_done
    assert isinstance(outcome, WorkflowExecution), outcome
    assert outcome.state is S.SUCCEEDED
    assert {a.approver for a in outcome.approvals} == {"alice", "bob"}
    assert alice.verify(x.id).ok


def test_a_command_committed_beside_a_thread_that_then_fails_is_still_driven_on(
    world: World,
) -> None:
    """Carol's thread drives the execution when Dave's approval, from another thread of
    the same worker, lands and asks it to drive on; Carol's rejection is then refused (the
    execution is running). Dave's approval is driven on all the same, not left running
    under the worker's lease with nobody driving it."""
    carol_may_read = threading.Event()
    carol: list[threading.Thread] = []

    def factory() -> UnitOfWork:
        if carol and threading.current_thread() is carol[0] and not carol_may_read.is_set():
            carol_may_read.wait(10)  # holding the execution's wheel, before reading it
        return world.store.unit_of_work()

    x = world.orch().start(WORKFLOW, request("pub-1"), risk_tier=ImpactTier.TIER2)
    world.orch().acting_as("alice").approve(x.id, role="reviewer")
    shared = orchestrator(
        factory, world.clock, worker_id="worker-b", ids=world.ids, workflows=definitions(factory)
    )
    refused: list[Exception] = []

    def carol_rejects() -> None:
        try:
            shared.reject(x.id, reason="not ready")
        except InvalidState as exc:
            refused.append(exc)

    carol.append(threading.Thread(target=carol_rejects))
    carol[0].start()
    for _ in range(1000):
        if x.id in shared._driving:
            break
        time.sleep(0.01)
    dave = shared.acting_as("dave").approve(x.id, role="reviewer")
    assert dave.state is S.RUNNING  # left to the thread driving it
    carol_may_read.set()
    carol[0].join(10)
    assert refused and "running" in str(refused[0])
    done = world.orch().get(x.id)
    assert done.state is S.SUCCEEDED, done.state
    assert {a.approver for a in done.approvals} == {"alice", "dave"}
    assert world.orch().verify(x.id).ok


class _Crash(BaseException):
    """The worker dying mid-step (with `_let_go` made to do nothing): the lease stays."""


def test_an_approval_waiting_on_a_gate_only_its_own_worker_can_run_runs_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bob's approval landed and its worker died before re-running the gate: the execution
    is running under that worker's lease, with approvals. Alice approving through that
    worker does not wait for a gate nobody else will run: it runs it (awaiting approval
    again, for her role), then approves."""

    def crash_once(run: StepFn) -> StepFn:
        def step(uow: UnitOfWork, ctx: StepContext) -> Any:
            if ctx.execution.approvals and not crashed:
                crashed.append(ctx.execution.id)
                raise _Crash
            return run(uow, ctx)

        return step

    crashed: list[str] = []
    worker = world.orch_with("worker-A", {"ingest": crash_once})
    monkeypatch.setattr(worker, "_let_go", lambda execution_id: None)  # dead, not stopping
    req = request("pub-1", required_roles=["reviewer", "legal"])
    x = worker.start(FLAKY, req, risk_tier=ImpactTier.TIER2)
    with pytest.raises(_Crash):
        worker.acting_as("bob").approve(x.id, role="reviewer")
    stuck = worker.get(x.id)
    assert (stuck.state, stuck.lease_owner) == (S.RUNNING, "worker-A")
    done = worker.acting_as("alice").approve(x.id, role="legal")
    assert done.state is S.SUCCEEDED
    assert {a.approver for a in done.approvals} == {"bob", "alice"}
    assert worker.verify(x.id).ok


def test_an_approval_does_not_run_the_steps_after_a_gate_already_passed(world: World) -> None:
    """Past its gate, a later step's worker died: the execution is running under this
    worker's lease with an approval. Another approval through that worker is refused as
    before (an approval resumed it), and runs none of the steps left."""
    published: list[str] = []

    def crash_in_publish(run: StepFn) -> StepFn:
        def step(uow: UnitOfWork, ctx: StepContext) -> Any:
            published.append(ctx.execution.id)
            raise _Crash

        return step

    worker = world.orch_with("worker-A", {"publish": crash_in_publish})
    x = worker.start(FLAKY, request("pub-1"), risk_tier=ImpactTier.TIER1)
    with pytest.raises(_Crash):
        worker.acting_as("bob").approve(x.id, role="reviewer")
    assert published == [x.id]
    with pytest.raises(InvalidState, match="an approval resumed it"):
        worker.acting_as("dave").approve(x.id, role="reviewer")
    assert published == [x.id] and world.door.table("capsule") == {}
    assert worker.get(x.id).state is S.RUNNING


def test_a_step_that_takes_its_unit_back_and_closes_it_fails_its_attempt(world: World) -> None:
    """Lending guards against mistakes, not hostile code; still, a step that took its unit
    back and closed it fails its attempt instead of escaping the run as an error."""

    def taking_back(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
        uow.lend(None)
        uow.rollback()
        return {}

    definition = WorkflowDefinition(
        name="back", version="1", metadata=kp.METADATA, steps=(Step("a", taking_back),)
    )
    orch = orchestrator(world.store.unit_of_work, world.clock, workflows={"back": definition})
    done = orch.start("back", {})
    assert done.state is S.FAILED and "took back its unit of work" in (done.last_error or "")


def test_an_approval_refused_while_another_regates_says_why(world: World) -> None:
    refusals: list[str] = []

    def regating(execution: WorkflowExecution) -> None:
        if execution.state is S.RUNNING and execution.approvals and not refusals:
            try:  # the gate cannot finish meanwhile: this call is inside it
                world.orch("bob-shell").acting_as("bob").approve(execution.id, role="legal")
            except InvalidState as exc:
                refusals.append(str(exc))

    req = request("pub-1", required_roles=["reviewer", "legal"])
    x = world.orch().start(WORKFLOW, req, risk_tier=ImpactTier.TIER2)
    alice = orchestrator(
        world.store.unit_of_work, world.clock, ids=world.ids, on_transition=regating
    )
    assert alice.acting_as("alice").approve(x.id, role="reviewer").state is S.AWAITING_APPROVAL
    (refusal,) = refusals
    assert "an approval resumed it" in refusal and "awaiting approval" in refusal


def test_every_required_role_must_approve(world: World) -> None:
    orch = world.orch()
    req = request("pub-1", required_roles=["risk_officer"])
    x = orch.start(WORKFLOW, req, risk_tier=ImpactTier.TIER1)
    assert orch.acting_as("alice").approve(x.id, role="reviewer").state is S.AWAITING_APPROVAL
    assert orch.acting_as("bob").approve(x.id, role="risk_officer").state is S.SUCCEEDED
    assert_exactly_once(world.door, orch, denials=2)


def test_rejection_fails_the_execution(world: World) -> None:
    orch = world.orch()
    x = orch.start(WORKFLOW, request("pub-1"), risk_tier=ImpactTier.TIER1)
    done = orch.reject(x.id, reason="sources not convincing")
    assert done.state is S.FAILED
    assert done.last_error and "sources not convincing" in done.last_error
    assert world.transitions(x.id)[-1] == ("awaiting_approval", "failed", None)
    c = census(world.door)
    assert c.counts["knowledge_source"] == 0 and not c.positions
    # Both refusals say what the execution is now, in the same words.
    with pytest.raises(InvalidState, match="is failed, not awaiting approval"):
        orch.acting_as("alice").approve(x.id, role="reviewer")
    with pytest.raises(InvalidState, match="is failed, not awaiting approval"):
        orch.reject(x.id, reason="twice")
    assert orch.verify(x.id).ok


def test_approval_outside_a_wait_is_refused(world: World) -> None:
    orch = world.orch()
    x = orch.start(WORKFLOW, request("pub-1"), run=False)
    with pytest.raises(InvalidState):
        orch.acting_as("alice").approve(x.id, role="reviewer")
    with pytest.raises(InvalidState):
        orch.reject(x.id, reason="no")
    assert orch.get(x.id).state is S.PENDING


# -- cancellation --------------------------------------------------------------------------------


def _cancel_from(other: list[Orchestrator]) -> Any:
    def then(n: int, uow: UnitOfWork, ctx: StepContext) -> None:
        other[0].cancel(ctx.execution.id, reason="operator pulled the plug")

    return then


def test_cancellation_takes_effect_at_the_next_step_boundary(world: World) -> None:
    other = [world.orch("worker-2")]
    calls = Calls()
    orch = world.orch_with("worker-1", {"analyse": calls.wrap(_cancel_from(other))})
    done = orch.start(FLAKY, request("pub-1"))

    assert done.state is S.CANCELLED
    assert calls.n == 1  # the step was not started again
    assert "analyse" not in done.step_outputs and done.cancel_requested
    path = world.transitions(done.id)
    assert ("running", "cancelling", None) in path
    assert path[-1] == ("cancelling", "cancelled", None)
    c = census(world.door)
    assert c.counts["knowledge_source"] == 2  # ingest had committed
    assert c.counts["analysis"] == 0  # the interrupted step's writes were discarded
    assert c.events_by_type == Counter({EventType.SOURCE_INGESTED.value: 2})
    assert orch.verify(done.id).ok


def test_cancellation_after_publication_compensates(world: World) -> None:
    other = [world.orch("worker-2")]
    orch = world.orch_with("worker-1", {"verify": Calls().wrap(_cancel_from(other))})
    done = orch.start(FLAKY, request("pub-1"))

    assert done.state is S.COMPENSATED
    assert "verify" not in done.step_outputs
    path = world.transitions(done.id)
    assert path[-2:] == [
        ("cancelling", "compensating", None),
        ("compensating", "compensated", "retract"),
    ]
    (capsule,) = world.door.table("capsule").values()
    assert capsule["status"] == "retracted"
    assert census(world.door).events_by_type[EventType.CAPSULE_RETRACTED.value] == 1
    assert orch.verify(done.id).ok


def test_cancelling_a_pending_execution_ends_it_and_a_terminal_one_is_refused(
    world: World,
) -> None:
    orch = world.orch()
    pending = orch.start(WORKFLOW, request("pub-1"), run=False)
    assert orch.cancel(pending.id).state is S.CANCELLED
    with pytest.raises(InvalidState):
        orch.cancel(pending.id)
    done = orch.start(WORKFLOW, request("pub-2"))
    with pytest.raises(InvalidState):
        orch.cancel(done.id)
    assert orch.get(done.id).state is S.SUCCEEDED
    assert orch.verify(pending.id).ok and orch.verify(done.id).ok


def test_a_start_left_pending_runs_no_step_code_once_it_ended_elsewhere(world: World) -> None:
    """A start that does not run keeps nothing of the execution: the worker that cancels it
    later, or runs it after another worker finished it, reads what is stored instead of
    running the first step from the copy it started (external effects, on an ended run)."""
    calls = Calls()
    orch = world.orch_with("worker-1", {"ingest": calls.wrap(lambda n, uow, ctx: None)})
    pending = orch.start(FLAKY, request("pub-1"), run=False)
    assert orch.cancel(pending.id).state is S.CANCELLED and calls.n == 0
    other = orch.start(FLAKY, request("pub-2"), run=False)
    assert world.orch("worker-2").run(other.id).state is S.SUCCEEDED
    assert orch.run(other.id).state is S.SUCCEEDED and calls.n == 0
    assert not orch._committed  # nothing kept for executions this worker does not drive


# -- leases --------------------------------------------------------------------------------------


class _Killed(BaseException):
    """As gevent's GreenletExit and trio's Cancelled are: a BaseException, no Exception."""


@pytest.mark.parametrize(
    "stopping",
    [KeyboardInterrupt, lambda: SystemExit(3), asyncio.CancelledError, GeneratorExit, _Killed],
    ids=["ctrl-c", "sys.exit", "task cancelled", "generator closed", "greenlet killed"],
)
def test_a_worker_stopped_by_ctrl_c_lets_go_of_its_lease(
    world: World, stopping: Callable[[], BaseException]
) -> None:
    """Stopping is not dying: another worker takes the execution on at once, not when the
    lease would have expired. Nor is it the step failing (sys.exit from a signal handler
    cannot be told from one in the step): the note says where it stopped."""

    def stop(n: int, uow: UnitOfWork, ctx: StepContext) -> None:
        if n == 1:
            raise stopping()

    orch = world.orch_with("worker-1", {"analyse": Calls().wrap(stop)})
    with pytest.raises(BaseException) as stopped:
        orch.start(FLAKY, request("pub-1"))
    assert not isinstance(stopped.value, Exception)
    ((xid, doc),) = world.door.table("execution").items()
    assert stopped.value.__notes__ == [f"while step analyse of execution {xid} ran"]
    assert doc["state"] == "running" and doc.get("lease_owner") is None
    assert not orch._driving  # it may drive it again, as may recover
    [done] = world.orch("worker-2").recover()  # leases respected: none is left to respect
    assert done.state is S.SUCCEEDED and world.orch().verify(done.id).ok
    assert_exactly_once(world.door, orch)


@pytest.mark.parametrize("after", [1, 2], ids=["the-start", "a-later-step"])
def test_a_worker_stopped_in_its_on_transition_hook_lets_go_of_its_lease(
    world: World, after: int
) -> None:
    """A Ctrl-C lands in the hook as easily as in a step (it runs after every commit): after
    the start's commit, it left the execution under this worker's lease for the lease's
    whole time; after any, with no note saying where it stopped."""

    def hook(execution: WorkflowExecution) -> None:
        if execution.current_step == after:
            raise KeyboardInterrupt

    orch = orchestrator(world.store.unit_of_work, world.clock, ids=world.ids, on_transition=hook)
    with pytest.raises(KeyboardInterrupt) as stopped:
        orch.start(WORKFLOW, request("pub-1"))
    ((xid, doc),) = world.door.table("execution").items()
    assert stopped.value.__notes__ == [f"while the on_transition hook ran on execution {xid}"]
    assert doc["state"] == "running" and doc["current_step"] == after
    assert doc.get("lease_owner") is None
    [done] = world.orch("worker-2").recover()  # no lease left to wait out
    assert done.state is S.SUCCEEDED and world.orch().verify(done.id).ok
    assert_exactly_once(world.door, orch)


def test_two_workers_of_one_worker_id_stop_instead_of_rerunning_a_step_for_good(
    world: World,
) -> None:
    """Each renewed "its" lease, so the other's step commit lost, then its own: the step ran
    about 8 times a second, for good, and neither caller returned (found by a concurrency
    pass). Here the twin's renewal is made from inside the step."""
    calls = Calls()

    def renewed_by_a_twin(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
        calls.n += 1
        if calls.n <= 10:  # (a bound, so that without the fix the test ends, and fails)
            with world.store.unit_of_work() as twin:
                x = twin.executions.require(ctx.execution.id)
                x.claim("worker-1", now=world.clock.now(), ttl=timedelta(seconds=30))
                twin.executions.save(x)
                twin.commit()
        return {}

    definition = WorkflowDefinition(
        "twin", "1", kp.METADATA, (Step("first", lambda u, c: {}), Step("slow", renewed_by_a_twin))
    )
    orch = orchestrator(world.store.unit_of_work, world.clock, workflows={"twin": definition})
    with pytest.raises(InvalidState, match="another worker uses the same worker_id") as stopped:
        orch.start("twin", {})
    assert "lost 3 times in a row" in str(stopped.value) and calls.n == 3
    ((xid, doc),) = world.door.table("execution").items()
    assert doc["state"] == "running" and doc.get("lease_owner") is None  # let go: any may go on
    calls.n = 10
    assert (
        orchestrator(
            world.store.unit_of_work,
            world.clock,
            worker_id="worker-2",
            workflows={"twin": definition},
        )
        .run(xid)
        .state
        is S.SUCCEEDED
    )


def test_a_step_losing_again_and_again_to_writes_of_what_it_read_runs_on(world: World) -> None:
    """Not the twin above: a record the step read (checked at commit) changed by someone
    else, four times over. The first version of the twin's stop took this for one (found by
    a review)."""
    capsule = samples.capsule()
    with world.store.unit_of_work() as uow:
        uow.capsules.add(capsule)
        uow.commit()
    calls = Calls()

    def reads_a_capsule(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
        calls.n += 1
        read = uow.capsules.get(capsule.id)
        assert read is not None
        if calls.n <= 4:  # someone else retitles it before this attempt commits
            with world.store.unit_of_work() as other:
                current = other.capsules.get(capsule.id)
                assert current is not None
                other.capsules.update(evolve(current, title=f"edit {calls.n}"))
                other.commit()
        return {"title": read.title}

    orch, done = _started_with(world, Step("reads", reads_a_capsule), "second")
    assert done.state is S.SUCCEEDED and calls.n == 5 and orch.verify(done.id).ok
    assert done.step_outputs["reads"] == {"title": "edit 4"}


class _SaysOwn(dict[str, Any]):
    """A document whose `get` names the step's own tenant, whatever it holds."""

    def get(self, key: str, default: Any = None) -> Any:
        return "tenant-a" if key == "tenant" else super().get(key, default)


@pytest.mark.parametrize(
    "write",
    ["create", "create-posing", "create-mapping", "update", "update-as-own", "delete", "append"],
)
def test_a_step_may_not_write_another_tenants_records(world: World, write: str) -> None:
    """A step writes as its execution's tenant: a record of another, as given or as stored,
    fails the attempt, and nothing of it is written (a workflow of one tenant retracted
    another's capsule, and took a publication id of theirs)."""
    theirs = samples.capsule(tenant="tenant-b")
    with world.store.unit_of_work() as uow:
        uow.capsules.add(theirs)
        uow.commit()
    stages: dict[str, Callable[[UnitOfWork], object]] = {
        "create": lambda uow: uow.sources.add(samples.source(tenant="tenant-b")),
        # A tenant equal to any other, and a document saying it is the step's own: each is
        # stored as what it holds, tenant-b, so judged as that.
        "create-posing": lambda uow: uow.sources.add(samples.source(tenant=_AnyTenant("tenant-b"))),
        "create-mapping": lambda uow: uow.stage(
            Write(
                Op.CREATE,
                "knowledge_source",
                "src-mapped",
                _SaysOwn(records.source_doc(samples.source(tenant="tenant-b"))),
            )
        ),
        "update": lambda uow: uow.capsules.update(evolve(theirs, title="ours now")),
        "update-as-own": lambda uow: uow.stage(
            Write(
                Op.UPDATE,
                "capsule",
                theirs.id,
                records.capsule_doc(evolve(theirs, tenant="tenant-a")),
                theirs.version,
            )
        ),
        "delete": lambda uow: uow.stage(
            Write(Op.DELETE, "capsule", theirs.id, None, theirs.version)
        ),
        "append": lambda uow: uow.events.append(samples.event(tenant="tenant-b")),
    }

    def writes_theirs(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
        stages[write](uow)
        return {}

    before = {t: world.door.table(t) for t in ("capsule", "knowledge_source")}
    _, done = _started_with(world, Step("theirs", writes_theirs), "second")
    assert done.state is S.FAILED
    assert "of tenant 'tenant-a' may not write a" in (done.last_error or "")
    assert {t: world.door.table(t) for t in before} == before
    assert world.door.events() == []


def test_a_step_write_the_store_refuses_at_commit_fails_the_attempt(world: World) -> None:
    """A change to a natural key is refused by the store as the commit runs, not as it is
    staged: the step's attempt fails, as a refusal while staging does (it escaped the run,
    leaving the execution running under the worker's lease)."""
    ours = samples.capsule(tenant="tenant-a")
    with world.store.unit_of_work() as uow:
        uow.capsules.add(ours)
        uow.commit()

    def renames(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
        uow.capsules.update(evolve(ours, publication_id="pub-renamed"))
        return {}

    orch, done = _started_with(world, Step("renames", renames), "second")
    assert done.state is S.FAILED and done.lease_owner is None
    assert "publication_id is part of a natural key" in (done.last_error or "")
    assert orch.verify(done.id).ok
    with world.store.unit_of_work() as uow:
        assert uow.capsules.get(ours.id) == ours


def test_recover_resumes_an_execution_read_in_two_states_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a server, each state's read is its own snapshot: one that moved from running to
    cancelling between them is read in both (found by a pass of concurrent commands)."""
    crashing = FaultInjector(world.store.unit_of_work)
    crashing.arm(FaultPlan(fail_at_commit=2))
    with pytest.raises(InjectedFault):
        world.orch_with("worker-A", {}, factory=crashing).start(WORKFLOW, request("pub-1"))
    world.clock.advance(timedelta(seconds=30))  # the crashed worker's lease has expired
    read = Executions.in_state

    def read_twice(repo: Executions, state: S, *args: Any, **kwargs: Any) -> Any:
        again = read(repo, S.RUNNING, *args, **kwargs) if state is S.CANCELLING else []
        return read(repo, state, *args, **kwargs) + again

    monkeypatch.setattr(Executions, "in_state", read_twice)
    orch = world.orch("worker-B")
    [done] = orch.recover()
    assert done.state is S.SUCCEEDED
    assert_exactly_once(world.door, orch)


def test_a_live_lease_keeps_other_workers_off_until_it_expires(world: World) -> None:
    crashing = FaultInjector(world.store.unit_of_work)
    crashing.arm(FaultPlan(fail_at_commit=2))  # start with ingest, then analyse's commit fails
    first = world.orch_with("worker-A", {}, factory=crashing)
    with pytest.raises(InjectedFault):
        first.start(WORKFLOW, request("pub-1"), idempotency_key="lease-1")
    assert crashing.fired == ["commit 2"]
    (execution_id,) = world.door.table("execution")
    stuck = world.orch().get(execution_id)
    assert (stuck.state, stuck.current_step, stuck.lease_owner) == (S.RUNNING, 1, "worker-A")
    assert stuck.lease_expires_at == T0 + timedelta(seconds=30)

    second = world.orch("worker-B")
    assert second.run(execution_id).version == stuck.version  # not touched
    assert second.recover() == []
    world.clock.advance(timedelta(seconds=29))
    assert second.recover() == []
    assert second.get(execution_id).version == stuck.version

    world.clock.advance(timedelta(seconds=1))  # the lease is now expired
    (done,) = second.recover()
    assert done.state is S.SUCCEEDED and done.lease_owner is None
    # Resumed from the last committed step: ingest ran once, analyse's lost commit once more.
    assert done.attempts == {"ingest": 1, "analyse": 1, "publish": 1, "verify": 1}
    checkpoints = [step for _, to, step in world.transitions(execution_id) if step]
    assert checkpoints == ["ingest", "analyse", "publish", "verify"]
    assert_exactly_once(world.door, second)


def test_a_step_replayed_by_another_worker_after_a_crash_mints_the_same_ids(
    world: World,
) -> None:
    """Ids a step mints are the same in the crashed attempt and in its replay, whichever
    worker claims the execution in between: a call made outside the unit of work can take
    them as its idempotency key. A retry after a recorded failure mints fresh ones; the
    step's own key stays the same in every attempt (a call no retry may repeat either)."""
    minted: list[str] = []
    keys: set[tuple[str, str]] = set()

    def mint(busy: bool) -> Wrapper:
        def then(n: int, uow: UnitOfWork, ctx: StepContext) -> None:
            minted.append(ctx.runtime.ids.new_id("call"))
            keys.add((ctx.step, ctx.step_key))
            if busy and n == 1:
                raise RetryableError("the service is busy")

        return Calls().wrap(then)

    crashing = FaultInjector(world.store.unit_of_work)
    crashing.arm(FaultPlan(fail_at_commit=2))  # analyse's commit: the worker dies there
    first = world.orch_with("worker-A", {"analyse": mint(busy=False)}, factory=crashing)
    with pytest.raises(InjectedFault):
        first.start(FLAKY, request("pub-1"))
    world.clock.advance(timedelta(seconds=31))  # its lease expires
    # Another worker's recovery claims the execution in a commit of its own, replays
    # analyse, which fails once (a recorded attempt), and runs it once more.
    retry = RetryPolicy(max_attempts=3, backoff=timedelta(0))
    second = world.orch_with("worker-B", {"analyse": mint(busy=True)}, retry=retry)
    (done,) = second.recover()
    assert done.state is S.SUCCEEDED
    crashed, replayed, retried = minted
    assert replayed == crashed
    assert retried != crashed
    [(step, key)] = keys
    assert step == "analyse" and key.startswith("step-") and key not in minted
    assert_exactly_once(world.door, second)


def test_a_steps_key_is_never_an_id_another_step_mints(world: World) -> None:
    """Step names may hold `:`, which joins the parts ids are derived from: `charge:2`'s
    key was the first id `charge` minted at entry 2 (found by a review)."""
    seen: dict[str, str] = {}

    def charge(uow: UnitOfWork, ctx: StepContext) -> int:
        seen[f"{ctx.step}@{ctx.execution.audit_sequence}"] = ctx.runtime.ids.new_id("step")
        seen[f"{ctx.step} key"] = ctx.step_key
        return 1

    flow = WorkflowDefinition("keys", "1", kp.METADATA, (Step("charge", charge),))
    flow = evolve(flow, steps=(*flow.steps, Step("charge:2", charge), Step("charge:3", charge)))
    orch = orchestrator(world.store.unit_of_work, world.clock, workflows={flow.name: flow})
    assert orch.start(flow.name, {}).state is S.SUCCEEDED
    assert len(set(seen.values())) == len(seen) == 6, seen


def test_a_recovery_that_loses_the_claim_does_not_count_the_execution_resumed(
    world: World,
) -> None:
    """Another worker claimed it between this one's scan and its run: it was listed as
    resumed and `running`, and counted as recovered (found by a server-mode pass)."""
    crashing = FaultInjector(world.store.unit_of_work)
    crashing.arm(FaultPlan(fail_at_commit=2))
    with pytest.raises(InjectedFault):
        world.orch_with("worker-A", {}, factory=crashing).start(FLAKY, request("pub-1"))
    world.clock.advance(timedelta(seconds=31))  # its lease expires
    in_step, release = threading.Event(), threading.Event()

    def hold(run: StepFn) -> StepFn:
        def step(uow: UnitOfWork, ctx: StepContext) -> Any:
            in_step.set()
            release.wait(10)
            return run(uow, ctx)

        return step

    holder = world.orch_with("worker-B", {"analyse": hold})
    units: list[UnitOfWork] = []
    claimed: list[list[WorkflowExecution]] = []

    def scanned_then_claimed() -> UnitOfWork:
        if len(units) == 1:  # the scan is done: B claims the execution before C runs it
            threading.Thread(target=lambda: claimed.append(holder.recover())).start()
            assert in_step.wait(10)
        units.append(world.store.unit_of_work())
        return units[-1]

    late = world.orch_with("worker-C", {}, factory=scanned_then_claimed)
    assert late.recover() == []
    release.set()
    deadline = time.monotonic() + 10
    while not claimed and time.monotonic() < deadline:
        time.sleep(0.01)
    [[done]] = claimed
    assert done.state is S.SUCCEEDED
    assert_exactly_once(world.door, holder)


def test_a_start_retried_after_dying_in_its_first_step_mints_the_same_ids(
    world: World,
) -> None:
    """The process died in the first step of a start, which stored nothing: the caller
    starts again with its idempotency key, a new execution, and the step mints the ids the
    dead attempt did (what it sent outside its unit took them as keys)."""
    minted: list[str] = []
    keys: list[str] = []

    def mint(run: StepFn) -> StepFn:
        def step(uow: UnitOfWork, ctx: StepContext) -> Any:
            minted.append(ctx.runtime.ids.new_id("call"))
            keys.append(ctx.step_key)
            if len(minted) == 1:
                raise _Crash
            return run(uow, ctx)

        return step

    worker = world.orch_with("worker-A", {"ingest": mint})
    with pytest.raises(_Crash):
        worker.start(FLAKY, request("pub-1"), idempotency_key="order-42")
    assert world.door.table("execution") == {}
    done = world.orch_with("worker-B", {"ingest": mint}).start(
        FLAKY, request("pub-1"), idempotency_key="order-42"
    )
    assert done.state is S.SUCCEEDED
    assert minted[0] == minted[1]
    other = world.orch_with("worker-B", {"ingest": mint}).start(
        FLAKY, request("pub-2"), idempotency_key="order-43"
    )
    assert other.state is S.SUCCEEDED and minted[2] != minted[0]
    assert keys[0] == keys[1] != keys[2]


def test_one_idempotency_key_in_two_environments_mints_different_ids(world: World) -> None:
    """A test store and a production one given the same client key: a service both call
    must not take one's step for the other's."""
    minted: list[str] = []

    def mint(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
        minted.append(ctx.runtime.ids.new_id("call"))
        return {}

    definition = WorkflowDefinition(
        name="mint", version="1", metadata=kp.METADATA, steps=(Step("a", mint),)
    )
    for environment in (Environment.TEST, Environment.PRODUCTION):
        store = MemoryStore()
        context = evolve(runtime(world.clock, SequentialIds()), environment=environment)
        Orchestrator(store.unit_of_work, context, {"mint": definition}).start(
            "mint", {}, idempotency_key="order-42"
        )
    assert len(set(minted)) == 2


def test_only_a_worker_of_the_environment_an_execution_started_in_drives_it(
    world: World,
) -> None:
    """A production execution approved, run or recovered by a worker configured for
    development would be judged by development's policies (found by a service team's pass:
    the CLI defaults to development). Ending one with nothing to run or undo (a reject, a
    cancel) judges nothing, and any worker may."""
    production = evolve(runtime(world.clock, world.ids), environment=Environment.PRODUCTION)
    workflows = definitions(world.store.unit_of_work)
    prod = Orchestrator(world.store.unit_of_work, production, workflows, worker_id="prod")
    waiting = prod.start(WORKFLOW, request("pub-1"), risk_tier=ImpactTier.TIER1)
    interrupted = prod.start(WORKFLOW, request("pub-2"), run=False)
    assert waiting.environment is Environment.PRODUCTION
    dev = world.orch("dev")  # the test environment's worker
    tables = ("execution", "audit", "decision", "evidence", "event", "knowledge_source")
    before = {name: world.door.table(name) for name in tables}
    refused = "was started in production, and this orchestrator runs in test"
    with pytest.raises(InvalidState, match=refused):
        dev.acting_as("alice").approve(waiting.id, role="reviewer")
    with pytest.raises(InvalidState, match=refused):
        dev.run(interrupted.id)
    assert dev.recover(ignore_leases=True) == []  # left to production's workers
    assert {name: world.door.table(name) for name in tables} == before  # nothing written
    assert prod.acting_as("alice").approve(waiting.id, role="reviewer").state is S.SUCCEEDED
    assert [x.id for x in prod.recover(ignore_leases=True)] == [interrupted.id]
    assert prod.get(interrupted.id).state is S.SUCCEEDED


def test_the_lease_holder_itself_may_resume(world: World) -> None:
    crashing = FaultInjector(world.store.unit_of_work)
    crashing.arm(FaultPlan(fail_at_commit=2))
    first = world.orch_with("worker-A", {}, factory=crashing)
    with pytest.raises(InjectedFault):
        first.start(WORKFLOW, request("pub-1"))
    (execution_id,) = world.door.table("execution")
    assert world.orch("worker-A").run(execution_id).state is S.SUCCEEDED
    assert_exactly_once(world.door, first)


def test_ignoring_leases_takes_over_at_once(world: World) -> None:
    crashing = FaultInjector(world.store.unit_of_work)
    crashing.arm(FaultPlan(fail_at_commit=4))  # publish's commit
    with pytest.raises(InjectedFault):
        world.orch_with("worker-A", {}, factory=crashing).start(WORKFLOW, request("pub-1"))
    takeover = world.orch("worker-B")
    assert takeover.recover() == []
    (done,) = takeover.recover(ignore_leases=True)
    assert done.state is S.SUCCEEDED
    assert world.clock.now() == T0
    assert_exactly_once(world.door, takeover)


# -- commands whose commit reply is lost ---------------------------------------------------------


def test_an_approval_whose_reply_was_lost_is_resolved_by_re_reading(world: World) -> None:
    lossy = FaultInjector(world.store.unit_of_work)
    orch = world.orch_with("worker-1", {}, factory=lossy)
    waiting = orch.start(WORKFLOW, request("pub-1"), risk_tier=ImpactTier.TIER1)
    assert waiting.state is S.AWAITING_APPROVAL
    lossy.arm(FaultPlan(ambiguous_commit=1))  # the approval lands, its reply does not
    done = orch.acting_as("alice").approve(waiting.id, role="reviewer")
    assert lossy.fired == ["ambiguous commit 1"]
    assert done.state is S.SUCCEEDED
    assert_exactly_once(world.door, orch, denials=1)


def test_a_cancellation_whose_reply_was_lost_is_resolved_by_re_reading(world: World) -> None:
    lossy = FaultInjector(world.store.unit_of_work)
    orch = world.orch_with("worker-1", {}, factory=lossy)
    pending = orch.start(WORKFLOW, request("pub-1"), run=False)
    lossy.arm(FaultPlan(ambiguous_commit=1))
    assert orch.cancel(pending.id).state is S.CANCELLED
    assert lossy.fired == ["ambiguous commit 1"]
    assert orch.verify(pending.id).ok


def test_a_command_that_landed_is_said_to_have_though_another_moved_it_on(
    world: World,
) -> None:
    """Its reply lost, and before it is read again another worker's cancel lands: the
    approval is in the trail, and the caller must not be told to give it again."""
    other = world.orch_with("worker-2", {})
    waiting = other.start(WORKFLOW, request("pub-1"), risk_tier=ImpactTier.TIER1)

    class Overtaken(WrappingUnitOfWork):
        fired = False

        def _apply(self, batch: Batch) -> CommitReceipt:
            receipt = super()._apply(batch)
            if Overtaken.fired:
                return receipt
            Overtaken.fired = True
            other.acting_as("carol").cancel(waiting.id, reason="withdrawn")
            raise CommitOutcomeUnknown("applied, reply lost")

    lossy = world.orch_with("worker-1", {}, factory=lambda: Overtaken(world.store.unit_of_work()))
    approved = lossy.acting_as("alice").approve(waiting.id, role="reviewer")  # not refused
    reasons = [
        (e.actor, e.reason) for e in world.store.unit_of_work().audit.for_execution(waiting.id)
    ]
    assert ("alice", "approved by alice as reviewer") in reasons
    assert ("carol", "withdrawn") in reasons and approved.id == waiting.id


def test_a_command_that_did_not_land_is_said_not_to_have_though_another_took_its_place(
    world: World,
) -> None:
    """Its reply lost and nothing applied, while another worker's cancel took the entry's
    sequence: an entry at that sequence is not this command's (h169)."""
    other = world.orch_with("worker-2", {})
    waiting = other.start(WORKFLOW, request("pub-1"), risk_tier=ImpactTier.TIER1)

    class Preempted(WrappingUnitOfWork):
        def _apply(self, batch: Batch) -> CommitReceipt:
            other.acting_as("carol").cancel(waiting.id, reason="withdrawn")
            raise CommitOutcomeUnknown("the reply was lost, and nothing was applied")

    lossy = world.orch_with("worker-1", {}, factory=lambda: Preempted(world.store.unit_of_work()))
    with pytest.raises(StorageUnavailable, match="was not recorded"):
        lossy.acting_as("alice").approve(waiting.id, role="reviewer")
    reasons = [e.reason for e in other.trail(waiting.id)]
    assert "withdrawn" in reasons and not any("approved by alice" in r for r in reasons)


class _LostReply(MemoryUnitOfWork):
    """Applies nothing, yet reports the outcome as unknown: the other side of ambiguity."""

    def _apply(self, batch: Batch) -> CommitReceipt:
        raise CommitOutcomeUnknown("the reply was lost, and nothing was applied")


def test_a_command_that_did_not_land_says_so_once_read_again(world: World) -> None:
    """The unknown outcome resolved by reading again: not applied, so the store failed, and
    the command may be given again (it said "unknown" after the re-read had told)."""
    orch = world.orch()
    waiting = orch.start(WORKFLOW, request("pub-1"), risk_tier=ImpactTier.TIER1)
    lost = world.orch_with("worker-2", {}, factory=lambda: _LostReply(world.store))
    with pytest.raises(StorageUnavailable, match=r"was not recorded.*has not landed") as caught:
        lost.acting_as("alice").approve(waiting.id, role="reviewer")
    assert isinstance(caught.value.__cause__, CommitOutcomeUnknown)
    assert orch.get(waiting.id).state is S.AWAITING_APPROVAL
    assert orch.acting_as("alice").approve(waiting.id, role="reviewer").state is S.SUCCEEDED
    assert_exactly_once(world.door, orch, denials=1)


@pytest.mark.parametrize("run", [True, False])
def test_a_start_whose_commit_did_not_land_says_so_once_read_again(world: World, run: bool) -> None:
    lost = world.orch_with("worker-2", {}, factory=lambda: _LostReply(world.store))
    with pytest.raises(StorageUnavailable, match=r"wfx-\w+ was not stored.*has not landed"):
        lost.start(WORKFLOW, request("pub-1"), idempotency_key="k", run=run)
    assert world.door.table("execution") == {}
    again = world.orch().start(WORKFLOW, request("pub-1"), idempotency_key="k")
    assert again.state is S.SUCCEEDED


# -- tenants -----------------------------------------------------------------------------------


class _AnyTenant(str):
    def __eq__(self, other: object) -> bool:
        return True

    def __ne__(self, other: object) -> bool:
        return False

    __hash__ = str.__hash__


@pytest.mark.parametrize("tenant", ["tenant-b", _AnyTenant("tenant-b")], ids=["text", "posing"])
def test_another_tenants_execution_is_invisible_and_untouched(world: World, tenant: str) -> None:
    # A tenant of a str subclass equal to any other read them all: it is held as its text.
    ours = world.orch()
    waiting = ours.start(WORKFLOW, request("pub-1", required_roles=["reviewer"]), run=False)
    interrupted = ours.start(WORKFLOW, request("pub-2"), run=False)
    theirs = Orchestrator(
        world.store.unit_of_work,
        runtime(world.clock, world.ids).with_tenant(tenant).with_actor("mallory"),
        definitions(world.store.unit_of_work),
        worker_id="worker-b",
    )
    tables = ("execution", "audit", "knowledge_source", "analysis", "capsule", "evidence")
    before = ({t: world.door.table(t) for t in tables}, world.door.events())
    for command in (
        lambda: theirs.get(waiting.id),
        lambda: theirs.verify(waiting.id),
        lambda: theirs.trail(waiting.id),
        lambda: theirs.run(interrupted.id),
        lambda: theirs.acting_as("mallory").approve(waiting.id, role="reviewer"),
        lambda: theirs.reject(waiting.id, reason="not yours"),
        lambda: theirs.cancel(waiting.id),
    ):
        with pytest.raises(RecordNotFound):
            command()
    assert theirs.recover(ignore_leases=True) == []
    assert ({t: world.door.table(t) for t in tables}, world.door.events()) == before
    # Its own tenant still runs it, and every record it writes is that tenant's.
    assert ours.run(interrupted.id).state is S.SUCCEEDED
    for table in ("knowledge_source", "capsule", "evidence"):
        assert {d["tenant"] for d in world.door.table(table).values()} == {interrupted.tenant}


# -- who may approve, and what a reason may hold -----------------------------------------------


@pytest.mark.parametrize(
    "approver",
    [
        "Operator",
        "OPERATOR",
        "operator ",
        "operator\n",
        "oper\u200bator",
        "op\nerator",
        "",
        "car\x1b[31mol",
    ],
)
def test_no_spelling_of_the_requester_or_of_a_name_passes_as_an_approver(
    world: World, approver: str
) -> None:
    orch = world.orch()
    waiting = orch.start(WORKFLOW, request("pub-1"), risk_tier=ImpactTier.TIER1)
    with pytest.raises(InvalidInput) as refused:
        orch.approve(waiting.id, approver=approver, role="reviewer")
    assert refused.value.field == "approver"
    assert orch.get(waiting.id) == waiting


def test_one_approver_in_two_spellings_counts_once(world: World) -> None:
    orch = world.orch()
    x = orch.start(WORKFLOW, request("pub-1"), risk_tier=ImpactTier.TIER2)
    waiting = orch.acting_as("alice").approve(x.id, role="reviewer")
    assert waiting.state is S.AWAITING_APPROVAL
    with pytest.raises(InvalidState, match="already approved"):  # said, and nothing written
        orch.acting_as("ALICE").approve(x.id, role="Reviewer")
    assert orch.get(x.id).version == waiting.version
    with pytest.raises(InvalidInput):  # a trailing newline is not another person either
        orch.acting_as("alice\n").approve(x.id, role="reviewer")
    assert orch.acting_as("bob").approve(x.id, role="reviewer").state is S.SUCCEEDED


class _Posing(str):
    """A name whose own methods say it is someone else."""

    def casefold(self) -> str:
        return "mallory"

    def isascii(self) -> bool:
        return False


class _Uncomparable(str):
    def __hash__(self) -> int:
        raise RuntimeError("a name that cannot be hashed")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("a name that cannot be compared")


def test_a_name_of_a_str_subclass_is_judged_as_the_text_it_holds(world: World) -> None:
    orch = world.orch()
    x = orch.start(WORKFLOW, request("pub-1"), risk_tier=ImpactTier.TIER2)
    waiting = orch.acting_as("alice").approve(x.id, role="reviewer")
    with pytest.raises(InvalidState, match="already approved"):  # not a second person
        orch.acting_as(_Posing("alice")).approve(x.id, role=_Posing("reviewer"))
    assert orch.get(x.id).version == waiting.version
    requested = orch.start(WORKFLOW, request("pub-2"), risk_tier=ImpactTier.TIER1)
    with pytest.raises(InvalidInput) as refused:  # nor is the requester someone else
        orch.acting_as(_Posing("operator")).approve(requested.id, role="reviewer")
    assert refused.value.field == "approver"
    assert orch.get(requested.id).version == requested.version


def test_a_str_subclass_that_cannot_be_compared_is_taken_as_its_text(world: World) -> None:
    orch = world.orch()
    x = orch.start(_Uncomparable(WORKFLOW), request("pub-1"), risk_tier=ImpactTier.TIER1)
    done = orch.acting_as(_Uncomparable("bob")).approve(
        _Uncomparable(x.id), role=_Uncomparable("reviewer")
    )
    assert done.state is S.SUCCEEDED
    assert orch.verify(_Uncomparable(x.id)).ok
    assert orch.get(_Uncomparable(x.id)) == done


def test_the_same_approval_again_at_the_same_instant_is_refused(world: World) -> None:
    orch = world.orch()  # the world's clock does not move: every approval is at one instant
    x = orch.start(WORKFLOW, request("pub-1"), risk_tier=ImpactTier.TIER2)
    waiting = orch.acting_as("alice").approve(x.id, role="reviewer")
    with pytest.raises(InvalidState, match="already approved"):
        orch.acting_as("alice").approve(x.id, role="reviewer")
    assert orch.get(x.id).version == waiting.version
    approvals = [e for e in orch_trail(world, x.id) if e.reason.startswith("approved")]
    assert len(approvals) == 1


@pytest.mark.parametrize("key", ["", "k\x1b]0;PWNED\x07", "two\nlines"], ids=repr)
def test_an_idempotency_key_that_is_empty_or_drives_a_terminal_is_refused(
    world: World, key: str
) -> None:
    """Keys are printed back (a rerun's command, an interrupted run's hint): one line."""
    with pytest.raises(InvalidInput) as refused:
        world.orch().start(WORKFLOW, request("pub-1"), idempotency_key=key)
    assert refused.value.field == "idempotency_key"
    assert world.door.table("execution") == {}


def test_approvals_past_the_most_an_execution_takes_are_refused_not_fatal(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every decision records the approvals: past the bound the approval command is refused,
    and the execution goes on waiting (a step refusing them would fail it for good)."""
    monkeypatch.setattr(execution_model, "MAX_APPROVALS", 3)
    given = request("pub-1") | {"required_roles": ["legal"]}
    orch = world.orch()
    x = orch.start(WORKFLOW, given, risk_tier=ImpactTier.TIER1)
    for n in range(3):
        assert orch.acting_as("bob").approve(x.id, role=f"r{n}").state is S.AWAITING_APPROVAL
    with pytest.raises(InvalidState, match="has 3 approvals in force"):
        orch.acting_as("bob").approve(x.id, role="r3")
    waiting = orch.get(x.id)
    assert waiting.state is S.AWAITING_APPROVAL and len(waiting.approvals) == 3
    assert orch.verify(x.id).ok
    world.clock.advance(timedelta(hours=25))  # expired approvals count for naught
    assert orch.acting_as("bob").approve(x.id, role="r3").state is S.AWAITING_APPROVAL


def test_an_execution_stored_under_looser_bounds_still_runs(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Steps read their stored input again: the bounds on a new input's lists do not apply."""
    given = request("pub-1") | {"policy_refs": [f"P-{n}" for n in range(150)]}
    with monkeypatch.context() as earlier:
        earlier.setattr(kp, "MAX_POLICY_REFS", 1000)  # as a release before the bound took it
        stored = world.orch().start(WORKFLOW, given, run=False)
    with pytest.raises(InvalidInput, match="at most 100"):
        world.orch().start(WORKFLOW, given)  # a new one is refused
    assert world.orch().run(stored.id).state is S.SUCCEEDED


def test_an_approval_entry_names_who_ran_the_command(world: World) -> None:
    orch = world.orch()  # its runtime actor is the operator
    x = orch.start(WORKFLOW, request("pub-1"), risk_tier=ImpactTier.TIER1)
    orch.acting_as("clerk").approve(x.id, approver="alice", role="reviewer")
    rows = [d for d in world.door.table("audit").values() if d["execution_id"] == x.id]
    (entry,) = [d for d in rows if d["reason"] == "approved by alice as reviewer"]
    assert entry["actor"] == "clerk"


def test_the_requester_cannot_record_anyones_approval(world: World) -> None:
    """Naming another approver would approve the requester's own mutation all the same
    (found by a review of the specification)."""
    orch = world.orch()
    x = orch.start(WORKFLOW, request("pub-1"), risk_tier=ImpactTier.TIER1)
    for recorder in ("operator", "OPERATOR"):
        with pytest.raises(InvalidInput, match="cannot record an approval of it, by 'alice'"):
            orch.acting_as(recorder).approve(x.id, approver="alice", role="reviewer")
    assert orch.get(x.id) == x
    assert orch.acting_as("alice").approve(x.id, role="reviewer").state is S.SUCCEEDED


def test_an_expired_approval_is_renewed_by_its_approver(world: World) -> None:
    orch = world.orch()
    x = orch.start(WORKFLOW, request("pub-1"), risk_tier=ImpactTier.TIER2)
    orch.acting_as("alice").approve(x.id, role="reviewer")
    world.clock.advance(timedelta(hours=25))  # approvals last 24 hours
    renewed = orch.acting_as("Alice").approve(x.id, role="reviewer")
    assert renewed.state is S.AWAITING_APPROVAL
    assert [(a.approver, a.granted_at) for a in renewed.approvals] == [("Alice", world.clock.now())]
    done = orch.acting_as("bob").approve(x.id, role="reviewer")
    assert done.state is S.SUCCEEDED
    assert orch.verify(done.id).ok  # the renewal, in another spelling, stands for the first


@pytest.mark.parametrize(
    "reason", ["ok\n9  operator running -> succeeded", "\x1b[2Kok", "a\u2028b"]
)
@pytest.mark.parametrize("command", ["reject", "cancel"])
def test_a_reason_that_could_forge_an_audit_line_is_refused(
    world: World, reason: str, command: str
) -> None:
    orch = world.orch()
    waiting = orch.start(WORKFLOW, request("pub-1"), risk_tier=ImpactTier.TIER1)
    with pytest.raises(InvalidInput) as refused:
        getattr(orch, command)(waiting.id, reason=reason)
    assert refused.value.field == "reason"
    assert orch.get(waiting.id) == waiting


# -- shared records ----------------------------------------------------------------------------


class _StaleSourceReads(WrappingUnitOfWork):
    """Source look-ups miss while `blind` is set: as if another process's ingest of the same
    document committed just after this unit read."""

    blind = True

    def _query(self, table: str, where: Any, *args: Any) -> Any:
        if table == "knowledge_source" and _StaleSourceReads.blind:
            _StaleSourceReads.blind = False
            return []
        return super()._query(table, where, *args)


def test_two_workflows_ingesting_one_document_at_once_store_it_once(world: World) -> None:
    orch = world.orch()
    first = orch.start(WORKFLOW, request("pub-1"))
    _StaleSourceReads.blind = True
    racing = world.orch_with(
        "worker-2", {}, factory=lambda: _StaleSourceReads(world.store.unit_of_work())
    )
    second = racing.start(WORKFLOW, request("pub-1") | {"publication_id": "pub-2"})
    assert (first.state, second.state) == (S.SUCCEEDED, S.SUCCEEDED)
    assert second.attempts["ingest"] == 2  # the first attempt collided and wrote nothing
    assert len(world.door.table("knowledge_source")) == 2  # the two documents, once each
    ingested = [e for e in world.door.events() if e["type"] == EventType.SOURCE_INGESTED.value]
    assert len(ingested) == 2


def test_one_inconsistent_execution_does_not_keep_recovery_from_the_others(world: World) -> None:
    orch = world.orch()
    broken = orch.start(WORKFLOW, request("pub-1"), run=False)
    waiting = [orch.start(WORKFLOW, request(f"pub-{n}"), run=False) for n in (2, 3)]
    # Edited in storage: running, yet past its last step. No transition leads there.
    world.door.edit_execution(broken.id, {"state": "running", "current_step": 4})
    with pytest.raises(RecoveryIncomplete) as incomplete:
        world.orch("worker-2").recover(ignore_leases=True)
    assert [x.id for x in incomplete.value.resumed] == [x.id for x in waiting]
    assert all(x.state is S.SUCCEEDED for x in incomplete.value.resumed)
    [(failed_id, error)] = incomplete.value.failures
    assert failed_id == broken.id and "not acted on" in error


def test_a_record_that_does_not_read_back_does_not_keep_recovery_from_the_others(
    world: World,
) -> None:
    orch = world.orch()
    damaged, other = (orch.start(WORKFLOW, request(f"pub-{n}"), run=False) for n in (1, 2))
    world.door.edit_execution(damaged.id, {"outputs_json": "{bad"})
    with pytest.raises(RecoveryIncomplete) as incomplete:
        world.orch("worker-2").recover(ignore_leases=True)
    assert [x.id for x in incomplete.value.resumed] == [other.id]
    [(failed_id, error)] = incomplete.value.failures
    assert failed_id == damaged.id and error.startswith("CorruptRecord")


class _Recording(WrappingUnitOfWork):
    batches: list[Batch] = []

    def _apply(self, batch: Batch) -> CommitReceipt:
        _Recording.batches.append(batch)
        return super()._apply(batch)


def test_an_executions_input_is_written_once_not_at_every_step(world: World) -> None:
    _Recording.batches = []
    factory = lambda: _Recording(world.store.unit_of_work())  # noqa: E731
    done = world.orch_with("worker-1", {}, factory=factory).start(WORKFLOW, request("pub-1"))
    assert done.state is S.SUCCEEDED
    writes = [w for b in _Recording.batches for w in b.writes]
    assert [w.table for w in writes].count("execution_input") == 1
    executions = [w for w in writes if w.table == "execution"]
    # One write per commit: the start with the first step, then each further step.
    assert len(executions) == 4 and all("input_json" not in (w.document or {}) for w in executions)
    assert world.orch().get(done.id).input == request("pub-1")


def test_verifying_an_execution_leaves_its_input_unread(world: World) -> None:
    done = world.orch().start(WORKFLOW, request("pub-1"))
    _Recording.batches, read = [], []

    class Reads(WrappingUnitOfWork):
        def _load(self, table: str, key: str) -> Document | None:
            read.append(table)
            return super()._load(table, key)

    verifier = world.orch_with("worker-2", {}, factory=lambda: Reads(world.store.unit_of_work()))
    assert verifier.verify(done.id).ok
    assert read and "execution_input" not in read


# -- what a step returns must be storable -------------------------------------------------------


def _two_steps(second: Any) -> WorkflowDefinition:
    return WorkflowDefinition(
        name="two_steps",
        version="1",
        metadata=kp.METADATA,
        steps=(Step("first", lambda uow, ctx: "ok"), Step("second", lambda uow, ctx: second)),
    )


def test_asking_for_the_output_of_a_step_not_done_names_the_steps_done(world: World) -> None:
    flow = WorkflowDefinition(
        name="asks",
        version="1",
        metadata=kp.METADATA,
        steps=(Step("first", lambda uow, ctx: 1), Step("second", lambda u, c: c.output_of("x"))),
    )
    orch = orchestrator(world.store.unit_of_work, world.clock, workflows={flow.name: flow})
    done = orch.start(flow.name, {})
    assert done.state is S.FAILED
    assert "step 'x' has no output in this execution (steps done: first)" in str(done.last_error)


@pytest.mark.parametrize(
    ("output", "problem"),
    [
        ({"when": T0}, "JSON-serialisable"),
        ({"text": "half a pair \ud800"}, "lone surrogate"),
        ({1, 2}, "JSON-serialisable"),
        ({"ratio": float("nan")}, "JSON-serialisable"),
        ({"ratio": float("inf")}, "JSON-serialisable"),
        ({1: "one", "1": "uno"}, "two keys that both read back as '1'"),
        ({"blob": "x" * MAX_OUTPUT_CHARS}, f"over {MAX_OUTPUT_CHARS:,}: keep large data"),
    ],
)
@pytest.mark.parametrize("position", ["first", "second"])
def test_a_step_whose_output_cannot_be_stored_fails_its_execution(
    world: World, output: Any, problem: str, position: str
) -> None:
    """Not left running to run the step again on every recovery: a failed attempt."""
    definition = _two_steps(output)
    if position == "first":
        definition = evolve(definition, steps=definition.steps[::-1])
    orch = orchestrator(world.store.unit_of_work, world.clock, workflows={"two_steps": definition})
    done = orch.start("two_steps", {})
    assert done.state is S.FAILED
    assert done.last_error is not None and problem in done.last_error
    assert "output of step second" in done.last_error
    assert done.attempts["second"] == 1 and "second" not in done.step_outputs
    assert orch.verify(done.id).ok


def test_an_input_nested_too_deeply_is_refused_before_anything_is_written(world: World) -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    definition = _two_steps("ok")
    orch = orchestrator(world.store.unit_of_work, world.clock, workflows={"two_steps": definition})
    with pytest.raises(InvalidInput, match="nested more than 100 levels deep"):
        orch.start("two_steps", {"x": deep})
    assert world.door.table("execution") == {}


def _nested(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = [value]
    return value


def test_an_input_nested_as_deep_as_allowed_runs_and_verifies(world: World) -> None:
    orch = orchestrator(
        world.store.unit_of_work, world.clock, workflows={"two_steps": _two_steps("ok")}
    )
    done = orch.start("two_steps", {"x": _nested(99)})  # 100 levels with the mapping
    assert done.state is S.SUCCEEDED and orch.verify(done.id).ok
    with pytest.raises(InvalidInput, match="nested more than 100 levels deep"):
        orch.start("two_steps", {"x": _nested(100)})


def test_values_are_pinned_as_they_read_back(world: World) -> None:
    """Keys that are not strings come back as strings, tuples as lists: what an audit entry
    pins must be what verification finds, or a legitimate execution reads as tampered."""
    output = {9: "nine", 10: ("ten", 10.0), True: None, "eleven": 11}
    orch = orchestrator(
        world.store.unit_of_work, world.clock, workflows={"two_steps": _two_steps(output)}
    )
    done = orch.start("two_steps", {"pages": {9: "a", 10: "b"}})
    assert done.state is S.SUCCEEDED
    assert done.step_outputs["second"] == {
        "9": "nine",
        "10": ["ten", 10.0],
        "true": None,
        "eleven": 11,
    }
    assert done.input == {"pages": {"9": "a", "10": "b"}}
    assert orch.verify(done.id).ok


# -- what the orchestrator hands out cannot steer it ---------------------------------------------


def test_an_execution_handed_to_a_caller_does_not_steer_the_run(world: World) -> None:
    orch = world.orch()
    x = orch.start(WORKFLOW, request("pub-1"), idempotency_key="k", run=False)
    with pytest.raises(TypeError, match="read-only"):
        x.input["title"] = "A title nobody requested"  # type: ignore[index]
    with pytest.raises(TypeError, match="read-only"):
        x.input["documents"][0]["content_text"] = "Injected"
    x.current_step = 3  # the caller's copy only
    done = orch.run(x.id)
    assert done.state is S.SUCCEEDED and done.current_step == 4
    (capsule,) = world.door.table("capsule").values()
    assert capsule["title"] == request("pub-1")["title"]
    assert orch.verify(done.id).ok


def test_the_step_outputs_an_execution_holds_are_read_only_as_a_whole(world: World) -> None:
    """Each output was, but the mapping holding them took a new step or lost one (found by
    a library adopter's pass)."""
    done = world.orch().start(WORKFLOW, request("pub-1"))
    with pytest.raises(TypeError, match="read-only"):
        done.step_outputs["forged"] = {}  # type: ignore[index]
    with pytest.raises(TypeError, match="read-only"):
        done.step_outputs.pop("publish")  # type: ignore[attr-defined]
    assert set(done.step_outputs) == {"ingest", "analyse", "publish", "verify"}
    mine: dict[str, Any] = copy.copy(done.step_outputs)  # type: ignore[arg-type]
    mine["mine"] = 1
    assert set(mine) == {*done.step_outputs, "mine"}


def test_a_step_cannot_change_the_input_later_steps_read(world: World) -> None:
    def rewrite(n: int, uow: UnitOfWork, ctx: StepContext) -> None:
        ctx.input["title"] = "rewritten"  # type: ignore[index]

    orch = world.orch_with("worker-1", {"analyse": Calls().wrap(rewrite)})
    done = orch.start(FLAKY, request("pub-1"))
    assert done.state is S.FAILED
    assert done.last_error is not None and "read-only" in done.last_error


def test_a_copy_of_the_input_is_changed_as_a_copy_is(world: World) -> None:
    """What the read-only refusal tells a step to do works as Python copies do."""
    x = world.orch().start(WORKFLOW, request("pub-1"), run=False)
    deep: Any = copy.deepcopy(x.input)
    deep["documents"][0]["title"] = "mine"
    deep["documents"].append({})
    shallow: Any = copy.copy(x.input)
    shallow["title"] = "mine too"
    with pytest.raises(TypeError, match=r"copy\.deepcopy gives plain dicts and lists"):
        shallow["documents"].append({})  # shared with the input, as a shallow copy's is
    documents = copy.copy(x.input["documents"])
    documents.append(1)
    assert documents[:-1] == x.input["documents"]
    assert world.orch().get(x.id).input == x.input == request("pub-1")


def test_callbacks_keep_the_execution_as_it_was_when_notified(world: World) -> None:
    seen: list[tuple[WorkflowExecution, str, int]] = []
    orch = orchestrator(
        world.store.unit_of_work,
        world.clock,
        ids=world.ids,
        on_transition=lambda x: seen.append((x, x.state.value, x.current_step)),
    )
    orch.start(WORKFLOW, request("pub-1"))
    assert len({id(x) for x, _, _ in seen}) == len(seen)
    assert [(x.state.value, x.current_step) for x, _, _ in seen] == [(s, c) for _, s, c in seen]


def test_what_a_hook_does_to_its_execution_never_reaches_a_callers(world: World) -> None:
    """`approve` handed back the very execution its hook had been given: a hook's edit, or
    a later one from another thread, changed the caller's result (found by a library
    adopter's pass)."""

    def meddling(x: WorkflowExecution) -> None:
        x.step_outputs = {}
        x.approvals = ()

    hooked = orchestrator(world.store.unit_of_work, world.clock, ids=world.ids)
    waiting = hooked.start(WORKFLOW, request("pub-1"), risk_tier=ImpactTier.TIER1)
    hooked = orchestrator(
        world.store.unit_of_work, world.clock, ids=world.ids, on_transition=meddling
    )
    done = hooked.acting_as("alice").approve(waiting.id, role="reviewer")
    stored = world.orch().get(waiting.id)
    assert done.state is S.SUCCEEDED and done.step_outputs and done.approvals
    assert (done.step_outputs, done.approvals) == (stored.step_outputs, stored.approvals)
    started = hooked.start(WORKFLOW, request("pub-2"))
    assert started.step_outputs == world.orch().get(started.id).step_outputs != {}


@pytest.mark.parametrize(
    "loose",
    [{"trace_id": ""}, {"trace_id": "x" * 300}, {"actor": "Jane Doe"}],
    ids=["empty-trace", "long-trace", "spaced-actor"],
)
def test_an_execution_stored_under_looser_rules_still_runs(
    world: World, loose: dict[str, str]
) -> None:
    """Earlier releases took any runtime built by hand: what an execution stored then (its
    correlation id, its requester) is not checked again when its steps run, or it could
    never finish, nor be undone."""
    context = runtime(world.clock, world.ids)
    for name, value in loose.items():
        object.__setattr__(context, name, value)  # as an earlier release let it be built
    definition = WorkflowDefinition(
        name="plain", version="1", metadata=kp.METADATA, steps=(Step("a", lambda u, c: {}),)
    )
    earlier = Orchestrator(world.store.unit_of_work, context, {"plain": definition})
    stored = earlier.start("plain", {}, run=False)
    now = orchestrator(world.store.unit_of_work, world.clock, workflows={"plain": definition})
    assert now.run(stored.id).state is S.SUCCEEDED


@pytest.mark.parametrize(
    ("again", "keys", "run"),
    [
        ("pub-2", (None, None), True),
        ("pub-1", (None, None), True),
        ("pub-2", ("a", "b"), True),  # keys given: the execution id is what repeats
        ("pub-2", ("a", "b"), False),
        ("twitter", ("a", "b"), True),  # and the first step fails as well
    ],
    ids=["other-input", "same-input", "keyed", "keyed-not-run", "keyed-first-step-fails"],
)
def test_an_id_generator_that_repeats_is_refused_not_answered_with_another_execution(
    world: World, again: str, keys: tuple[str | None, str | None], run: bool
) -> None:
    """Even a request like the first is another request: it is refused, not answered with
    the first's execution (a second order of the same amount would never be paid)."""
    first = orchestrator(world.store.unit_of_work, world.clock, ids=SequentialIds())
    done = first.start(WORKFLOW, request("pub-1"), idempotency_key=keys[0])
    restarted = orchestrator(world.store.unit_of_work, world.clock, ids=SequentialIds())
    given = request(again)
    if again == "twitter":  # a source the policies deny
        given["documents"][0]["source_url"] = "https://twitter.com/someone"
    with pytest.raises(InvalidState, match="the id generator repeats ids"):
        restarted.start(WORKFLOW, given, idempotency_key=keys[1], run=run)
    assert [x["publication_id"] for x in world.door.table("capsule").values()] == ["pub-1"]
    assert list(world.door.table("execution")) == [done.id]


def test_an_input_given_as_any_mapping_is_taken(world: World) -> None:
    from types import MappingProxyType

    given = request("pub-1")
    views = given | {"documents": [MappingProxyType(d) for d in given["documents"]]}
    done = world.orch().start(WORKFLOW, MappingProxyType(views))
    assert done.state is S.SUCCEEDED and done.input == given


def test_a_start_that_does_not_run_returns_at_once_whoever_runs_it_meanwhile(
    world: World,
) -> None:
    """A request handler starts with run=False to answer at once; a worker it hands the
    execution to (here from the callback, as soon as it is stored) runs it."""
    ran: list[S] = []
    workers: list[threading.Thread] = []

    def hand_over(x: WorkflowExecution) -> None:
        if x.state is S.PENDING and not workers:
            workers.append(threading.Thread(target=lambda: ran.append(orch.run(x.id).state)))
            workers[0].start()

    orch = orchestrator(
        world.store.unit_of_work, world.clock, ids=world.ids, on_transition=hand_over
    )
    assert orch.start(WORKFLOW, request("pub-1"), run=False).state is S.PENDING
    workers[0].join(30)
    assert ran == [S.SUCCEEDED]


def test_every_commit_is_told_even_a_start_stored_apart_from_its_failed_first_step(
    world: World,
) -> None:
    seen: list[int] = []
    wrappers = {"ingest": Calls().wrap(_raise(RetryableError("flaky source"), times=1))}
    flaky = next(d for d in world.orch_with("w", wrappers).definitions() if d.name == FLAKY)
    orch = orchestrator(
        world.store.unit_of_work,
        world.clock,
        ids=world.ids,
        workflows={FLAKY: flaky},
        on_transition=lambda x: seen.append(x.version),
    )
    done = orch.start(FLAKY, request("pub-1"))
    assert done.state is S.SUCCEEDED
    assert seen == list(range(1, done.version + 1))  # version 1: the start, stored alone


@pytest.mark.parametrize("judged", ["allowed", "denied"])
def test_a_step_may_not_have_another_tenants_mutation_judged(world: World, judged: str) -> None:
    """A step ingesting as another tenant's runtime was refused only when the gate allowed
    it: denied, the gate recorded the decision and its evidence, in a unit of its own, as
    the other tenant's (a multi-tenant pass, h158)."""
    from domain.model.knowledge import SourceDraft
    from domain.services.governance import Gate, enforcement_context
    from domain.services.knowledge import KnowledgeService

    service = KnowledgeService(Gate(world.store.unit_of_work))
    refs = ["POL-KNOWLEDGE-1"] if judged == "allowed" else []  # none: denied

    def ingests_as_theirs(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
        theirs = ctx.runtime.with_tenant("tenant-b")
        judged_by = enforcement_context(theirs, tier=ImpactTier.TIER0, policy_refs=refs)
        draft = SourceDraft.parse(
            kind="imf",
            title="x",
            source_url="https://www.imf.org/x",
            format="text",
            classification="public",
            content_text="Inflation eased.",
        )
        service.ingest(uow, theirs, judged_by, [draft])
        return {}

    tables = ("decision", "evidence", "knowledge_source")
    before = {t: world.door.table(t) for t in tables}
    _, done = _started_with(world, Step("theirs", ingests_as_theirs), "second")
    assert done.state is S.FAILED
    assert done.last_error == (
        "step theirs failed: InvalidRecord: step theirs of tenant 'tenant-a' may not have the"
        " gate judge a mutation of tenant 'tenant-b'"
    ), done.last_error
    assert {t: world.door.table(t) for t in tables} == before
    assert world.door.events() == []


def _started_with(
    world: World, step: Step, position: str
) -> tuple[Orchestrator, WorkflowExecution]:
    """A workflow of `step` and a plain one, `step` first or second, started."""
    steps = (Step("plain", lambda uow, ctx: {}), step)
    definition = WorkflowDefinition(
        name=step.name,
        version="1",
        metadata=kp.METADATA,
        steps=steps if position == "second" else steps[::-1],
    )
    orch = orchestrator(world.store.unit_of_work, world.clock, workflows={step.name: definition})
    return orch, orch.start(step.name, {})


@pytest.mark.parametrize("swallowed", [False, True], ids=["raised", "caught"])
@pytest.mark.parametrize("closes", ["commit", "rollback", "error"])
@pytest.mark.parametrize("position", ["first", "second"])
def test_a_step_may_not_close_its_unit_and_what_it_staged_is_discarded(
    world: World, closes: str, position: str, swallowed: bool
) -> None:
    """A step that commits (or rolls back) its unit itself is refused before anything is
    written: its attempt fails, even if it caught the refusal and went on, and the writes
    it staged go nowhere, not even with the execution record its first step's unit also
    holds."""

    def closing(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
        uow.events.append(samples.event())
        try:
            if closes == "error":  # leaving its own block through an error: discarded
                with uow:
                    raise RuntimeError("the step gave up")
            getattr(uow, closes)()
        except (UnitOfWorkLent, RuntimeError):
            if not swallowed:
                raise
        return {}

    orch, done = _started_with(world, Step("closing", closing), position)
    assert done.state is S.FAILED
    said = {
        "commit": "step closing may not commit its unit of work",
        "rollback": "step closing may not roll back its unit of work",
        "error": "the step gave up" if not swallowed else "left a block of its unit of work",
    }[closes]
    assert done.last_error is not None and said in done.last_error
    assert world.door.table("event") == {}
    assert orch.recover() == [] and orch.verify(done.id).ok


@pytest.mark.parametrize("swallowed", [False, True], ids=["raised", "caught"])
@pytest.mark.parametrize("table", ["execution", "audit"])
@pytest.mark.parametrize("position", ["first", "second"])
def test_a_step_may_not_write_executions_or_their_trails(
    world: World, table: str, position: str, swallowed: bool
) -> None:
    """A step that deleted its own execution through its unit was reported "not found",
    the execution left running and leased, every recovery failing the same way (found by
    an attack on the API). Its attempt fails even if it catches the refusal and goes on."""

    def deleting(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
        key = ctx.execution.id if table == "execution" else audit_key(ctx.execution.id, 1)
        try:
            uow.stage(Write(Op.DELETE, table, key, expected_version=1))
        except InvalidRecord:
            if not swallowed:
                raise
        return {}

    orch, done = _started_with(world, Step("deleting", deleting), position)
    assert done.state is S.FAILED
    said = f"step deleting may not write {table} records"
    assert done.last_error is not None and said in done.last_error
    assert orch.recover() == [] and orch.verify(done.id).ok


@pytest.mark.parametrize("rival", ["approval", "cancel"])
def test_a_command_that_loses_a_race_is_applied_again_to_what_won(world: World, rival: str) -> None:
    """Bob's approval is about to commit when another command lands first: his is applied
    again to the execution as it now is, instead of failing with a version conflict."""
    x = world.orch().start(WORKFLOW, request("pub-1"), risk_tier=ImpactTier.TIER2)
    other = world.orch("worker-2")
    raced: list[bool] = []

    class Racing(WrappingUnitOfWork):
        def _apply(self, batch: Batch) -> CommitReceipt:
            if not raced:
                raced.append(True)
                if rival == "approval":
                    other.acting_as("carol").approve(x.id, role="reviewer")
                else:
                    other.cancel(x.id, reason="withdrawn")
            return super()._apply(batch)

    bob = orchestrator(
        lambda: Racing(world.store.unit_of_work()), world.clock, ids=world.ids, worker_id="w3"
    )
    if rival == "approval":
        done = bob.acting_as("bob").approve(x.id, role="reviewer")
        assert done.state is S.SUCCEEDED
        assert {a.approver for a in done.approvals} == {"bob", "carol"}
    else:  # applied again, to a cancelled execution: refused for the state it is in
        with pytest.raises(InvalidState, match="not awaiting approval"):
            bob.acting_as("bob").approve(x.id, role="reviewer")
        assert bob.get(x.id).state is S.CANCELLED
    assert bob.verify(x.id).ok


@pytest.mark.parametrize("tier", ["Tier2", 2, ""])
def test_a_risk_tier_that_is_not_one_is_refused_before_anything_is_written(
    world: World, tier: Any
) -> None:
    with pytest.raises(InvalidInput) as refused:
        world.orch().start(WORKFLOW, request("pub-1"), risk_tier=tier)
    assert refused.value.field == "risk_tier"
    assert world.door.table("execution") == {}


def test_a_compensation_cannot_share_a_steps_name() -> None:
    step = Step("publish", lambda uow, ctx: {})
    with pytest.raises(ValueError, match="shares a step's name"):
        WorkflowDefinition("w", "1", kp.METADATA, (step,), compensation=step)


# -- what a service integrating its own workflows runs into ---------------------------------------


def test_a_retry_under_a_clock_that_does_not_move_returns_instead_of_waiting_for_ever(
    world: World,
) -> None:
    """A test's fixed clock never reaches the retry time: each short wait used to be
    repeated for hours, then for max_inline_wait (5 s of every such test's time). One wait
    that leaves the clock where it was ends the waiting."""
    calls: list[float] = []

    def flaky(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
        raise RetryableError("not yet")

    definition = WorkflowDefinition("flaky", "1", kp.METADATA, (Step("once", flaky),))
    orch = Orchestrator(
        world.store.unit_of_work,
        runtime(world.clock, world.ids),
        {"flaky": definition},
        sleep=calls.append,  # real time passes; the clock does not
    )
    began = time.monotonic()
    x = orch.start("flaky", {})
    assert x.state is S.RETRY_SCHEDULED and time.monotonic() - began < 5
    assert len(calls) == 1 and sum(calls) <= 0.05  # one backoff, not max_inline_wait's 5 s
    # A clock the waits do move (the harness's sleep advances it) reaches the retry's time.
    moving = orchestrator(world.store.unit_of_work, world.clock, workflows={"flaky": definition})
    assert moving.start("flaky", {}).state is S.FAILED  # retried to its last attempt


def test_a_retry_under_a_clock_of_whole_seconds_waits_for_it_to_move(world: World) -> None:
    """A real clock coarser than the backoff is not taken for one that never moves (a
    re-test found such a retry given up after one wait)."""
    attempts: list[int] = []

    def flaky_once(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
        attempts.append(1)
        if len(attempts) == 1:
            raise RetryableError("not yet")
        return {}

    class WholeSeconds:  # the real time, cut to the second
        def now(self) -> datetime:
            return SystemClock().now().replace(microsecond=0)

    definition = WorkflowDefinition("flaky", "1", kp.METADATA, (Step("once", flaky_once),))
    orch = Orchestrator(
        world.store.unit_of_work,
        evolve(runtime(world.clock, world.ids), clock=WholeSeconds()),
        {"flaky": definition},
    )
    assert orch.start("flaky", {}).state is S.SUCCEEDED and len(attempts) == 2


@pytest.mark.parametrize("kind", ["memory", "mem"])
def test_a_step_sees_its_input_and_outputs_in_one_order_however_it_is_run(
    world: World, kind: str
) -> None:
    """Stored sorted, they were read back sorted; within `start` a step saw the caller's
    order: a step building lines from a mapping's keys gave other lines after a crash or an
    approval than in an uninterrupted run. Outputs are by step name, as read back."""
    seen: list[tuple[list[str], list[str]]] = []

    def first(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
        return {"zulu": 1, "Alpha": 2, "mike": 3}

    def second(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
        seen.append((list(ctx.input["items"]), list(ctx.output_of("take"))))
        return {"lines": list(ctx.input["items"])}

    flow = WorkflowDefinition(
        "lines", "1", kp.METADATA, (Step("take", first), Step("build", second))
    )
    store = MemoryStore() if kind == "memory" else SurrealStore(SurrealConfig("mem://"))
    try:
        orch = orchestrator(store.unit_of_work, world.clock, workflows={flow.name: flow})
        given = {"items": {"zebra-toy": 1, "apple": 2, "Mango": 3}, "by": "ann"}
        inline = orch.start(flow.name, given)
        resumed = orch.run(orch.start(flow.name, given, run=False).id)
        read = orch.get(inline.id)
    finally:
        store.close()
    assert seen[0] == seen[1] == (["Mango", "apple", "zebra-toy"], ["Alpha", "mike", "zulu"])
    assert inline.step_outputs == resumed.step_outputs == read.step_outputs
    for x in (inline, resumed, read):
        assert list(x.input) == ["by", "items"] and list(x.step_outputs) == ["build", "take"]
        assert list(x.step_outputs["build"]["lines"]) == ["Mango", "apple", "zebra-toy"]


@pytest.mark.parametrize("command", ["get", "cancel", "approve", "trail"])
def test_a_first_step_asking_for_its_own_execution_is_told_it_is_not_stored_yet(
    world: World, command: str
) -> None:
    """The start commits with the first step: until then the orchestrator has no execution
    of that id to give, and said only "not found", of the id the step was handed (and a
    cancel from another thread, racing the first step, said no more)."""
    asked: list[Orchestrator] = []

    def peek(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
        orch, id = asked[0], ctx.execution.id
        commands: dict[str, Callable[[], object]] = {
            "get": lambda: orch.get(id),
            "cancel": lambda: orch.cancel(id),
            "approve": lambda: orch.acting_as("bob").approve(id, role="reviewer"),
            "trail": lambda: orch.trail(id),
        }
        found = commands[command]()
        return {"found": str(found)}

    steps = (Step("first", peek), Step("second", peek))
    orch = orchestrator(
        world.store.unit_of_work,
        world.clock,
        workflows={"peek": WorkflowDefinition("peek", "1", kp.METADATA, steps)},
    )
    asked.append(orch)
    x = orch.start("peek", {})
    assert x.state is S.FAILED and x.last_error is not None
    assert "ExecutionNotFound" in x.last_error
    assert "being started, and is stored with its first step's commit" in x.last_error
    with pytest.raises(ExecutionNotFound, match=r"not found\Z"):  # once over, as any other
        orch.get("wfx-never-started")


def test_a_command_for_a_workflow_this_worker_cannot_run_writes_nothing(world: World) -> None:
    x = world.orch().start(WORKFLOW, request("pub-1"), risk_tier=ImpactTier.TIER1)
    before = world.orch().get(x.id)
    stranger = orchestrator(world.store.unit_of_work, world.clock, workflows={})
    with pytest.raises(InvalidState, match="which this orchestrator does not have"):
        stranger.acting_as("bob").approve(x.id, role="reviewer")
    assert world.orch().get(x.id) == before
    crashed = _crashed_after_ingest(world, "pub-9")  # ingest done: its cancel may need an undo
    with pytest.raises(InvalidState, match=f"runs workflow '{WORKFLOW}'"):
        stranger.cancel(crashed)
    # Nothing done, nothing to undo: any worker can end it (rejected, or cancelled).
    assert stranger.reject(x.id, reason="not this quarter").state is S.FAILED
    y = world.orch().start(WORKFLOW, request("pub-2"), risk_tier=ImpactTier.TIER1)
    cancelled = stranger.cancel(y.id)
    assert cancelled.state is S.CANCELLED and world.orch().verify(y.id).ok
    assert world.transitions(y.id)[-2:] == [
        ("awaiting_approval", "cancelling", None),
        ("cancelling", "cancelled", None),
    ]


def test_another_version_of_a_workflow_does_not_run_an_executions_steps(world: World) -> None:
    x = world.orch().start(WORKFLOW, request("pub-1"), risk_tier=ImpactTier.TIER1)
    v2 = evolve(definitions(world.store.unit_of_work)[WORKFLOW], version="2")
    redeployed = orchestrator(world.store.unit_of_work, world.clock, workflows={WORKFLOW: v2})
    with pytest.raises(InvalidState, match=r"version 1.*runs version 2"):
        redeployed.acting_as("bob").approve(x.id, role="reviewer")
    assert world.orch().get(x.id).state is S.AWAITING_APPROVAL
    assert world.orch().acting_as("bob").approve(x.id, role="reviewer").state is S.SUCCEEDED


def _stored(world: World) -> dict[str, dict[str, Document]]:
    return {table: world.door.table(table) for table in TABLES}


def _redeployed(world: World, change: Any) -> Orchestrator:
    """A worker whose knowledge_publication has the same name and version as the one that
    started the executions, with `change` applied to it."""
    same_version = change(definitions(world.store.unit_of_work)[WORKFLOW])
    return orchestrator(world.store.unit_of_work, world.clock, workflows={WORKFLOW: same_version})


def _noted(step: Step, calls: list[str]) -> Step:
    def run(uow: UnitOfWork, ctx: StepContext) -> Any:
        calls.append(step.name)
        return step.run(uow, ctx)

    return evolve(step, run=run)


def _step_added_first(definition: WorkflowDefinition) -> WorkflowDefinition:
    extra = Step("extra", lambda uow, ctx: {"extra": True})
    return evolve(definition, steps=(extra, *definition.steps))


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (_step_added_first, "steps extra, ingest"),
        (lambda d: evolve(d, steps=d.steps[1:]), "steps analyse, publish"),
        (lambda d: evolve(d, steps=(evolve(d.steps[0], name="ingest2"), *d.steps[1:])), "ingest2"),
        (lambda d: evolve(d, steps=d.steps[:-1]), "publish (side effect) and compensation"),
        (lambda d: evolve(d, compensation=None), "no compensation"),
        (
            lambda d: evolve(
                d, steps=(*d.steps[:2], evolve(d.steps[2], side_effecting=False), *d.steps[3:])
            ),
            "publish, verify",
        ),
    ],
)
def test_steps_changed_under_the_same_version_do_not_drive_an_execution(
    world: World, change: Any, said: str
) -> None:
    x = _crashed_after_ingest(world)
    before = _stored(world)
    redeployed = _redeployed(world, change)
    commands: list[Callable[[], WorkflowExecution]] = [
        lambda: redeployed.acting_as("bob").approve(x, role="reviewer"),
        lambda: redeployed.reject(x, reason="no"),
        lambda: redeployed.cancel(x),
        lambda: redeployed.run(x),
    ]
    for command in commands:
        with pytest.raises(
            InvalidState, match="Register the changed steps under a new version"
        ) as caught:
            command()
        assert said in str(caught.value)
        assert "started by knowledge_publication version 1 with steps ingest, analyse" in str(
            caught.value
        )
    assert _stored(world) == before  # refused before anything was written
    assert world.orch().run(x).state is S.SUCCEEDED


def _crashed_after_ingest(world: World, publication: str = "pub-1") -> str:
    """An execution whose process died at analyse's commit, its lease long expired."""
    crashing = FaultInjector(world.store.unit_of_work)
    crashing.arm(FaultPlan(fail_at_commit=2))  # start with ingest, then analyse's commit fails
    earlier = set(world.door.table("execution"))
    with pytest.raises(InjectedFault):
        world.orch_with("worker-A", {}, factory=crashing).start(WORKFLOW, request(publication))
    world.clock.advance(timedelta(hours=1))
    (execution_id,) = set(world.door.table("execution")) - earlier
    return execution_id


def _added_and_noted(calls: list[str]) -> Any:
    def change(d: WorkflowDefinition) -> WorkflowDefinition:
        added = _step_added_first(d)
        return evolve(added, steps=tuple(_noted(s, calls) for s in added.steps))

    return change


def test_an_ended_execution_is_answered_whatever_its_steps_have_become(world: World) -> None:
    done = world.orch().start(WORKFLOW, request("pub-1"))
    redeployed = _redeployed(world, _step_added_first)
    assert redeployed.run(done.id) == world.orch().get(done.id)  # nothing left to drive
    with pytest.raises(InvalidState, match="already ended as succeeded"):
        redeployed.cancel(done.id)
    stranger = orchestrator(world.store.unit_of_work, world.clock, workflows={})
    with pytest.raises(InvalidState, match="already ended as succeeded"):
        stranger.cancel(done.id)  # what it is, whoever asks


def test_another_version_is_refused_as_such_before_its_steps_are_compared(world: World) -> None:
    x = world.orch().start(WORKFLOW, request("pub-1"), risk_tier=ImpactTier.TIER1)
    other = _redeployed(world, lambda d: evolve(_step_added_first(d), version="2"))
    with pytest.raises(InvalidState, match="runs version 2") as caught:
        other.acting_as("bob").approve(x.id, role="reviewer")
    assert "steps that change" not in str(caught.value)


def test_an_execution_that_ran_no_step_can_be_cancelled_whatever_its_steps_became(
    world: World,
) -> None:
    pending = world.orch().start(WORKFLOW, request("pub-1"), run=False)
    waiting = world.orch().start(WORKFLOW, request("pub-2"), risk_tier=ImpactTier.TIER1)
    other = world.orch().start(WORKFLOW, request("pub-3"), risk_tier=ImpactTier.TIER1)
    redeployed = _redeployed(world, _step_added_first)
    with pytest.raises(InvalidState, match="Register the changed steps under a new version"):
        redeployed.run(pending.id)  # running it would take steps it did not start with
    with pytest.raises(InvalidState, match="Register the changed steps under a new version"):
        redeployed.acting_as("bob").approve(waiting.id, role="reviewer")
    # Giving it up takes no step, and undoes nothing: whatever its steps became.
    assert redeployed.cancel(pending.id).state is S.CANCELLED
    assert redeployed.cancel(waiting.id).state is S.CANCELLED
    assert redeployed.reject(other.id, reason="not now").state is S.FAILED


def test_a_stranger_ends_only_what_is_idle_with_nothing_done(world: World) -> None:
    slow = RetryPolicy(max_attempts=2, backoff=timedelta(hours=1))
    busy = {"ingest": Calls().wrap(_raise(RetryableError("busy"), times=1))}
    waiting = world.orch_with("worker-1", busy, retry=slow).start(FLAKY, request("pub-1"))
    assert waiting.state is S.RETRY_SCHEDULED and waiting.last_error
    # The first step's failure is never recorded: its start stays stored as running.
    crashing = FaultInjector(world.store.unit_of_work)
    crashing.arm(FaultPlan(fail_at_commit=2))
    with pytest.raises(InjectedFault):
        again = {"ingest": Calls().wrap(_raise(RetryableError("busy"), times=1))}
        world.orch_with("worker-2", again, retry=slow, factory=crashing).start(
            FLAKY, request("pub-2")
        )
    (running,) = set(world.door.table("execution")) - {waiting.id}
    assert world.orch().get(running).state is S.RUNNING
    world.clock.advance(timedelta(minutes=5))  # its lease has expired, the retry is not due
    stranger = orchestrator(world.store.unit_of_work, world.clock, workflows={})
    before = _stored(world)
    with pytest.raises(InvalidState, match="does not have"):
        stranger.cancel(running)  # a step may be running: only a worker of it decides
    assert _stored(world) == before
    cancelled = stranger.cancel(waiting.id)
    assert cancelled.state is S.CANCELLED
    assert (cancelled.retry_at, cancelled.last_error) == (None, None)  # the retry is abandoned


def test_recovery_leaves_an_execution_whose_steps_changed_and_says_why(world: World) -> None:
    execution_id = _crashed_after_ingest(world)
    stuck = _stored(world)
    calls: list[str] = []
    with pytest.raises(RecoveryIncomplete) as caught:
        _redeployed(world, _added_and_noted(calls)).recover()
    ((failed_id, why),) = caught.value.failures
    assert failed_id == execution_id and "Register the changed steps under a new version" in why
    assert calls == []  # no step ran: not the one it completed, nor the new one
    assert _stored(world) == stuck


def test_a_changed_definition_would_run_a_completed_step_again_unchecked(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The canary: without the check, recovery drives the execution by position, runs
    ingest, which it had completed, a second time, and never runs the step added."""
    _crashed_after_ingest(world)
    calls: list[str] = []
    monkeypatch.setattr(Orchestrator, "_same_steps", lambda *args: None)
    _redeployed(world, _added_and_noted(calls)).recover()
    assert calls[0] == "ingest" and "extra" not in calls


def test_an_execution_started_before_steps_were_pinned_is_checked_by_its_completed_steps(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = WorkflowExecution.start

    def start_as_before(**kwargs: Any) -> WorkflowExecution:
        kwargs.pop("definition")
        return start(**kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(WorkflowExecution, "start", start_as_before)
        execution_id = _crashed_after_ingest(world)
    reordered = _redeployed(
        world, lambda d: evolve(d, steps=(d.steps[1], *d.steps[::2], d.steps[3]))
    )
    with pytest.raises(InvalidState, match="with completed steps ingest;"):
        reordered.run(execution_id)
    # A step added after those it completed is all that can be told apart: it runs.
    appended = _redeployed(
        world, lambda d: evolve(d, steps=(*d.steps, Step("notify", lambda uow, ctx: {"sent": 1})))
    )
    done = appended.run(execution_id)
    assert done.state is S.SUCCEEDED and done.step_outputs["notify"] == {"sent": 1}


def test_a_retired_version_finishes_what_it_started_while_the_new_one_starts(
    world: World,
) -> None:
    old = world.orch().start(WORKFLOW, request("pub-1"), risk_tier=ImpactTier.TIER1)
    calls: list[str] = []
    current = definitions(world.store.unit_of_work)[WORKFLOW]
    v2 = evolve(_added_and_noted(calls)(current), version="2")
    both = orchestrator(
        world.store.unit_of_work,
        world.clock,
        workflows={WORKFLOW: v2},
        retired=[evolve(current, steps=tuple(_noted(s, calls) for s in current.steps))],
        ids=world.ids,
    )
    new = both.start(WORKFLOW, request("pub-2"))
    assert (new.workflow_version, new.state) == ("2", S.SUCCEEDED)
    assert calls == ["extra", "ingest", "analyse", "publish", "verify"]
    calls.clear()
    done = both.acting_as("bob").approve(old.id, role="reviewer")
    assert (done.workflow_version, done.state) == ("1", S.SUCCEEDED)
    assert calls == ["ingest", "analyse", "publish", "verify"]  # version 1's steps
    assert both.verify(done.id).ok and both.verify(new.id).ok


def test_one_version_has_one_definition() -> None:
    store = MemoryStore()
    current = definitions(store.unit_of_work)[WORKFLOW]
    other_steps = _step_added_first(current)
    for twin in (other_steps, current):
        with pytest.raises(
            ValueError, match=r"version 1 is current: a version is either current or retired"
        ):
            orchestrator(
                store.unit_of_work, FixedClock(T0), workflows={WORKFLOW: current}, retired=[twin]
            )
    old = evolve(current, version="0")
    with pytest.raises(ValueError, match=r"version 0 is retired twice"):
        orchestrator(store.unit_of_work, FixedClock(T0), retired=[old, evolve(old)])
    alone = orchestrator(store.unit_of_work, FixedClock(T0), retired=old)  # one, not a list
    assert alone.registered(WORKFLOW, "0") is old
    decommissioned = orchestrator(store.unit_of_work, FixedClock(T0), workflows={}, retired=old)
    with pytest.raises(InvalidInput, match=r"registered as retired only \(version 0\)"):
        decommissioned.start(WORKFLOW, request("pub-1"))  # not called unknown
    with pytest.raises(ValueError, match="is not a WorkflowDefinition"):
        orchestrator(store.unit_of_work, FixedClock(T0), retired=[object()])


def test_an_idempotency_key_of_another_workflow_is_a_collision_not_its_execution(
    world: World,
) -> None:
    orch = world.orch()
    first = orch.start(WORKFLOW, request("pub-1"), idempotency_key="order-42")
    for given in (request("pub-1"), {"not": "its input"}):
        with pytest.raises(InvalidInput, match=f"already used by execution {first.id}"):
            orch.start(FLAKY, given, idempotency_key="order-42")
    assert orch.start(WORKFLOW, request("pub-1"), idempotency_key="order-42").id == first.id


def test_a_hook_that_fails_does_not_stop_the_run(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(execution: WorkflowExecution) -> None:
        raise RuntimeError("the log shipper is down")

    orch = orchestrator(world.store.unit_of_work, world.clock, on_transition=broken)
    done = orch.start(WORKFLOW, request("pub-1"))
    assert done.state is S.SUCCEEDED and orch.verify(done.id).ok
    assert "on_transition hook failed" in caplog.text and "log shipper" in caplog.text


@pytest.mark.parametrize(
    "policy",
    [
        {"max_attempts": 0},
        {"backoff": timedelta(seconds=-5)},
        {"multiplier": 0.5},
        {"multiplier": float("inf")},
        {"multiplier": float("nan")},
        # Waits an instant could not be stored for: the commit scheduling them would fail.
        {"backoff": timedelta(days=999_999_999)},
        {"max_delay": timedelta(days=366)},
        {"max_attempts": "3"},
        {"max_attempts": True},
        {"backoff": 5},
        {"multiplier": "2"},
        {"backoff": timedelta(hours=2), "max_delay": timedelta(hours=1)},  # over the longest
    ],
)
def test_a_retry_policy_that_cannot_work_is_refused(policy: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="retry policy"):
        RetryPolicy(**policy)


def test_a_retry_policy_of_the_wrong_types_says_which_and_what_it_takes() -> None:
    with pytest.raises(ValueError, match=r"backoff must be a timedelta, e\.g\. timedelta"):
        RetryPolicy(backoff=0.01)  # type: ignore[arg-type]


def test_retry_waits_grow_up_to_the_longest_wait_and_no_further() -> None:
    policy = RetryPolicy(backoff=timedelta(seconds=1), multiplier=1e6, max_delay=timedelta(days=2))
    assert policy.delay(1) == timedelta(seconds=1)
    assert policy.delay(2) == timedelta(days=2)
    assert policy.delay(10_000) == timedelta(days=2)  # past what a float holds: no overflow
    assert RetryPolicy(max_attempts=2000, backoff=timedelta(0)).delay(1025) == timedelta(0)
    assert RetryPolicy(backoff=timedelta(days=30)).delay(1) == timedelta(days=30)


def _failing(error: BaseException) -> WorkflowDefinition:
    def fails(uow: UnitOfWork, ctx: StepContext) -> None:
        raise error

    steps = (Step("first", lambda uow, ctx: {}), Step("second", fails))
    return WorkflowDefinition("failing", "1", kp.METADATA, steps)


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message for you")


class _Interrupting(Exception):
    def __str__(self) -> str:
        raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (ValueError("bad byte in payload: \x00"), "payload: \\x00"),
        (ValueError("half a pair \udcff"), "pair \\udcff"),
        (ValueError("line1\nline2\r\x1b[31mred"), "line1 line2 \\x1b[31mred"),
        (_Unprintable(), "_Unprintable: (its message could not be read)"),
        (_Interrupting(), "_Interrupting: (its message could not be read)"),
    ],
    ids=["nul", "surrogate", "control", "unprintable", "interrupting"],
)
def test_a_step_error_is_recorded_as_one_line_whatever_it_says(
    world: World, error: Exception, said: str
) -> None:
    """Stored verbatim it could not be (NUL, surrogates) or would forge audit lines; failing
    to record it left the execution running, its step re-run at every recovery (and a message
    raising KeyboardInterrupt, at every recovery, looked like Ctrl-C)."""
    orch = orchestrator(
        world.store.unit_of_work, world.clock, workflows={"failing": _failing(error)}
    )
    done = orch.start("failing", {})
    assert done.state is S.FAILED
    assert done.last_error is not None and said in done.last_error
    assert done.last_error.isprintable()
    assert orch.verify(done.id).ok
    assert orch.recover() == []


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"name": ""}, "workflow name"),
        ({"version": "1\x00"}, "workflow version"),
        ({"steps": (Step("second\udcff", lambda uow, ctx: {}),)}, "step name"),
        ({"steps": (Step("two words", lambda uow, ctx: {}),)}, "step name"),
        ({"compensation": Step("undo\n", lambda uow, ctx: {})}, "step name"),
    ],
)
def test_a_workflow_whose_names_could_not_be_recorded_is_refused(
    change: dict[str, Any], named: str
) -> None:
    fields: dict[str, Any] = {
        "name": "w",
        "version": "1",
        "metadata": kp.METADATA,
        "steps": (Step("first", lambda uow, ctx: {}),),
    } | change
    with pytest.raises(ValueError, match=named):
        WorkflowDefinition(**fields)


def test_a_step_or_workflow_of_the_wrong_types_is_refused_when_built() -> None:
    with pytest.raises(ValueError, match="run must be a function"):
        Step("s", "not a function")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="retry must be a RetryPolicy"):
        Step("s", lambda uow, ctx: {}, retry=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="every step must be a Step"):
        WorkflowDefinition("w", "1", kp.METADATA, ("first",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="validate_input must be a function"):
        WorkflowDefinition(
            "w",
            "1",
            kp.METADATA,
            (Step("s", lambda uow, ctx: {}),),
            validate_input="no",  # type: ignore[arg-type]
        )
    with pytest.raises(ValueError, match="metadata must be a WorkflowMetadata"):
        WorkflowDefinition("w", "1", "Tier0", (Step("s", lambda uow, ctx: {}),))  # type: ignore[arg-type]


async def _async_step(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
    return {}


def _generator_step(uow: UnitOfWork, ctx: StepContext) -> Iterator[int]:
    yield 1


class _AsyncCallable:
    async def __call__(self, uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
        return {}


@pytest.mark.parametrize(
    "run",
    [_async_step, _generator_step, functools.partial(_async_step), _AsyncCallable()],
    ids=["async", "generator", "partial", "async __call__"],
)
def test_a_step_that_would_return_its_work_undone_is_refused_when_defined(run: Any) -> None:
    """It would hand back a coroutine or generator unrun, and fail only as it ran."""
    with pytest.raises(ValueError, match="not an async function or a generator"):
        Step("s", run)


class _OneArgument:
    def __call__(self, uow: UnitOfWork) -> dict[str, Any]:
        return {}


@pytest.mark.parametrize(
    "run",
    [lambda: {}, lambda uow: {}, lambda uow, ctx, extra: {}, _OneArgument()],
    ids=["none", "one", "three", "__call__ of one"],
)
def test_a_step_that_cannot_take_the_unit_and_its_context_is_refused_when_defined(
    run: Any,
) -> None:
    """Accepted before, it failed its first execution for good with a TypeError."""
    with pytest.raises(ValueError, match=r"run is called as run\(uow, ctx\)"):
        Step("s", run)


def _injecting(run: Callable[..., Any]) -> Callable[[UnitOfWork, StepContext], Any]:
    """A decorator handing a step one argument more than the orchestrator does."""

    @functools.wraps(run)
    def step(uow: UnitOfWork, ctx: StepContext) -> Any:
        return run(uow, ctx, "injected")

    return step


@_injecting
def _decorated(uow: UnitOfWork, ctx: StepContext, extra: str) -> dict[str, Any]:
    return {"extra": extra}


@pytest.mark.parametrize(
    "run",
    [
        lambda *args: {},
        lambda uow, ctx, extra=1: {},
        functools.partial(lambda x, u, c: {}, 1),
        _decorated,  # judged by its wrapper, which is what is called (a re-test found it refused)
    ],
    ids=["*args", "a default", "partial", "decorated"],
)
def test_a_step_that_can_take_the_unit_and_its_context_is_defined(run: Any) -> None:
    assert Step("s", run).run is run


@pytest.mark.parametrize("made", [_async_step, _generator_step], ids=["coroutine", "generator"])
def test_a_step_handing_back_its_work_undone_fails_saying_so(world: World, made: Any) -> None:
    """A plain function returning an async function's call gets past the check when the
    Step is made: its output said "must be JSON-serialisable (Object of type coroutine...)",
    and Python warned of a coroutine never awaited."""
    flow = _two_steps(None)
    flow = evolve(flow, steps=(flow.steps[0], Step("second", lambda uow, ctx: made(uow, ctx))))
    orch = orchestrator(world.store.unit_of_work, world.clock, workflows={flow.name: flow})
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")  # a coroutine left unawaited warns as it is collected
        done = orch.start(flow.name, {})
        gc.collect()
    assert [str(w.message) for w in warned if "never awaited" in str(w.message)] == []
    assert done.state is S.FAILED
    assert "so the step's work was not done" in str(done.last_error)


def _commands_on(orch: Orchestrator, given: Any) -> list[Callable[[], object]]:
    """Every command that looks an execution up by the id it is given."""
    return [
        lambda: orch.get(given),
        lambda: orch.trail(given),
        lambda: orch.verify(given),
        lambda: orch.run(given),
        lambda: orch.acting_as("bob").approve(given, role="r"),
        lambda: orch.reject(given, reason="no"),
        lambda: orch.cancel(given),
    ]


@pytest.mark.parametrize("given", [None, 5, ["wfx-1"], b"wfx-1"], ids=repr)
def test_an_execution_id_of_another_kind_is_said_to_be_one(world: World, given: Any) -> None:
    for command in _commands_on(world.orch(), given):
        with pytest.raises(InvalidInput, match="must be text") as refused:
            command()
        assert refused.value.field == "execution_id"


def test_an_unknown_execution_id_is_echoed_cut_not_whole(world: World) -> None:
    """A service returns or logs the refusal: a megabyte id (a pasted token, say) was echoed
    whole by every command that looks an execution up."""
    given = "sk_live_SECRET" + "K" * 1_000_000
    for command in _commands_on(world.orch(), given):
        with pytest.raises(ExecutionNotFound, match="not found") as missing:
            command()
        assert len(str(missing.value)) < 200 and missing.value.execution_id == given
    assert world.door.table("execution") == {}


def test_a_flag_given_as_anything_but_a_bool_is_refused(world: World) -> None:
    """ "no" would otherwise read as yes."""
    orch = world.orch()
    refusals: list[tuple[Callable[[], object], str]] = [
        (lambda: orch.start(WORKFLOW, request("pub-1"), run="no"), "run"),  # type: ignore[arg-type]
        (lambda: orch.recover(ignore_leases="yes"), "ignore_leases"),  # type: ignore[arg-type]
        (lambda: orch.run("wfx-1", ignore_leases=1), "ignore_leases"),  # type: ignore[arg-type]
        (lambda: orch.get("wfx-1", with_input="x" * 9999), "with_input"),  # type: ignore[arg-type]
    ]
    for command, flag in refusals:
        # A domain refusal (a service maps it as any other bad argument), echoing the value cut.
        with pytest.raises(InvalidInput, match=f"{flag}: must be a bool") as refused:
            command()
        assert refused.value.field == flag and len(str(refused.value)) < 200
    assert world.door.table("execution") == {}


def test_steps_may_be_given_as_any_iterable_but_not_as_one_step() -> None:
    steps = (Step(name, lambda uow, ctx: {}) for name in ("a", "b"))  # used up once read
    assert WorkflowDefinition("w", "1", kp.METADATA, steps).step_names() == ["a", "b"]
    with pytest.raises(ValueError, match="steps must be a sequence of Steps, got Step"):
        WorkflowDefinition("w", "1", kp.METADATA, Step("a", lambda uow, ctx: {}))  # type: ignore[arg-type]


def test_a_definition_without_steps_or_with_a_name_twice_says_which() -> None:
    with pytest.raises(ValueError, match="steps must not be empty"):
        WorkflowDefinition("w", "1", kp.METADATA, ())
    twice = (Step("a", lambda uow, ctx: {}), Step("b", lambda uow, ctx: {}))
    with pytest.raises(ValueError, match="step 'a' is named twice"):
        WorkflowDefinition("w", "1", kp.METADATA, (*twice, twice[0]))
    with pytest.raises(ValueError, match=r"^workflow version must be text \(1-128 .*; got int$"):
        WorkflowDefinition("w", 1, kp.METADATA, twice)  # type: ignore[arg-type]


def _must_have_amount(input: Mapping[str, Any]) -> None:
    if "amount" not in input:
        raise ValueError("amount is required")


@pytest.mark.parametrize(
    ("validate", "problem"),
    [
        (_must_have_amount, "ValueError: amount is required"),
        (lambda input: input["amount"], "KeyError: 'amount'"),
        (lambda input: input.get("currency", "0123456789")[9], "IndexError: string index out"),
        (lambda input: input.get("currency", {}).get("code"), "AttributeError: 'str' object"),
        (lambda input: "amount" in input, "validate_input"),  # a predicate saying no
    ],
    ids=["ValueError", "KeyError", "IndexError", "AttributeError", "False"],
)
def test_a_validator_refusing_the_usual_python_ways_refuses_the_input(
    world: World, validate: Callable[[Mapping[str, Any]], object], problem: str
) -> None:
    flow = evolve(_two_steps("ok"), validate_input=validate)
    orch = orchestrator(world.store.unit_of_work, world.clock, workflows={flow.name: flow})
    with pytest.raises(InvalidInput, match=problem) as refused:
        orch.start(flow.name, {"currency": "EUR"})
    assert refused.value.field == "input"
    assert world.door.table("execution") == {}
    assert orch.start(flow.name, {"amount": 3}).state is S.SUCCEEDED  # what it returns is moot


def test_a_validators_own_error_goes_to_the_caller_naming_the_validator(world: World) -> None:
    """As it is (README), with a note saying whose it is: the command line said "internal
    error", as if govkernel had failed."""

    def broken(input: Mapping[str, Any]) -> None:
        raise RuntimeError("validator bug")

    flow = evolve(_two_steps("ok"), validate_input=broken)
    orch = orchestrator(world.store.unit_of_work, world.clock, workflows={flow.name: flow})
    with pytest.raises(RuntimeError, match="validator bug") as raised:
        orch.start(flow.name, {})
    assert raised.value.__notes__ == [f"raised by {flow.name}'s validate_input"]
    assert world.door.table("execution") == {}


def test_a_validator_judges_the_input_as_it_is_stored_not_the_callers_object(
    world: World,
) -> None:
    """A tuple it accepted reached steps as a list, an int key as text, and a change it made
    in place was stored (and made the same request, sent again, read as another)."""
    seen: list[Mapping[str, Any]] = []

    def validate(input: Mapping[str, Any]) -> None:
        seen.append(input)
        if not isinstance(input["lines"], list):
            raise ValueError("lines must be a list, as JSON has them")

    flow = evolve(_two_steps("ok"), validate_input=validate)
    orch = orchestrator(world.store.unit_of_work, world.clock, workflows={flow.name: flow})
    given: dict[Any, Any] = {"lines": (1, 2), 7: "x"}
    done = orch.start(flow.name, given)
    assert seen == [{"lines": [1, 2], "7": "x"}] == [done.input]
    assert given == {"lines": (1, 2), 7: "x"}

    def normalise(input: Any) -> None:
        input["email"] = input["email"].lower()

    flow = evolve(_two_steps("ok"), name="normalising", validate_input=normalise)
    orch = orchestrator(world.store.unit_of_work, world.clock, workflows={flow.name: flow})
    asked = {"email": "Bob@X.com"}
    with pytest.raises(InvalidInput, match="refused by normalising's validate_input: TypeError"):
        orch.start(flow.name, asked)
    assert asked == {"email": "Bob@X.com"}
    assert list(world.door.table("execution")) == [done.id]


def test_an_unknown_workflow_is_named_cut(world: World) -> None:
    with pytest.raises(InvalidInput) as refused:
        world.orch().start("x" * 1_000_000, {})
    assert refused.value.problem.startswith("unknown workflow '" + "x" * 59 + "...; known: ")
    assert len(str(refused.value)) < 300


@pytest.mark.parametrize("name", [["two_steps"], {}, None, b"two_steps", 3], ids=repr)
def test_a_workflow_named_by_anything_but_text_is_refused_as_input(world: World, name: Any) -> None:
    flow = _two_steps("ok")
    orch = orchestrator(world.store.unit_of_work, world.clock, workflows={flow.name: flow})
    for call in (lambda: orch.start(name, {}), lambda: orch.check_input(name, {})):
        with pytest.raises(InvalidInput) as refused:
            call()
        assert refused.value.field == "workflow"
    assert world.door.table("execution") == {}


@pytest.mark.parametrize("bad", [[1, 2], None, "ab", [("a", 1)]], ids=repr)
def test_an_input_that_is_not_a_mapping_is_refused_before_anything_is_written(
    world: World, bad: Any
) -> None:
    flow = _two_steps("ok")
    orch = orchestrator(world.store.unit_of_work, world.clock, workflows={flow.name: flow})
    with pytest.raises(InvalidInput, match="must be a mapping") as refused:
        orch.start(flow.name, bad)
    assert refused.value.field == "input"
    assert world.door.table("execution") == {}


def test_what_a_step_does_to_the_execution_it_is_shown_does_not_steer_the_run(
    world: World,
) -> None:
    def meddle(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
        ctx.execution.approvals = (Approval("mallory", "reviewer", T0),)
        ctx.execution.current_step += 1
        ctx.execution.state = S.SUCCEEDED
        return {}

    def gate(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
        if not ctx.execution.approvals:
            raise ApprovalRequired("release", ["needs a reviewer"])
        return {"released": True}

    steps = (Step("meddle", meddle), Step("check", lambda uow, ctx: {"ran": True}))
    definition = WorkflowDefinition("m", "1", kp.METADATA, (*steps, Step("gate", gate)))
    orch = orchestrator(world.store.unit_of_work, world.clock, workflows={"m": definition})
    x = orch.start("m", {})
    assert x.state is S.AWAITING_APPROVAL and x.approvals == ()
    assert x.step_outputs["check"] == {"ran": True}
    assert orch.verify(x.id).ok


def test_a_gate_giving_one_reason_as_text_waits_with_that_reason(world: World) -> None:
    """`ApprovalRequired("payout", "needs a reviewer")` listed its reasons letter by letter
    ("n; e; e; d; s ..."), and a reason alone, the obvious first guess, was a TypeError that
    failed the step."""

    def gate(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
        if not ctx.execution.approvals:
            raise ApprovalRequired("payout", "needs a reviewer")
        return {}

    definition = WorkflowDefinition("g", "1", kp.METADATA, (Step("gate", gate),))
    orch = orchestrator(world.store.unit_of_work, world.clock, workflows={"g": definition})
    x = orch.start("g", {})
    assert x.state is S.AWAITING_APPROVAL
    (waits,) = [
        d for d in world.door.table("audit").values() if d["to_state"] == "awaiting_approval"
    ]
    assert "needs a reviewer" in waits["reason"] and "n; e" not in waits["reason"]
    assert ApprovalRequired("payout", "needs a reviewer").reasons == ("needs a reviewer",)


def test_a_cancellation_during_a_retry_wait_compensates_at_once(world: World) -> None:
    """Not when the abandoned retry would have been due."""
    slow = RetryPolicy(max_attempts=3, backoff=timedelta(minutes=10))
    wrappers = {"verify": Calls().wrap(_raise(RetryableError("verifier down")))}
    orch = world.orch_with("worker-1", wrappers, retry=slow)
    waiting = orch.start(FLAKY, request("pub-1"))
    assert waiting.state is S.RETRY_SCHEDULED and "publish" in waiting.step_outputs
    done = orch.cancel(waiting.id, reason="operator stopped it")
    assert done.state is S.COMPENSATED and world.clock.now() == T0
    assert done.retry_at is None
    (capsule,) = world.door.table("capsule").values()
    assert capsule["status"] == "retracted"
    assert capsule["retraction_reason"] == "workflow cancelled"
    assert orch.verify(done.id).ok


def test_a_start_carries_the_correlation_id_it_is_given(world: World) -> None:
    orch = world.orch()
    done = orch.start(WORKFLOW, request("pub-1"), correlation_id="req-7f3a")
    assert done.correlation_id == "req-7f3a"
    events = world.door.events()
    assert events and {e["correlation_id"] for e in events} == {"req-7f3a"}
    assert {e.correlation_id for e in orch_trail(world, done.id)} == {"req-7f3a"}
    with pytest.raises(InvalidInput, match="correlation_id"):
        orch.start(WORKFLOW, request("pub-2"), correlation_id="two\nlines")
    with pytest.raises(InvalidInput, match="correlation_id"):  # with a known key too
        orch.start(WORKFLOW, request("pub-1"), idempotency_key="k", correlation_id="a\nb")


def orch_trail(world: World, execution_id: str) -> list[Any]:
    from ports.records import audit_from

    rows = [d for d in world.door.table("audit").values() if d["execution_id"] == execution_id]
    return [audit_from(d) for d in rows]


class _DiskFull(WrappingUnitOfWork):
    """Commits until `full` is set; then applies nothing and reports the outcome unknown,
    as the engine does when its fsync fails."""

    full = False
    refused = 0

    def _apply(self, batch: Batch) -> CommitReceipt:
        if _DiskFull.full:
            _DiskFull.refused += 1
            raise CommitOutcomeUnknown("commit failed in the engine: fsync failed")
        return super()._apply(batch)


def test_a_store_that_cannot_commit_stops_the_run_instead_of_spinning(world: World) -> None:
    _DiskFull.full, _DiskFull.refused = False, 0
    slept: list[float] = []
    orch = orchestrator(
        lambda: _DiskFull(world.store.unit_of_work()),
        world.clock,
        ids=world.ids,
        sleep=slept.append,
    )
    started = orch.start(WORKFLOW, request("pub-full"), run=False)
    _DiskFull.full = True
    with pytest.raises(StorageUnavailable, match=r"5 commits in a row .* fsync failed"):
        orch.run(started.id)
    assert _DiskFull.refused == MAX_UNKNOWN_COMMITS  # bounded: no step re-run for good
    assert slept and max(slept) <= 1.0 and all(a < b for a, b in itertools.pairwise(slept))
    assert world.door.table("execution")[started.id]["state"] == "pending"  # as stored

    _DiskFull.full = False  # room again: recovery finishes it, each step once
    (done,) = world.orch("worker-2").recover(ignore_leases=True)
    assert done.state is S.SUCCEEDED and orch.verify(done.id).ok
    assert len(world.door.table("capsule")) == 1


class _RepliesLost(WrappingUnitOfWork):
    """Every commit lands, and its reply is lost."""

    def _apply(self, batch: Batch) -> CommitReceipt:
        super()._apply(batch)
        raise CommitOutcomeUnknown("the reply was lost after the commit landed")


def test_lost_replies_of_commits_that_land_do_not_stop_the_run(world: World) -> None:
    """Only unknown outcomes that leave the execution where it was count toward giving up:
    a run whose every reply is lost still moves on, step by step."""
    steps = tuple(
        Step(f"s{n}", lambda uow, ctx: {"done": ctx.execution.current_step}) for n in range(8)
    )
    long = WorkflowDefinition("long", "1", kp.METADATA, steps)
    plain = orchestrator(world.store.unit_of_work, world.clock, workflows={"long": long})
    started = plain.start("long", {}, run=False)
    lossy = orchestrator(
        lambda: _RepliesLost(world.store.unit_of_work()), world.clock, workflows={"long": long}
    )
    done = lossy.run(started.id)
    assert done.state is S.SUCCEEDED and len(done.step_outputs) == 8
    assert plain.verify(done.id).ok
