"""knowledge_publication: ingest the sources, analyse them, publish the capsule, verify it.

Publication is the side effect; if anything fails after it (verification, cancellation), the
compensation retracts the capsule with its own evidence and event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from attrs import frozen

from domain.model import capsule as capsule_model
from domain.model.errors import DomainError, InvalidInput
from domain.model.execution import ConsistencyClass, RollbackStrategy, WorkflowMetadata
from domain.model.knowledge import SourceDraft
from domain.model.policy import EnforcementContext, ImpactTier
from domain.model.validation import identifier, text
from domain.orchestration.definition import Step, StepContext, WorkflowDefinition
from domain.services.governance import enforcement_context
from domain.services.knowledge import MAX_BATCH, KnowledgeService
from ports.unit_of_work import UnitOfWork

NAME = "knowledge_publication"
VERSION = "1"

METADATA = WorkflowMetadata(
    risk_tier=ImpactTier.TIER0,
    consistency_class=ConsistencyClass.A,
    rollback_strategy=RollbackStrategy.COMPENSATE,
    approval_policy="Tier0 none; Tier1 one; Tier2 and Tier3 two distinct approvers",
)


class VerificationFailed(DomainError):
    """The published capsule does not match its sources: publication must be undone."""


@frozen
class PublicationRequest:
    """The workflow's input, validated before anything is started or written."""

    documents: tuple[SourceDraft, ...]
    title: str
    publication_id: str
    policy_refs: tuple[str, ...]
    required_roles: tuple[str, ...] = ()

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> PublicationRequest:
        documents = raw.get("documents")
        if not isinstance(documents, list | tuple) or not documents:
            raise InvalidInput("documents", "at least one document is required")
        if len(documents) > MAX_BATCH:
            raise InvalidInput("documents", f"at most {MAX_BATCH} documents per publication")
        drafts = []
        for i, doc in enumerate(documents):
            if not isinstance(doc, Mapping):
                raise InvalidInput(f"documents[{i}]", "must be an object")
            try:
                drafts.append(
                    SourceDraft.parse(
                        kind=doc.get("kind"),
                        title=doc.get("title"),
                        source_url=doc.get("source_url"),
                        format=doc.get("format"),
                        classification=doc.get("classification"),
                        content_text=doc.get("content_text"),
                    )
                )
            except InvalidInput as exc:
                raise InvalidInput(f"documents[{i}].{exc.field}", exc.problem) from None
        return cls(
            documents=tuple(drafts),
            title=text("title", raw.get("title"), max_len=500),
            publication_id=identifier("publication_id", raw.get("publication_id")),
            policy_refs=_strings("policy_refs", raw.get("policy_refs", ())),
            required_roles=_strings("required_roles", raw.get("required_roles", ())),
        )

    def to_input(self) -> dict[str, Any]:
        return {
            "documents": [
                {
                    "kind": d.kind.value,
                    "title": d.title,
                    "source_url": d.source_url,
                    "format": d.format.value,
                    "classification": d.classification.value,
                    "content_text": d.content_text,
                }
                for d in self.documents
            ],
            "title": self.title,
            "publication_id": self.publication_id,
            "policy_refs": list(self.policy_refs),
            "required_roles": list(self.required_roles),
        }


def _strings(field: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise InvalidInput(field, "must be a list of strings")
    return tuple(text(f"{field}[{i}]", v, max_len=200) for i, v in enumerate(value))


def _enforcement(ctx: StepContext, request: PublicationRequest) -> EnforcementContext:
    return enforcement_context(
        ctx.runtime,
        tier=ctx.execution.metadata.risk_tier,
        policy_refs=request.policy_refs,
        required_roles=request.required_roles,
        approvals=ctx.execution.approvals,
    )


def definition(service: KnowledgeService) -> WorkflowDefinition:
    def ingest(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
        request = PublicationRequest.parse(ctx.input)
        result = service.ingest(uow, ctx.runtime, _enforcement(ctx, request), request.documents)
        return {"source_ids": [s.id for s in result.sources], "created": list(result.created)}

    def analyse(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
        request = PublicationRequest.parse(ctx.input)
        source_ids: Sequence[str] = ctx.output_of("ingest")["source_ids"]
        analysis = service.generate_analysis(
            uow, ctx.runtime, _enforcement(ctx, request), source_ids
        )
        return {"analysis_id": analysis.id, "claims": len(analysis.claims)}

    def publish(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
        request = PublicationRequest.parse(ctx.input)
        capsule = service.publish(
            uow,
            ctx.runtime,
            _enforcement(ctx, request),
            publication_id=request.publication_id,
            title=request.title,
            source_ids=ctx.output_of("ingest")["source_ids"],
            analysis_ids=[ctx.output_of("analyse")["analysis_id"]],
        )
        return {"capsule_id": capsule.id, "artifact_hash": capsule.artifact_hash}

    def verify(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
        published = ctx.output_of("publish")
        capsule = uow.capsules.get(published["capsule_id"])
        if capsule is None:
            raise VerificationFailed(f"capsule {published['capsule_id']} is missing")
        found = uow.sources.get_many(capsule.source_ids)
        present = list(found.values())
        if len(present) != len(capsule.source_ids) or capsule_model.artifact_hash(present) != (
            capsule.artifact_hash
        ):
            raise VerificationFailed(f"capsule {capsule.id} does not match its sources")
        return {"verified": True, "chunks": len(capsule.chunks)}

    def retract(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
        published = ctx.execution.step_outputs.get("publish")
        if published is None:
            return {"retracted": None}
        request = PublicationRequest.parse(ctx.input)
        reason = ctx.execution.last_error or "workflow cancelled"
        service.retract(
            uow,
            ctx.runtime,
            _enforcement(ctx, request),
            capsule_id=published["capsule_id"],
            reason=reason,
        )
        return {"retracted": published["capsule_id"]}

    return WorkflowDefinition(
        name=NAME,
        version=VERSION,
        metadata=METADATA,
        steps=(
            Step("ingest", ingest),
            Step("analyse", analyse),
            Step("publish", publish, side_effecting=True),
            Step("verify", verify),
        ),
        compensation=Step("retract", retract),
        validate_input=PublicationRequest.parse,
    )
