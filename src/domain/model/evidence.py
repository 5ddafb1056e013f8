"""Evidence manifests and the event envelope: what each mutation leaves behind."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from attrs import field, frozen

from domain.model.errors import InvalidInput
from domain.model.knowledge import Classification, sha256_hex
from domain.model.policy import Approval
from domain.model.validation import mistyped


class EventType(enum.Enum):
    SOURCE_INGESTED = "knowledge.source_ingested"
    ANALYSIS_GENERATED = "knowledge.analysis_generated"
    CAPSULE_PUBLISHED = "knowledge.capsule_published"
    CAPSULE_RETRACTED = "knowledge.capsule_retracted"


@frozen
class EvidenceManifest:
    id: str
    tenant: str
    producer: str
    subject: str
    artifact_hash: str
    classification: Classification
    retention_class: str
    decision_ids: tuple[str, ...]
    approvals: tuple[Approval, ...]
    actor: str
    recorded_at: datetime
    version: int = 1


# One encoder for every call: `json.dumps` with options builds a new one each time, which
# costs more than encoding the small values hashed and stored on every commit.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# What a new event's payload must pass: canonical JSON, with no NaN or Infinity (no JSON
# parser reads them back). Events already stored are hashed as they are.
_STRICT = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def canonical_json(value: Any) -> str:
    return _CANONICAL.encode(value)


def _as_dict(value: Mapping[str, Any]) -> dict[str, Any]:
    return dict(value)


@frozen
class EventEnvelope:
    id: str
    tenant: str
    type: EventType
    actor: str
    occurred_at: datetime
    correlation_id: str
    causation_id: str
    decision_ref: str
    classification: Classification
    payload: Mapping[str, Any] = field(converter=_as_dict)
    schema_version: int = 1
    integrity_hash: str = ""
    position: int | None = None

    def sealed(self) -> EventEnvelope:
        """A copy carrying the hash of every field but the position (assigned at commit);
        `InvalidInput` for a payload that is not JSON (NaN and Infinity included), or a
        field that cannot be hashed (of another type, text with a lone surrogate)."""
        try:
            _STRICT.encode(self.payload).encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput("payload", "contains a lone surrogate") from None
        except (TypeError, ValueError) as exc:  # a value JSON has not, keys of mixed types
            raise InvalidInput("payload", f"must be JSON ({exc})") from None
        except RecursionError:
            raise InvalidInput("payload", "is nested too deeply to encode") from None
        try:
            integrity_hash = self.compute_hash()
        except (TypeError, ValueError, AttributeError, OverflowError) as exc:
            # A field built in code of another type (an event type's text), or text that is
            # not Unicode, or an instant past the ends of time in UTC: named, not hashed.
            field_, problem = mistyped(self) or ("event", f"cannot be hashed: {exc}")
            raise InvalidInput(field_, problem) from None
        return EventEnvelope(
            id=self.id,
            tenant=self.tenant,
            type=self.type,
            actor=self.actor,
            occurred_at=self.occurred_at,
            correlation_id=self.correlation_id,
            causation_id=self.causation_id,
            decision_ref=self.decision_ref,
            classification=self.classification,
            payload=self.payload,
            schema_version=self.schema_version,
            integrity_hash=integrity_hash,
        )

    def compute_hash(self) -> str:
        return sha256_hex(
            canonical_json(
                [
                    self.id,
                    self.tenant,
                    self.type.value,
                    self.schema_version,
                    self.actor,
                    self.occurred_at.astimezone(UTC).isoformat(),
                    self.correlation_id,
                    self.causation_id,
                    self.decision_ref,
                    self.classification.value,
                    self.payload,
                ]
            )
        )

    @property
    def intact(self) -> bool:
        return self.integrity_hash == self.compute_hash()
