"""The SCHEMAFULL schema: typed fields, assertions and indexes, applied idempotently."""

from __future__ import annotations

from ports.storage import EVENT_TABLE, TABLES

SCHEMA_VERSION = 2
META_TABLE = "govkernel_meta"
COUNTER_TABLE = "govkernel_counter"

_DIGEST = "string::len($value) = 64"
_NONEMPTY = "string::len($value) > 0"

# field -> (type, assertion or None). Nested structures are `*_json` strings: see ports.storage.
FIELDS: dict[str, dict[str, tuple[str, str | None]]] = {
    "knowledge_source": {
        "tenant": ("string", _NONEMPTY),
        "kind": ("string", None),
        "title": ("string", _NONEMPTY),
        "source_url": ("string", _NONEMPTY),
        "format": ("string", None),
        "classification": ("string", None),
        "acquired_at": ("datetime", None),
        "content_digest": ("string", _DIGEST),
        "content_text": ("string", _NONEMPTY),
        "provenance_tier": ("string", None),
        "evidence_use": ("string", None),
        "version": ("int", "$value >= 1"),
    },
    "analysis": {
        "tenant": ("string", _NONEMPTY),
        "source_ids": ("array<string>", "array::len($value) > 0"),
        "claims_json": ("string", None),
        "key_terms": ("array<string>", None),
        "rendered": ("string", None),
        "generator_name": ("string", _NONEMPTY),
        "generator_version": ("string", _NONEMPTY),
        "inputs_digest": ("string", _DIGEST),
        "generated_at": ("datetime", None),
        "version": ("int", "$value >= 1"),
    },
    "capsule": {
        "tenant": ("string", _NONEMPTY),
        "publication_id": ("string", _NONEMPTY),
        "title": ("string", _NONEMPTY),
        "source_ids": ("array<string>", "array::len($value) > 0"),
        "analysis_ids": ("array<string>", None),
        "artifact_hash": ("string", _DIGEST),
        "chunks_json": ("string", None),
        "classification": ("string", None),
        "retention_class": ("string", _NONEMPTY),
        "status": ("string", "$value INSIDE ['draft', 'published', 'retracted']"),
        "published_at": ("option<datetime>", None),
        "retracted_at": ("option<datetime>", None),
        "retraction_reason": ("option<string>", None),
        "version": ("int", "$value >= 1"),
    },
    "evidence": {
        "tenant": ("string", _NONEMPTY),
        "producer": ("string", _NONEMPTY),
        "subject": ("string", _NONEMPTY),
        "artifact_hash": ("string", None),
        "classification": ("string", None),
        "retention_class": ("string", _NONEMPTY),
        "decision_ids": ("array<string>", None),
        "approvals_json": ("string", None),
        "actor": ("string", _NONEMPTY),
        "recorded_at": ("datetime", None),
        "version": ("int", "$value >= 1"),
    },
    "decision": {
        "tenant": ("string", _NONEMPTY),
        "action": ("string", None),
        "workflow": ("string", None),
        "target": ("string", None),
        "actor": ("string", _NONEMPTY),
        "environment": ("string", None),
        "impact_tier": ("string", None),
        "allowed": ("bool", None),
        "reasons": ("array<string>", None),
        "obligations": ("array<string>", None),
        "policy_refs": ("array<string>", None),
        "approvals_json": ("string", None),
        "decided_at": ("datetime", None),
        "version": ("int", "$value >= 1"),
    },
    EVENT_TABLE: {
        "event_id": ("string", _NONEMPTY),
        "position": ("int", "$value >= 1"),
        "tenant": ("string", _NONEMPTY),
        "type": ("string", "string::starts_with($value, 'knowledge.')"),
        "schema_version": ("int", None),
        "actor": ("string", _NONEMPTY),
        "occurred_at": ("datetime", None),
        "correlation_id": ("string", None),
        "causation_id": ("string", None),
        "decision_ref": ("string", None),
        "classification": ("string", None),
        "integrity_hash": ("string", _DIGEST),
        "payload_json": ("string", None),
    },
    "execution": {
        "tenant": ("string", _NONEMPTY),
        "workflow_name": ("string", _NONEMPTY),
        "workflow_version": ("string", None),
        "metadata_json": ("string", None),
        "idempotency_key": ("string", _NONEMPTY),
        "correlation_id": ("string", None),
        "input_json": ("string", None),
        "state": ("string", None),
        "created_at": ("datetime", None),
        "updated_at": ("datetime", None),
        "requested_by": ("string", None),
        "current_step": ("int", "$value >= 0"),
        "attempts_json": ("string", None),
        "outputs_json": ("string", None),
        "approvals_json": ("string", None),
        "lease_owner": ("option<string>", None),
        "lease_expires_at": ("option<datetime>", None),
        "retry_at": ("option<datetime>", None),
        "cancel_requested": ("bool", None),
        "last_error": ("option<string>", None),
        "audit_sequence": ("int", "$value >= 0"),
        "audit_head": ("string", _DIGEST),
        "version": ("int", "$value >= 1"),
    },
    "audit": {
        "execution_id": ("string", _NONEMPTY),
        "sequence": ("int", "$value >= 1"),
        "from_state": ("option<string>", None),
        "to_state": ("string", None),
        "at": ("datetime", None),
        "actor": ("string", _NONEMPTY),
        "reason": ("string", None),
        "step": ("option<string>", None),
        "correlation_id": ("string", None),
        "prev_hash": ("string", _DIGEST),
        "hash": ("string", _DIGEST),
    },
}


def statements() -> list[str]:
    """Every definition, with OVERWRITE so re-applying converges on this version."""
    out: list[str] = []
    for table, fields in FIELDS.items():
        out.append(f"DEFINE TABLE OVERWRITE {table} SCHEMAFULL")
        for name, (kind, check) in fields.items():
            assertion = f" ASSERT {check}" if check else ""
            out.append(f"DEFINE FIELD OVERWRITE {name} ON {table} TYPE {kind}{assertion}")
        spec = TABLES[table]
        for fields_ in spec.uniques:
            out.append(_index(table, fields_, unique=True))
        for fields_ in spec.lookups:
            out.append(_index(table, fields_, unique=False))
    out.append(_index(EVENT_TABLE, ("position",), unique=True))
    return out


def _index(table: str, fields: tuple[str, ...], *, unique: bool) -> str:
    name = ("uq_" if unique else "ix_") + table + "_" + "_".join(fields)
    suffix = " UNIQUE" if unique else ""
    return f"DEFINE INDEX OVERWRITE {name} ON {table} FIELDS {', '.join(fields)}{suffix}"
