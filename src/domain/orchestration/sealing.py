"""Sealing executions already stored, with the store's audit key (domain.model.seal).

Every execution saved through a store that holds a key is sealed as it is written; this is
for the ones written before. Moving a seal to a new key takes the word of the key that made
it (`previous`). An execution without a seal is sealed only when asked (`unsealed`): one
written before the store had a key and one whose seal was removed read alike, and sealing
vouches for the trail as it stands. Only a trail that verifies is sealed, a seal that does
not match is never replaced (that mismatch is the evidence of a rewrite), and an execution a
worker holds a lease on is left for later (sealing it would make that worker's commit lose).
"""

from __future__ import annotations

import enum
from datetime import datetime

from attrs import frozen

from domain.model.errors import InvalidState
from domain.model.seal import AuditKey
from ports.errors import (
    CommitOutcomeUnknown,
    ConcurrencyConflict,
    CorruptRecord,
    ExecutionNotFound,
)
from ports.unit_of_work import UnitOfWork, UnitOfWorkFactory

ATTEMPTS = 5


class Sealing(enum.Enum):
    SEALED = "sealed"
    MOVED = "moved"  # from the previous key: said apart, so that a move nobody expects shows
    ALREADY = "already sealed"
    UNSEALED = "left unsealed"
    BUSY = "busy"
    REFUSED = "refused"


@frozen
class SealOutcome:
    execution_id: str
    outcome: Sealing
    problem: str | None = None


def seal(
    uow_factory: UnitOfWorkFactory,
    tenant: str | None,
    execution_id: str,
    *,
    now: datetime,
    previous: AuditKey | None = None,
    unsealed: bool = False,
) -> SealOutcome:
    """Seal execution `execution_id` (of `tenant`, or of any with None) with the store's key,
    if its trail verifies: a seal `previous` made of its head is moved to this key, and, with
    `unsealed`, an execution without a seal is sealed as it stands."""
    landed: Sealing | None = None  # a commit whose outcome was unknown: the next read tells
    for _ in range(ATTEMPTS):
        with uow_factory() as uow:
            key = uow.audit_key
            if key is None:
                raise InvalidState("the store holds no audit key to seal with")
            try:
                execution = uow.executions.get(execution_id, fresh=True)
                if execution is None or tenant not in (None, execution.tenant):
                    raise ExecutionNotFound(execution_id)
                entries = uow.audit.for_execution(execution_id)
            except CorruptRecord as exc:
                # Another tenant's, damaged, reads as missing, as any other of theirs.
                if tenant is not None and _of_another(uow, execution_id, tenant):
                    raise ExecutionNotFound(execution_id) from None
                return SealOutcome(execution_id, Sealing.REFUSED, str(exc))
            report = execution.verify_trail(entries)  # the chain alone, seal aside
            if not report.ok:
                return SealOutcome(
                    execution_id,
                    Sealing.REFUSED,
                    f"its audit trail is broken at entry #{report.first_bad_sequence}:"
                    f" {report.problem}",
                )
            head = (execution_id, execution.audit_sequence, execution.audit_head)
            sealed = execution.seal
            problem = key.problem(sealed, *head)
            if problem is None:
                return SealOutcome(execution_id, landed or Sealing.ALREADY)
            if sealed is None and not unsealed:
                return SealOutcome(execution_id, Sealing.UNSEALED, problem)
            if sealed is not None:
                refusal = _not_moved(key, previous, sealed, head, problem)
                if refusal is not None:
                    return SealOutcome(execution_id, Sealing.REFUSED, refusal)
            if execution.lease_owner is not None and not execution.lease_expired(now):
                assert execution.lease_expires_at is not None  # (set with its owner)
                return SealOutcome(
                    execution_id,
                    Sealing.BUSY,
                    f"worker {execution.lease_owner} holds it until"
                    f" {execution.lease_expires_at.isoformat()}: seal it once it is idle",
                )
            done = Sealing.SEALED if sealed is None else Sealing.MOVED
            uow.executions.save(execution, vouch=True)
            try:
                uow.commit()
            except ConcurrencyConflict:  # moved meanwhile: judged again as it is now
                continue
            except CommitOutcomeUnknown:
                landed = done
                continue
            return SealOutcome(execution_id, done)
    return SealOutcome(
        execution_id,
        Sealing.BUSY,
        f"it kept changing under {ATTEMPTS} attempts to seal it: seal it once it is idle",
    )


def _not_moved(
    key: AuditKey,
    previous: AuditKey | None,
    sealed: str,
    head: tuple[str, int, str],
    problem: str,
) -> str | None:
    """Why a seal is not moved to `key`, or None when `previous` made it, of this head. A
    seal in another key's form is as easily forged as removed: only that key's word counts."""
    if previous is None or not key.names_another(sealed):
        return problem
    if sealed[:16] != previous.key_id:
        return (
            f"sealed with key id {sealed[:16]}, and the previous key given is key id"
            f" {previous.key_id}"
        )
    moved = previous.problem(sealed, *head)
    return None if moved is None else f"{moved} (under the previous key)"


def _of_another(uow: UnitOfWork, execution_id: str, tenant: str) -> bool:
    try:
        return uow.executions.tenant_of(execution_id) != tenant
    except CorruptRecord:  # whose it is cannot be told either: refused as damaged
        return False
