"""Documents <-> domain objects. One encode/decode pair per record type, nothing else."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar, overload

from domain.model.analysis import Analysis, Claim
from domain.model.capsule import Capsule, CapsuleStatus, Chunk
from domain.model.environment import Environment
from domain.model.errors import InvalidState, shown
from domain.model.evidence import EventEnvelope, EventType, EvidenceManifest, canonical_json
from domain.model.execution import (
    ConsistencyClass,
    RollbackStrategy,
    WorkflowExecution,
    WorkflowMetadata,
)
from domain.model.knowledge import (
    Classification,
    EvidenceUse,
    KnowledgeSource,
    ProvenanceTier,
    SourceFormat,
    SourceKind,
)
from domain.model.lifecycle import AuditEntry, ExecutionState
from domain.model.policy import Action, Approval, ImpactTier, Obligation, PolicyDecision
from domain.model.validation import mistyped, several
from ports.errors import CorruptRecord, InvalidRecord
from ports.storage import Document

R = TypeVar("R")


def _reading(table: str) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """A stored record that does not read back (a field missing, of the wrong type, JSON that
    does not parse) is a CorruptRecord naming it, never an internal error."""

    def wrap(convert: Callable[..., R]) -> Callable[..., R]:
        @functools.wraps(convert)
        def read(*args: Any) -> R:
            try:
                return convert(*args)
            except (
                KeyError,
                TypeError,
                ValueError,
                AttributeError,
                IndexError,
                RecursionError,
            ) as exc:
                if any(
                    a is not INPUT_NOT_LOADED and isinstance(a, Mapping) and not a for a in args
                ):
                    # No stored record is empty: a store lists one it cannot read at all
                    # (text with a NUL in it, written in storage) with no fields, so its
                    # reader names it damaged instead of a field it looked for first.
                    named = f" {args[0]!r}" if isinstance(args[0], str) else ""
                    raise CorruptRecord(
                        f"stored {table}{named} cannot be read at all{UNREADABLE}"
                    ) from None
                key = args[0] if isinstance(args[0], str) else _key_of(args[0])
                raise CorruptRecord(
                    f"stored {table} {key!r} cannot be read: {type(exc).__name__}: {exc}"[:300]
                ) from None

        return read

    return wrap


def _writing(table: str) -> Callable[[Callable[..., Document]], Callable[..., Document]]:
    """A domain object that does not make a document (an entity built in code with a field
    of another type: an enum's text, text for a list, a number for a text) is refused with
    an InvalidRecord naming the field, before anything is staged."""

    def wrap(convert: Callable[..., Document]) -> Callable[..., Document]:
        @functools.wraps(convert)
        def write(obj: Any, *rest: Any) -> Document:
            try:
                return convert(obj, *rest)
            except (TypeError, ValueError, AttributeError, OverflowError, RecursionError) as exc:
                raise _unwritable(table, obj, exc) from None

        return write

    return wrap


def _unwritable(table: str, obj: object, exc: Exception) -> InvalidRecord:
    key = getattr(obj, "id", None) or getattr(obj, "execution_id", "?")
    found = mistyped(obj)
    if found is None:
        return InvalidRecord(
            f"{table} {shown(key)} cannot be stored: {type(exc).__name__}: {exc}"[:300]
        )
    name, problem = found
    return InvalidRecord(f"{table} {shown(key)}: field {name} {problem}")


def _listed(values: object) -> list[Any]:
    # Text given for a list would otherwise be stored as its letters (any other collection
    # is taken, as it always was: a set of policy references, say).
    if not several(values):
        raise TypeError(f"a list was expected, got {type(values).__name__}")
    return list(values)


def _whole_number(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{type(value).__name__} is not a whole number")
    return value


@overload
def _when(value: object) -> datetime: ...


@overload
def _when(value: object, *, optional: bool) -> datetime | None: ...


def _when(value: object, *, optional: bool = False) -> datetime | None:
    """A stored instant, which every adapter hands back as a timezone-aware datetime."""
    if value is None and optional:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise TypeError(f"{value!r} is not a timezone-aware datetime")
    return value


def _whole(value: object) -> int:
    """A stored count (a sequence, a version): text or a bool there would pass for one until
    compared, far from the read (`'4' > 3` raises TypeError, `True == 1`)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{value!r} is not a whole number")
    return value


UNREADABLE = " (text holding a NUL character, which govkernel never writes: edited in storage?)"


def _counts(value: object) -> dict[str, int]:
    """Attempts per step: text there failed the next attempt's `+ 1`, far from the read."""
    if not isinstance(value, dict):
        raise TypeError(f"attempts are {type(value).__name__}, not a mapping of step to count")
    for step, n in value.items():
        # (No retry policy comes near the bound: a count past it was written in storage.)
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n < 2**31:
            raise TypeError(f"attempts of step {step!r} are {n!r}, not a whole number")
    return value


def _key_of(doc: object) -> str:
    if isinstance(doc, Mapping):
        for name in ("event_id", "execution_id"):
            if isinstance(doc.get(name), str):
                return str(doc[name])
    return "?"


def _approvals(approvals: tuple[Approval, ...]) -> str:
    if not approvals:  # most manifests: no encoder needed
        return "[]"
    # In UTC, as every other stored instant (the same instant: comparisons are unchanged).
    return canonical_json(
        [[a.approver, a.role, a.granted_at.astimezone(UTC).isoformat()] for a in approvals]
    )


def _parse_approvals(text: str) -> tuple[Approval, ...]:
    return tuple(Approval(a, r, datetime.fromisoformat(t)) for a, r, t in json.loads(text))


def _compact(doc: Mapping[str, Any]) -> Document:
    return {k: v for k, v in doc.items() if v is not None}


@_writing("knowledge_source")
def source_doc(s: KnowledgeSource) -> Document:
    return {
        "tenant": s.tenant,
        "kind": s.kind.value,
        "title": s.title,
        "source_url": s.source_url,
        "format": s.format.value,
        "classification": s.classification.value,
        "acquired_at": s.acquired_at,
        "content_digest": s.content_digest,
        "content_text": s.content_text,
        "provenance_tier": s.provenance_tier.value,
        "evidence_use": s.evidence_use.value,
        "version": s.version,
    }


@_reading("knowledge_source")
def source_from(key: str, d: Document) -> KnowledgeSource:
    source = KnowledgeSource(
        id=key,
        tenant=d["tenant"],
        kind=SourceKind(d["kind"]),
        title=d["title"],
        source_url=d["source_url"],
        format=SourceFormat(d["format"]),
        classification=Classification(d["classification"]),
        acquired_at=_when(d["acquired_at"]),
        content_digest=d["content_digest"],
        content_text=d["content_text"],
        provenance_tier=ProvenanceTier(d["provenance_tier"]),
        evidence_use=EvidenceUse(d["evidence_use"]),
        version=d["version"],
    )
    if not source.matches_its_digest():
        raise ValueError(
            "its content_text does not hash to its content_digest: changed in storage (restore"
            " the store from a backup; the same text under another source_url is a new source)"
        )
    return source


@_writing("analysis")
def analysis_doc(a: Analysis) -> Document:
    return {
        "tenant": a.tenant,
        "source_ids": _listed(a.source_ids),
        "claims_json": canonical_json([[c.text, _listed(c.cited_source_ids)] for c in a.claims]),
        "key_terms": _listed(a.key_terms),
        "rendered": a.rendered,
        "generator_name": a.generator_name,
        "generator_version": a.generator_version,
        "inputs_digest": a.inputs_digest,
        "generated_at": a.generated_at,
        "version": a.version,
    }


@_reading("analysis")
def analysis_from(key: str, d: Document) -> Analysis:
    return Analysis(
        id=key,
        tenant=d["tenant"],
        source_ids=tuple(d["source_ids"]),
        claims=tuple(Claim(t, tuple(ids)) for t, ids in json.loads(d["claims_json"])),
        key_terms=tuple(d["key_terms"]),
        rendered=d["rendered"],
        generator_name=d["generator_name"],
        generator_version=d["generator_version"],
        inputs_digest=d["inputs_digest"],
        generated_at=_when(d["generated_at"]),
        version=d["version"],
    )


@_writing("capsule")
def capsule_doc(c: Capsule) -> Document:
    return _compact(
        {
            "tenant": c.tenant,
            "publication_id": c.publication_id,
            "title": c.title,
            "source_ids": _listed(c.source_ids),
            "analysis_ids": _listed(c.analysis_ids),
            "artifact_hash": c.artifact_hash,
            "chunks_json": canonical_json([[k.index, k.source_id, k.text] for k in c.chunks]),
            "classification": c.classification.value,
            "retention_class": c.retention_class,
            "status": c.status.value,
            "published_at": c.published_at,
            "retracted_at": c.retracted_at,
            "retraction_reason": c.retraction_reason,
            "version": c.version,
        }
    )


@_reading("capsule")
def capsule_from(key: str, d: Document) -> Capsule:
    return Capsule(
        id=key,
        tenant=d["tenant"],
        publication_id=d["publication_id"],
        title=d["title"],
        source_ids=tuple(d["source_ids"]),
        analysis_ids=tuple(d["analysis_ids"]),
        artifact_hash=d["artifact_hash"],
        chunks=tuple(Chunk(i, s, t) for i, s, t in json.loads(d["chunks_json"])),
        classification=Classification(d["classification"]),
        retention_class=d["retention_class"],
        status=CapsuleStatus(d["status"]),
        published_at=_when(d.get("published_at"), optional=True),
        retracted_at=_when(d.get("retracted_at"), optional=True),
        retraction_reason=d.get("retraction_reason"),
        version=d["version"],
    )


@_writing("evidence")
def evidence_doc(e: EvidenceManifest) -> Document:
    return {
        "tenant": e.tenant,
        "producer": e.producer,
        "subject": e.subject,
        "artifact_hash": e.artifact_hash,
        "classification": e.classification.value,
        "retention_class": e.retention_class,
        "decision_ids": _listed(e.decision_ids),
        "approvals_json": _approvals(e.approvals),
        "actor": e.actor,
        "recorded_at": e.recorded_at,
        "version": e.version,
    }


@_reading("evidence")
def evidence_from(key: str, d: Document) -> EvidenceManifest:
    return EvidenceManifest(
        id=key,
        tenant=d["tenant"],
        producer=d["producer"],
        subject=d["subject"],
        artifact_hash=d["artifact_hash"],
        classification=Classification(d["classification"]),
        retention_class=d["retention_class"],
        decision_ids=tuple(d["decision_ids"]),
        approvals=_parse_approvals(d["approvals_json"]),
        actor=d["actor"],
        recorded_at=_when(d["recorded_at"]),
        version=d["version"],
    )


@_writing("decision")
def decision_doc(p: PolicyDecision) -> Document:
    return {
        "tenant": p.tenant,
        "action": p.action.value,
        "workflow": p.workflow,
        "target": p.target,
        "actor": p.actor,
        "environment": p.environment.value,
        "impact_tier": p.impact_tier.value,
        "allowed": p.allowed,
        "reasons": _listed(p.reasons),
        "obligations": [o.value for o in p.obligations],
        "policy_refs": _listed(p.policy_refs),
        "approvals_json": _approvals(p.approvals),
        "decided_at": p.decided_at,
        "version": p.version,
    }


@_reading("decision")
def decision_from(key: str, d: Document) -> PolicyDecision:
    return PolicyDecision(
        id=key,
        tenant=d["tenant"],
        action=Action(d["action"]),
        workflow=d["workflow"],
        target=d["target"],
        actor=d["actor"],
        environment=Environment(d["environment"]),
        impact_tier=ImpactTier(d["impact_tier"]),
        allowed=d["allowed"],
        reasons=tuple(d["reasons"]),
        obligations=tuple(Obligation(o) for o in d["obligations"]),
        policy_refs=tuple(d["policy_refs"]),
        approvals=_parse_approvals(d["approvals_json"]),
        decided_at=_when(d["decided_at"]),
        version=d["version"],
    )


@_writing("event")
def event_doc(e: EventEnvelope) -> Document:
    return {
        "event_id": e.id,
        "tenant": e.tenant,
        "type": e.type.value,
        "schema_version": e.schema_version,
        "actor": e.actor,
        "occurred_at": e.occurred_at,
        "correlation_id": e.correlation_id,
        "causation_id": e.causation_id,
        "decision_ref": e.decision_ref,
        "classification": e.classification.value,
        "integrity_hash": e.integrity_hash,
        "payload_json": canonical_json(e.payload),
    }


@_reading("event")
def event_from(d: Document) -> EventEnvelope:
    return EventEnvelope(
        id=d["event_id"],
        tenant=d["tenant"],
        type=EventType(d["type"]),
        schema_version=d["schema_version"],
        actor=d["actor"],
        occurred_at=_when(d["occurred_at"]),
        correlation_id=d["correlation_id"],
        causation_id=d["causation_id"],
        decision_ref=d["decision_ref"],
        classification=Classification(d["classification"]),
        integrity_hash=d["integrity_hash"],
        payload=json.loads(d["payload_json"]),
        position=d.get("position"),
    )


@_writing("execution")
def execution_doc(x: WorkflowExecution, version: int) -> Document:
    m = x.metadata
    return _compact(
        {
            "tenant": x.tenant,
            "workflow_name": x.workflow_name,
            "workflow_version": x.workflow_version,
            "metadata_json": canonical_json(
                [
                    m.risk_tier.value,
                    m.consistency_class.value,
                    m.rollback_strategy.value,
                    m.approval_policy,
                ]
            ),
            "idempotency_key": x.idempotency_key,
            "correlation_id": x.correlation_id,
            "state": x.state.value,
            "created_at": x.created_at,
            "updated_at": x.updated_at,
            "requested_by": x.requested_by,
            "environment": None if x.environment is None else x.environment.value,
            "current_step": x.current_step,
            "attempts_json": canonical_json(x.attempts),
            "outputs_json": canonical_json(x.step_outputs),
            "approvals_json": _approvals(x.approvals),
            "lease_owner": x.lease_owner,
            "lease_expires_at": x.lease_expires_at,
            "retry_at": x.retry_at,
            "cancel_requested": x.cancel_requested,
            "last_error": x.last_error,
            "audit_sequence": x.audit_sequence,
            "audit_head": x.audit_head,
            "seal": x.seal,
            "version": version,
        }
    )


class _InputNotLoaded(Mapping[str, Any]):
    """The input of an execution listed without it: reading it is a mistake, said loudly
    rather than answered with an empty mapping."""

    def _refuse(self) -> NoReturn:
        raise InvalidState("this execution was listed without its input: read it by id")

    def __getitem__(self, key: str) -> Any:
        self._refuse()

    def __iter__(self) -> Iterator[str]:
        self._refuse()

    def __len__(self) -> int:
        self._refuse()

    # Listed executions still compare by everything else they hold; compared with an input,
    # it cannot say (False would pretend the inputs differ).
    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        if isinstance(other, Mapping):
            self._refuse()
        return NotImplemented

    def __hash__(self) -> int:
        return id(self)


INPUT_NOT_LOADED: Mapping[str, Any] = _InputNotLoaded()


@_writing("execution_input")
def execution_input_doc(x: WorkflowExecution) -> Document:
    return {"tenant": x.tenant, "input_json": canonical_json(x.input), "version": 1}


@_reading("execution")
def execution_from(
    key: str, d: Document, input_doc: Document | Mapping[str, Any] | None
) -> WorkflowExecution:
    """The execution from its record and its input's (stores before schema 5 kept the input
    in the execution record itself), or with `INPUT_NOT_LOADED`."""
    risk, consistency, rollback, approval = json.loads(d["metadata_json"])
    if input_doc is None and "input_json" not in d:
        # Neither its own record (schema 5 on) nor the execution's holds it: said as what it
        # is, not as the KeyError looking for it meets.
        raise ValueError(f"its input record (execution_input {key!r}) is missing")
    if not isinstance(d["tenant"], str):
        raise ValueError("its tenant is not text")
    loaded = None if input_doc is INPUT_NOT_LOADED else input_doc
    if loaded is not None and loaded.get("tenant") != d["tenant"]:
        # Its tenant tells whose the execution is when its own record cannot be read.
        raise ValueError(f"its input record (execution_input {key!r}) names another tenant")
    return WorkflowExecution(
        id=key,
        tenant=d["tenant"],
        workflow_name=d["workflow_name"],
        workflow_version=d["workflow_version"],
        metadata=WorkflowMetadata(
            ImpactTier(risk), ConsistencyClass(consistency), RollbackStrategy(rollback), approval
        ),
        idempotency_key=d["idempotency_key"],
        correlation_id=d["correlation_id"],
        input=(
            INPUT_NOT_LOADED
            if input_doc is INPUT_NOT_LOADED
            else json.loads((input_doc or d)["input_json"])
        ),
        state=ExecutionState(d["state"]),
        created_at=_when(d["created_at"]),
        updated_at=_when(d["updated_at"]),
        requested_by=d.get("requested_by", ""),
        environment=None if d.get("environment") is None else Environment(d["environment"]),
        current_step=_whole(d["current_step"]),
        attempts=_counts(json.loads(d["attempts_json"])),
        step_outputs=json.loads(d["outputs_json"]),
        approvals=_parse_approvals(d["approvals_json"]),
        lease_owner=d.get("lease_owner"),
        lease_expires_at=_when(d.get("lease_expires_at"), optional=True),
        retry_at=_when(d.get("retry_at"), optional=True),
        cancel_requested=d["cancel_requested"],
        last_error=d.get("last_error"),
        audit_sequence=_whole(d["audit_sequence"]),
        audit_head=d["audit_head"],
        seal=d.get("seal"),
        version=_whole(d["version"]),
    )


def audit_key(execution_id: str, sequence: int) -> str:
    return f"{execution_id}:{sequence:09d}"


@_writing("audit")
def audit_doc(a: AuditEntry) -> Document:
    return _compact(
        {
            "execution_id": a.execution_id,
            "sequence": _whole_number(a.sequence),
            "from_state": a.from_state.value if a.from_state else None,
            "to_state": a.to_state.value,
            "at": a.at,
            "actor": a.actor,
            "reason": a.reason,
            "step": a.step,
            "correlation_id": a.correlation_id,
            "prev_hash": a.prev_hash,
            "hash": a.hash,
            "pinned": a.pinned,
        }
    )


@_reading("audit")
def audit_from(d: Document) -> AuditEntry:
    return AuditEntry(
        execution_id=d["execution_id"],
        sequence=_whole(d["sequence"]),
        from_state=ExecutionState(d["from_state"]) if d.get("from_state") else None,
        to_state=ExecutionState(d["to_state"]),
        at=_when(d["at"]),
        actor=d["actor"],
        reason=d["reason"],
        step=d.get("step"),
        correlation_id=d["correlation_id"],
        prev_hash=d["prev_hash"],
        hash=d["hash"],
        pinned=d.get("pinned"),
    )
