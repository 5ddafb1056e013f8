"""Analyses over sources: claims that cite the sources supporting them."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from attrs import frozen

from domain.model.knowledge import KnowledgeSource, sha256_hex

GENERATOR_NAME = "extractive"
GENERATOR_VERSION = "1.0.0"

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[A-Za-z][A-Za-z\-]{2,}")
_STOPWORDS = frozenset(
    [
        "the",
        "and",
        "for",
        "are",
        "but",
        "not",
        "you",
        "all",
        "any",
        "can",
        "had",
        "her",
        "was",
        "one",
        "our",
        "out",
        "has",
        "have",
        "this",
        "that",
        "with",
        "from",
        "they",
        "will",
        "would",
        "there",
        "their",
        "what",
        "about",
        "which",
        "when",
        "were",
        "been",
        "into",
        "more",
        "than",
        "then",
        "them",
        "these",
        "some",
        "its",
        "also",
        "such",
        "other",
        "only",
        "over",
        "most",
        "very",
    ]
)


@frozen
class Claim:
    text: str
    cited_source_ids: tuple[str, ...]


@frozen
class Analysis:
    id: str
    tenant: str
    source_ids: tuple[str, ...]
    claims: tuple[Claim, ...]
    key_terms: tuple[str, ...]
    rendered: str
    generator_name: str
    generator_version: str
    inputs_digest: str
    generated_at: datetime
    version: int = 1


def inputs_digest(sources: Sequence[KnowledgeSource]) -> str:
    entries = sorted(f"{s.id}:{s.content_digest}" for s in sources)
    return sha256_hex(json.dumps([GENERATOR_NAME, GENERATOR_VERSION, entries]))


def _terms(text: str) -> Counter[str]:
    return Counter(w.lower() for w in _WORD.findall(text) if w.lower() not in _STOPWORDS)


def extract(
    sources: Sequence[KnowledgeSource], *, sentences_per_source: int = 2
) -> tuple[tuple[Claim, ...], tuple[str, ...], str]:
    """The deterministic extractive generator: a pure function of the sources' content.

    For each source (in id order) it keeps the sentences that carry the most frequent terms,
    each becoming a claim citing that source; a sentence found verbatim in several sources
    cites all of them.
    """
    ordered = sorted(sources, key=lambda s: s.id)
    sentence_sources: dict[str, list[str]] = {}
    for source in ordered:
        for sentence in _SENTENCE.split(source.content_text):
            cleaned = " ".join(sentence.split())
            if cleaned:
                sentence_sources.setdefault(cleaned, [])
                if source.id not in sentence_sources[cleaned]:
                    sentence_sources[cleaned].append(source.id)
    claims: list[Claim] = []
    seen: set[str] = set()
    overall: Counter[str] = Counter()
    for source in ordered:
        weights = _terms(source.content_text)
        overall.update(weights)
        candidates = [
            " ".join(s.split()) for s in _SENTENCE.split(source.content_text) if s.strip()
        ]
        scored = sorted(
            enumerate(candidates),
            key=lambda item: (-sum(weights[w] for w in _terms(item[1])), item[0]),
        )
        for _, sentence in scored[:sentences_per_source]:
            if sentence in seen:
                continue
            seen.add(sentence)
            claims.append(Claim(sentence[:1000], tuple(sentence_sources[sentence])))
    key_terms = tuple(term for term, _ in sorted(overall.items(), key=lambda t: (-t[1], t[0]))[:10])
    rendered_lines = [f"Key terms: {', '.join(key_terms)}"]
    rendered_lines += [f"- {c.text} [{', '.join(c.cited_source_ids)}]" for c in claims]
    return tuple(claims), key_terms, "\n".join(rendered_lines)


def matches(analysis: Analysis, sources: Sequence[KnowledgeSource]) -> bool:
    """Whether the analysis is what the generator gives for these sources (one changed in
    storage is not): the generator is pure, so it is made again and compared."""
    claims, terms, rendered = extract(sources)
    return analysis.inputs_digest == inputs_digest(sources) and (
        analysis.claims,
        analysis.key_terms,
        analysis.rendered,
    ) == (claims, terms, rendered)
