"""Knowledge sources: what was acquired, from where, with which digest."""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import unicodedata
from datetime import datetime
from typing import TypeVar
from urllib.parse import urlsplit

from attrs import frozen

from domain.model import validation
from domain.model.errors import InvalidInput, shown

E = TypeVar("E", bound=enum.Enum)

MAX_TITLE = 500
MAX_URL = 2048
MAX_CONTENT = 1_000_000


class SourceKind(enum.Enum):
    IMF = "imf"
    BIS = "bis"
    FSB = "fsb"
    WORLD_BANK = "world_bank"
    FRED = "fred"
    OFFICIAL_DOCUMENT = "official_document"
    RESEARCH_PAPER = "research_paper"
    SECONDARY_CONTEXT = "secondary_context"


class SourceFormat(enum.Enum):
    JSON = "json"
    XML = "xml"
    HTML = "html"
    PDF = "pdf"
    TEXT = "text"


class Classification(enum.Enum):
    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"
    RESTRICTED = "restricted"

    @property
    def rank(self) -> int:
        return list(Classification).index(self)


class ProvenanceTier(enum.Enum):
    PRIMARY = "primary"
    SECONDARY = "secondary"


class EvidenceUse(enum.Enum):
    EVIDENCE = "evidence"
    CONTEXT_ONLY = "context_only"


def parse_enum(kind: type[E], field: str, value: object) -> E:
    if isinstance(value, kind):
        return value
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(str(member.value) for member in kind)
        raise InvalidInput(field, f"{shown(value)} is not one of: {allowed}") from None


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def checked_url(field: str, value: object) -> str:
    url = validation.text(field, value, max_len=MAX_URL)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - validates the port (urlsplit alone does not)
    except ValueError:  # malformed IPv6 host, port out of range, ...
        raise InvalidInput(field, "must be a well-formed URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(field, "must be an absolute http(s) URL with a host")
    if any(ch.isspace() for ch in url):
        raise InvalidInput(field, "must not contain whitespace")
    problem = host_problem(url)
    if problem is not None:
        raise InvalidInput(field, problem)
    return url


def host_problem(url: str) -> str | None:
    """Why parsers could disagree on the host `url` names (None if they cannot): the check
    both URL validation and the source allowlist rely on."""
    if "\\" in url:  # read as `/` by browsers, not by Python: two hosts for one URL
        return "must not contain backslashes"
    parts = urlsplit(url)
    if "@" in parts.netloc:
        return "must not carry credentials (user@ or user:password@)"
    host = parts.hostname or ""
    if "[" in parts.netloc:
        # Python keeps whatever sits between the brackets as the host ([v1.imf.org], a zone
        # id [fe80::1%eth0.imf.org]); only a plain IPv6 address is one host to everyone.
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return "must have a plain IPv6 address in brackets"
        return "must have a plain IPv6 address in brackets" if "%" in host else None
    if not _host_name(host):
        return (
            f"host {host!r} must be labels of letters, marks, digits, hyphens or underscores"
            " separated by single dots"
        )
    return None


def _host_name(host: str) -> bool:
    # Any script's letters and combining marks, digits, `-` and `_`, in non-empty labels; one
    # trailing dot at most. Percent escapes, controls, punctuation and look-alike dots (which
    # a browser may read as a dot where Python does not) have no place in a host.
    labels = host.removesuffix(".").split(".")
    return all(
        label and all(ch in "-_" or unicodedata.category(ch)[0] in "LMN" for ch in label)
        for label in labels
    )


# Bidirectional marks, overrides and isolates, line and paragraph separators, the zero-width
# space, word joiners, invisible operators and the BOM (as RFC 3987 leaves them out of IRIs),
# and what shows as nothing (Unicode's default-ignorable code points, the Hangul fillers, the
# blank braille cell) but the joiners and the soft hyphen, which words of some scripts need,
# and the variation selectors emoji take.
_HIDDEN = frozenset(
    "\u034f\u061c\u115f\u1160\u17b4\u17b5\u200b\u200e\u200f\u2028\u2029"
    "\u202a\u202b\u202c\u202d\u202e\u2800\u3164\ufeff\uffa0"
) | frozenset(
    chr(c)
    for first, last in (
        (0x180B, 0x180F),
        (0x2060, 0x206F),
        (0xFFF0, 0xFFFB),
        (0x1D173, 0x1D17A),
        (0xE0000, 0xE0FFF),
    )
    for c in range(first, last + 1)
)


@frozen
class SourceDraft:
    """A source as submitted for ingestion, validated field by field at construction."""

    kind: SourceKind
    title: str
    source_url: str
    format: SourceFormat
    classification: Classification
    content_text: str

    @classmethod
    def parse(
        cls,
        *,
        kind: object,
        title: object,
        source_url: object,
        format: object,
        classification: object,
        content_text: object,
        strict: bool = True,
    ) -> SourceDraft:
        """`strict=False` reads a draft stored by an earlier release, which may predate the
        checks on its title, URL and content that only apply to new ones."""
        draft = cls(
            kind=parse_enum(SourceKind, "kind", kind),
            title=validation.text("title", title, max_len=MAX_TITLE, single_line=strict),
            source_url=checked_url("source_url", source_url),
            format=parse_enum(SourceFormat, "format", format),
            classification=parse_enum(Classification, "classification", classification),
            content_text=validation.text("content_text", content_text, max_len=MAX_CONTENT),
        )
        if strict:
            if any(unicodedata.category(ch) == "Cc" or ch in _HIDDEN for ch in draft.source_url):
                # Bells and escapes drive terminals, and bidi marks and invisible spaces make
                # one URL read as another wherever it is shown: no URL needs them unescaped.
                # (The joiners and the soft hyphen stay: words of some scripts need them.)
                raise InvalidInput(
                    "source_url", "must not contain control, bidirectional or invisible characters"
                )
            if not validation.visible(draft.content_text):
                raise InvalidInput("content_text", "must not be empty (it shows nothing)")
        return draft

    @property
    def content_digest(self) -> str:
        return sha256_hex(self.content_text)

    @property
    def provenance_tier(self) -> ProvenanceTier:
        if self.kind is SourceKind.SECONDARY_CONTEXT:
            return ProvenanceTier.SECONDARY
        return ProvenanceTier.PRIMARY


@frozen
class KnowledgeSource:
    id: str
    tenant: str
    kind: SourceKind
    title: str
    source_url: str
    format: SourceFormat
    classification: Classification
    acquired_at: datetime
    content_digest: str
    content_text: str
    provenance_tier: ProvenanceTier
    evidence_use: EvidenceUse
    version: int = 1

    def matches_its_digest(self) -> bool:
        """Whether its text is the text its digest names: false for one changed in storage,
        which every later ingest of that text would otherwise reuse and publish."""
        return sha256_hex(self.content_text) == self.content_digest

    @classmethod
    def acquire(
        cls, draft: SourceDraft, *, source_id: str, tenant: str, acquired_at: datetime
    ) -> KnowledgeSource:
        tier = draft.provenance_tier
        return cls(
            id=source_id,
            tenant=tenant,
            kind=draft.kind,
            title=draft.title,
            source_url=draft.source_url,
            format=draft.format,
            classification=draft.classification,
            acquired_at=acquired_at,
            content_digest=draft.content_digest,
            content_text=draft.content_text,
            provenance_tier=tier,
            evidence_use=(
                EvidenceUse.EVIDENCE if tier is ProvenanceTier.PRIMARY else EvidenceUse.CONTEXT_ONLY
            ),
        )
