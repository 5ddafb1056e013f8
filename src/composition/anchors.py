"""Audit anchors: each execution's audit head, written to a file kept outside the store.

The hash chain shows that a trail was edited, but not that it was rolled back (its last
entries dropped and the execution's head set back) or rewritten whole with fresh hashes by
someone who can write the store. A trail only grows, so an anchor taken earlier still names
an entry the trail must hold: checking against it catches both.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from attrs import frozen

from composition import files, queries, strict_json
from domain.model.errors import shown
from domain.model.lifecycle import AuditAnchor, ChainReport, check_anchor
from domain.model.validation import IDENTIFIER, one_line
from ports.errors import CorruptRecord, RecordNotFound
from ports.unit_of_work import UnitOfWorkFactory

FORMAT = "govkernel-audit-anchors"
VERSION = 1
MAX_BYTES = 512 * 1024 * 1024  # about 3 million anchors
MAX_ID_CHARS = 1024  # ids are minted by the runtime (~40 characters); anything longer is not one
_HASH = re.compile(r"^[0-9a-f]{64}\Z")
_STORE_ID = re.compile(r"^[0-9A-Za-z-]{1,64}\Z")  # a uuid, as stores mint them


class AnchorFileError(ValueError):
    """An anchor file that cannot be used, and why."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"anchor file {path}: {problem}")
        self.path = path
        self.problem = problem


@frozen
class Anchors:
    tenant: str
    taken_at: datetime
    anchors: tuple[AuditAnchor, ...]
    # The store they were taken from (its id); None in files written before ids.
    store: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "tenant": self.tenant,
            **({} if self.store is None else {"store": self.store}),
            "taken_at": self.taken_at.isoformat(timespec="microseconds"),
            "anchors": [
                {"execution_id": a.execution_id, "sequence": a.sequence, "hash": a.hash}
                for a in self.anchors
            ],
        }


def take(
    uow_factory: UnitOfWorkFactory,
    tenant: str,
    verify: Callable[[str], ChainReport],
    *,
    now: datetime,
    store: str | None = None,
    progress: queries.Progress | None = None,
) -> tuple[Anchors, list[ChainReport]]:
    """The heads of the tenant's executions whose chain verifies, and the reports of those
    whose chain does not (anchoring those would vouch for what was done to them)."""
    _a_tenant(tenant)
    unreadable: list[str] = []
    listed = queries.every_execution(uow_factory, tenant, unreadable)
    heads = {x.id: (x.audit_sequence, x.audit_head) for x in listed}
    anchored: list[AuditAnchor] = []
    broken: list[ChainReport] = []
    with (progress or queries.quietly)([*heads, *unreadable]) as items:
        for xid in items:
            report = queries.verify_listed(verify, xid)
            if not report.ok or xid not in heads:
                broken.append(report)
                continue
            sequence, head = heads[xid]
            anchored.append(AuditAnchor(xid, sequence, head))
    for xid, (count, _) in queries.orphan_trails(uow_factory, tenant).items():
        broken.append(queries.orphan_report(xid, count))
    return Anchors(tenant, now, tuple(anchored), store), broken


def check(
    uow_factory: UnitOfWorkFactory,
    tenant: str,
    anchors: Iterable[AuditAnchor],
) -> list[ChainReport]:
    """A report for each anchor the store no longer holds; empty when it holds them all."""
    _a_tenant(tenant)
    if isinstance(anchors, str | bytes | Anchors):
        raise ValueError(f"anchors must be AuditAnchors, got {type(anchors).__name__}")
    anchors = list(anchors)
    for anchor in anchors:
        # Built by hand, an anchor of entry 0 or of no hash at all would hold vacuously.
        problem = (
            _anchor_problem(anchor.execution_id, anchor.sequence, anchor.hash)
            if isinstance(anchor, AuditAnchor)
            else f"is not an AuditAnchor but {shown(anchor)}"
        )
        if problem is not None:
            raise ValueError(f"anchor {problem}")
    failed = []
    for anchor in anchors:
        try:
            trail = queries.audit_trail(uow_factory, tenant, anchor.execution_id)
        except CorruptRecord as exc:  # unreadable: `verify` says how; the anchor cannot tell
            failed.append(ChainReport(anchor.execution_id, 0, False, exc.entry or 1, str(exc)))
            continue
        except RecordNotFound:
            failed.append(
                ChainReport(
                    anchor.execution_id,
                    0,
                    False,
                    1,
                    f"the execution was deleted since it was anchored at entry {anchor.sequence}",
                )
            )
            continue
        report = check_anchor(anchor, trail)
        if not report.ok:
            failed.append(report)
    return failed


def renewed(taken: Anchors, earlier: Anchors) -> Anchors:
    """Fresh anchors that keep each earlier one not taken again (a chain broken since, a
    record that does not read back): replacing the file must not let those go unwatched."""
    fresh = {a.execution_id for a in taken.anchors}
    kept = tuple(a for a in earlier.anchors if a.execution_id not in fresh)
    return Anchors(taken.tenant, taken.taken_at, taken.anchors + kept, taken.store)


def write(anchors: Anchors, path: str | os.PathLike[str]) -> None:
    """Replace `path` whole or not at all: a crash never leaves half an anchor file. A link
    is followed (the file it names, on other storage say, is the one replaced). Anchors
    that `read` would refuse are refused first, the file left as it was."""
    path = _a_path(path)
    if not isinstance(anchors, Anchors) or not isinstance(anchors.taken_at, datetime):
        raise AnchorFileError(path, "not written: give Anchors, as `take` makes them")
    document = anchors.to_json()
    try:
        parse(path, document)
    except AnchorFileError as exc:  # (the command line says these as usage errors, exit 2)
        raise AnchorFileError(path, f"not written: the document {exc.problem}") from None
    text = json.dumps(document, indent=1) + "\n"
    planted = _foreign_link(path)
    if planted is not None:
        raise AnchorFileError(
            path,
            f"goes through {planted}, a symbolic link another user made in a shared"
            " directory: not followed (it could name any file this user may write)",
        )
    try:
        os.path.realpath(path, strict=True)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # followed loosely, the link itself would be replaced
            raise AnchorFileError(path, "is a loop of symbolic links") from None
    try:
        target = Path(os.path.realpath(path))
    except FileNotFoundError:  # relative, to a working directory deleted meanwhile
        raise AnchorFileError(
            path, "is relative to a working directory that no longer exists"
        ) from None
    mode = 0o644  # readable as any file the command writes, not mkstemp's 0600
    if target.exists():
        if not target.is_file():
            # A FIFO or a device (/dev/null) is never replaced by a file.
            raise AnchorFileError(path, "is not a regular file")
        if not os.access(target, os.W_OK):
            # Replacing it needs only its directory: its own protection is honoured.
            raise AnchorFileError(path, "is read-only")
        mode = stat.S_IMODE(target.stat().st_mode)  # kept as it was made
    prefix = f".{target.name}.anchoring-"
    handle, temporary = tempfile.mkstemp(prefix=prefix, dir=target.parent)
    try:
        os.fchmod(handle, mode)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _sweep(target.parent, prefix)
    # The rename itself made durable: a power cut must not bring the earlier file back
    # after the command said the new one was written.
    # (Best effort: the file is in place either way, and some file systems refuse it.)
    with contextlib.suppress(OSError):
        directory = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def _foreign_link(path: Path) -> Path | None:
    """A symbolic link met resolving `path` (through `..` and links to links too) that the
    kernel's fs.protected_symlinks would not follow (off on some systems): in a sticky
    directory others may write to (/tmp), owned neither by this user nor by the
    directory's owner."""
    try:
        here = Path("/") if path.is_absolute() else Path(os.getcwd())
    except FileNotFoundError:  # relative to a working directory deleted: said below
        return None
    todo = list(path.parts[1:] if path.is_absolute() else path.parts)
    hops = 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":  # `here` holds no link: its parent is the real one
            here = here.parent
            continue
        step = here / part
        try:
            info = os.lstat(step)
            if not stat.S_ISLNK(info.st_mode):
                here = step
                continue
            shared = os.stat(here)
            target = Path(os.readlink(step))
        except OSError:  # not there (yet), or not to be read: nothing more to follow
            return None
        sticky = shared.st_mode & stat.S_ISVTX and shared.st_mode & stat.S_IWOTH
        if sticky and info.st_uid not in (os.geteuid(), shared.st_uid):
            return step
        hops += 1
        if hops > 40:  # a loop: said as one below
            return None
        if target.is_absolute():
            here = Path("/")
        todo = [*(target.parts[1:] if target.is_absolute() else target.parts), *todo]
    return None


STALE_SECONDS = 600


def _sweep(directory: Path, prefix: str) -> None:
    """Remove what an anchoring killed before its rename left beside the file (a complete,
    plausible anchor document under a hidden name); not one a run under way may still be
    writing."""
    horizon = time.time() - STALE_SECONDS
    with contextlib.suppress(OSError):
        for left in directory.glob(glob.escape(prefix) + "*"):
            with contextlib.suppress(OSError):
                if left.is_file() and not left.is_symlink() and left.stat().st_mtime < horizon:
                    left.unlink()


def read(path: str | os.PathLike[str]) -> Anchors:
    path = _a_path(path)
    try:
        raw = files.read_regular(path, MAX_BYTES).decode("utf-8")
    except files.UnreadableFile as exc:
        raise AnchorFileError(path, str(exc)) from None
    except UnicodeDecodeError:
        raise AnchorFileError(path, "is not UTF-8 text") from None
    try:
        document = strict_json.loads(raw)
    except ValueError as exc:
        raise AnchorFileError(path, f"is not strict JSON: {one_line(str(exc))[:200]}") from None
    return parse(path, document)


def _a_path(path: object) -> Path:
    # As `open` takes it (text or a path), and refused as an anchor file error otherwise.
    given = os.fspath(path) if isinstance(path, str | os.PathLike) else None
    if not isinstance(given, str):
        raise AnchorFileError(Path(repr(path)), "give the file's path as text or a Path")
    if "\x00" in given:
        raise AnchorFileError(Path(repr(given)), "a path cannot hold a NUL character")
    return Path(given)


def parse(path: Path, document: object) -> Anchors:
    def bad(problem: str) -> AnchorFileError:
        return AnchorFileError(path, problem)

    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise bad(f'is not an audit anchor file (no "format": "{FORMAT}")')
    keys = {"format", "version", "tenant", "store", "taken_at", "anchors"}
    unknown = sorted(set(document) - keys)
    if unknown:
        raise bad(f"holds keys an anchor file does not: {', '.join(map(repr, unknown))[:200]}")
    if type(document.get("version")) is not int or document.get("version") != VERSION:  # true == 1
        given = shown(document.get("version"), 40)
        raise bad(f"has version {given}; this govkernel reads {VERSION}")
    tenant = document.get("tenant")
    if not isinstance(tenant, str) or not IDENTIFIER.match(tenant):
        raise bad("names no valid tenant")
    try:
        taken_at = datetime.fromisoformat(str(document.get("taken_at")))
    except ValueError:
        raise bad("has no valid taken_at time") from None
    if taken_at.tzinfo is None:
        raise bad("has a taken_at time without a zone")
    store = document.get("store")
    if store is not None and (not isinstance(store, str) or not _STORE_ID.match(store)):
        raise bad("names no valid store")
    items = document.get("anchors")
    if not isinstance(items, list):
        raise bad("has no list of anchors")
    anchors = [_anchor(bad, i, item) for i, item in enumerate(items)]
    seen: set[str] = set()
    for anchor in anchors:
        if anchor.execution_id in seen:
            raise bad(f"anchors execution {anchor.execution_id[:200]!r} twice")
        seen.add(anchor.execution_id)
    return Anchors(tenant, taken_at, tuple(anchors), store)


def _unicode(text: str) -> bool:
    # JSON's `\ud800` escapes decode to lone surrogates, which no stored id holds (nor can
    # any output print).
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _anchor(bad: Callable[[str], AnchorFileError], i: int, item: object) -> AuditAnchor:
    if not isinstance(item, dict) or set(item) != {"execution_id", "sequence", "hash"}:
        raise bad(f"anchors[{i}] is not an object of execution_id, sequence and hash")
    xid, sequence, head = item.get("execution_id"), item.get("sequence"), item.get("hash")
    problem = _anchor_problem(xid, sequence, head)
    if problem is not None:
        raise bad(f"anchors[{i}].{problem}")
    return AuditAnchor(xid, sequence, head)  # type: ignore[arg-type]


def _anchor_problem(xid: object, sequence: object, head: object) -> str | None:
    if (
        not isinstance(xid, str)
        or not xid
        or len(xid) > MAX_ID_CHARS
        or not _unicode(xid)
        or "\x00" in xid  # no key can hold it: read as the id of an execution deleted since
    ):
        return "execution_id is not an execution id"
    # A stored sequence is a 64-bit integer: a larger one anchors no entry (and would be
    # echoed whole by what reports it).
    if not isinstance(sequence, int) or isinstance(sequence, bool) or not 1 <= sequence < 2**63:
        return "sequence is not a whole number from 1 to 2^63 - 1"
    if not isinstance(head, str) or not _HASH.match(head):
        return "hash is not a SHA-256 hex digest"
    return None


def _a_tenant(tenant: object) -> None:
    # One tenant's: another's executions read as deleted to it.
    if not isinstance(tenant, str) or not IDENTIFIER.match(tenant):
        raise ValueError(f"tenant must be a tenant's name, got {shown(tenant)}")
