"""The workflow execution: a durable, versioned aggregate driven through the lifecycle."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from attrs import define, evolve, field, frozen

from domain.model.environment import Environment
from domain.model.errors import IllegalTransition, InvalidInput, InvalidState
from domain.model.evidence import canonical_json
from domain.model.frozen import FrozenDict, read_only
from domain.model.knowledge import sha256_hex
from domain.model.lifecycle import (
    GENESIS,
    AuditEntry,
    ChainReport,
    ExecutionState,
    allowed,
    verify_chain,
)
from domain.model.policy import APPROVAL_TTL, MAX_APPROVALS, Approval, ImpactTier
from domain.model.seal import AuditKey
from domain.model.validation import same_person

JSON = Any


class ConsistencyClass(enum.Enum):
    A = "A"  # strong
    B = "B"  # bounded staleness
    C = "C"  # eventual


class RollbackStrategy(enum.Enum):
    NONE = "none"
    COMPENSATE = "compensate"


@frozen
class WorkflowMetadata:
    risk_tier: ImpactTier
    consistency_class: ConsistencyClass
    rollback_strategy: RollbackStrategy
    approval_policy: str


# What a changed pin is called when verification reports it.
PIN_NAMES = {
    "tenant": "tenant",
    "workflow_name": "workflow name",
    "workflow_version": "workflow version",
    "metadata": "metadata (risk tier, consistency, rollback, approval policy)",
    "idempotency_key": "idempotency key",
    "correlation_id": "correlation id",
    "requested_by": "requester",
    "created_at": "creation time",
    "input_sha256": "input",
    "environment": "environment",
}


def _frozen_input(value: Mapping[str, JSON]) -> Mapping[str, JSON]:
    # A plain mapping is made read-only; any other (an input not loaded) is kept as it is.
    return read_only(value) if isinstance(value, dict) else value


def _frozen_outputs(outputs: Mapping[str, JSON]) -> Mapping[str, JSON]:
    if isinstance(outputs, FrozenDict):
        return outputs
    return FrozenDict({step: read_only(output) for step, output in outputs.items()})


def output_pin(output: JSON) -> str:
    """What a step's checkpoint entry pins: its output's digest."""
    return canonical_json({"output_sha256": sha256_hex(canonical_json(output))})


def read_pins(pinned: object) -> dict[str, Any] | None:
    """What an audit entry pinned, or None if it pinned nothing or it does not read as the
    object the kernel writes. Whoever can write the store can put anything there, such as
    text nested past Python's recursion limit: that must be reported, not stop the check."""
    if not isinstance(pinned, str):
        return None
    try:
        facts = json.loads(pinned)
    except (ValueError, RecursionError):
        return None
    return facts if isinstance(facts, dict) else None


def started_steps(entries: Sequence[AuditEntry]) -> JSON:
    """The definition's shape pinned when the execution started, or None for an execution
    started before shapes were pinned (or a trail without its first entry)."""
    pinned = read_pins(entries[0].pinned) if entries else None
    return None if pinned is None else pinned.get("definition")


def started_step_names(entries: Sequence[AuditEntry]) -> tuple[list[Any], Any] | None:
    """The steps' names in order and the compensation's (None without one) of the shape
    pinned when the execution started; None when no shape was pinned (see started_steps)."""
    shape = started_steps(entries)
    steps = shape.get("steps") if isinstance(shape, dict) else None
    if not isinstance(shape, dict) or not isinstance(steps, list):
        return None
    return [s[0] for s in steps if isinstance(s, list) and s], shape.get("compensation")


def steps_done(entries: Sequence[AuditEntry]) -> list[str]:
    """The steps a trail records as completed, in order: only a checkpoint is running ->
    running."""
    return [e.step or "" for e in entries if e.from_state is e.to_state is ExecutionState.RUNNING]


def approval_reason(approver: str, role: str) -> str:
    """The reason of the audit entry an approval makes: what verification looks for."""
    return f"approved by {approver} as {role}"


@define
class WorkflowExecution:
    id: str
    tenant: str
    workflow_name: str
    workflow_version: str
    metadata: WorkflowMetadata
    idempotency_key: str
    correlation_id: str
    input: Mapping[str, JSON] = field(converter=_frozen_input)
    state: ExecutionState
    created_at: datetime
    updated_at: datetime
    # Whose mutation this is: steps act on their behalf, whichever worker runs them, and
    # they cannot approve it themselves.
    requested_by: str = ""
    # Where it was started: only a worker of that environment drives it, so it is never
    # judged by another's policies. None for executions stored before it was recorded.
    environment: Environment | None = None
    current_step: int = 0
    attempts: dict[str, int] = field(factory=dict)
    # Read-only, as each output in it is (domain.model.frozen): a checkpoint replaces it.
    step_outputs: Mapping[str, JSON] = field(factory=FrozenDict, converter=_frozen_outputs)
    approvals: tuple[Approval, ...] = ()
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    retry_at: datetime | None = None
    cancel_requested: bool = False
    last_error: str | None = None
    audit_sequence: int = 0
    audit_head: str = GENESIS
    # The store's keyed MAC of the head (domain.model.seal), as read; None when unsealed.
    # Saving seals the head anew, or, without the key, drops a seal the head has outgrown.
    seal: str | None = field(default=None, eq=False)
    version: int = 0
    # Audit entries made since the execution was loaded; the repository stages them together
    # with the execution itself, so a transition can never commit without its entry.
    new_audit: list[AuditEntry] = field(factory=list, eq=False, repr=False)

    @classmethod
    def start(
        cls,
        *,
        execution_id: str,
        tenant: str,
        workflow_name: str,
        workflow_version: str,
        metadata: WorkflowMetadata,
        idempotency_key: str,
        correlation_id: str,
        input: Mapping[str, JSON],
        at: datetime,
        actor: str,
        definition: JSON = None,
        environment: Environment | None = None,
    ) -> WorkflowExecution:
        """A new execution, pending. `definition` is what its steps are (see
        `WorkflowDefinition.shape`): pinned beside its identity, for `started_steps`."""
        _in_utc(at)
        execution = cls(
            id=execution_id,
            tenant=tenant,
            workflow_name=workflow_name,
            workflow_version=workflow_version,
            metadata=metadata,
            idempotency_key=idempotency_key,
            correlation_id=correlation_id,
            input=dict(input),
            state=ExecutionState.PENDING,
            created_at=at,
            updated_at=at,
            requested_by=actor,
            environment=environment,
        )
        execution._record(
            None,
            ExecutionState.PENDING,
            at=at,
            actor=actor,
            reason="created",
            pinned=canonical_json(
                execution.identity() | ({} if definition is None else {"definition": definition})
            ),
        )
        return execution

    def identity(self) -> dict[str, JSON]:
        """What never changes after the start, pinned by the first audit entry: editing any
        of it in storage (a lower risk tier, another input) is then caught by `verify_trail`."""
        m = self.metadata
        return {
            "tenant": self.tenant,
            "workflow_name": self.workflow_name,
            "workflow_version": self.workflow_version,
            "metadata": [
                m.risk_tier.value,
                m.consistency_class.value,
                m.rollback_strategy.value,
                m.approval_policy,
            ],
            "idempotency_key": self.idempotency_key,
            "correlation_id": self.correlation_id,
            "requested_by": self.requested_by,
            "created_at": self.created_at.astimezone(UTC).isoformat(),
            "input_sha256": sha256_hex(canonical_json(self.input)),
            # Pinned only where recorded: the first entries of executions stored before
            # pin what they had.
            **({} if self.environment is None else {"environment": self.environment.value}),
        }

    def runs_in(self, environment: Environment) -> bool:
        """Whether a worker of `environment` may drive it: one it started in (any, for an
        execution stored before environments were recorded)."""
        return self.environment in (None, environment)

    def transition(
        self,
        target: ExecutionState,
        *,
        at: datetime,
        actor: str,
        reason: str,
        step: str | None = None,
        pinned: str | None = None,
    ) -> AuditEntry:
        if not allowed(self.state, target):
            raise IllegalTransition(self.id, self.state.value, target.value)
        # The entry first: one refused (an instant without a zone) leaves the execution as it
        # was, as an illegal transition does.
        entry = self._record(
            self.state, target, at=at, actor=actor, reason=reason, step=step, pinned=pinned
        )
        self.state = target
        self.updated_at = at
        if target.terminal or target is ExecutionState.AWAITING_APPROVAL:
            self.release_lease()
        return entry

    def _record(
        self,
        source: ExecutionState | None,
        target: ExecutionState,
        *,
        at: datetime,
        actor: str,
        reason: str,
        step: str | None = None,
        pinned: str | None = None,
    ) -> AuditEntry:
        _in_utc(at)
        sequence = self.audit_sequence + 1
        fields: dict[str, Any] = dict(
            execution_id=self.id,
            sequence=sequence,
            from_state=source,
            to_state=target,
            at=at,
            actor=actor,
            reason=reason,
            step=step,
            correlation_id=self.correlation_id,
            prev_hash=self.audit_head,
            pinned=pinned,
        )
        entry = AuditEntry(**fields, hash=AuditEntry.digest(**fields))
        self.audit_sequence = sequence
        self.audit_head = entry.hash
        self.new_audit.append(entry)
        return entry

    def copy(self) -> WorkflowExecution:
        """An independent copy: its own bookkeeping, the same read-only input and outputs."""
        return evolve(
            self,
            attempts=dict(self.attempts),
            new_audit=list(self.new_audit),
        )

    # -- step bookkeeping --------------------------------------------------------------------

    def begin_attempt(self, step: str) -> int:
        self.attempts[step] = self.attempts.get(step, 0) + 1
        return self.attempts[step]

    def checkpoint(self, step: str, output: JSON, *, at: datetime, actor: str) -> AuditEntry:
        """Record a completed step; the state stays running, the cursor moves on."""
        if self.state is not ExecutionState.RUNNING:
            raise InvalidState(
                f"execution {self.id} is {self.state.value}, not running",
                execution_id=self.id,
                state=self.state,
            )
        kept = read_only(output)
        entry = self.transition(  # first: refused, it leaves the cursor where it was
            ExecutionState.RUNNING,
            at=at,
            actor=actor,
            reason=f"step {step} completed",
            step=step,
            pinned=output_pin(output),
        )
        # By step name, as they are stored and read back (run order is the definition's).
        self.step_outputs = FrozenDict(sorted({**self.step_outputs, step: kept}.items()))
        self.current_step += 1
        self.last_error = None
        return entry

    # -- leases --------------------------------------------------------------------------------

    def claim(self, owner: str, *, now: datetime, ttl: timedelta) -> None:
        if self.lease_owner not in (None, owner) and not self.lease_expired(now):
            raise InvalidState(
                f"execution {self.id} is leased by another worker",
                execution_id=self.id,
                state=self.state,
            )
        try:
            expires = now + ttl
            expires.astimezone(UTC)  # stored in UTC: it must end there too
        except OverflowError:  # a clock near the end of time is broken: say so, write nothing
            raise InvalidInput(
                "clock", f"reads {now.isoformat()}, too late for a lease of {ttl} to end"
            ) from None
        self.lease_owner = owner
        self.lease_expires_at = expires

    def lease_expired(self, now: datetime) -> bool:
        return self.lease_expires_at is None or self.lease_expires_at <= now

    def retry_not_due(self, now: datetime) -> bool:
        """Waiting for a retry (of a step, or of the compensation) that is due later."""
        waiting = self.state in (ExecutionState.RETRY_SCHEDULED, ExecutionState.COMPENSATING)
        return waiting and self.retry_at is not None and self.retry_at > now

    def release_lease(self) -> None:
        self.lease_owner = None
        self.lease_expires_at = None

    # -- approvals and cancellation --------------------------------------------------------------

    def add_approval(self, approval: Approval, *, recorded_by: str) -> None:
        """Record `approval`, given by its approver and recorded by `recorded_by` (who ran the
        command): the requester may do neither, or naming someone else would approve her own."""
        if self.state is not ExecutionState.AWAITING_APPROVAL:
            hint = ""
            if self.state is ExecutionState.RUNNING and self.approvals:
                hint = (
                    "; an approval resumed it, and yours is needed only if it returns to"
                    " awaiting approval"
                )
            raise InvalidState(
                f"execution {self.id} is {self.state.value}, not awaiting approval{hint}",
                execution_id=self.id,
                state=self.state,
            )
        if not self.requested_by:
            raise InvalidState(
                f"execution {self.id} names no requester: separation of duties cannot be checked",
                execution_id=self.id,
                state=self.state,
            )
        if same_person(approval.approver, self.requested_by):
            raise InvalidInput(
                "approver",
                f"{self.requested_by!r} requested execution {self.id} and cannot approve it"
                " (separation of duties)"
                + (
                    ""
                    if approval.approver == self.requested_by
                    else f"; {approval.approver!r} is them"
                ),
            )
        if same_person(recorded_by, self.requested_by):
            raise InvalidInput(
                "approver",
                f"{self.requested_by!r} requested execution {self.id} and cannot record an"
                f" approval of it, by {approval.approver!r} or anyone (separation of duties):"
                " the approver records it (orchestrator.acting_as(approver))",
            )
        earlier = [
            a
            for a in self.approvals
            if same_person(a.approver, approval.approver) and same_person(a.role, approval.role)
        ]
        # Only an expired approval is renewed: one dated later than this (a clock ahead)
        # replaced by this one would read, in the trail, as an approval taken away.
        if any(approval.granted_at - a.granted_at < APPROVAL_TTL for a in earlier):
            # A refusal for the state the execution is in, not for a malformed value.
            raise InvalidState(
                f"{approval.approver!r} has already approved execution {self.id}"
                f" as {approval.role!r}",
                execution_id=self.id,
                state=self.state,
            )
        kept = tuple(a for a in self.approvals if a not in earlier)
        live = sum(a.valid_at(approval.granted_at) for a in kept)  # expired ones count for naught
        if live >= MAX_APPROVALS:
            # Refused here, as a command: every decision of the run records its approvals.
            raise InvalidState(
                f"execution {self.id} has {live} approvals in force, the most it takes",
                execution_id=self.id,
                state=self.state,
            )
        # An approval that has expired is renewed, not kept beside its renewal.
        self.approvals = (*kept, approval)

    def verify_trail(
        self, entries: Sequence[AuditEntry], *, key: AuditKey | None = None
    ) -> ChainReport:
        """Check its stored audit entries against the head and state it records, and the
        requester and approvals it records against the entries that made them; with `key`,
        the head against its seal too (a trail rewritten with fresh hashes verifies as a
        chain, but cannot be sealed anew without the key)."""
        report = self._verify_chain(entries)
        if not report.ok or key is None:
            return report
        problem = key.problem(self.seal, self.id, self.audit_sequence, self.audit_head)
        if problem is None:
            return report
        head = max(self.audit_sequence, 1)
        return ChainReport(self.id, len(entries), False, head, problem, seal=True)

    def _verify_chain(self, entries: Sequence[AuditEntry]) -> ChainReport:
        report = verify_chain(
            self.id,
            entries,
            head_hash=self.audit_head,
            head_sequence=self.audit_sequence,
            state=self.state,
        )
        if not report.ok:
            return report
        bad_at, problem = self._impossible(entries)
        if problem is not None:
            return ChainReport(self.id, len(entries), False, bad_at, problem)
        # (the entry the fact differs from, or the last when no entry records it; problem)
        problems: list[tuple[int, str]] = []
        if entries[0].actor != self.requested_by:
            problems.append(
                (1, f"the execution names {self.requested_by!r} as requester, its trail does not")
            )
        # Each approval is the entry that resumed the execution from its wait, at its time.
        granted = {
            (e.reason, e.at): e.sequence
            for e in entries
            if e.from_state is ExecutionState.AWAITING_APPROVAL
            and e.to_state is ExecutionState.RUNNING
        }
        problems += [
            (len(entries), f"approval by {a.approver!r} as {a.role!r} has no audit entry")
            for a in self.approvals
            if (approval_reason(a.approver, a.role), a.granted_at) not in granted
        ]
        # ...and each such entry's approval is still held, or renewed since (by the same
        # person in the same role, in whatever spelling: names compare case-insensitively).
        given = {
            (approval_reason(a.approver, a.role).casefold(), a.granted_at) for a in self.approvals
        }
        problems += [
            (sequence, f"the approval its trail records at {at.isoformat()} ({reason}) is gone")
            for (reason, at), sequence in sorted(granted.items(), key=lambda g: g[0][1])
            if not any(r == reason.casefold() and t >= at for r, t in given)
        ]
        # Only a checkpoint moves the step cursor.
        done = len(steps_done(entries))
        if self.current_step != done:
            problems.append(
                (
                    len(entries),
                    f"the execution is at step {self.current_step} but its trail records"
                    f" {done} completed step{'s' * (done != 1)}",
                )
            )
        if problems:  # the first found: edits made together are reported one at a time
            return ChainReport(self.id, len(entries), False, *problems[0])
        bad_at, problem = self._unpinned(entries)
        if problem is None:
            return report
        return ChainReport(self.id, len(entries), False, bad_at, problem)

    def _impossible(self, entries: Sequence[AuditEntry]) -> tuple[int, str | None]:
        """(sequence, problem) for the first entry no run could have written, hashes
        recomputed or not: an approval by the requester, a step completed out of the order
        its definition (as pinned at the start) runs them, success before every step."""
        pinned = started_step_names(entries)
        if pinned is None:  # started before definitions were pinned: the rules then differ
            return 0, None
        names = pinned[0]
        done = 0
        for e in entries:
            approval = e.from_state is ExecutionState.AWAITING_APPROVAL and (
                e.to_state is ExecutionState.RUNNING  # a cancel's reason is free text
            )
            if approval and e.reason.startswith("approved by "):
                approver = e.reason.removeprefix("approved by ").split(" as ", 1)[0]
                # Case-insensitively, as every release that pinned definitions refused it
                # (not as spellings are compared now: a trail stays as it was written).
                if approver.casefold() == self.requested_by.casefold():
                    return e.sequence, f"it records an approval by the requester, {approver!r}"
            if e.from_state is e.to_state is ExecutionState.RUNNING:
                expected = names[done] if done < len(names) else None
                if e.step != expected:
                    next_one = f"step {expected}" if expected else "no step"
                    return e.sequence, f"step {e.step} completed where {next_one} was next"
                done += 1
            elif e.to_state is ExecutionState.SUCCEEDED and done != len(names):
                return e.sequence, f"it succeeds with {done} of {len(names)} steps completed"
        return 0, None

    def _unpinned(self, entries: Sequence[AuditEntry]) -> tuple[int, str | None]:
        """(sequence, problem) for the first fact that differs from what its entry pinned.

        A trail whose first entry pins nothing was started before pins existed: its identity
        and the outputs of steps checkpointed then were never covered. The steps a later
        release ran on it were: their outputs are held to their pins all the same.
        """
        started_unpinned = entries[0].pinned is None
        if not started_unpinned:
            pinned = read_pins(entries[0].pinned)
            if pinned is None:
                return 1, "the first audit entry's pins cannot be read"
            now = self.identity()
            for key, name in PIN_NAMES.items():
                if pinned.get(key) != now.get(key):  # a fact pinned or not, on both sides
                    return 1, (
                        f"the execution's {name} differs from what its first audit entry pinned"
                    )
        checkpoints = {e.step: e for e in entries if e.step is not None and e.pinned is not None}
        for step, output in self.step_outputs.items():
            entry = checkpoints.get(step)
            if entry is None and started_unpinned:
                continue  # checkpointed before pins
            if entry is None:
                return len(entries), f"the output of step {step} has no audit entry"
            if entry.pinned != output_pin(output):
                return entry.sequence, (
                    f"the output of step {step} differs from what its audit entry pinned"
                )
        for step, entry in checkpoints.items():
            if step not in self.step_outputs:
                return entry.sequence, f"the output of step {step} is missing"
        return 0, None

    def request_cancel(self) -> None:
        if self.state.terminal:
            raise InvalidState(
                f"execution {self.id} already ended as {self.state.value}",
                execution_id=self.id,
                state=self.state,
            )
        if self.state is ExecutionState.COMPENSATING:
            # Undoing a side effect half-way would leave it neither done nor undone.
            raise InvalidState(
                f"execution {self.id} is compensating and cannot be cancelled",
                execution_id=self.id,
                state=self.state,
            )
        self.cancel_requested = True


def _in_utc(at: object) -> None:
    """Every instant is recorded in UTC: a clock whose reading names no instant (a naive
    time, not a time at all) or has no UTC reading (near the ends of time, in a zone off
    UTC) is broken, said before anything is written."""
    if not isinstance(at, datetime) or at.utcoffset() is None:
        got = f"a {type(at).__name__}" + (" without a zone" if isinstance(at, datetime) else "")
        raise InvalidInput("clock", f"its now() gave {got}: give a clock of aware datetimes")
    try:
        at.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(
            "clock", f"reads {at.isoformat()}, past the ends of time in UTC"
        ) from None
