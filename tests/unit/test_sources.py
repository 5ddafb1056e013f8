"""Source drafts are validated at the edge: bad input is a typed error naming its field."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.model.errors import InvalidInput
from domain.model.knowledge import (
    MAX_CONTENT,
    MAX_TITLE,
    MAX_URL,
    Classification,
    EvidenceUse,
    KnowledgeSource,
    ProvenanceTier,
    SourceDraft,
    SourceFormat,
    SourceKind,
)
from tests.services.harness import START
from tests.services.strategies import TEXT_CHARS, hostile_line, hostile_text

VALID: dict[str, Any] = {
    "kind": "imf",
    "title": "World Economic Outlook",
    "source_url": "https://www.imf.org/en/Publications/WEO",
    "format": "pdf",
    "classification": "internal",
    "content_text": "Global growth is projected at 3.2 percent.",
}


def parse(**overrides: Any) -> SourceDraft:
    return SourceDraft.parse(**(VALID | overrides))


def test_a_valid_draft_parses_into_typed_values() -> None:
    d = parse()
    assert d.kind is SourceKind.IMF
    assert d.format is SourceFormat.PDF
    assert d.classification is Classification.INTERNAL
    assert d.content_digest == hashlib.sha256(str(VALID["content_text"]).encode()).hexdigest()
    assert d.provenance_tier is ProvenanceTier.PRIMARY


def test_enum_members_are_accepted_as_well_as_their_values() -> None:
    d = parse(
        kind=SourceKind.BIS, format=SourceFormat.JSON, classification=Classification.RESTRICTED
    )
    assert (d.kind, d.format, d.classification) == (
        SourceKind.BIS,
        SourceFormat.JSON,
        Classification.RESTRICTED,
    )


def test_secondary_context_is_secondary_and_context_only() -> None:
    d = parse(kind="secondary_context", source_url="https://news.example.com/a")
    assert d.provenance_tier is ProvenanceTier.SECONDARY
    source = KnowledgeSource.acquire(d, source_id="src-1", tenant="t", acquired_at=START)
    assert source.evidence_use is EvidenceUse.CONTEXT_ONLY
    primary = KnowledgeSource.acquire(parse(), source_id="src-2", tenant="t", acquired_at=START)
    assert primary.evidence_use is EvidenceUse.EVIDENCE


BAD_INPUTS: list[tuple[str, object]] = [
    # empty, blank and oversized text
    ("title", ""),
    ("title", "   \n\t "),
    ("title", "x" * (MAX_TITLE + 1)),
    ("content_text", ""),
    ("content_text", " \n "),
    ("content_text", "x" * (MAX_CONTENT + 1)),
    ("content_text", "\u200b\u200b\u202e"),  # shows nothing
    ("content_text", "\u2800\u2800"),  # blank braille cells
    ("title", "\u3164"),  # a Hangul filler
    # a title is one line
    ("title", "line1\nline2"),
    ("title", "bell\x07"),
    ("title", "escape\x1b[31m"),
    ("title", "separator\u2028"),
    # NUL characters and lone surrogates anywhere in text
    ("title", "before\x00after"),
    ("content_text", "\x00"),
    ("source_url", "https://www.imf.org/a\x00b"),
    ("title", "half a pair \ud83d"),
    ("content_text", "lone \udfff surrogate"),
    # not a string at all
    ("title", None),
    ("title", 42),
    ("content_text", b"bytes are not text"),
    ("source_url", None),
    # invalid URLs
    ("source_url", ""),
    ("source_url", "www.imf.org/en"),  # no scheme
    ("source_url", "//www.imf.org/en"),  # scheme-relative
    ("source_url", "ftp://www.imf.org/file"),
    ("source_url", "file:///etc/passwd"),
    ("source_url", "javascript:alert(1)"),
    ("source_url", "mailto:x@imf.org"),
    ("source_url", "https://"),  # no host
    ("source_url", "https:///path-only"),
    ("source_url", "https://www.imf.org/a b"),  # whitespace inside
    ("source_url", " https://www.imf.org/a"),  # leading whitespace
    ("source_url", "https://www.imf.org/a\n"),  # trailing newline
    ("source_url", "https://www.imf.org/\ta"),
    ("source_url", "https://[::1"),  # malformed IPv6 host
    ("source_url", "https://[not-an-ip]/x"),
    ("source_url", "https://www.imf.org:99999/x"),  # port out of range
    ("source_url", "https://www.imf.org/" + "a" * MAX_URL),
    ("source_url", "https://www.imf.org/'; DELETE knowledge_source; --"),
    ("source_url", "https://www.imf.org/\x07x"),  # control and format characters
    ("source_url", "https://www.imf.org/\x7fx"),
    ("source_url", "https://www.imf.org/?q=\x1b"),
    ("source_url", "https://www.imf.org/#\x08"),
    ("source_url", "https://www.imf.org/\u202ex"),
    ("source_url", "https://www.imf.org/a\u200bb"),
    ("source_url", "https://bis\u3164.org/x"),  # a Hangul filler in the host
    ("source_url", "https://www.imf.org/a\U000e0041\U000e0042"),  # tag characters
    ("source_url", "https://www.imf.org/a\u034fb"),  # the combining grapheme joiner
    # unknown kinds, formats and classifications (hostile strings included)
    ("kind", "imf_fake"),
    ("kind", "IMF"),
    ("kind", ""),
    ("kind", None),
    ("kind", ["imf"]),
    ("kind", "imf'; DELETE knowledge_source; --"),
    ("format", "docx"),
    ("format", "{}"),
    ("format", 1),
    ("classification", "secret"),
    ("classification", "`public`"),
    ("classification", "public\n"),
]


@pytest.mark.parametrize(("field", "value"), BAD_INPUTS)
def test_bad_input_raises_invalid_input_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse(**{field: value})
    assert caught.value.field == field
    assert caught.value.problem
    assert str(caught.value).startswith(f"{field}: ")


def test_unknown_enum_values_list_the_allowed_ones() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse(format="docx")
    assert caught.value.problem == "'docx' is not one of: json, xml, html, pdf, text"
    with pytest.raises(InvalidInput) as caught:
        parse(kind="k" * 1_000_000)
    assert caught.value.problem.startswith(f"'{'k' * 59}... is not one of: ")


def test_a_draft_stored_before_the_checks_on_its_texts_is_still_read() -> None:
    """What an earlier release stored is resumed, not refused half-way through its run."""
    older = {
        "title": "two\nlines",
        "source_url": "https://www.imf.org/\u202ex",
        "content_text": "\u200b",
    }
    for field, value in older.items():
        with pytest.raises(InvalidInput):
            parse(**{field: value})
        assert getattr(parse(**{field: value, "strict": False}), field) == value


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("title", "x" * MAX_TITLE),
        ("content_text", "y" * MAX_CONTENT),
        ("source_url", "https://www.imf.org/" + "a" * (MAX_URL - len("https://www.imf.org/"))),
        ("source_url", "http://www.imf.org:8080/x?q=1#frag"),
        ("source_url", "https://[2001:db8::1]/x"),
        ("source_url", "https://\u092d\u093e\u0930\u0924.gov.in/x"),  # combining marks
        ("source_url", "https://b\u00fccher.de/x"),
        ("source_url", "https://_dmarc.example.com/x"),
        ("source_url", "https://-x.example.com/x"),
        ("source_url", "https://WWW.IMF.ORG./x?q=a@b%20c#frag"),
        ("source_url", "https://xn--h2brj9c.example/"),
        (
            "source_url",
            "https://fa.wikipedia.org/wiki/\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
        ),
        ("source_url", "https://www.imf.org/a\u00adb"),  # a soft hyphen
        ("source_url", "https://www.imf.org/%E2%80%AEx"),  # an override, escaped: inert
    ],
)
def test_values_at_the_limits_are_accepted(field: str, value: str) -> None:
    assert getattr(parse(**{field: value}), field) == value


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://evil.com\\@www.imf.org/x", "backslashes"),  # browsers go to evil.com
        ("https://www.imf.org\\x", "backslashes"),
        ("https://user:pw@www.imf.org/x", "credentials"),
        ("https://@www.imf.org/x", "credentials"),
        ("https://[v1.imf.org]/x", "IPv6"),  # Python's host: v1.imf.org
        ("https://[::1%25.imf.org]/x", "IPv6"),
        ("https://[fe80::1%eth0.imf.org]/", "IPv6"),
        ("https://evil.com%40www.imf.org/", "must be labels"),
        ("https://www.imf.org../", "must be labels"),
        ("https://www.imf|org/", "must be labels"),
        ("https://www\u3002imf.org/", "must be labels"),  # an ideographic full stop
    ],
)
def test_urls_whose_host_parsers_disagree_on_are_refused(url: str, why: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse(source_url=url)
    assert caught.value.field == "source_url" and why in str(caught.value)


@settings(max_examples=60, deadline=None)
@given(title=hostile_line(), content=hostile_text(max_pieces=12))
def test_hostile_but_valid_text_is_kept_verbatim(title: str, content: str) -> None:
    d = parse(title=title, content_text=content)
    assert d.title == title
    assert d.content_text == content
    assert d.content_digest == hashlib.sha256(content.encode("utf-8")).hexdigest()


@settings(max_examples=60, deadline=None)
@given(value=st.text(TEXT_CHARS, max_size=40))
def test_any_unknown_kind_is_refused_by_name(value: str) -> None:
    if value in {k.value for k in SourceKind}:
        assert parse(kind=value).kind.value == value
        return
    with pytest.raises(InvalidInput) as caught:
        parse(kind=value)
    assert caught.value.field == "kind"


@settings(max_examples=100, deadline=None)
@given(url=st.text(st.characters(codec="utf-8"), max_size=60))
def test_arbitrary_url_strings_either_parse_or_raise_invalid_input(url: str) -> None:
    """Never another exception type: the edge owns every failure."""
    try:
        d = parse(source_url=url)
    except InvalidInput as exc:
        assert exc.field == "source_url"
    else:
        parts = urlsplit(url)
        assert d.source_url == url
        assert parts.scheme in ("http", "https")
        assert parts.hostname
        assert not any(ch.isspace() for ch in url)
        assert "\\" not in url and "@" not in parts.netloc


@settings(max_examples=100, deadline=None)
@given(
    tail=st.text(
        st.sampled_from("[]:@%/?#.-_~!$&'()*+,;=0123456789abcdefABCDEF\\ \t\n"), max_size=30
    )
)
def test_url_shaped_garbage_raises_only_invalid_input(tail: str) -> None:
    for prefix in ("http://", "https://[", "https://imf.org:", "https://user@"):
        try:
            parse(source_url=prefix + tail)
        except InvalidInput as exc:
            assert exc.field == "source_url"
