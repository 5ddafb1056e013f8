"""Front matter and the publication request built from files."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from composition.documents import (
    MAX_FILE_BYTES,
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
    "text", ["---\n\n# Title\n\nNote: prices rose\n", "---\n \nx", "---\n", "---"]
)
def test_a_rule_followed_by_a_blank_line_opens_the_body_not_front_matter(text: str) -> None:
    assert parse_front_matter(text, name="doc.md") == ({}, text)


def test_front_matter_after_a_blank_line_is_still_front_matter() -> None:
    meta, body = parse_front_matter("---\n\nkind: imf\n---\nBody\n", name="doc.md")
    assert meta == {"kind": "imf"} and body == "Body\n"
    text = "---\n\n# Heading only\n---\nBody\n"  # nothing but a comment: a rule, then text
    assert parse_front_matter(text, name="doc.md") == ({}, text)
    # A mistake in it is said, not published as content with its classification dropped.
    typo = "---\n\nkind: imf\nclassification: restricted\nformt: text\n---\nBody\n"
    with pytest.raises(DocumentError, match="unknown front matter key 'formt'"):
        parse_front_matter(typo, name="doc.md")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("---\nkind imf\n---\nx", "must be 'key: value'"),
        (
            "---\nkidn: imf\n---\nx",
            r"unknown front matter key 'kidn'; allowed: kind, .*, source_url \(for url\)",
        ),
        ("---\nkind: imf\nkind: bis\n---\nx", "given twice"),
        ("---\ntitle: \n---\nx", "'title' has no value"),
        ("---\ntitle: ''\n---\nx", "'title' has no value"),
        ("---\nkind: imf\n", "never closed"),
        ("---\ntitle: a\x0bb: c\nkind imf\n---\nx", "doc.md:3: front matter lines must be"),
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


def test_front_matter_choices_are_read_in_any_case_as_options_are(tmp_path: Path) -> None:
    path = tmp_path / "doc.txt"
    text = "---\nkind: BIS\nurl: https://www.bis.org/x\nformat: HTML\nclassification: PUBLIC\n"
    path.write_text(text + "---\nBody\n")
    request = publication_request(
        [read_source(path)], title="T", publication_id="p", policy_refs=[]
    )
    (doc,) = request.documents
    assert (doc.kind, doc.format, doc.classification) == (
        SourceKind.BIS,
        SourceFormat.HTML,
        Classification.PUBLIC,
    )


def test_errors_name_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "doc.md"
    path.write_text("---\nkind: imf\nurl: ftp://imf.org/x\n---\nText\n")
    with pytest.raises(InvalidInput) as info:
        publication_request([read_source(path)], title="T", publication_id="p", policy_refs=["P"])
    assert info.value.field == f"{path}: source_url"
    path.write_text("Text without metadata\n")
    with pytest.raises(InvalidInput, match="give --kind or add a 'kind:' line"):
        publication_request(
            [read_source(path)], title="T", publication_id="p", policy_refs=["P"], options={}
        )
    # Without options (`demo` takes none), the front matter is the only place to say it.
    with pytest.raises(InvalidInput, match="missing: add a 'kind:' line") as info:
        publication_request([read_source(path)], title="T", publication_id="p", policy_refs=["P"])
    assert "--kind" not in str(info.value)
    with pytest.raises(DocumentError, match="no such file"):
        read_source(tmp_path / "missing.md")


def test_a_file_given_twice_is_named_by_its_path(tmp_path: Path) -> None:
    path = tmp_path / "doc.md"
    path.write_text("---\nkind: imf\nurl: https://www.imf.org/x\n---\nText\n")
    with pytest.raises(InvalidInput) as info:
        publication_request(
            [read_source(path)] * 2, title="T", publication_id="p", policy_refs=["P"]
        )
    assert (info.value.field, info.value.problem) == (
        str(path),
        f"repeats {path} (the same source_url and content)",
    )


def test_a_title_made_from_a_heading_or_a_file_name_is_one_line(tmp_path: Path) -> None:
    """A tab in a heading is no reason to refuse a title the user did not give."""
    path = tmp_path / "rates\tq3.md"
    path.write_text("---\nkind: imf\nurl: https://www.imf.org/x\n---\n# Rates\tQ3\x1b 2024\n")
    titled = publication_request(
        [read_source(path)], title="T", publication_id="p", policy_refs=["P"]
    )
    assert titled.documents[0].title == "Rates Q3\\x1b 2024"
    path.write_text("---\nkind: imf\nurl: https://www.imf.org/x\n---\n# \u200b\n# Real one\n")
    later = publication_request(
        [read_source(path)], title="T", publication_id="p", policy_refs=["P"]
    )
    assert later.documents[0].title == "Real one"  # a heading that shows nothing is passed
    path.write_text("---\nkind: imf\nurl: https://www.imf.org/x\n---\nintro\f# Not a heading\n")
    fed = publication_request([read_source(path)], title="T", publication_id="p", policy_refs=["P"])
    assert fed.documents[0].title == "rates q3"  # a form feed does not start a line
    path.write_text("---\nkind: imf\nurl: https://www.imf.org/x\n---\n# \t\nno heading\n")
    named = publication_request(
        [read_source(path)], title="T", publication_id="p", policy_refs=["P"]
    )
    assert named.documents[0].title == "rates q3"


def test_the_shipped_examples_are_valid() -> None:
    paths = sorted(EXAMPLES.glob("*.md"))
    assert len(paths) == 3
    request = publication_request(
        [read_source(p) for p in paths], title="T", publication_id="p", policy_refs=["P"]
    )
    assert {d.kind for d in request.documents} == {SourceKind.IMF, SourceKind.BIS, SourceKind.FRED}


def test_a_file_over_the_size_limit_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    path = tmp_path / "huge.md"
    path.write_bytes(b"a" * (MAX_FILE_BYTES + 1))
    with pytest.raises(DocumentError, match=r"huge\.md: too large: more than [\d,]+ bytes"):
        read_source(path)
    path.write_bytes(b"a" * MAX_FILE_BYTES)  # at the limit it is read (the domain then judges)
    assert len(read_source(path).body) == MAX_FILE_BYTES


def test_a_file_name_too_long_to_read_is_named_by_its_two_ends() -> None:
    name = "A" * 100_000 + "-end.md"  # mistyped into a command line: was echoed whole
    with pytest.raises(DocumentError) as refused:
        read_source(Path(name))
    message = str(refused.value)
    assert message.startswith("A" * 2048 + "...") and len(message) < 4200
    assert message.endswith("A-end.md: cannot read: File name too long")
    readable = "d/" * 100 + "note.md"  # a path a file can have is named whole
    with pytest.raises(DocumentError, match=f"^{readable}: no such file$"):
        read_source(Path(readable))


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_a_device_is_refused_promptly(device: str) -> None:
    """Endless, or empty (a closed standard input reads as /dev/null): no document either
    way, said as such rather than as "too large" or "must not be empty"."""
    with pytest.raises(DocumentError, match=f"^{device}: a device, not a document$"):
        read_source(Path(device))


def test_a_named_pipe_nobody_writes_to_is_refused_and_a_pipe_is_read(
    tmp_path: Path,
) -> None:
    """Opening a FIFO waits for a writer: the command would hang for good. A pipe whose
    writer is there (`<(curl ...)`) is read, however long the writer takes."""
    fifo = tmp_path / "fifo.md"
    os.mkfifo(fifo)
    outcome: list[object] = []

    def read() -> None:
        try:
            outcome.append(read_source(fifo).body)
        except DocumentError as exc:
            outcome.append(str(exc))

    reader = threading.Thread(target=read)
    reader.start()
    reader.join(5)
    said = f"{fifo}: a pipe that gave nothing (no one was writing to it)"
    assert not reader.is_alive() and outcome == [said]

    read_end, write_end = os.pipe()

    def slow_writer() -> None:
        time.sleep(0.2)
        os.write(write_end, b"# Late\n\nWritten after the reader opened.\n")
        os.close(write_end)

    writer = threading.Thread(target=slow_writer)
    writer.start()
    try:
        body = read_source(Path(f"/dev/fd/{read_end}")).body
    finally:
        writer.join(5)
        os.close(read_end)
    assert body == "# Late\n\nWritten after the reader opened.\n"


def test_a_byte_order_mark_before_front_matter_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "bom.md"
    path.write_bytes("\ufeff---\nkind: imf\nurl: https://www.imf.org/a\n---\nBody\n".encode())
    source = read_source(path)
    assert source.meta == {"kind": "imf", "url": "https://www.imf.org/a"}
    assert source.body == "Body\n"


def test_line_endings_are_read_as_before_and_bad_bytes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "crlf.txt"
    path.write_bytes(b"one\r\ntwo\rthree\n")
    assert read_source(path).body == "one\ntwo\nthree\n"  # universal newlines, as read_text
    path.write_bytes(b"caf\xe9\n")
    with pytest.raises(DocumentError, match="not UTF-8 text"):
        read_source(path)
    with pytest.raises(DocumentError, match="is a directory"):
        read_source(tmp_path)
