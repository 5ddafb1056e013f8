"""The execution lifecycle: states, the explicit transition table and the audit hash chain."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import UTC, datetime

from attrs import frozen

from domain.model.evidence import canonical_json
from domain.model.knowledge import sha256_hex


class ExecutionState(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    RETRY_SCHEDULED = "retry_scheduled"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


S = ExecutionState
TERMINAL = frozenset({S.SUCCEEDED, S.FAILED, S.COMPENSATED, S.CANCELLED})

# running -> running is the step checkpoint: the state stays, the step advances, and the
# audit trail still records it, so every committed step is visible in the chain.
TRANSITIONS: dict[ExecutionState, frozenset[ExecutionState]] = {
    S.PENDING: frozenset({S.RUNNING, S.CANCELLED}),
    S.RUNNING: frozenset(
        {
            S.RUNNING,
            S.AWAITING_APPROVAL,
            S.RETRY_SCHEDULED,
            S.SUCCEEDED,
            S.FAILED,
            S.COMPENSATING,
            S.CANCELLING,
        }
    ),
    S.AWAITING_APPROVAL: frozenset({S.RUNNING, S.FAILED, S.COMPENSATING, S.CANCELLING}),
    S.RETRY_SCHEDULED: frozenset({S.RUNNING, S.CANCELLING}),
    S.CANCELLING: frozenset({S.CANCELLED, S.COMPENSATING}),
    # compensating -> compensating records a failed compensation attempt that will be retried.
    S.COMPENSATING: frozenset({S.COMPENSATING, S.COMPENSATED, S.FAILED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.COMPENSATED: frozenset(),
    S.CANCELLED: frozenset(),
}


def _named(state: ExecutionState | None) -> str:
    return "no state (a start)" if state is None else state.value


def allowed(source: ExecutionState, target: ExecutionState) -> bool:
    return target in TRANSITIONS[source]


GENESIS = "0" * 64


@frozen
class AuditEntry:
    execution_id: str
    sequence: int
    from_state: ExecutionState | None
    to_state: ExecutionState
    at: datetime
    actor: str
    reason: str
    step: str | None
    correlation_id: str
    prev_hash: str
    hash: str
    # Facts outside the entry that it vouches for, as canonical JSON: the execution's
    # identity and input on its first entry, a step's output on its checkpoint. None on
    # entries written before entries pinned anything (their hash never covered it).
    pinned: str | None = None

    @staticmethod
    def digest(
        *,
        execution_id: str,
        sequence: int,
        from_state: ExecutionState | None,
        to_state: ExecutionState,
        at: datetime,
        actor: str,
        reason: str,
        step: str | None,
        correlation_id: str,
        prev_hash: str,
        pinned: str | None = None,
    ) -> str:
        # An entry that pins nothing hashes exactly as entries did before pins existed.
        tail = [] if pinned is None else [pinned]
        return sha256_hex(
            canonical_json(
                [
                    execution_id,
                    sequence,
                    from_state.value if from_state else None,
                    to_state.value,
                    at.astimezone(UTC).isoformat(),
                    actor,
                    reason,
                    step,
                    correlation_id,
                    prev_hash,
                    *tail,
                ]
            )
        )

    def recomputed(self) -> str:
        return AuditEntry.digest(
            execution_id=self.execution_id,
            sequence=self.sequence,
            from_state=self.from_state,
            to_state=self.to_state,
            at=self.at,
            actor=self.actor,
            reason=self.reason,
            step=self.step,
            correlation_id=self.correlation_id,
            prev_hash=self.prev_hash,
            pinned=self.pinned,
        )


@frozen
class ChainReport:
    execution_id: str
    entries: int
    ok: bool
    first_bad_sequence: int | None = None
    problem: str | None = None
    # The chain holds, and its seal does not (domain.model.seal): the head is what is wrong.
    seal: bool = False


@frozen
class AuditAnchor:
    """An execution's audit head as it stood at some moment, kept outside the store.

    A trail only grows, so the anchored entry stays at its sequence with its hash for good.
    Rolling a trail back (dropping its last entries and setting the execution's head back)
    or rewriting it with fresh hashes leaves a chain that verifies on its own; against an
    anchor taken before, it does not."""

    execution_id: str
    sequence: int
    hash: str


def check_anchor(anchor: AuditAnchor, entries: Sequence[AuditEntry]) -> ChainReport:
    """Whether `entries` (a chain that verifies) still hold the anchored entry. Hashes chain
    every entry to the ones before it, so the anchored entry's hash vouches for those too."""
    count = len(entries)
    if count < anchor.sequence:
        return ChainReport(
            anchor.execution_id,
            count,
            False,
            count + 1,
            f"the trail ends at entry {count}, but held entry {anchor.sequence} when anchored:"
            " rolled back or cut short since",
        )
    entry = entries[anchor.sequence - 1] if anchor.sequence > 0 else None
    if entry is not None and (entry.sequence, entry.hash) != (anchor.sequence, anchor.hash):
        return ChainReport(
            anchor.execution_id,
            count,
            False,
            anchor.sequence,
            f"entry {anchor.sequence} is not the one anchored: the trail was rewritten since",
        )
    return ChainReport(anchor.execution_id, count, True)


def verify_chain(
    execution_id: str,
    entries: Sequence[AuditEntry],
    *,
    head_hash: str,
    head_sequence: int,
    state: ExecutionState | None = None,
) -> ChainReport:
    """Recompute the chain in stored order; the execution's head pins the tail.

    Editing changes a hash, deleting or swapping breaks the sequence or the prev link, and
    dropping the last entries no longer reaches the head recorded on the execution. The
    execution's `state`, when given, must be where its last entry leads: a state edited in
    storage has no entry of its own.
    """
    if not entries:  # every execution is stored with the entry that created it
        return ChainReport(
            execution_id, 0, False, 1, "no audit entries: its trail, first entry included, is gone"
        )
    prev, reached = GENESIS, None
    for position, entry in enumerate(entries, start=1):
        problem = None
        if entry.execution_id != execution_id:
            problem = "entry belongs to another execution"
        elif entry.sequence != position:
            problem = f"sequence {entry.sequence} found where {position} was expected"
        elif entry.prev_hash != prev:
            problem = "previous-hash link broken"
        elif entry.recomputed() != entry.hash:
            problem = "entry content does not match its hash"
        # The lifecycle holds in the trail too: an entry whose hash was recomputed cannot
        # lead out of an ended execution, or anywhere the table does not go.
        elif entry.from_state is not reached:
            problem = (
                f"entry leads from {_named(entry.from_state)}, where the trail had reached"
                f" {_named(reached)}"
            )
        elif reached is None and entry.to_state is not S.PENDING:
            problem = f"the first entry leads to {entry.to_state.value}, not pending"
        elif reached is not None and not allowed(reached, entry.to_state):
            problem = f"{reached.value} -> {entry.to_state.value} is not a transition"
        if problem:
            return ChainReport(execution_id, len(entries), False, position, problem)
        prev, reached = entry.hash, entry.to_state
    if len(entries) != head_sequence or prev != head_hash:
        if len(entries) < head_sequence:
            first_bad = len(entries) + 1  # missing
        elif len(entries) > head_sequence and (
            head_sequence < 1 or entries[head_sequence - 1].hash == head_hash
        ):
            first_bad = head_sequence + 1  # past the head the execution records
        else:
            first_bad = max(head_sequence, 1)
        return ChainReport(
            execution_id,
            len(entries),
            False,
            first_bad,
            f"chain ends at entry {len(entries)} but the execution records head {head_sequence}",
        )
    if state is not None and entries and entries[-1].to_state is not state:
        return ChainReport(
            execution_id,
            len(entries),
            False,
            len(entries),
            f"the execution is {state.value} but its last audit entry leads to"
            f" {entries[-1].to_state.value}",
        )
    return ChainReport(execution_id, len(entries), True)
