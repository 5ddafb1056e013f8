"""Front matter and the publication request built from files."""

from __future__ import annotations

from pathlib import Path

import pytest

from composition.documents import (
    DocumentError,
    parse_front_matter,
    publication_request,
    read_source,
)
from domain.model.errors import InvalidInput
from domain.model.knowledge import Classification, SourceFormat, SourceKind

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_front_matter_is_split_from_the_body() -> None:
    meta, body = parse_front_matter(
        "---\nkind: imf\n# a comment\nurl: 'https://www.imf.org/a'\n\n"
        'title: "T: x"\n---\n\nBody\n'
    )
    assert meta == {"kind": "imf", "url": "https://www.imf.org/a", "title": "T: x"}
    assert body == "Body\n"
    assert parse_front_matter("No front matter\n---\n") == ({}, "No front matter\n---\n")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("---\nkind imf\n---\nx", "must be 'key: value'"),
        ("---\nkidn: imf\n---\nx", "unknown front matter key 'kidn'"),
        ("---\nkind: imf\nkind: bis\n---\nx", "given twice"),
        ("---\nkind: imf\n", "never closed"),
    ],
)
def test_malformed_front_matter(text: str, problem: str) -> None:
    with pytest.raises(DocumentError, match=problem):
        parse_front_matter(text, name="doc.md")


def test_options_win_over_front_matter_and_defaults_fill_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "plain.html"
    path.write_text("<p>Rates rose.</p>\n")
    sources = [read_source(path), read_source(EXAMPLES / "bis-annual-economic-report-note.md")]
    request = publication_request(
        sources,
        title="T",
        publication_id="p-1",
        policy_refs=["POL-1"],
        options={"kind": "bis", "url": "https://www.bis.org/x"},
    )
    plain, bis = request.documents
    assert (plain.kind, plain.source_url, plain.format) == (
        SourceKind.BIS,
        "https://www.bis.org/x",
        SourceFormat.HTML,
    )
    assert plain.classification is Classification.INTERNAL and plain.title == "plain"
    assert bis.source_url == "https://www.bis.org/x"  # the option wins
    assert bis.title.startswith("BIS Annual Economic Report 2024")


def test_errors_name_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "doc.md"
    path.write_text("---\nkind: imf\nurl: ftp://imf.org/x\n---\nText\n")
    with pytest.raises(InvalidInput) as info:
        publication_request([read_source(path)], title="T", publication_id="p", policy_refs=["P"])
    assert info.value.field == f"{path}: source_url"
    path.write_text("Text without metadata\n")
    with pytest.raises(InvalidInput, match="give --kind"):
        publication_request([read_source(path)], title="T", publication_id="p", policy_refs=["P"])
    with pytest.raises(DocumentError, match="no such file"):
        read_source(tmp_path / "missing.md")


def test_the_shipped_examples_are_valid() -> None:
    paths = sorted(EXAMPLES.glob("*.md"))
    assert len(paths) == 3
    request = publication_request(
        [read_source(p) for p in paths], title="T", publication_id="p", policy_refs=["P"]
    )
    assert {d.kind for d in request.documents} == {SourceKind.IMF, SourceKind.BIS, SourceKind.FRED}
