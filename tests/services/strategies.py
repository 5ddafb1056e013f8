"""Hypothesis strategies: valid inputs laced with hostile strings."""

from __future__ import annotations

from attrs import frozen
from hypothesis import strategies as st

from domain.model.knowledge import Classification, SourceDraft, SourceFormat
from domain.model.validation import visible
from tests.services.harness import ALLOWED_URLS

HOSTILE = (
    "'",
    '"',
    "'; DELETE knowledge_source; --",
    '"; REMOVE TABLE event; --',
    "{ }",
    "{{x}}",
    "${d0}",
    "$r0",
    "`backtick`",
    "\\",
    "\\x00",
    "é漢字🙂",
    "line1\nline2",
    "tab\tcr\r\n",
    "RETURN NONE;",
    "THROW 'uow-abort:0';",
    "⟨id⟩",
    "\u202e\u200b",
    "NONE",
    "null",
    "</script>",
)
# Any Unicode scalar value but NUL (refused at the edge on purpose) and lone surrogates.
TEXT_CHARS = st.characters(codec="utf-8", exclude_characters="\x00")
LINE_CHARS = st.characters(
    codec="utf-8", exclude_categories=["Cc"], exclude_characters="\u2028\u2029"
)
# A URL tail without whitespace but with characters that matter to a query language.
HOSTILE_QUERY = "?q=';DELETE+knowledge_source;--{}`$d0"


def hostile_text(max_pieces: int = 6) -> st.SearchStrategy[str]:
    piece = st.one_of(st.sampled_from(HOSTILE), st.text(TEXT_CHARS, min_size=1, max_size=30))
    return st.lists(piece, min_size=1, max_size=max_pieces).map("".join).filter(visible)


def hostile_line(max_pieces: int = 6) -> st.SearchStrategy[str]:
    """Hostile text of one line, as titles take: no control characters or line breaks."""
    piece = st.one_of(
        st.sampled_from([h for h in HOSTILE if h.isprintable() or "\u202e" in h]),
        st.text(LINE_CHARS, min_size=1, max_size=30),
    )
    return st.lists(piece, min_size=1, max_size=max_pieces).map("".join).filter(visible)


@frozen
class SourceSpec:
    """A draft minus its URL: tests append a unique path so every example is new data."""

    kind: str
    title: str
    format: str
    classification: str
    content_text: str

    def draft(self, unique: int) -> SourceDraft:
        return SourceDraft.parse(
            kind=self.kind,
            title=self.title,
            source_url=f"{ALLOWED_URLS[self.kind]}/{unique}{HOSTILE_QUERY}",
            format=self.format,
            classification=self.classification,
            content_text=self.content_text,
        )


source_specs = st.builds(
    SourceSpec,
    kind=st.sampled_from(sorted(ALLOWED_URLS)),
    title=hostile_line(),
    format=st.sampled_from([f.value for f in SourceFormat]),
    classification=st.sampled_from([c.value for c in Classification]),
    content_text=hostile_text(max_pieces=10),
)
