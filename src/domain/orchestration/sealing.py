"""Sealing executions already stored, with the store's audit key (domain.model.seal).

Every execution saved through a store that holds a key is sealed as it is written; this is
for the ones written before: when a store that ran without a key is given one, or a new one
(`previous`, the key it replaces, which must vouch for the seal it made). Only a trail that
verifies is sealed, and a seal that no longer matches is never replaced: that mismatch is
the evidence of a rewrite.
"""

from __future__ import annotations

import enum

from attrs import frozen

from domain.model.errors import InvalidState
from domain.model.seal import AuditKey
from ports.errors import CommitOutcomeUnknown, ConcurrencyConflict, CorruptRecord, RecordNotFound
from ports.unit_of_work import UnitOfWorkFactory

ATTEMPTS = 5


class Sealing(enum.Enum):
    SEALED = "sealed"
    ALREADY = "already sealed"
    REFUSED = "refused"


@frozen
class SealOutcome:
    execution_id: str
    outcome: Sealing
    problem: str | None = None


def seal(
    uow_factory: UnitOfWorkFactory,
    tenant: str,
    execution_id: str,
    *,
    previous: AuditKey | None = None,
) -> SealOutcome:
    """Seal `tenant`'s execution `execution_id` with the store's key, if its trail verifies
    and it has no seal, or one that `previous` made of its head."""
    landed = False  # a commit whose outcome was unknown: the next read tells
    for _ in range(ATTEMPTS):
        with uow_factory() as uow:
            key = uow.audit_key
            if key is None:
                raise InvalidState("the store holds no audit key to seal with")
            try:
                execution = uow.executions.get(execution_id, fresh=True)
                if execution is None or execution.tenant != tenant:
                    raise RecordNotFound("execution", execution_id)
                entries = uow.audit.for_execution(execution_id)
            except CorruptRecord as exc:
                return SealOutcome(execution_id, Sealing.REFUSED, str(exc))
            report = execution.verify_trail(entries)  # the chain alone, seal aside
            if not report.ok:
                return SealOutcome(
                    execution_id,
                    Sealing.REFUSED,
                    f"its audit trail is broken at entry #{report.first_bad_sequence}:"
                    f" {report.problem}",
                )
            sealed = execution.seal
            problem = key.problem(
                sealed, execution_id, execution.audit_sequence, execution.audit_head
            )
            if problem is None:
                return SealOutcome(execution_id, Sealing.SEALED if landed else Sealing.ALREADY)
            if sealed is not None:
                # Moved to this key only on the word of the key that made it: a seal
                # of another key's form is as easily forged as removed.
                head = (execution_id, execution.audit_sequence, execution.audit_head)
                if previous is None or not key.names_another(sealed):
                    return SealOutcome(execution_id, Sealing.REFUSED, problem)
                problem = previous.problem(sealed, *head)
                if problem is not None:
                    return SealOutcome(execution_id, Sealing.REFUSED, f"{problem} (previous key)")
            uow.executions.save(execution)  # sealed as it is written: the store's key
            try:
                uow.commit()
            except ConcurrencyConflict:  # moved meanwhile: judged again as it is now
                continue
            except CommitOutcomeUnknown:
                landed = True
                continue
            return SealOutcome(execution_id, Sealing.SEALED)
    return SealOutcome(
        execution_id,
        Sealing.REFUSED,
        f"it kept changing under {ATTEMPTS} attempts to seal it: try again when it is idle",
    )
