"""Knowledge capsules: the published artifact, with its chunks and lifecycle."""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from datetime import datetime

from attrs import evolve, frozen

from domain.model.errors import InvalidState
from domain.model.knowledge import Classification, KnowledgeSource, sha256_hex

CHUNK_SIZE = 2000


class CapsuleStatus(enum.Enum):
    DRAFT = "draft"
    PUBLISHED = "published"
    RETRACTED = "retracted"


@frozen
class Chunk:
    index: int
    source_id: str
    text: str


def artifact_hash(sources: Sequence[KnowledgeSource]) -> str:
    """Hash over the sorted `source_id:digest` entries: independent of input order."""
    return sha256_hex(json.dumps(sorted(f"{s.id}:{s.content_digest}" for s in sources)))


def chunk(sources: Sequence[KnowledgeSource], size: int = CHUNK_SIZE) -> tuple[Chunk, ...]:
    chunks: list[Chunk] = []
    for source in sorted(sources, key=lambda s: s.id):
        text = source.content_text
        for start in range(0, len(text), size):
            chunks.append(Chunk(len(chunks), source.id, text[start : start + size]))
    return tuple(chunks)


def matches(capsule: Capsule, sources: Sequence[KnowledgeSource]) -> bool:
    """Whether the capsule holds what its sources give: their digests, and their text as its
    chunks (a capsule changed in storage does not)."""
    return capsule.artifact_hash == artifact_hash(sources) and capsule.chunks == chunk(sources)


def highest_classification(sources: Sequence[KnowledgeSource]) -> Classification:
    return max((s.classification for s in sources), key=lambda c: c.rank)


@frozen
class Capsule:
    id: str
    tenant: str
    publication_id: str
    title: str
    source_ids: tuple[str, ...]
    analysis_ids: tuple[str, ...]
    artifact_hash: str
    chunks: tuple[Chunk, ...]
    classification: Classification
    retention_class: str
    status: CapsuleStatus
    published_at: datetime | None
    retracted_at: datetime | None = None
    retraction_reason: str | None = None
    version: int = 1

    def retract(self, *, at: datetime, reason: str) -> Capsule:
        if self.status is not CapsuleStatus.PUBLISHED:
            raise InvalidState(f"capsule {self.id} is {self.status.value}, not published")
        return evolve(
            self, status=CapsuleStatus.RETRACTED, retracted_at=at, retraction_reason=reason
        )
