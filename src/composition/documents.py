"""Turn files into a knowledge_publication request.

A file may start with front matter, a `---` block of `key: value` lines:

    ---
    kind: imf
    url: https://www.imf.org/en/Publications/WEO
    title: World Economic Outlook, April update
    classification: public
    format: text
    ---
    The body is the source's content text.

Options given on the command line win over front matter; a missing title falls back to the
first `# heading`, then to the file name; a missing format follows the file extension.
A UTF-8 byte order mark before the front matter is ignored. A file whose first `---` is
followed by a blank line and by no line naming a front matter key opens with a horizontal rule.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from attrs import frozen

from composition import files
from domain.model.errors import InvalidInput, both_ends
from domain.model.knowledge import MAX_CONTENT, Classification, SourceFormat, SourceKind
from domain.model.validation import one_line, visible
from domain.workflows.knowledge_publication import PublicationRequest

FRONT_MATTER_KEYS = ("kind", "url", "title", "classification", "format")
_ALIASES = {"source_url": "url"}
_FORMATS = {
    ".md": "text",
    ".markdown": "text",
    ".txt": "text",
    ".rst": "text",
    ".html": "html",
    ".htm": "html",
    ".json": "json",
    ".xml": "xml",
}
DEFAULT_CLASSIFICATION = "internal"
# The most a file may hold: content at the domain's limit, in the widest UTF-8 (4 bytes a
# character), plus room for front matter. Reading stops one byte past it, so a device or a
# huge file (/dev/zero, /dev/urandom) is refused at once instead of read into memory.
MAX_FILE_BYTES = 4 * MAX_CONTENT + 64 * 1024
BOM = "\ufeff"
# How the request names a document, and one of its fields: documents[2], documents[2].title.
_DOCUMENT = re.compile(r"documents\[(\d+)\]")
_LINE = re.compile(r"[^\n]*\n|[^\n]+\Z")
_DOCUMENT_FIELD = re.compile(r"documents\[(\d+)\](?:\.(.+))?")


class DocumentError(Exception):
    """A file could not be read or its front matter is malformed (a usage error)."""


@frozen
class SourceFile:
    path: Path
    meta: Mapping[str, str]
    body: str


def parse_front_matter(text: str, *, name: str = "<text>") -> tuple[dict[str, str], str]:
    """Split `text` into (front matter, body). Without a leading `---` all of it is body, and
    so it is when a blank line follows that `---` and no front matter does (Markdown that
    opens with a horizontal rule, as pandoc reads it)."""
    # Lines end at "\n" only (decode made every line ending one): `splitlines` would also
    # end them at a vertical tab or form feed, and number the lines after it wrongly.
    lines = _LINE.findall(text)
    if not lines or lines[0].strip() != "---":
        return {}, text
    try:
        meta, body = _front_matter(lines, name)
    except DocumentError:
        # Front matter with a mistake is said, never published as content with the rest of
        # its settings (a classification) dropped: only a block naming no key is a rule.
        if (len(lines) > 1 and lines[1].strip()) or _names_a_key(lines):
            raise
        return {}, text
    if not meta and (len(lines) < 2 or not lines[1].strip()):
        return {}, text
    return meta, body


def _names_a_key(lines: list[str]) -> bool:
    """Whether a line of the block the first `---` opens starts with a front matter key."""
    for line in lines[1:]:
        stripped = line.strip()
        if stripped == "---":
            return False
        key, sep, _ = stripped.partition(":")
        if sep and _ALIASES.get(key.strip().lower(), key.strip().lower()) in FRONT_MATTER_KEYS:
            return True
    return False


def _front_matter(lines: list[str], name: str) -> tuple[dict[str, str], str]:
    meta: dict[str, str] = {}
    for number, line in enumerate(lines[1:], start=2):
        stripped = line.strip()
        if stripped == "---":
            return meta, "".join(lines[number:]).lstrip("\r\n")
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition(":")
        key = _ALIASES.get(key.strip().lower(), key.strip().lower())
        if not sep or not key:
            raise DocumentError(
                f"{_named(name)}:{number}: front matter lines must be 'key: value' (a file opening"
                " with a '---' rule, not front matter, has a blank line after it)"
            )
        if key not in FRONT_MATTER_KEYS:
            allowed = ", ".join(
                [*FRONT_MATTER_KEYS, *(f"{a} (for {k})" for a, k in _ALIASES.items())]
            )
            raise DocumentError(
                f"{_named(name)}:{number}: unknown front matter key {key!r}; allowed: {allowed}"
            )
        if key in meta:
            raise DocumentError(f"{_named(name)}:{number}: front matter key {key!r} given twice")
        meta[key] = _unquote(value.strip())
        if not meta[key].strip():
            # As for options: an empty value is refused, never replaced by a default.
            raise DocumentError(f"{_named(name)}:{number}: front matter key {key!r} has no value")
    raise DocumentError(f"{_named(name)}: front matter opened with '---' is never closed")


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def read_source(path: Path) -> SourceFile:
    text = decode(path, read_bounded(path, MAX_FILE_BYTES))
    meta, body = parse_front_matter(text.removeprefix(BOM), name=str(path))
    return SourceFile(path, meta, body)


def read_bounded(path: Path, limit: int) -> bytes:
    """At most `limit` bytes of `path`; a DocumentError if it holds more (never read whole).

    A pipe is read (`<(curl ...)`), but a named pipe nobody writes to must not hold the
    command for good: opened without blocking, a pipe with no writer gives nothing, and is
    refused.
    """
    try:
        fd = files.open_unwaiting(path)
        with os.fdopen(fd, "rb") as file:
            if stat.S_ISCHR(os.fstat(fd).st_mode) and not os.isatty(fd):
                # /dev/null (what a closed standard input reads as), /dev/zero: no document.
                raise DocumentError(f"{_named(path)}: a device, not a document")
            data = file.read(limit + 1)
            if not data and stat.S_ISFIFO(os.fstat(fd).st_mode):
                raise DocumentError(
                    f"{_named(path)}: a pipe that gave nothing (no one was writing to it)"
                )
    except FileNotFoundError:
        raise DocumentError(f"{_named(path)}: no such file") from None
    except IsADirectoryError:
        raise DocumentError(f"{_named(path)}: is a directory") from None
    except OSError as exc:
        raise DocumentError(f"{_named(path)}: cannot read: {exc.strerror}") from None
    if len(data) > limit:
        raise DocumentError(
            f"{_named(path)}: too large: more than {limit:,} bytes"
            f" (a document holds at most {MAX_CONTENT:,} characters)"
        )
    return data


def decode(path: Path, data: bytes) -> str:
    """UTF-8 text with universal newlines, as `Path.read_text` would give it."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DocumentError(f"{_named(path)}: not UTF-8 text") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _title_of(source: SourceFile) -> str:
    """The first heading that shows something, else the file's name."""
    for line in _LINE.findall(source.body):  # lines end at newlines only, as in front matter
        if line.startswith("# ") and visible(title := derived_title(line[2:])):
            return title
    return derived_title(source.path.stem.replace("-", " ").replace("_", " "))


def derived_title(text: str) -> str:
    """A title made from a heading or a file name, as one line: a title is (a tab in a
    heading is not the user's title refused)."""
    return " ".join(one_line(text).split())


# Front matter names these in any case, as the command line's options do.
_CHOICES = {
    "kind": [k.value for k in SourceKind],
    "format": [f.value for f in SourceFormat],
    "classification": [c.value for c in Classification],
}


def _canonical(key: str, value: str | None) -> str | None:
    for choice in _CHOICES.get(key, ()):
        if value is not None and value.casefold() == choice.casefold():
            return choice
    return value


def document(source: SourceFile, options: Mapping[str, str | None]) -> dict[str, Any]:
    """The workflow input for one file: options > front matter > defaults."""

    def pick(key: str, default: str | None = None) -> str | None:
        return _canonical(key, options.get(key) or source.meta.get(key) or default)

    return {
        "kind": pick("kind"),
        "title": pick("title") or _title_of(source),
        "source_url": pick("url"),
        "format": pick("format", _FORMATS.get(source.path.suffix.lower(), "text")),
        "classification": pick("classification", DEFAULT_CLASSIFICATION),
        "content_text": source.body,
    }


def publication_request(
    sources: Sequence[SourceFile],
    *,
    title: str,
    publication_id: str,
    policy_refs: Sequence[str],
    required_roles: Sequence[str] = (),
    options: Mapping[str, str | None] | None = None,
    strict: bool = True,
) -> PublicationRequest:
    """Validate everything before anything runs; errors name the file and the field.
    `strict=False` reads the request as a stored one is read (for a key that started one
    before checks tightened: its request is compared, not started)."""
    for source in sources:
        for key in ("kind", "url"):
            if not ((options or {}).get(key) or source.meta.get(key)):
                # Commands without the option (`demo`) read it from front matter only.
                option = f"give --{key} or " if options is not None else ""
                raise InvalidInput(
                    f"{source.path}: {key}",
                    f"missing: {option}add a '{key}:' line to the file's front matter",
                )
    raw = {
        "documents": [document(s, options or {}) for s in sources],
        "title": title,
        "publication_id": publication_id,
        "policy_refs": list(policy_refs),
        "required_roles": list(required_roles),
    }
    try:
        return PublicationRequest.parse(raw, bounded=strict)
    except InvalidInput as exc:
        # Documents are the files given: named by their paths, not their places in a list.
        named = _DOCUMENT_FIELD.fullmatch(exc.field)
        if named is None:
            raise

        def path(index: re.Match[str]) -> str:
            return str(sources[int(index.group(1))].path)

        where, key = path(named), named.group(2)
        problem = _DOCUMENT.sub(path, exc.problem)  # "repeats documents[0]"
        raise InvalidInput(where if key is None else f"{where}: {key}", problem) from None


def _named(path: Path | str) -> str:
    """A file as an error names it: its two ends when longer than any path a file can have
    (a name mistyped into a command line can run to a hundred kilobytes)."""
    return both_ends(str(path), 4096)
