"""knowledge_publication: ingest the sources, analyse them, publish the capsule, verify it.

Publication is the side effect; if anything fails after it (verification, cancellation), the
compensation retracts the capsule with its own evidence and event.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from attrs import frozen

from domain.model import capsule as capsule_model
from domain.model.errors import DomainError, InvalidInput
from domain.model.execution import ConsistencyClass, RollbackStrategy, WorkflowMetadata
from domain.model.frozen import FrozenDict
from domain.model.knowledge import SourceDraft
from domain.model.policy import MAX_POLICY_REFS, MAX_ROLES, EnforcementContext, ImpactTier
from domain.model.validation import actor_name, identifier, text
from domain.orchestration.definition import Step, StepContext, WorkflowDefinition
from domain.services.governance import enforcement_context
from domain.services.knowledge import MAX_BATCH, KnowledgeService
from ports.errors import CorruptRecord
from ports.unit_of_work import UnitOfWork

NAME = "knowledge_publication"
VERSION = "1"

METADATA = WorkflowMetadata(
    risk_tier=ImpactTier.TIER0,
    consistency_class=ConsistencyClass.A,
    rollback_strategy=RollbackStrategy.COMPENSATE,
    approval_policy="Tier0 none; Tier1 one; Tier2 and Tier3 two distinct approvers",
)


REQUEST_KEYS = ("documents", "title", "publication_id", "policy_refs", "required_roles")
DOCUMENT_KEYS = ("kind", "title", "source_url", "format", "classification", "content_text")


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
    def parse(cls, raw: object, *, bounded: bool = True) -> PublicationRequest:
        """Validate an untrusted input (JSON-like): any mistake is an `InvalidInput`.
        `bounded=False` reads a stored one, which may predate the bounds on its lists and the
        checks on its texts."""
        most_refs, most_roles = (MAX_POLICY_REFS, MAX_ROLES) if bounded else (None, None)
        request = _mapping("input", raw, REQUEST_KEYS, "the publication request")
        documents = request.get("documents")
        if not isinstance(documents, list | tuple):
            raise InvalidInput("documents", "must be a list of documents")
        if not documents:
            raise InvalidInput("documents", "at least one document is required")
        if len(documents) > MAX_BATCH:
            raise InvalidInput("documents", f"at most {MAX_BATCH} documents per publication")
        drafts = [_document(i, doc, strict=bounded) for i, doc in enumerate(documents)]
        if bounded:
            _no_repeats(drafts)
        for key in ("title", "publication_id"):
            if request.get(key) is None:  # not "must be a string, got NoneType"
                raise InvalidInput(key, "missing")
        return cls(
            documents=tuple(drafts),
            title=text("title", request.get("title"), max_len=500, single_line=bounded),
            publication_id=identifier("publication_id", request.get("publication_id")),
            # One line, as the title: a new request's references are shown and stored.
            policy_refs=_strings(
                "policy_refs", request.get("policy_refs", ()), most_refs, single_line=bounded
            ),
            # Roles an approver can name: `approve --role` accepts only actor names.
            required_roles=tuple(
                actor_name(f"required_roles[{i}]", role)
                for i, role in enumerate(
                    _strings("required_roles", request.get("required_roles", ()), most_roles)
                )
            ),
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


def _mapping(field: str, raw: object, allowed: Sequence[str], what: str) -> Mapping[str, Any]:
    """`raw` if it is a mapping with no key outside `allowed`.

    Unknown keys are refused rather than ignored: a misspelt key would otherwise silently
    drop what the caller meant to say.
    """
    if not isinstance(raw, Mapping):
        raise InvalidInput(field, f"{what} must be an object, got {type(raw).__name__}")
    unknown = sorted(repr(key) for key in raw if key not in allowed)
    if unknown:
        raise InvalidInput(
            field,
            f"unknown key{'s' * (len(unknown) > 1)} {', '.join(unknown)} in {what};"
            f" allowed: {', '.join(allowed)}",
        )
    return raw


def _document(i: int, raw: object, *, strict: bool) -> SourceDraft:
    doc = _mapping(f"documents[{i}]", raw, DOCUMENT_KEYS, "a document")
    for key in DOCUMENT_KEYS:
        if doc.get(key) is None:
            # Said here: the value parsers would report "None is not one of ...".
            raise InvalidInput(f"documents[{i}].{key}", "missing")
    try:
        return SourceDraft.parse(**doc, strict=strict)
    except InvalidInput as exc:
        raise InvalidInput(f"documents[{i}].{exc.field}", exc.problem) from None


def _no_repeats(drafts: list[SourceDraft]) -> None:
    """One document given twice (a file named twice on a command line) would be one source
    cited twice by the capsule: a mistake, said as one."""
    first: dict[tuple[str, str], int] = {}
    for i, d in enumerate(drafts):
        j = first.setdefault((d.source_url, d.content_digest), i)
        if j != i:
            raise InvalidInput(
                f"documents[{i}]", f"repeats documents[{j}] (the same source_url and content)"
            )


def _strings(
    field: str, value: object, most: int | None, *, single_line: bool = False
) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise InvalidInput(field, "must be a list of strings")
    if most is not None and len(value) > most:
        raise InvalidInput(field, f"at most {most} allowed, got {len(value)}")
    return tuple(
        text(f"{field}[{i}]", v, max_len=200, single_line=single_line) for i, v in enumerate(value)
    )


# The request last parsed, by the input it was parsed from: every step of a run reads the same
# read-only input, and parsing its documents again per step was ~5% of a run. Held weakly, and
# dropped with the input, so that a large input does not outlive its run here.
_parsed: tuple[weakref.ref[FrozenDict], PublicationRequest] | None = None


def _request(ctx: StepContext) -> PublicationRequest:
    global _parsed
    raw, last = ctx.input, _parsed
    if last is not None and last[0]() is raw:
        return last[1]
    request = PublicationRequest.parse(raw, bounded=False)
    if isinstance(raw, FrozenDict):  # a mutable input could change under the copy kept
        _parsed = (weakref.ref(raw, _forget), request)
    return request


def _forget(gone: weakref.ref[FrozenDict]) -> None:
    global _parsed
    last = _parsed
    if last is not None and last[0] is gone:
        _parsed = None


def _enforcement(ctx: StepContext, request: PublicationRequest) -> EnforcementContext:
    return enforcement_context(
        ctx.runtime,
        tier=ctx.execution.metadata.risk_tier,
        policy_refs=request.policy_refs,
        required_roles=request.required_roles,
        approvals=ctx.execution.approvals,
    )


def _still_recorded(uow: UnitOfWork, ingested: Mapping[str, Any]) -> None:
    """The manifests ingest recorded for the sources it created (their ids in its output,
    pinned by the audit trail) are the evidence publishing relies on: one gone or changed in
    storage is corruption, not a source without evidence (a policy denial); and for those
    sources no other manifest, forged under another id, is consulted."""
    ids = list(ingested.get("evidence_ids", ()))  # (none in outputs from before they were kept)
    found = uow.evidence.get_many(ids) if ids else {}
    for source_id, manifest_id in zip(ingested.get("created", ()), ids, strict=False):
        manifest = found.get(manifest_id)
        if manifest is None or manifest.subject != f"knowledge_source:{source_id}":
            how = "missing" if manifest is None else "changed"
            raise CorruptRecord(
                f"evidence manifest {manifest_id!r}, which ingest recorded for source"
                f" {source_id}, is {how} in storage"
            )


def definition(service: KnowledgeService) -> WorkflowDefinition:
    def ingest(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
        request = _request(ctx)
        result = service.ingest(uow, ctx.runtime, _enforcement(ctx, request), request.documents)
        return {
            "source_ids": [s.id for s in result.sources],
            "created": list(result.created),
            # Read by id when publishing: no look-up by subject for the sources created here.
            "evidence_ids": list(result.evidence_ids),
        }

    def analyse(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
        request = _request(ctx)
        source_ids: Sequence[str] = ctx.output_of("ingest")["source_ids"]
        analysis = service.generate_analysis(
            uow, ctx.runtime, _enforcement(ctx, request), source_ids
        )
        return {"analysis_id": analysis.id, "claims": len(analysis.claims)}

    def publish(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
        request = _request(ctx)
        _still_recorded(uow, ctx.output_of("ingest"))
        publication = service.publish(
            uow,
            ctx.runtime,
            _enforcement(ctx, request),
            publication_id=request.publication_id,
            title=request.title,
            source_ids=ctx.output_of("ingest")["source_ids"],
            analysis_ids=[ctx.output_of("analyse")["analysis_id"]],
            # An execution ingested before the output held them has none: looked up by subject.
            evidence_ids=ctx.output_of("ingest").get("evidence_ids", ()),
        )
        capsule = publication.capsule
        return {
            "capsule_id": capsule.id,
            "artifact_hash": capsule.artifact_hash,
            "published": publication.created,
        }

    def verify(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
        published = ctx.output_of("publish")
        capsule = uow.capsules.get(published["capsule_id"])
        if capsule is None:
            raise VerificationFailed(f"capsule {published['capsule_id']} is missing")
        found = uow.sources.get_many(capsule.source_ids)
        present = list(found.values())
        if len(present) != len(capsule.source_ids) or not capsule_model.matches(capsule, present):
            raise VerificationFailed(f"capsule {capsule.id} does not match its sources")
        return {"verified": True, "chunks": len(capsule.chunks)}

    def retract(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:
        published = ctx.execution.step_outputs.get("publish")
        # A capsule found already published belongs to whoever published it. (Outputs from
        # before "published" was recorded say nothing, and are retracted as they always were.)
        if published is None or published.get("published") is False:
            return {"retracted": None}
        request = _request(ctx)
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
