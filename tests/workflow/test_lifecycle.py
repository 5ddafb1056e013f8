"""The lifecycle state machine: the transition table, exhaustively, and its audit entries."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

import pytest
from attrs import asdict

from domain.model.errors import IllegalTransition, InvalidInput
from domain.model.execution import WorkflowExecution
from domain.model.lifecycle import (
    GENESIS,
    TERMINAL,
    TRANSITIONS,
    AuditEntry,
    ExecutionState,
    allowed,
    verify_chain,
)
from domain.workflows import knowledge_publication as kp
from tests.workflow.harness import T0

S = ExecutionState

# The specification, written out independently of the code: DESIGN section 5 plus the
# orchestrator's needs (running -> running is the per-step checkpoint).
SPEC: dict[ExecutionState, set[ExecutionState]] = {
    S.PENDING: {S.RUNNING, S.CANCELLED},
    S.RUNNING: {
        S.RUNNING,
        S.AWAITING_APPROVAL,
        S.RETRY_SCHEDULED,
        S.SUCCEEDED,
        S.FAILED,
        S.COMPENSATING,
        S.CANCELLING,
    },
    S.AWAITING_APPROVAL: {S.RUNNING, S.FAILED, S.COMPENSATING, S.CANCELLING},
    S.RETRY_SCHEDULED: {S.RUNNING, S.CANCELLING},
    S.CANCELLING: {S.CANCELLED, S.COMPENSATING},
    S.COMPENSATING: {S.COMPENSATING, S.COMPENSATED, S.FAILED},  # self: a retried undo
    S.SUCCEEDED: set(),
    S.FAILED: set(),
    S.COMPENSATED: set(),
    S.CANCELLED: set(),
}
PAIRS = list(itertools.product(ExecutionState, ExecutionState))


def _execution_in(state: ExecutionState) -> WorkflowExecution:
    """A started execution brought to `state` with a plausible (and verifiable) history."""
    execution = WorkflowExecution.start(
        execution_id="wfx-lifecycle",
        tenant="tenant-a",
        workflow_name=kp.NAME,
        workflow_version=kp.VERSION,
        metadata=kp.METADATA,
        idempotency_key="key-1",
        correlation_id="corr-1",
        input={"x": 1},
        at=T0,
        actor="tester",
    )
    path = {
        S.PENDING: [],
        S.RUNNING: [S.RUNNING],
        S.AWAITING_APPROVAL: [S.RUNNING, S.AWAITING_APPROVAL],
        S.RETRY_SCHEDULED: [S.RUNNING, S.RETRY_SCHEDULED],
        S.SUCCEEDED: [S.RUNNING, S.SUCCEEDED],
        S.FAILED: [S.RUNNING, S.FAILED],
        S.COMPENSATING: [S.RUNNING, S.COMPENSATING],
        S.COMPENSATED: [S.RUNNING, S.COMPENSATING, S.COMPENSATED],
        S.CANCELLING: [S.RUNNING, S.CANCELLING],
        S.CANCELLED: [S.CANCELLED],
    }[state]
    for n, target in enumerate(path, start=1):
        execution.transition(target, at=T0 + timedelta(seconds=n), actor="tester", reason="setup")
    assert execution.state is state
    return execution


def _snapshot(execution: WorkflowExecution) -> dict[str, object]:
    return asdict(execution, recurse=False) | {"new_audit": list(execution.new_audit)}


def test_the_table_is_the_specified_one() -> None:
    assert set(TRANSITIONS) == set(ExecutionState)
    assert {source: set(targets) for source, targets in TRANSITIONS.items()} == SPEC
    assert {s for s in ExecutionState if s.terminal} == set(TERMINAL)
    assert all(not TRANSITIONS[s] for s in TERMINAL)


def test_every_state_is_reachable_and_can_end() -> None:
    reachable, frontier = {S.PENDING}, [S.PENDING]
    while frontier:
        for target in TRANSITIONS[frontier.pop()]:
            if target not in reachable:
                reachable.add(target)
                frontier.append(target)
    assert reachable == set(ExecutionState)
    for state in ExecutionState:
        seen, todo = {state}, [state]
        while todo:
            for target in TRANSITIONS[todo.pop()] - seen:
                seen.add(target)
                todo.append(target)
        assert seen & TERMINAL, f"{state} can never end"


@pytest.mark.parametrize(
    ("source", "target"), PAIRS, ids=[f"{a.value}->{b.value}" for a, b in PAIRS]
)
def test_transition(source: ExecutionState, target: ExecutionState) -> None:
    execution = _execution_in(source)
    history = list(execution.new_audit)
    before = _snapshot(execution)
    at = T0 + timedelta(minutes=5)

    if target not in SPEC[source]:
        assert not allowed(source, target)
        with pytest.raises(IllegalTransition) as info:
            execution.transition(target, at=at, actor="mallory", reason="nope", step="s")
        assert (info.value.execution_id, info.value.source, info.value.target) == (
            execution.id,
            source.value,
            target.value,
        )
        assert _snapshot(execution) == before  # nothing changed, not even the audit trail
        return

    assert allowed(source, target)
    entry = execution.transition(target, at=at, actor="alice", reason="because", step="ingest")
    assert execution.state is target
    assert execution.updated_at == at
    assert execution.new_audit == [*history, entry]
    assert entry.sequence == len(history) + 1 == execution.audit_sequence
    assert (entry.from_state, entry.to_state) == (source, target)
    assert (entry.actor, entry.reason, entry.step, entry.at) == ("alice", "because", "ingest", at)
    assert entry.correlation_id == "corr-1"
    assert entry.prev_hash == before["audit_head"] == history[-1].hash
    assert entry.hash == entry.recomputed() == execution.audit_head
    report = verify_chain(
        execution.id,
        execution.new_audit,
        head_hash=execution.audit_head,
        head_sequence=execution.audit_sequence,
    )
    assert report.ok, report
    if target.terminal or target is S.AWAITING_APPROVAL:
        assert execution.lease_owner is None


@pytest.mark.parametrize("move", ["transition", "checkpoint"])
def test_a_legal_transition_refused_for_its_entry_changes_nothing(move: str) -> None:
    """Found by a conformance review: the state, time and lease (and a checkpoint's cursor
    and outputs) changed before the entry was refused for its instant without a zone,
    leaving the execution in its new state with no entry for it."""
    execution = _execution_in(S.RUNNING)
    execution.claim("worker-1", now=T0, ttl=timedelta(minutes=5))
    before = _snapshot(execution)
    naive = datetime(2026, 1, 1, 12, 0)  # names no instant
    with pytest.raises(InvalidInput):
        if move == "transition":
            execution.transition(S.SUCCEEDED, at=naive, actor="alice", reason="because")
        else:
            execution.checkpoint("ingest", {"n": 1}, at=naive, actor="alice")
    assert _snapshot(execution) == before


def test_the_first_entry_records_creation_and_chains_to_genesis() -> None:
    execution = _execution_in(S.PENDING)
    (entry,) = execution.new_audit
    assert (entry.sequence, entry.from_state, entry.to_state) == (1, None, S.PENDING)
    assert entry.prev_hash == GENESIS
    assert entry.hash == entry.recomputed()


@pytest.mark.parametrize("first", [S.RUNNING, S.SUCCEEDED])
def test_a_trail_whose_first_entry_does_not_lead_to_pending_is_broken_there(
    first: ExecutionState,
) -> None:
    """Rewritten, hashes recomputed, to start an execution past its creation (h169): every
    link holds, and the lifecycle does not."""
    created = _execution_in(S.PENDING).new_audit[0]
    fields = asdict(created, recurse=False) | {"to_state": first}
    del fields["hash"]
    forged = AuditEntry(**fields, hash=AuditEntry.digest(**fields))
    report = verify_chain(forged.execution_id, [forged], head_hash=forged.hash, head_sequence=1)
    assert (report.ok, report.first_bad_sequence) == (False, 1)
    assert report.problem == f"the first entry leads to {first.value}, not pending"


@pytest.mark.parametrize(
    "field",
    ["execution_id", "sequence", "from_state", "to_state", "at", "actor", "reason", "step",
     "correlation_id", "prev_hash"],
)  # fmt: skip
def test_every_field_is_covered_by_the_hash(field: str) -> None:
    entry = _execution_in(S.RUNNING).new_audit[-1]
    other = {
        "execution_id": "wfx-other",
        "sequence": 99,
        "from_state": S.FAILED,
        "to_state": S.CANCELLED,
        "at": T0 + timedelta(days=1),
        "actor": "mallory",
        "reason": "forged",
        "step": "publish",
        "correlation_id": "corr-forged",
        "prev_hash": "f" * 64,
    }[field]
    fields = asdict(entry, recurse=False) | {field: other}
    assert AuditEntry(**fields).recomputed() != entry.hash
