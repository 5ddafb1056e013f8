"""The gate every mutation passes: evaluate, and record denials in a unit of their own."""

from __future__ import annotations

from collections.abc import Sequence

from domain.model.errors import InvalidInput, PolicyDenied
from domain.model.evidence import EvidenceManifest, canonical_json
from domain.model.knowledge import Classification, sha256_hex
from domain.model.policy import (
    Approval,
    EnforcementContext,
    GuardedMutation,
    ImpactTier,
    Policy,
    PolicyDecision,
    default_policies,
    evaluate,
)
from domain.model.runtime import RuntimeContext
from domain.model.validation import actor_name, aware, listed, text
from ports.errors import CommitOutcomeUnknown, DuplicateRecord, StorageUnavailable
from ports.unit_of_work import UnitOfWork, UnitOfWorkFactory


class ApprovalRequired(PolicyDenied):
    """Denied only for want of approvals: a workflow waits for them instead of failing."""


def enforcement_context(
    runtime: RuntimeContext,
    *,
    tier: ImpactTier,
    policy_refs: Sequence[str],
    required_roles: Sequence[str] = (),
    approvals: Sequence[Approval] = (),
    roles: Sequence[str] = (),
) -> EnforcementContext:
    """What the policies judge a mutation by; each part checked (`InvalidInput` naming it):
    a service builds it from what its callers send."""
    if not isinstance(tier, ImpactTier):
        raise InvalidInput("tier", f"must be an ImpactTier, got {tier!r}")
    return EnforcementContext(
        actor=runtime.actor,
        tenant=runtime.tenant,
        environment=runtime.environment,
        impact_tier=tier,
        # Not bounded in number here: steps rebuild the context from what their execution
        # stored, perhaps under looser bounds. Inputs are bounded where they enter (a
        # workflow's input, an approval command).
        roles=listed("roles", roles, actor_name),
        policy_refs=listed("policy_refs", policy_refs, _policy_ref),
        required_approver_roles=listed("required_roles", required_roles, actor_name),
        approvals=listed("approvals", approvals, _approval),
        change_freeze=runtime.change_freeze,
    )


def _policy_ref(field: str, value: object) -> str:
    return text(field, value, max_len=200)


def _approval(field: str, value: object) -> Approval:
    # Names are not held to the command line's rules here: approvals stored before those
    # rules are judged as they were given (look-alike names are one person: `person_key`).
    if not isinstance(value, Approval):
        raise InvalidInput(field, f"must be an Approval, got {type(value).__name__}")
    approver = text(f"{field}.approver", value.approver, max_len=200)
    role = text(f"{field}.role", value.role, max_len=200)
    granted_at = aware(f"{field}.granted_at", value.granted_at)
    # As the plain values checked: a str subclass's own casefold would say which role it
    # is, a datetime subclass's own arithmetic how old the approval is.
    return Approval(approver=approver, role=role, granted_at=granted_at)


class Gate:
    def __init__(self, uow_factory: UnitOfWorkFactory, policies: Sequence[Policy] | None = None):
        self._uow_factory = uow_factory
        self._policies = tuple(policies) if policies is not None else default_policies()

    def decide(
        self, mutation: GuardedMutation, runtime: RuntimeContext, within: UnitOfWork | None = None
    ) -> PolicyDecision:
        """Allow, or record the denial (decision and evidence) and raise a typed error.
        `within`, the unit the mutation is staged in: lent to a step for its tenant, another
        tenant's mutation is refused as its writes would be, before a denial of it is recorded
        in a unit of its own (found by a multi-tenant pass, h158)."""
        if within is not None:
            within.refuse_other_tenant(runtime.tenant, "have the gate judge a mutation")
        if mutation.context.tenant != runtime.tenant:
            # Evaluated for one tenant, written as another: its approvals and freeze are not
            # the writer's.
            raise InvalidInput(
                "tenant",
                f"the enforcement context is for tenant {mutation.context.tenant!r},"
                f" the runtime for {runtime.tenant!r}",
            )
        decision = evaluate(
            mutation,
            decision_id=runtime.ids.new_id("dec"),
            now=runtime.clock.now(),
            policies=self._policies,
        )
        if decision.allowed:
            return decision
        if runtime.record_denials:
            self._record(decision, runtime, mutation.target)
        error = ApprovalRequired if decision.awaits_approval else PolicyDenied
        raise error(decision.action.value, decision.reasons, decision.id)

    def _record(self, decision: PolicyDecision, runtime: RuntimeContext, subject: str) -> None:
        """The denial's decision and evidence, in a unit of their own."""
        evidence = evidence_for(decision, runtime, subject=subject)
        for _ in range(2):
            try:
                with self._uow_factory() as uow:
                    uow.decisions.add(decision)
                    uow.evidence.add(evidence)
                    uow.commit()
                return
            except DuplicateRecord:
                # A replayed step re-derives the same decision id: already recorded. Any other
                # decision under that id (ids repeated, as `SequentialIds` over a store that is
                # not empty repeats them) is not this denial: it must not pass as recorded.
                with self._uow_factory() as uow:
                    stored = uow.decisions.get(decision.id)
                if stored is not None and _same_denial(stored, decision):
                    return
                raise DuplicateRecord(
                    "decision",
                    decision.id,
                    "another decision holds this id, so the denial was not recorded: the"
                    " runtime's id generator repeats ids",
                ) from None
            except CommitOutcomeUnknown:
                # The reply was lost: a re-read says whether it landed; if not, once more.
                with self._uow_factory() as uow:
                    if uow.decisions.get(decision.id) is not None:
                        return
        # Never a denial without its record: the step fails retryably and is denied again.
        raise StorageUnavailable(f"the denial {decision.id} could not be recorded")


def _same_denial(stored: PolicyDecision, decision: PolicyDecision) -> bool:
    return not stored.allowed and (stored.action, stored.target, stored.reasons) == (
        decision.action,
        decision.target,
        decision.reasons,
    )


def evidence_for(
    decision: PolicyDecision,
    runtime: RuntimeContext,
    *,
    subject: str,
    artifact_hash: str | None = None,
    classification: Classification = Classification.INTERNAL,
    retention_class: str = "standard",
) -> EvidenceManifest:
    return EvidenceManifest(
        id=runtime.ids.new_id("evd"),
        tenant=runtime.tenant,
        producer=runtime.service,
        subject=subject,
        artifact_hash=artifact_hash or sha256_hex(canonical_json([decision.id, decision.reasons])),
        classification=classification,
        retention_class=retention_class,
        decision_ids=(decision.id,),
        approvals=decision.approvals,
        actor=runtime.actor,
        recorded_at=runtime.clock.now(),
    )
