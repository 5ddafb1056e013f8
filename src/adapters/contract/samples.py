"""Real domain records for the contract cases, with every text field settable.

Ids are random so the suite never assumes an empty store: an adapter author may hand it a
shared one.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from domain.model.analysis import Analysis, Claim
from domain.model.capsule import Capsule, CapsuleStatus, Chunk
from domain.model.environment import Environment
from domain.model.evidence import EventEnvelope, EventType, EvidenceManifest
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
    sha256_hex,
)
from domain.model.policy import Action, Approval, ImpactTier, Obligation, PolicyDecision

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
TENANT = "tenant-a"

# Each must come back byte for byte. Empty strings are left out on purpose: the SurrealDB
# schema asserts most text fields non-empty, and the domain refuses them at the edge anyway.
HOSTILE: dict[str, str] = {
    "quotes": "it's a \"quoted\" 'value'",
    "sql-injection": "'; DELETE knowledge_source; --",
    "surql-injection": "x'); REMOVE TABLE capsule; SELECT * FROM event WHERE ('1' = '1",
    "braces": "{ THROW 'uow-conflict:0' }; {{}} ${x} }",
    "backticks": "`capsule` ``evidence`` ⟨record⟩",
    "param": "$param $r0 $d0 $base $ctr",
    "comments": "/* c */ -- c # c",
    "backslashes": "C:\\new\\table \\u0000 \\' \\\"",
    "emoji": (
        "rocket \U0001f680 family \U0001f468\u200d\U0001f469\u200d\U0001f467"
        " flag \U0001f1ea\U0001f1fa math \U0001d518"
    ),
    "rtl": "\u202eevil\u202c عربي עברית",
    "combining": "e\u0301 vs \u00e9, ZWJ\u200dZWNJ\u200c, BOM\ufeff",
    "newlines": "line 1\nline 2\r\nline 3\rend\u2028sep\u2029",
    "controls": "tab\t bell\x07 esc\x1b del\x7f \x01",
    "whitespace-only": " \t ",
    "long": "0123456789abcdef" * 12_500,  # 200,000 characters
}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def source(
    *, id: str | None = None, tenant: str = TENANT, text: str | None = None
) -> KnowledgeSource:
    # Unique text by default, so content-digest lookups find exactly this source.
    text = text or f"Inflation eased in Q1. Reference {uuid.uuid4().hex}."
    return KnowledgeSource(
        id=id or new_id("src"),
        tenant=tenant,
        kind=SourceKind.IMF,
        title=f"Report on {text[:40]}",
        source_url="https://www.imf.org/en/Publications/report",
        format=SourceFormat.TEXT,
        classification=Classification.INTERNAL,
        acquired_at=T0,
        content_digest=sha256_hex(text),
        content_text=text,
        provenance_tier=ProvenanceTier.PRIMARY,
        evidence_use=EvidenceUse.EVIDENCE,
    )


def hostile_source(text: str) -> KnowledgeSource:
    return KnowledgeSource(
        id=text,
        tenant=text,
        kind=SourceKind.SECONDARY_CONTEXT,
        title=text,
        source_url=text,
        format=SourceFormat.HTML,
        classification=Classification.PUBLIC,
        acquired_at=T0,
        content_digest=sha256_hex(text),
        content_text=text,
        provenance_tier=ProvenanceTier.SECONDARY,
        evidence_use=EvidenceUse.CONTEXT_ONLY,
    )


def evidence(
    subject: str, *, id: str | None = None, tenant: str = TENANT, text: str = "ingest"
) -> EvidenceManifest:
    return EvidenceManifest(
        id=id or new_id("ev"),
        tenant=tenant,
        producer=text,
        subject=subject,
        artifact_hash=sha256_hex(subject),
        classification=Classification.INTERNAL,
        retention_class=text,
        decision_ids=(text, "dec-1"),
        approvals=(Approval(text, text, T0),),
        actor=text,
        recorded_at=T0,
    )


def event(*, id: str | None = None, tenant: str = TENANT, text: str = "actor-1") -> EventEnvelope:
    return EventEnvelope(
        id=id or new_id("evt"),
        tenant=tenant,
        type=EventType.SOURCE_INGESTED,
        actor=text,
        occurred_at=T0,
        correlation_id=text,
        causation_id=text,
        decision_ref=text,
        classification=Classification.INTERNAL,
        payload={"text": text, text: [text, 1, None, True]},
    ).sealed()


def capsule(
    *,
    id: str | None = None,
    tenant: str = TENANT,
    publication_id: str | None = None,
    text: str = "Quarterly capsule",
) -> Capsule:
    return Capsule(
        id=id or new_id("cap"),
        tenant=tenant,
        publication_id=publication_id or new_id("pub"),
        title=text,
        source_ids=(text, "src-1"),
        analysis_ids=(text,),
        artifact_hash=sha256_hex(text),
        chunks=(Chunk(0, text, text), Chunk(1, "src-1", text)),
        classification=Classification.CONFIDENTIAL,
        retention_class=text,
        status=CapsuleStatus.PUBLISHED,
        published_at=T0,
        retraction_reason=text,
    )


def analysis(*, id: str | None = None, tenant: str = TENANT, text: str = "claim") -> Analysis:
    return Analysis(
        id=id or new_id("an"),
        tenant=tenant,
        source_ids=(text,),
        claims=(Claim(text, (text, "src-1")),),
        key_terms=(text, "inflation"),
        rendered=text,
        generator_name=text,
        generator_version=text,
        inputs_digest=sha256_hex(text),
        generated_at=T0,
    )


def decision(
    *, id: str | None = None, tenant: str = TENANT, text: str = "ingest"
) -> PolicyDecision:
    return PolicyDecision(
        id=id or new_id("dec"),
        tenant=tenant,
        action=Action.PUBLISH_CAPSULE,
        workflow=text,
        target=text,
        actor=text,
        environment=Environment.STAGING,
        impact_tier=ImpactTier.TIER2,
        allowed=False,
        reasons=(text, "approval: missing"),
        obligations=(Obligation.RECORD_EVIDENCE, Obligation.REQUIRE_HUMAN_APPROVAL),
        policy_refs=(text,),
        approvals=(Approval(text, text, T0 - timedelta(hours=1)),),
        decided_at=T0,
    )


def execution(
    *,
    id: str | None = None,
    tenant: str = TENANT,
    idempotency_key: str | None = None,
    text: str = "knowledge_publication",
) -> WorkflowExecution:
    """A started execution (version 0, one pending audit entry): save it to create it."""
    return WorkflowExecution.start(
        execution_id=id or new_id("x"),
        tenant=tenant,
        workflow_name=text,
        workflow_version=text,
        metadata=WorkflowMetadata(
            ImpactTier.TIER1, ConsistencyClass.A, RollbackStrategy.COMPENSATE, text
        ),
        idempotency_key=idempotency_key or new_id("idem"),
        correlation_id=text,
        input={"text": text, text: [text, 2, None]},
        at=T0,
        actor=text,
    )
