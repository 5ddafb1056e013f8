"""SurrealDB store: one blocking connection, one `query_raw` transaction per commit."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import re
import resource
import shutil
import socket
import ssl
import stat
import tempfile
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from attrs import field, frozen
from surrealdb import RecordID, Surreal

from adapters.surrealdb import compiler, schema
from adapters.surrealdb.address import dialable, names_credentials, server_of
from adapters.surrealdb.wire import Wire, bound_waits
from domain.model.errors import InvalidInput
from domain.model.seal import AuditKey, key_or_none
from ports import fields
from ports.errors import (
    CommitOutcomeUnknown,
    CorruptRecord,
    InvalidRecord,
    PortError,
    StorageUnavailable,
    StoreInUse,
)
from ports.progress import Progress, quietly
from ports.storage import EVENT_TABLE, TABLES, AnyOf, Batch, CommitReceipt, Document, Op, Range
from ports.unit_of_work import StoreUnitOfWork

EMBEDDED = ("mem", "memory", "surrealkv", "file")
_SECOND = timedelta(seconds=1)
_INSTANTS = (fields.Kind.DATETIME, fields.Kind.OPTIONAL_DATETIME)
IMMUTABLE_CACHE_CHARS = 4 * 1024 * 1024
NOT_UPGRADED = "the store was written by an older govkernel and is left as it is"
MAX_SEGMENT_HEADER = 4096  # far above the engine's own (170 bytes)
PARTIAL_COPY = "govkernel.partial-backup"  # in a backup's directory until it is whole
REMOTE = ("ws", "wss", "http", "https")
# What an open found, for a service's own log (the CLI says it on stderr itself): without
# one configured, Python's last-resort handler would print it there again.
_log = logging.getLogger("govkernel.store")
_log.addHandler(logging.NullHandler())
# An upgrade about to start, said apart so that a command line can show it as it happens.
UPGRADE_LOG = logging.getLogger("govkernel.store.upgrade")
UPGRADED_BEFORE_THE_STOP = "as the store opened, once it had been upgraded from schema version"
# The engine cannot hand back text holding a NUL: a read of such a record fails whole, in
# these words. No write of govkernel's stores one (every adapter refuses it).
_NUL_IN_ANSWER = "string contained a null byte"
NUL_STORED = (
    "a stored record holds text with a NUL character, which govkernel never writes: it was"
    " edited in storage, and cannot be read back"
)


@frozen
class SurrealConfig:
    # Shown by its scheme alone: a password typed in the wrong place may be in it.
    url: str = field(repr=lambda url: repr(_scheme_shown(url)))
    namespace: str = "govkernel"
    database: str = "govkernel"
    # Neither is shown in the repr (the settings star the user name too).
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    sync_data: bool = True  # fsync every commit on surrealkv://
    # False: open only a store govkernel already wrote, never make one (a mistyped path,
    # namespace or database is refused instead of becoming a new, empty store).
    create: bool = True
    # False: a store of an older schema is refused as it is, not upgraded (an upgrade is one
    # way: a backup taken before one must be taken without it).
    upgrade: bool = True
    # Seconds a remote server may take to answer one request before it counts as gone.
    reply_timeout: float = 60.0
    # Seals the executions written through the store's units (domain.model.seal).
    audit_key: AuditKey | None = field(default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        # Each checked as the config is made: a number for the URL, or "no" for sync_data,
        # was taken, to fail (or to fsync) far from where it was written.
        if not isinstance(self.url, str):
            raise ValueError(f"url must be text, got {type(self.url).__name__}")
        if "\x00" in self.url:
            raise ValueError("url holds a NUL character")
        try:
            parsed = bool(urlsplit(self.url))
        except ValueError:  # (its own words quote the host: a password typed there, h160)
            parsed = False
        if not parsed:  # (raised here, so that they are not kept as its context either)
            raise ValueError("url is not a valid URL")
        # (urlsplit drops white space before a scheme: a URL with some is refused too.)
        if self.scheme not in (*EMBEDDED, *REMOTE) or not self.url.lower().startswith(
            f"{self.scheme}:"
        ):
            raise ValueError(
                "url names no store this adapter opens: mem://, surrealkv://PATH,"
                " ws://HOST:PORT or wss://HOST:PORT"
            )
        for name in ("namespace", "database"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be non-empty text")
        for name in ("username", "password"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be text or None")  # never echoed: a secret
            if isinstance(value, str) and not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:  # it failed as the store opened, by class name
                    raise ValueError(f"{name} is not valid Unicode text") from None
        for name in ("sync_data", "create", "upgrade"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r:.40}")
        timeout = self.reply_timeout
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not (0 < timeout < float("inf"))
        ):
            raise ValueError(
                f"reply_timeout must be a positive number of seconds, got {timeout!r:.40}"
            )
        key_or_none(self.audit_key)
        # Without a path the engine would write into the working directory, with no lock,
        # no seal and no fsync: a store in name only.
        rest = self.url.partition("://")[2]
        if self.scheme in ("surrealkv", "file") and not rest.strip():
            raise ValueError(
                f"{self.scheme}:// needs a directory path, e.g. {self.scheme}:///var/lib/store"
            )
        if self.scheme in ("surrealkv", "file") and rest != rest.strip():
            # A space more made a second store beside the first.
            raise ValueError(f"the {self.scheme}:// path begins or ends with white space")
        if self.scheme in REMOTE and names_credentials(self.url):
            # The settings refuse it too; here the URL is kept, and shown in the config's
            # repr: a password in it would be shown with it. (Not repeated either.)
            raise ValueError(
                "a server's URL takes no credentials (`user:password@`, the `@` as `%40` or"
                " `%2540` too): give them as username and password"
            )
        if self.scheme in REMOTE and any(c in self.url for c in "?#;"):
            # The SDK would drop them, or dial them as part of the path: a credential
            # typed there would be ignored in silence. (Neither the URL nor its host is
            # repeated: either may hold one, a user name taken for the host, h160.)
            raise ValueError(
                "a server's URL takes no query (`?...`), fragment (`#...`) or path parameters"
                " (`;...`): give credentials as username and password instead"
            )
        if self.scheme in REMOTE:
            self._dialable()

    def _dialable(self) -> None:
        # Each failed as the store opened, named by an exception's class alone. (The URL is
        # not repeated: a password typed in the wrong place may be in it.)
        rest = self.url.partition("://")[2]
        if any(c.isspace() or not c.isprintable() for c in rest):
            raise ValueError("a server's URL holds no white space or control characters")
        parts = urlsplit(self.url)
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port == 0:  # (None: the scheme's own)
            raise ValueError("a server's port must be a number from 1 to 65535")
        if not parts.hostname or not dialable(parts.hostname):
            raise ValueError("a server's URL needs a valid host name or address")

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    @property
    def path(self) -> Path | None:
        """The directory of a surrealkv:// store."""
        if self.scheme not in ("surrealkv", "file"):
            return None
        rest = self.url.partition("://")[2]
        return Path(rest) if rest else None

    @property
    def server(self) -> str:
        """`host:port` of a remote store, for messages: never the URL's userinfo."""
        return server_of(self.url)

    @property
    def where(self) -> str:
        """The store, for messages: its directory, or its server's scheme and address."""
        if self.path:
            return str(self.path)
        return f"{self.scheme}://" + (self.server if self.scheme in REMOTE else "")


def _scheme_shown(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    return f"{scheme}://***" if sep and scheme.lower() in (*EMBEDDED, *REMOTE) else "***"


class StoreLock:
    """An exclusive, per-directory lock: the embedded engine does not lock surrealkv itself.

    Two processes on one directory would each keep their own view and silently lose writes,
    so the second one must fail loudly instead. The lock file also remembers a holder that
    died without closing the store, until someone acknowledges having checked the store
    (`govkernel recover` does, once every audit chain verifies): `<pid>` while held,
    `unclean <pid>` for a crash not yet checked, empty when closed cleanly, and `removed <pid>`
    once the store's directory was found removed while held (`mark_removed`), which the seal
    inside it can no longer say: a store opened there later is refused, never made anew.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory.with_name(directory.name + ".lock")
        self._file: TextIO | None = None
        self._directory_fd: int | None = None
        # The pid of a holder that died without closing the store, until acknowledged.
        self.crashed_holder: str | None = None
        # A damaged log, and the size of one closed whole, as this file recorded them before
        # the seal did (LogSeal).
        self.damaged: tuple[int, int] | None = None
        self.closed: int | None = None
        self.removed = False

    @staticmethod
    def left_by(directory: Path) -> tuple[str, str] | None:
        """What the lock file of the store at `directory` says its last holder left, if it
        did not close it: ("removed", pid) once its directory was found removed, ("held",
        pid) for a holder that died or holds it still. Read without locking: only read."""
        path = directory.with_name(directory.name + ".lock")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as file:
                words = file.read(64).decode("utf-8", "replace").split()
        except OSError:  # none, or not a file: acquiring the lock says what is wrong
            return None
        if words[:1] == ["removed"]:
            return "removed", _pid(words[1:2])
        if words[:1] == ["unclean"]:
            return "held", _pid(words[1:2])
        if words[:1] and words[0].isascii() and words[0].isdigit():
            return "held", words[0]
        return None

    def mark_removed(self) -> None:
        """The store's directory was found removed while this process held it."""
        self.removed = True
        with contextlib.suppress(OSError):  # said to this process's caller all the same
            self._write(f"removed {os.getpid()}")

    def acquire(self) -> None:
        try:
            _make_directories(self.path.parent)
        except OSError as exc:
            # mkdir says "File exists" when a file stands where a directory of the path goes.
            blocked = _file_in_the_way(self.path.parent)
            why = f"{blocked} is a file, not a directory" if blocked else exc.strerror or exc
            raise StorageUnavailable(
                f"cannot use store {self.path.with_suffix('')}: {why}"
            ) from None
        # The lock is rewritten, and must not clobber whatever another name points at.
        fd = _open_regular(self.path, os.O_RDWR | os.O_CREAT, "lock file")
        # Held open for the store's lifetime. Whatever a crash or a hand left in it is read
        # (its first bytes only) but never trusted: only a decimal pid is ever shown.
        handle = os.fdopen(fd, "r+", encoding="utf-8", errors="replace")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _pid(handle.read(64).split()[:1])
            handle.close()
            if holder == str(os.getpid()):
                raise StorageUnavailable(
                    f"store {self.path.with_suffix('')} is already open in this process;"
                    " share that SurrealStore instead of opening it again"
                ) from None
            raise StoreInUse(
                f"store {self.path.with_suffix('')} is in use by another process (pid {holder}):"
                " try again once it is done (a command ends by itself; a service holding the"
                " store must be stopped), or choose another store"
            ) from None
        try:
            self._directory_fd = self._lock_directory()
        except BaseException:
            handle.close()
            raise
        left = handle.read(64).split()
        sizes = [int(t) for t in left[1:3] if t.isascii() and t.isdigit()]
        if left[:1] in (["unclean"], ["removed"]):  # a store back in place: checked as a crash
            self.crashed_holder = _pid(left[1:2])
        elif left[:1] == ["damaged"] and len(sizes) == 2:  # kept here for a while: a seal's
            self.damaged = (sizes[0], sizes[1])
        elif left[:1] == ["closed"]:  # `closed <bytes>`, as it was for a while: clean
            self.closed = sizes[0] if len(left) == 2 == len(sizes) + 1 else None
        elif left:
            self.crashed_holder = _pid(left[:1])
        self._file = handle
        try:
            self._write(str(os.getpid()))
        except BaseException as exc:
            # Stopped (Ctrl-C, SIGTERM) before the store was used, or the pid could not be
            # written (a full disk): left as it was found, not as a crash of this process's.
            try:
                # What failed to write the pid may fail this too: the file is as it was then.
                with contextlib.suppress(OSError):
                    self._write(" ".join(left))
            finally:
                self._let_go()
            if isinstance(exc, OSError):
                raise StorageUnavailable(
                    f"cannot write lock file {self.path}: {exc.strerror or exc}"
                    + (_machine_hint(f"(os error {exc.errno})") or "")
                ) from None
            raise

    def _lock_directory(self) -> int:
        """The directory itself is locked too: the lock file is found by the directory's
        path, and another path to the same directory (a bind mount, a container volume)
        would find another lock file."""
        try:
            _make_directories(self.directory)
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise StorageUnavailable(
                f"cannot use store {self.directory}: {exc.strerror or exc}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            # Held all the same, as the lock file's case is: the same work may be tried again
            # once that holder is done.
            raise StoreInUse(
                f"store {self.directory} is in use through another path to its directory (a"
                " bind mount or a volume), by another process or this one, or its lock file"
                f" ({self.path.name}) was deleted while it was held; close that one or"
                " choose another store"
            ) from None
        except OSError as exc:  # a file system that cannot lock (some network mounts)
            os.close(fd)
            raise StorageUnavailable(
                f"cannot lock store {self.directory}: {exc.strerror or exc}; a surrealkv://"
                " store needs a local file system"
            ) from None
        return fd

    def acknowledge_crash(self) -> None:
        """The store was checked after its holder's crash: forget that it happened."""
        self.crashed_holder = None
        self._write(str(os.getpid()))

    def release(self) -> None:
        try:
            # Empty says the store was closed cleanly; a crash not yet checked is kept, and a
            # store removed under its holder stays marked so.
            if self._file is not None and not self.removed:
                self._write(f"unclean {self.crashed_holder}" if self.crashed_holder else "")
        finally:
            self._let_go()

    def _let_go(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            # A write that failed fails again as the file closes: it is let go all the same.
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        if self._directory_fd is not None:
            os.close(self._directory_fd)  # and its lock with it
            self._directory_fd = None

    def _write(self, content: str) -> None:
        if self._file is not None:
            # Written over the old content, then cut to length: a kill in between leaves old
            # and new mixed, which reads as a crash, never as empty (a clean close).
            self._file.seek(0)
            self._file.write(content)
            self._file.truncate()
            self._file.flush()
            # Durable, so that a power loss cannot hide that the holder died: the next open
            # settles the log only when it knows (SurrealStore._settle_log).
            os.fsync(self._file.fileno())


class LogSeal:
    """A size the engine's log is known to have reached whole: a file inside the store's
    directory, so copies and backups carry it.

    The engine repairs a damaged record in its log by cutting the log there, with every
    transaction after it: right for a record torn by a crash at the tail, silent loss of
    committed work for damage further in. The log only grows (the engine does not compact
    it), and with an fsync per commit a crash tears only what was written after the last
    commit that returned. So the seal is written at each clean close and, while the store is
    open, after a commit at most every `EVERY` seconds; a log found shorter than its seal lost
    committed transactions. `closed <bytes>`, or `damaged <bytes> <bytes>` once found cut,
    until someone removes the file.
    """

    NAME = "govkernel.seal"
    EVERY = 1.0  # seconds between seals while the store is open

    def __init__(self, directory: Path, on_removed: Callable[[], None] | None = None) -> None:
        self.directory = directory
        self.path = directory / self.NAME
        self._on_removed = on_removed
        self.closed: int | None = None
        self.damaged: tuple[int, int] | None = None
        words = self._read().split()
        sizes = [int(w) for w in words[1:] if w.isascii() and w.isdigit() and len(w) <= 18]
        if words[:1] == ["closed"] and len(words) == 2 == len(sizes) + 1:
            self.closed = sizes[0]
        elif words[:1] == ["damaged"] and len(words) == 3 == len(sizes) + 1 and sizes[1] < sizes[0]:
            self.damaged = (sizes[0], sizes[1])
        elif words:
            # Written whole by govkernel only: anything else would turn the check off unseen.
            raise StorageUnavailable(
                f"the seal file {self.path} does not hold what govkernel writes there (a size"
                " its log once had whole); restore it from a backup of the store,"
                " or remove it to open the store without that check"
            )
        self.checked = False
        self.grew = False
        self._sealed_at = time.monotonic()
        # Why the seal could not be written, if it could not (a directory that refuses new
        # files): the check it makes at the next open is then weaker, and that is said.
        self.unwritten: str | None = None
        # What was found of the log, if it was cut or removed while open: commits since may
        # be lost, and the store takes no more.
        self.lost: str | None = None

    def _read(self) -> str:
        if not os.path.lexists(self.path):
            return ""
        # Non-blocking: a FIFO would otherwise hold the open for good before it is refused.
        fd = _open_regular(self.path, os.O_RDONLY | os.O_NONBLOCK, "seal file")
        with os.fdopen(fd, "rb") as file:
            return file.read(64).decode("utf-8", errors="replace")

    def at_least(self, closed: int | None) -> None:
        """A size the log was known whole at, kept elsewhere (the lock file, as govkernel
        0c8cbf5..b006a62 kept it at a clean close): the log only grows, so the larger holds."""
        if closed is not None and self.damaged is None and closed > (self.closed or 0):
            self.closed = closed
            # Kept now: the lock file is rewritten as this open holds it, and an open that
            # stops before its first seal would otherwise lose the size.
            self._write(f"closed {closed}")

    def mark_damaged(self, closed: int, found: int) -> None:
        self.damaged = (closed, found)
        self._write(f"damaged {closed} {found}")

    def forget(self) -> None:
        """The directory holds no log (new, or emptied to start over): nothing to hold it to.
        The file goes too: left, with the engine's manifest made before its log, a crash in
        between would read as a store that lost its log."""
        self.closed = self.damaged = None
        with contextlib.suppress(OSError):  # (left, it is only that crash's false alarm)
            self.path.unlink()

    def check(self) -> None:
        """Refuse the store if the engine, opening it, cut its log below the seal."""
        if self.damaged is None:
            found = _log_bytes(self.directory)
            if found is None:  # a cut at open would go unseen, and later writes hide it
                raise StorageUnavailable(
                    f"cannot tell the size of the store's log at {self.directory} (too many"
                    " open files?): not opened unchecked; try again"
                )
            if self.closed is None or found >= self.closed:
                # Longer than sealed: bytes came after the seal, from a crash this process
                # was not told of (the lock file copied clean, or not at all).
                self.grew = self.closed is not None and found > self.closed
                self.checked = True
                return
            self.mark_damaged(self.closed, found)
        assert self.damaged is not None
        closed, found = self.damaged
        raise StorageUnavailable(
            f"the store's log at {self.directory} was damaged: it was {closed} bytes when last"
            f" known whole, and was found cut to {found}; the committed"
            f" transactions in the {closed - found} bytes cut are lost. Restore the store from"
            f" a backup, or remove {self.path} to go on with what is left (a copy taken while"
            " the store was open, its seal copied after its log, reads like this too)"
        )

    def close(self) -> None:
        """Seal the log as the engine left it; only a log found whole when opened."""
        if self.checked:
            self._seal()

    def suspend(self) -> None:
        """A commit failed in the engine: the log may end in bytes no commit vouches for, so
        this session seals nothing more (the last seal stays, and still holds)."""
        self.checked = False

    def seal_now(self) -> None:
        """Seal what the log holds now: no commit is running (the caller holds them off)."""
        if self.checked and _engine_syncs():
            self._sealed_at = time.monotonic()
            self._seal()

    def keep_up(self) -> None:
        """After a commit returned: seal what the log holds now, if a second has passed since
        the last seal. Only when every commit is fsynced (SURREAL_SYNC_DATA): otherwise the
        log's size says nothing about what a power loss leaves."""
        if time.monotonic() - self._sealed_at >= self.EVERY:
            self.seal_now()

    def look(self) -> str | None:
        """Why the log may have lost what was written, looking at it now, if it may have."""
        if self.lost is None and self.checked:
            self._look()
        return self.lost

    def _seal(self) -> None:
        found = self._look()
        if found is None:
            return
        self.closed = found
        self._write(f"closed {found}")

    def _look(self) -> int | None:
        """The log's size, when it can be told and is whole; a log found cut or gone is
        kept in `lost` (None then)."""
        found = _log_bytes(self.directory)
        if found is None:  # its size not to be told now: the last seal stands
            return None
        # While open the log is never empty (the schema is in it): none at all was removed,
        # under a store this very open made too, which has no size known whole yet.
        if found == 0 or (self.closed is not None and found < self.closed):
            # Shorter than it was known whole, while open (its files removed under it, say):
            # lowering the seal would hide the loss from the next open, which refuses it.
            self.checked = False
            if self.closed:
                self.mark_damaged(self.closed, found)
            gone = not self.directory.exists()
            if gone and self._on_removed is not None:
                self._on_removed()  # the seal went with it: said where it is kept instead
            self.lost = (
                f"the store's directory {self.directory} was removed or moved while this"
                " process held it"
                if gone
                else f"the store's log at {self.directory} was cut while this process held it"
                f" ({self.closed or 'more'} bytes when last known whole, {found} now)"
            ) + ": what was written since may be lost"
            return None
        return found

    def _write(self, content: str) -> None:
        # Replaced whole, never half-written: a torn seal would read as no seal at all.
        temporary = self.path.with_name(self.NAME + ".tmp")
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            # As readable as the store's directory (a private store keeps a private seal),
            # and writable by its owner alone, whatever the directory allows.
            mode = stat.S_IMODE(os.stat(self.directory).st_mode) & STORE_FILE_MODE
            with contextlib.suppress(FileNotFoundError):  # a leftover would keep its mode
                temporary.unlink()
            with os.fdopen(os.open(temporary, flags, mode), "w", encoding="utf-8") as file:
                file.write(content)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except OSError as exc:  # the store works on; the next open checks against less
            # The file in the way named when it is not the seal (its temporary, left a
            # directory, say): that is what to remove.
            why = str(exc.strerror or exc)
            if exc.filename is not None and Path(exc.filename).name != self.NAME:
                why = f"{Path(exc.filename).name}: {why}"
            self.unwritten = self.unwritten or why


def _enclosing_store(path: Path) -> Path | None:
    """A store directory `path` lies inside (its `clog`, say, reached by a slip of
    tab-completion): a store made there would put files in that store's own directories,
    and the engine then refuses to open it at all."""
    for parent in path.parents:
        with contextlib.suppress(OSError):
            if (parent / "clog").is_dir() and (
                (parent / "manifest").is_dir() or os.path.lexists(parent / LogSeal.NAME)
            ):
                return parent
    return None


def _file_in_the_way(path: Path) -> Path | None:
    """The path itself, or a directory on its way, that is something else (a file)."""
    return next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)


def _open_regular(path: Path, flags: int, what: str) -> int:
    """A descriptor on `path`, never through a symbolic link and only for a regular file:
    files govkernel keeps beside or inside a store are read and rewritten by it."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        why = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror or exc
        raise StorageUnavailable(f"cannot use {what} {path}: {why}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise StorageUnavailable(f"cannot use {what} {path}: not a regular file")
    return fd


def _log_bytes(path: Path) -> int | None:
    """The size of the engine's commit log: the segments in the store's `clog` directory
    (0 with none left); None when it cannot be told (too many open files, a race)."""
    try:
        segments = list((path / "clog").iterdir())
    except (FileNotFoundError, NotADirectoryError):  # no log left at all
        return 0
    except OSError:
        return None
    try:
        return sum(f.stat().st_size for f in segments if f.is_file())
    except OSError:  # a segment gone between listing and reading it: not to be told now
        return None


_YES = frozenset(("true", "1", "yes", "on"))
_NO = frozenset(("false", "0", "no", "off"))

# The embedded engine reads SURREAL_SYNC_DATA once, when this process opens its first
# surrealkv:// store: what it read then holds for every store the process opens after.
_ENGINE_SYNC: list[bool] = []


def _env_syncs() -> bool:
    return os.environ.get("SURREAL_SYNC_DATA") == "true"  # the engine's own test: exactly


def _engine_syncs() -> bool:
    return bool(_ENGINE_SYNC) and _ENGINE_SYNC[0]


def _lost_log(path: Path, seal: LogSeal) -> None:
    """Refuse a store whose log alone is gone: its manifest and seal say it held records.
    (Both engine directories removed is a store started over: it opens new.)"""
    try:
        lost = (
            seal.closed is not None
            and not os.path.lexists(path / "clog")
            and os.path.lexists(path / "manifest")
        )
    except OSError:  # not to be told here: the open that follows says why
        return
    if lost:
        raise StorageUnavailable(
            f"the store at {path} has lost its log: clog/ is gone, while its manifest and"
            f" seal ({seal.closed} bytes of log when last known whole) are there. Restore the"
            f" store from a backup, or remove manifest/ and {seal.path.name} too to start"
            " over, empty"
        )


def _log_not_files(path: Path) -> None:
    """Refuse a log that is not a directory of regular files: the engine fails on a file in
    the directory's place (after which a run took the store for one to start over, its seal
    forgotten), and opening a FIFO in a segment's place waits for a writer for ever."""
    clog = path / "clog"
    try:
        if not os.path.lexists(clog):
            return
        odd: Path | None
        if not clog.is_dir():
            odd = clog
        else:
            odd = next(
                (
                    p
                    for p in clog.iterdir()
                    if _SEGMENT.match(p.name) and not stat.S_ISREG(p.lstat().st_mode)
                ),
                None,
            )
    except OSError:  # not to be told here: the open that follows says why
        return
    if odd is not None:
        what = "its log, {}, is not a directory" if odd == clog else "{} is not a regular file"
        raise StorageUnavailable(
            f"cannot use store {path}: {what.format(odd)}; put the store's own back, or"
            " restore the store from a backup"
        )


def _holds_nothing(path: Path) -> bool:
    """Whether no record ever reached the engine's log: no segment, or a single one holding
    at most its header (a 4-byte length, then that many bytes: 170 in surrealkv 0.9.3). A
    header whose length is not plausible is damage, not a beginning: not nothing."""
    clog = path / "clog"
    segments = [p for p in clog.iterdir() if p.is_file()] if clog.is_dir() else []
    if len(segments) != 1:
        return not segments
    with segments[0].open("rb") as segment:
        size = os.fstat(segment.fileno()).st_size
        prefix = segment.read(4)
    if len(prefix) < 4:
        return True
    header = int.from_bytes(prefix, "big")
    return header <= MAX_SEGMENT_HEADER and size <= 4 + header


def _set_aside_torn_segment(path: Path) -> Path | None:
    """Move out of the log its newest segment when a crash cut it inside its header, as the
    engine began it: no record can follow a header not yet whole, so it held none, and the
    engine refuses to open a log ending so. Kept beside the log, never deleted."""
    segments = sorted(p for p in (path / "clog").iterdir() if _SEGMENT.match(p.name))
    if len(segments) < 2:  # a first segment's is a first open's (see _holds_nothing)
        return None
    last = segments[-1]
    with last.open("rb") as file:
        raw = file.read(4 + MAX_SEGMENT_HEADER + 1)
    length = int.from_bytes(raw[:4], "big")
    if len(raw) >= 4 and (length > MAX_SEGMENT_HEADER or len(raw) >= 4 + length):
        return None  # whole (or damage of another kind, for the engine to name)
    aside = path / f"{last.name}.torn-header"
    os.replace(last, aside)
    return aside


def _damaged_segment(clog: Path) -> str | None:
    """The first log segment, the last aside, whose header does not read as the engine's own:
    a map of names to values, its magic and its segment id among them. Damaged in a segment
    before the last, the engine panics (the process aborts) or opens with every table
    unreadable. (The last segment is only read as a reference: cut inside its header by a
    crash, it was moved aside already.) Checked only when some header reads: a format this
    does not know is not taken for damage."""
    try:
        segments = sorted(p for p in clog.iterdir() if _SEGMENT.match(p.name))
        headers = {}
        for segment in segments:
            with segment.open("rb") as file:
                headers[segment.name] = _header(file.read(4 + MAX_SEGMENT_HEADER))
    except OSError:  # not to be told here: the engine's open says why
        return None
    known = [h["magic"] for h in headers.values() if h is not None]
    if not known or any(int(p.stem) >= 2**64 for p in segments):  # the engine's to refuse
        return None
    # The magic most segments have, the last one's in a tie: a damaged first one is named.
    last = headers[segments[-1].name]
    magic = max(set(known), key=lambda m: (known.count(m), last is not None and last["magic"] == m))
    for segment in segments[:-1]:
        header = headers[segment.name]
        number = int(segment.stem).to_bytes(8, "big")
        if header is None or header["magic"] != magic or header["segment_id"] != number:
            return segment.name
    return None


def _header(raw: bytes) -> dict[str, bytes] | None:
    """A segment's header as surrealkv writes it: a 4-byte length, then a 4-byte count of
    entries, each a 4-byte length and a name, a 4-byte length and a value."""
    length = int.from_bytes(raw[:4], "big")
    if len(raw) < 8 or length > MAX_SEGMENT_HEADER or len(raw) < 4 + length:
        return None
    body, at, entries = raw[4 : 4 + length], 4, {}
    for _ in range(int.from_bytes(body[:4], "big")):
        parts = []
        for _part in range(2):
            size = int.from_bytes(body[at : at + 4], "big")
            if at + 4 + size > len(body):
                return None
            parts.append(body[at + 4 : at + 4 + size])
            at += 4 + size
        if not parts[0].isascii():
            return None
        entries[parts[0].decode("ascii")] = parts[1]
    if at != len(body) or "magic" not in entries or "segment_id" not in entries:
        return None
    return entries


# The schema's version (and an upgrade under way), and the marker an upgrade's last write sets.
_SCHEMA_RECORD = RecordID(schema.META_TABLE, "schema")
_UPGRADED_RECORD = RecordID(schema.META_TABLE, "upgraded")


def _removed_under_its_holder(path: Path) -> None:
    """Refuse a store whose directory went while a process held it: its seal, which would
    say it lost its work, went with it, and the store would be made anew, empty. The lock
    file beside it says so: marked when the holder found it gone, or holding the pid of a
    holder that never closed it (killed before it looked). A directory that came back with
    its seal (renamed away and back, a backup restored there) is checked by that seal."""
    left = StoreLock.left_by(path)
    if left is None or os.path.lexists(path / LogSeal.NAME):
        return
    how, holder = left
    if how == "held" and _holds_anything(path):
        return  # a crash, with the store still there: the next open checks it
    # (An empty directory in its place is one made again by hand or by tooling, `mkdir -p`.)
    raise StorageUnavailable(
        f"the store at {path} was removed or moved while a process (pid {holder}) held it"
        + ("" if how == "removed" else ", or after it died without closing it")
        + ": if it was moved, move it back (it is checked by its seal); if removed, what it"
        " held is lost unless restored from a backup (govkernel backup); to start a new"
        f" store there instead, remove {path.name}.lock beside it"
    )


def _holds_anything(path: Path) -> bool:
    try:
        with os.scandir(path) as entries:
            return any(True for _ in entries)
    except OSError:  # none there, or not a directory: nothing of a store
        return False


def _pid(tokens: list[str]) -> str:
    return tokens[0] if tokens and tokens[0].isascii() and tokens[0].isdigit() else "unknown"


def store_directory(path: Path) -> Path:
    """The real directory a surrealkv:// URL names: symbolic links and `..` resolved, so that
    every spelling of one store takes the same lock."""
    resolved = Path(os.path.realpath(path))
    if not resolved.name:
        raise StorageUnavailable(f"store path {str(path)!r} does not name a directory")
    return resolved


class SurrealStore:
    def __init__(self, config: SurrealConfig) -> None:
        if config.scheme not in EMBEDDED + REMOTE:
            raise StorageUnavailable(f"unsupported SurrealDB URL scheme {config.scheme!r}")
        self.config = config
        self.audit_key = config.audit_key
        self.round_trips = 0
        self.exclusive = config.scheme in EMBEDDED
        # Set when the previous process on this surrealkv directory died without closing it.
        # Kept until acknowledged: the journal undoes a torn transaction at open, and
        # verifying every audit chain is the second line `govkernel recover` draws after it.
        self.unclean_shutdown: str | None = None
        # On-disk embedded stores journal each commit so that a transaction torn at the tail
        # of the engine's log is repaired on the next open (see compiler.repair).
        self.journaled = config.path is not None
        # How this open repaired a torn last transaction, if there was one.
        self.torn_repair: compiler.Repair | None = None
        # Where opening moved the log's newest segment, cut inside its header by a crash.
        self.segment_set_aside: Path | None = None
        # The schema version this open moved the store up from, when it did.
        self.upgraded_from: int | None = None
        # Set as it closes: why the log's seal could not be kept up, if it could not.
        self.seal_unwritten: str | None = None
        # The store's directory, when every user may write to it (made so by an older
        # govkernel under a permissive umask, or by hand): they could swap its log and seal.
        self.exposed: Path | None = None
        self._log_lost: str | None = None  # kept from the seal as it closes
        self._lock = threading.Lock()
        self._pid = os.getpid()  # a forked child may not use it (see _not_forked)
        self._file_lock: StoreLock | None = None
        self._seal: LogSeal | None = None
        self._db: Any = None
        # A server connection that failed a request (a timeout, a server gone): a reply
        # arriving late would be taken for the next request's, so the next one dials anew.
        self._broken = False
        # When the server last failed a request or a dial, and why: requests that waited
        # for the lock meanwhile fail with it at once, rather than each waiting its own
        # timeout in turn (a service's threads held its shutdown for minutes).
        self._failed: tuple[float, str] | None = None
        self._immutable: OrderedDict[tuple[str, str], tuple[Document, int]] = OrderedDict()
        self._cache_chars = 0
        self._cache_lock = threading.Lock()
        # Which store this is, whatever path or server reaches it (a backup keeps it).
        self.store_id: str | None = None
        self._open()

    # -- connection ----------------------------------------------------------------------------

    def _open(self) -> None:
        cfg = self.config
        url = cfg.url
        if cfg.scheme in EMBEDDED:
            _engine_here()
        if cfg.path is not None:
            path = store_directory(cfg.path)
            if os.path.lexists(path / PARTIAL_COPY):
                raise StorageUnavailable(
                    f"{path} is the partial copy of a backup that did not finish, not a store:"
                    " remove it, and back up again"
                )
            # A store found cut is refused until someone removes its seal, whatever is left
            # of its files (removed under a running command, say): never opened as new.
            _removed_under_its_holder(path)
            earlier = LogSeal(path)
            if earlier.damaged is not None:
                earlier.check()
            _lost_log(path, earlier)
            _log_not_files(path)
            # The engine keeps its log in `clog`: a directory without one holds no store, and
            # opening it would write one there. (Its manifest it rebuilds from the log.)
            try:
                nothing_there = not (path / "clog").is_dir() or (
                    _holds_nothing(path) and not os.path.lexists(path / LogSeal.NAME)
                )
            except OSError as exc:  # a directory this user may not read, say
                where = f" ({exc.filename})" if exc.filename else ""
                raise StorageUnavailable(
                    f"cannot use store {path}: {exc.strerror or exc}{where}"
                ) from None
            # Only a store to be made: one already there opens wherever it lies.
            enclosing = _enclosing_store(path) if nothing_there else None
            if enclosing is not None:
                raise StorageUnavailable(
                    f"cannot make a store at {path}: it lies inside the store at {enclosing},"
                    " whose own files it would break; name that store, or a directory outside"
                    " it"
                )
            if not cfg.create and nothing_there:
                blocked = _file_in_the_way(path)
                if blocked is not None:  # the reason, as a command that would make it says
                    raise StorageUnavailable(
                        f"cannot use store {path}: {blocked} is a file, not a directory"
                    )
                raise StorageUnavailable(f"no store at {path}: nothing has run there yet")
            url = f"{cfg.scheme}://{path}"
            self._file_lock = StoreLock(path)
            self._file_lock.acquire()
            with contextlib.suppress(OSError):
                if os.stat(path).st_mode & stat.S_IWOTH:
                    self.exposed = path
            try:
                self._seal = LogSeal(path, on_removed=self._file_lock.mark_removed)
            except StorageUnavailable:
                self.close()
                raise
            unsealed = self._seal.closed is None and self._seal.damaged is None
            try:
                if unsealed and _holds_nothing(path):
                    # A first open stopped before the engine wrote a record (or before its
                    # log existed): nothing was ever stored, and what the engine had begun (a
                    # manifest, a segment without its header) would fail every later open. A
                    # sealed store held records once: damaged like that, it is the engine's
                    # to refuse, not ours to start over.
                    for begun in ("clog", "manifest"):
                        if (path / begun).is_dir():
                            shutil.rmtree(path / begun)
            except OSError as exc:
                self.close()
                raise StorageUnavailable(
                    f"cannot use store {path}: {exc.strerror or exc}"
                ) from None
            if not os.path.lexists(path / "clog"):
                self._seal.forget()  # removed to start over: whatever the lock file says
            else:
                self._seal.at_least(self._file_lock.closed)  # closed last by one of those
                try:
                    self.segment_set_aside = _set_aside_torn_segment(path)
                except OSError as exc:
                    self.close()
                    raise StorageUnavailable(
                        f"cannot use store {path}: {exc.strerror or exc}"
                    ) from None
                damaged = _damaged_segment(path / "clog")
                if damaged is not None:
                    self.close()
                    raise StorageUnavailable(
                        f"the store's log at {path / 'clog'} is damaged: the header of its"
                        f" segment {damaged} does not read back (the engine would stop on"
                        " it, or open the store with its records unreadable); restore the"
                        " store from a backup"
                    )
            if self._file_lock.damaged is not None:  # as govkernel 0c8cbf5..b006a62 kept it
                self._seal.mark_damaged(*self._file_lock.damaged)
            self.unclean_shutdown = self._file_lock.crashed_holder
            given = os.environ.get("SURREAL_SYNC_DATA")
            if given is not None and not given.strip():
                given = None  # set empty (`SURREAL_SYNC_DATA=$UNSET`): as if not set at all
            if given is not None and given.strip().lower() not in _YES | _NO:
                # The engine reads anything but exactly `true` as false: a typo would turn
                # fsync off without a word.
                self.close()
                raise StorageUnavailable(
                    f"SURREAL_SYNC_DATA is {given[:40]!r}: set it to true (fsync every"
                    " commit, what govkernel does without it) or false (no fsync)"
                )
            if cfg.sync_data and (given is None or given.strip().lower() in _YES):
                # `TRUE`, ` true`, `1` or `yes` would read as false to the engine, which takes
                # exactly `true`: what was meant is set.
                os.environ["SURREAL_SYNC_DATA"] = "true"
            if not _ENGINE_SYNC:
                _ENGINE_SYNC.append(_env_syncs())
            elif cfg.sync_data and _env_syncs() and not _ENGINE_SYNC[0]:
                self.close()
                raise StorageUnavailable(
                    f"store {path} would not fsync its commits: this process opened its first"
                    " surrealkv:// store without SURREAL_SYNC_DATA=true, and the engine keeps"
                    " what it read then; open this one in another process"
                )
        if cfg.scheme in EMBEDDED:
            short = _descriptors_short(cfg.path)
            if short is not None:
                self.close()
                raise StorageUnavailable(short)
        try:
            self._connect(url)
            if self._seal is not None:
                self._seal.check()
            # Repair a torn transaction first, under the schema it was written for: a
            # migration then moves its data like any other's.
            if self.journaled:
                self._repair_torn()
                grew = self._seal is not None and self._seal.grew
                if self.unclean_shutdown or self.torn_repair or grew:
                    self._settle_log(url)
            self._apply_schema()
            self.store_id = self._identify()
            self._log_opening()
        except BaseException as exc:
            if self._seal is not None:
                # An open that failed may have left its own writes torn (an undo the disk
                # had no room for): the log is not known whole, and the last seal stands.
                self._seal.suspend()
            self.close()  # stopped while opening (Ctrl-C) too: closed all the same
            if isinstance(exc, PortError) or not isinstance(exc, Exception):
                raise
            # Never echo a server URL's userinfo or the password: name the scheme and the
            # cause. An embedded engine has no credentials, and its message is the diagnosis
            # (a damaged log file, say).
            cause = _brief(exc) if cfg.scheme in EMBEDDED else _remote_cause(exc, cfg)
            raise StorageUnavailable(
                f"cannot open SurrealDB store ({cfg.scheme}://): {cause}"
                + _engine_files_hint(cfg.path, str(exc))
            ) from None

    def _log_opening(self) -> None:
        """What this open found, for a service's log: the CLI says it on stderr; a service
        that never reads these attributes would otherwise not hear of it."""
        where = self.config.where
        if self.unclean_shutdown:
            _log.warning(
                "store %s: the process holding it (pid %s) died with it open; its audit"
                " chains are to be verified (app.check_after_crash(), or govkernel recover)",
                where,
                self.unclean_shutdown,
            )
        if self.torn_repair is not None:
            _log.warning(
                "store %s: its last transaction was cut short; %s (%d writes)",
                where,
                self.torn_repair.action,
                self.torn_repair.writes,
            )
        if self.segment_set_aside is not None:
            _log.warning(
                "store %s: a torn log segment was set aside as %s", where, self.segment_set_aside
            )
        if self.upgraded_from is not None:
            _log.warning(
                "store %s: upgraded from schema %d to %d; older govkernels refuse it now",
                where,
                self.upgraded_from,
                schema.SCHEMA_VERSION,
            )

    def _connect(self, url: str) -> None:
        cfg = self.config
        if cfg.scheme in EMBEDDED:  # remote connections have no connect(): they dial lazily
            db: Any = Surreal(url)
            db.connect()
            _EMBEDDED_OPEN.add(self)
        else:
            # The SDK dials the URL with `/rpc` put on its end: `ws://host:8000/` went to
            # `//rpc`, which no server serves.
            db = Surreal(url.rstrip("/"))
            bound_waits(db, cfg.reply_timeout)
        if cfg.username is not None:
            self._sign_in(db)
        db.use(cfg.namespace, cfg.database)
        self._db = Wire(db)

    def _sign_in(self, db: Any) -> None:
        """As a root user, else as a user of the store's database, else of its namespace. A
        service's user is best defined on its own database, with no rights beyond it; signed
        in as root only, such a user was refused as if its password were wrong."""
        cfg = self.config
        levels: tuple[dict[str, str], ...] = (
            {},
            {"namespace": cfg.namespace, "database": cfg.database},
            {"namespace": cfg.namespace},
        )
        for n, level in enumerate(levels, 1):
            try:
                db.signin(level | {"username": cfg.username, "password": cfg.password or ""})
                return
            except Exception as exc:
                if n == len(levels) or type(exc).__name__ != "NotAllowedError":
                    raise

    def _settle_log(self, url: str) -> None:
        """Make sure what is written from now on stays written, after a crash.

        At some cuts the engine opens a log whose last record is torn without noticing,
        and appends after the torn bytes; the next open finds them and cuts the log back
        there, with every commit made since (tests/workflow/test_torn_log.py). So a store
        whose previous holder died gets a probe write and is reopened: a probe that
        survives proves the log whole; one that is gone means the engine has just cut the
        damage away, and the repair is done again on what is left.
        """
        probe = RecordID(schema.COUNTER_TABLE, "probe")
        for _ in range(3):
            nonce = os.urandom(8).hex()
            (row,) = self._query("UPSERT $p SET nonce = $n RETURN NONE", {"p": probe, "n": nonce})
            if row.get("status") != "OK":
                # The probe refused as it was written (a file size limit, a full disk): not
                # a log that lost it, which a backup would be restored for.
                cause = str(row.get("result"))
                raise StorageUnavailable(
                    f"the store could not be written as it opened: {_brief(cause)}"
                    + (_machine_hint(cause) or "")
                )
            self._db.close()
            self._connect(url)
            if self.select_rows("SELECT VALUE nonce FROM ONLY $p", {"p": probe}) == [nonce]:
                return
            self._repair_torn()
        raise StorageUnavailable(
            "the store's log keeps losing writes after a crash; restore it from a backup"
        )

    def _schema_state(self) -> tuple[Any, bool, dict[str, Any]]:
        """The stored schema version, whether an upgrade was begun and not finished (a power
        loss cut it short), and the schema record (empty when there is none)."""
        with self._naming(f"{_SCHEMA_RECORD} or {_UPGRADED_RECORD}"):
            rows = self._query(
                "SELECT * FROM ONLY $m; SELECT VALUE txn FROM ONLY $d;",
                {"m": _SCHEMA_RECORD, "d": _UPGRADED_RECORD},
            )
        found = rows[0]["result"] if isinstance(rows[0]["result"], dict) else {}
        upgrade = found.get("upgrade")
        return found.get("version"), upgrade is not None and upgrade != rows[1]["result"], found

    def _apply_schema(self) -> None:
        current, cut_short, found = self._schema_state()
        if current == schema.SCHEMA_VERSION and not cut_short:
            return
        if cut_short:  # an upgrade a power loss cut short: done again, from where it began
            current = found.get("upgrade_from")
        if current is None and self._query("SELECT VALUE id FROM execution LIMIT 1", {})[0].get(
            "result"
        ):
            # Executions and no schema record: not a new store, but its record removed in
            # storage. Which version its data is in is unknown: nothing is applied over it.
            raise StorageUnavailable(
                f"the store at {self.config.where} holds executions but no schema record"
                f" ({schema.META_TABLE}:schema): changed in storage; restore it from a backup"
            )
        if current is None and not self.config.create:
            cfg = self.config
            where = cfg.where
            raise StorageUnavailable(
                f"no store in namespace {cfg.namespace!r}, database {cfg.database!r} at"
                f" {where}: nothing has run there yet"
            )
        if not self.config.upgrade and isinstance(current, int) and current < schema.SCHEMA_VERSION:
            raise StorageUnavailable(
                f"{NOT_UPGRADED}: schema version {current}, this govkernel's is"
                f" {schema.SCHEMA_VERSION} (refused rather than upgraded: a govkernel older"
                " than this one no longer opens a store this one upgraded)"
            )
        if isinstance(current, int) and current > schema.SCHEMA_VERSION:
            raise StorageUnavailable(
                f"store schema version {current} is newer than this govkernel"
                f" ({schema.SCHEMA_VERSION}); upgrade govkernel (a store is never moved back"
                " down: to go back, restore a backup taken before the upgrade)"
            )
        found_indexes = self._indexes()
        again = found.get("building") if cut_short else []
        if not isinstance(again, list) or not all(isinstance(n, str) for n in again):
            # Cut short by a govkernel that rebuilt every index (or edited by hand): which
            # it had reached is not known.
            again = list(schema.indexes())
        build = schema.stale(found_indexes, again)
        text = ";\n".join(schema.statements(build, schema.retired(found_indexes)))
        # The new version is written first, marked unfinished until the last statement: a
        # log cut inside the transaction keeps a first part of it, which must not read as
        # the old schema (an older govkernel then wrote into tables already changed).
        # (Two records, each written once: a record upserted twice in one transaction reads
        # back, once the store is reopened, as its first upsert left it; a unit of work's
        # batch writes each record once too.)
        text = (
            "BEGIN TRANSACTION;\n"
            "UPSERT $m SET version = $v, upgrade = $txn, upgrade_from = $from, building = $b;\n"
            f"{text};\n"
            "UPSERT $d SET txn = $txn;\n"
            "COMMIT TRANSACTION;"
        )
        params = {
            "m": _SCHEMA_RECORD,
            "d": _UPGRADED_RECORD,
            "v": schema.SCHEMA_VERSION,
            "from": current,
            "b": build,
        }
        if isinstance(current, int):  # (not a new store's first schema)
            # Said before it starts: on a large store it takes a while (~30 s at 12k
            # executions).
            UPGRADE_LOG.warning(
                "upgrading the store from schema version %d to %d (a govkernel older than"
                " this one will no longer open it)",
                current,
                schema.SCHEMA_VERSION,
            )
        try:
            rows = self._query(text, params | {"txn": os.urandom(16).hex()})
        except BaseException as stop:
            # A stop held while the engine worked (Ctrl-C, SIGTERM) is raised once it has
            # answered: the upgrade may stand, which the stop's own message must not deny.
            if not isinstance(stop, Exception) and isinstance(current, int) and self._upgraded():
                stop.add_note(f"{UPGRADED_BEFORE_THE_STOP} {current}")
            raise
        bad = [r for r in rows if r.get("status") != "OK"]
        if bad:
            cause = str(bad[0].get("result"))
            raise StorageUnavailable(
                f"schema could not be applied: {cause}" + (_machine_hint(cause) or "")
            )
        if isinstance(current, int):
            self.upgraded_from = current

    def _upgraded(self) -> bool:
        with contextlib.suppress(Exception):
            version, cut_short, _ = self._schema_state()
            return version == schema.SCHEMA_VERSION and not cut_short
        return False

    def _indexes(self) -> dict[tuple[str, str], str]:
        """The indexes defined on govkernel's tables: (table, name) -> definition."""
        rows = self._query(";".join(f"INFO FOR TABLE {t}" for t in TABLES), {})
        found: dict[tuple[str, str], str] = {}
        for table, row in zip(TABLES, rows, strict=True):
            info = row.get("result") if row.get("status") == "OK" else None
            defined = info.get("indexes") if isinstance(info, dict) else None
            if not isinstance(defined, dict):
                raise StorageUnavailable(f"the store's indexes could not be read: {_brief(row)}")
            found.update(((table, name), str(text)) for name, text in defined.items())
        return found

    def _identify(self) -> str | None:
        """The store's id, minted by the first open that finds none (stores from before ids
        get one too). One statement, so two first opens of a server's database agree. None
        when it cannot be minted: a server user allowed only to read."""
        record = RecordID(schema.META_TABLE, "store")
        with self._naming(str(record)):
            rows = self.select_rows("SELECT VALUE store_id FROM ONLY $s", {"s": record})
        if rows and isinstance(rows[0], str):
            return rows[0]
        try:
            rows = self.select_rows(
                "UPSERT ONLY $s SET store_id = store_id ?? $id RETURN VALUE store_id",
                {"s": record, "id": str(uuid.uuid4())},
            )
        except StorageUnavailable:
            if self.config.scheme in EMBEDDED:
                raise
            return None
        return str(rows[0])

    @contextlib.contextmanager
    def _naming(self, records: str) -> Iterator[None]:
        """Reads of `records`, which every open reads: one that cannot be handed back (a NUL
        written into it) is named, or every command fails with nothing to go on."""
        try:
            yield
        except CorruptRecord:
            raise StorageUnavailable(
                f"{records}: {NUL_STORED}; restore the store from a backup"
            ) from None

    def _repair_torn(self) -> None:
        """Undo the last transaction if the engine kept only part of it."""
        with self._naming(f"{compiler.EVENTS_COUNTER} or {compiler.COMMITTED_MARKER}"):
            rows = self._query(
                "SELECT * FROM ONLY $ctr; SELECT VALUE txn FROM ONLY $done;",
                {"ctr": compiler.EVENTS_COUNTER, "done": compiler.COMMITTED_MARKER},
            )
        counter, done = rows[0].get("result"), rows[1].get("result")
        if not isinstance(counter, dict):
            return
        journal = counter.get("journal")
        if not isinstance(journal, dict) or journal.get("txn") == done:
            return
        n = counter.get("n") or 0
        problem = compiler.journal_problem(journal)
        if problem is None and (not isinstance(n, int) or isinstance(n, bool)):
            problem = "the counter's `n` beside it is not a count"
        if problem is not None:
            raise StorageUnavailable(
                f"the crash journal in {compiler.EVENTS_COUNTER} is not one govkernel writes"
                f" ({problem}: edited in storage), so whether the last transaction was torn"
                " cannot be told, nor undone: restore the store from a backup"
            )
        repair = compiler.repair(journal, n)
        rows = self._query(repair.compiled.text, repair.compiled.params)
        failed = [r for r in rows if r.get("status") != "OK"]
        if failed:
            raise StorageUnavailable(
                "the last transaction was torn (by a crash, or by a disk with no room left)"
                f" and could not be undone: {_brief(failed[0].get('result'))}"
            )
        self.torn_repair = repair

    def backup(self, destination: str | os.PathLike[str], progress: Progress | None = None) -> int:
        """Copy this `surrealkv://` store, open, into `destination` (a new directory):
        its requests wait while it copies, so the copy is the store as of one moment. It opens
        as a store closed cleanly (its seal says how much of its log is whole), unless this
        one is not known whole: a crash not yet checked, or a commit that failed in the
        engine since it opened; the copy then carries that crash, for its next open to check.
        Returns the bytes copied. `progress` is shown the chunks as they are copied."""
        cfg = self.config
        if cfg.scheme not in ("surrealkv", "file") or cfg.path is None:
            raise StorageUnavailable(
                f"a backup copies a surrealkv:// store's directory; a {cfg.scheme}:// store is"
                + (" held in memory" if cfg.scheme in EMBEDDED else " the server's to back up")
            )
        given = os.fspath(destination) if isinstance(destination, str | os.PathLike) else None
        if not isinstance(given, str):
            what = type(destination if given is None else given).__name__
            raise InvalidInput("destination", f"give a directory's path as text, not {what}")
        if "\x00" in given:
            raise InvalidInput("destination", "a path cannot hold a NUL character")
        if not given.strip():  # not the current directory, nor one named " "
            raise InvalidInput("destination", "must not be empty")
        if given != given.strip():  # a store's path may not: the copy could not be opened
            raise InvalidInput("destination", f"{given!r} begins or ends with white space")
        source, target = Path(cfg.path), Path(destination).absolute()
        if os.path.lexists(target):
            raise InvalidInput("destination", f"{target} exists: a backup goes into a new one")
        if target.resolve().is_relative_to(source.resolve()):
            raise InvalidInput("destination", f"{target} is inside the store it would back up")
        lock = target.with_name(target.name + ".lock")
        if os.path.lexists(lock):  # a copy would be taken for a store its lock file was of
            raise InvalidInput("destination", _locked(lock, target))
        if not target.parent.is_dir():  # as for any file written: made by no typo of ours
            raise InvalidInput("destination", f"no directory {target.parent} to put it in")
        with self._lock:
            self._usable()
            whole = self._seal is not None and self._seal.checked and not self.unclean_shutdown
            # The copy's lock file, made first and only if none is there (it claims DEST
            # against another backup racing for it): empty for a copy closed cleanly, else
            # the crash it carries, under the pid of the process that died if one did.
            crash = "" if whole else f"unclean {self.unclean_shutdown or os.getpid()}"
            try:
                fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            except FileExistsError:
                raise InvalidInput("destination", _locked(lock, target)) from None
            with os.fdopen(fd, "w") as made:
                made.write(crash)
                made.flush()
                os.fsync(made.fileno())
            if self._seal is not None:
                self._seal.seal_now()  # the copy's seal: its log is whole to there
            files = sorted(p for p in source.rglob("*") if p.is_file())
            chunks = [
                f"{f.relative_to(source)}@{at}"
                for f in files
                for at in range(0, max(f.stat().st_size, 1), BACKUP_CHUNK)
            ]
            # A directory of its own, never one found there (removed if the copy fails).
            try:
                partial = Path(tempfile.mkdtemp(prefix=f".{target.name[:200]}.", dir=target.parent))
            except BaseException:
                lock.unlink()
                raise
            copied = 0
            try:
                # Marked partial until the copy is whole, so that what a killed backup
                # leaves is never opened as a store (it opened as an older state, its
                # torn log cut, and verified).
                (partial / PARTIAL_COPY).write_text(
                    f"a backup of {source} that has not finished: not a store\n"
                )
                _fsync(partial / PARTIAL_COPY)
                _fsync_directory(partial)
                with (progress or quietly)(chunks) as shown:
                    for chunk in shown:
                        name, at = chunk.rsplit("@", 1)
                        copied += _copy_chunk(source / name, partial / name, int(at))
                # As private as they were, and writable by their owner alone (a store made
                # under a permissive umask by an older govkernel may be world-writable).
                for d in sorted({source, *(f.parent for f in files)}):
                    _copy_mode(d, partial / d.relative_to(source), STORE_DIRECTORY_MODE)
                for f in files:
                    _copy_mode(f, partial / f.relative_to(source), STORE_FILE_MODE)
                    _fsync(partial / f.relative_to(source))
                for d in {partial, *(partial / f.relative_to(source).parent for f in files)}:
                    _fsync_directory(d)
                (partial / PARTIAL_COPY).unlink()
                _fsync_directory(partial)
                if os.path.lexists(target):  # made meanwhile, by another hand
                    raise InvalidInput(
                        "destination", f"{target} exists: a backup goes into a new one"
                    )
                os.rename(partial, target)
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                with contextlib.suppress(OSError):
                    lock.unlink()  # this backup's own: made exclusively above
                raise
            _fsync_directory(target.parent)
        return copied

    def check_log(self) -> None:
        """Raise StorageUnavailable if the store's log, looked at now, was cut or removed
        since it opened: before a result is reported as kept (commits look at most once a
        second)."""
        lost = None if self._seal is None else self._seal.look()
        if lost is not None:
            raise StorageUnavailable(lost)

    @property
    def log_lost(self) -> str | None:
        """Why what was written may be lost, once the log was found cut or removed while
        the store was open (its files removed under it): the store then takes no more."""
        return self._log_lost if self._seal is None else self._seal.lost

    def acknowledge_unclean_shutdown(self) -> None:
        """Record that the store was checked after a crash (every audit chain verified)."""
        self.unclean_shutdown = None
        if self._file_lock is not None:
            self._file_lock.acknowledge_crash()

    def close(self) -> None:
        if self._pid != os.getpid():
            # A forked child's copy: the engine, the lock and the seal are the parent's, and
            # stay as they are for it (its lock file rewritten here would read as a crash).
            self._db = self._seal = self._file_lock = None  # (the engine's handle is kept)
            return
        with self._lock:
            try:
                if self._db is not None:
                    with contextlib.suppress(Exception):
                        self._db.close()
                    self._db = None
                    if self._seal is not None:
                        self._seal.close()
            finally:  # even when stopped meanwhile: a lock left held reads as a crash
                if self._seal is not None:
                    self.seal_unwritten = self._seal.unwritten
                    self._log_lost = self._seal.lost
                self._seal = None
                if self._file_lock is not None:
                    self._file_lock.release()
                    self._file_lock = None

    def __enter__(self) -> SurrealStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def unit_of_work(self) -> SurrealUnitOfWork:
        if self._db is None:  # as the in-memory store: a closed store hands out no work
            raise StorageUnavailable("store is closed")
        return SurrealUnitOfWork(self)

    # -- raw access ----------------------------------------------------------------------------

    def _query(self, text: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """A read or schema query: failures mean nothing was changed by us."""
        arrived = time.monotonic()
        with self._lock:
            self._usable(arrived)
            try:
                self.round_trips += 1
                response = self._db.query_raw(text, params)
            except Exception as exc:
                if _NUL_IN_ANSWER in str(exc):
                    raise CorruptRecord(NUL_STORED) from None
                cause = self._failing(exc)
                raise StorageUnavailable(f"SurrealDB query failed: {cause}") from None
            except BaseException:  # stopped waiting (Ctrl-C): its reply may come, late
                self._broken = self.config.scheme in REMOTE
                raise
        if "error" in response:
            raise StorageUnavailable(f"SurrealDB rejected a query: {_brief(response['error'])}")
        rows: list[dict[str, Any]] = response["result"]
        return rows

    def _failing(self, exc: Exception) -> str:
        """A request failed as it was sent or answered: why, and the connection dialled
        anew for the next (a server's)."""
        cause = self._cause(exc)
        if self.config.scheme in REMOTE:
            self._broken = True
            # Only the connection's own failure (no answer, a connection lost) is met by
            # the requests queued behind: a value this client could not send is this one's.
            lost = type(exc).__name__.startswith("ConnectionClosed")
            if lost or isinstance(exc, OSError):  # (TimeoutError is one)
                self._failed = (time.monotonic(), cause)
        return cause

    def _usable(self, arrived: float | None = None) -> None:
        """Open, on a connection no earlier request left in doubt: a server's is dialled
        again after one failed (nothing of this request was sent on the old one), so that a
        service outlives a server restart, and an unknown outcome can be read back. A
        request that `arrived` before the server last failed one fails with it."""
        if self._db is None:
            raise StorageUnavailable("store is closed")
        if self._pid != os.getpid():
            raise StorageUnavailable(
                _forked(self._pid)
                if self.exclusive
                else f"this store's connection was opened by process {self._pid}, of which"
                " this process is a fork: a connection does not survive fork(); open a store"
                " of its own here"
            )
        if self._seal is not None and self._seal.lost is not None:
            raise StorageUnavailable(self._seal.lost)
        if not self._broken:
            return
        failed = self._failed
        if failed is not None and arrived is not None and arrived <= failed[0]:
            raise StorageUnavailable(
                f"cannot reach SurrealDB: {failed[1]} (met by a request made while this one"
                " waited, which was not sent)"
            )
        with contextlib.suppress(Exception):
            self._db.close()
        try:
            self._connect(self.config.url)
        except Exception as exc:
            cause = _remote_cause(exc, self.config)
            self._failed = (time.monotonic(), cause)
            raise StorageUnavailable(f"cannot reach SurrealDB again: {cause}") from None
        self._broken, self._failed = False, None

    def _cause(self, exc: Exception) -> str:
        if self.config.scheme in EMBEDDED:
            return _brief(exc)
        if type(exc).__name__.startswith("ConnectionClosed"):  # websockets' own words
            return f"the connection to {self.config.server} was lost ({_brief(exc)})"
        return _remote_cause(exc, self.config)

    def select_rows(self, text: str, params: dict[str, Any]) -> list[Any]:
        rows = self._query(text, params)
        if rows[0].get("status") != "OK":
            raise StorageUnavailable(f"SurrealDB query failed: {_brief(rows[0].get('result'))}")
        result = rows[0]["result"]
        return result if isinstance(result, list) else [result]

    def apply(self, batch: Batch) -> CommitReceipt:
        compiled = compiler.compile_batch(batch, journal=self.journaled)
        arrived = time.monotonic()
        with self._lock:
            self._usable(arrived)
            try:
                self.round_trips += 1
                response = self._db.query_raw(compiled.text, compiled.params)
            except Exception as exc:
                cause = self._failing(exc)
                if any(m in str(exc) for m in compiler.UNRUN):
                    # Refused before anything ran: a definite failure, not an unknown outcome.
                    raise InvalidRecord(f"query rejected: {_brief(exc)}") from None
                # The engine may have committed before the failure surfaced (seen with
                # values it cannot encode back): only a re-read can tell.
                if self._seal is not None:
                    self._seal.suspend()
                raise CommitOutcomeUnknown(f"commit outcome unknown: {cause}") from None
            except BaseException:  # stopped waiting (Ctrl-C): its reply may come, late
                self._broken = self.config.scheme in REMOTE
                raise
            rows: list[dict[str, Any]] = []
            error: PortError | None
            try:
                rows = compiler.rows_of(compiled, response)
                error = compiler.failure(compiled, batch, rows)
            except CommitOutcomeUnknown as unknown:  # a reply that is not the results
                error = unknown
            if isinstance(error, CommitOutcomeUnknown) and self._seal is not None:
                self._seal.suspend()
            if error is None and self._seal is not None:
                # Alone on the log while the lock is held, and this commit is fsynced whole.
                with contextlib.suppress(OSError):
                    self._seal.keep_up()
        if error is not None:
            raise error
        for w in batch.writes:
            if w.op is Op.CREATE and w.document is not None:
                self._cache(w.table, w.key, w.document)
        return CommitReceipt(compiler.event_positions(compiled, rows))

    # -- reads -----------------------------------------------------------------------------------

    def load(self, table: str, key: str) -> Document | None:
        self._still_open()
        cached = self._cached(table, key)
        if cached is not None:
            return cached
        try:
            rows = self.select_rows("SELECT * FROM ONLY $r", {"r": RecordID(table, key)})
        except CorruptRecord as exc:
            raise CorruptRecord(f"{table} {key!r}: {exc}") from None
        doc = _strip(rows[0]) if rows and rows[0] else None
        if doc is not None:
            self._cache(table, key, doc)
        return doc

    def load_many(self, table: str, keys: list[str], *, fresh: bool = False) -> dict[str, Document]:
        self._still_open()
        found: dict[str, Document] = {}
        missing = []
        for key in keys:
            cached = None if fresh else self._cached(table, key)
            if cached is None:
                missing.append(key)
            else:
                found[key] = cached
        if missing:
            ids = [RecordID(table, key) for key in missing]
            try:
                rows = [
                    (_key(row), _strip(row))
                    for row in self.select_rows("SELECT * FROM $ids", {"ids": ids})
                ]
            except CorruptRecord:  # as a listing does: see _one_by_one
                rows = self._one_by_one("SELECT * FROM $ids", {"ids": ids})
            for key, doc in rows:
                if doc:
                    self._cache(table, key, doc)
                found[key] = doc
        return found

    def _still_open(self) -> None:
        """A closed store takes no more work, reads from its cache included."""
        if self._db is None:
            raise StorageUnavailable("store is closed")

    # Immutable records (sources, analyses, evidence, decisions) never change once committed,
    # so a cache of them saves a round trip on every later step that reads them. It is
    # bounded by characters held, since one source may carry up to a million. It keeps the
    # documents it is given (a committed write's, or a row just read: nobody else holds
    # them) and hands out copies.
    def _cached(self, table: str, key: str) -> Document | None:
        with self._cache_lock:
            entry = self._immutable.get((table, key))
        return _copy(entry[0]) if entry is not None else None

    def _cache(self, table: str, key: str, doc: Document) -> None:
        if not TABLES[table].immutable:
            return
        size = _size(doc)
        if size > IMMUTABLE_CACHE_CHARS // 8:
            return
        with self._cache_lock:
            if (table, key) in self._immutable:
                return
            while self._immutable and self._cache_chars + size > IMMUTABLE_CACHE_CHARS:
                _, (_, evicted) = self._immutable.popitem(last=False)
                self._cache_chars -= evicted
            self._immutable[(table, key)] = (doc, size)
            self._cache_chars += size

    def query(
        self,
        table: str,
        where: Mapping[str, Any],
        order_by: str | None,
        descending: bool,
        limit: int | None,
    ) -> list[tuple[str, Document]]:
        if table not in TABLES:
            raise InvalidRecord(f"unknown table {table!r}")
        found = self._by_natural_key(table, where)
        if found is not None:
            return found[:limit]
        text, params, exact = _selection(table, where)
        by_instant = order_by is not None and fields.FIELDS[table][order_by].kind in _INSTANTS
        ranged = any(isinstance(v, Range) for v in where.values())
        if exact or (limit is not None and (ranged or (by_instant and not where))):
            # SurrealDB core 2.3.10 also applies the LIMIT of a range scan on a one-field
            # index before sorting, so "newest first" came back as the oldest of the range;
            # and a whole table cut in the order of an instant's index comes in its order
            # (wrong within a second): what is found is read whole, then sorted and cut.
            text = _exactly(text, exact)
        direction = "DESC" if descending else "ASC"
        # Ties broken by key, as the in-memory adapter breaks them: listings agree.
        order = f"{compiler.ident(order_by)} {direction}, id" if order_by else "id"
        text += f" ORDER BY {order} {direction}"
        if limit is not None:
            text += " LIMIT $limit"
            params["limit"] = limit
        try:
            return [(_key(row), _strip(row)) for row in self.select_rows(text, params)]
        except CorruptRecord:  # a record with a NUL in it: the others are listed still
            return self._one_by_one(text, params)

    def count(self, table: str, where: Mapping[str, Any]) -> int:
        """How many records `query` would list: counted in the engine, none sent back."""
        if table not in TABLES:
            raise InvalidRecord(f"unknown table {table!r}")
        text, params, exact = _selection(table, where)
        if exact:
            text = _exactly(text, exact)
        # (Counted over the listing, not with the WHERE beside count(): SurrealDB core 2.3.10
        # counts what an index finds there without the rest of the filter.)
        rows = self.select_rows(f"SELECT count() AS n FROM ({text}) GROUP ALL", params)
        return int(rows[0]["n"]) if rows and rows[0] else 0

    def _one_by_one(self, text: str, params: dict[str, Any]) -> list[tuple[str, Document]]:
        """The listing `text` finds, each record read alone: one the engine cannot hand back
        is listed with no fields, which no reader takes for a record (each says it is
        damaged), instead of the whole listing failing."""
        found = []
        for record in self.select_rows(f"SELECT VALUE id FROM ({text})", params):
            try:
                rows = self.select_rows("SELECT * FROM ONLY $r", {"r": record})
            except CorruptRecord:
                rows = [{"id": record}]
            if rows and rows[0]:
                found.append((_key(rows[0]), {} if len(rows[0]) == 1 else _strip(rows[0])))
        return found

    def _by_natural_key(
        self, table: str, where: Mapping[str, Any]
    ) -> list[tuple[str, Document]] | None:
        """The answer to an equality filter on exactly a natural key, read through its key
        record (schema.KEYED); None when the filter is no such thing, or the key record does
        not hold its record's values (a record edited in storage), for the index to answer."""
        fields = tuple(sorted(where))
        keyed = next(
            (k for k in schema.KEYED.get(table, ()) if tuple(sorted(k[1])) == fields), None
        )
        if keyed is None or any(isinstance(v, AnyOf | Range) or v is None for v in where.values()):
            return None
        index, names = keyed
        key = compiler.key_record(index, names, where)
        try:
            rows = self.select_rows("SELECT * FROM ONLY $k.ref", {"k": key})
        except CorruptRecord:  # named, as a read by its id names it
            refs = self.select_rows("SELECT VALUE ref FROM ONLY $k", {"k": key})
            if not refs or not isinstance(refs[0], RecordID):
                raise
            raise CorruptRecord(f"{table} {str(refs[0].id)!r}: {NUL_STORED}") from None
        if not rows or rows[0] is None:
            return []
        doc = _strip(rows[0])
        if any(doc.get(name) != value for name, value in where.items()):
            return None
        return [(_key(rows[0]), doc)]

    def events_after(self, position: int, limit: int) -> list[Document]:
        # Positions have no gaps, so a bounded range on the unique index is exact and cheap.
        # Inclusive bounds: the engine's range scan of a unique index with an exclusive lower
        # bound below its first key skips the 501st entry (SurrealDB core 2.3.10).
        rows = self.select_rows(
            f"SELECT * FROM {EVENT_TABLE} WHERE position >= $p AND position <= $q"
            " ORDER BY position",
            {"p": position + 1, "q": position + limit},
        )
        return [_strip(row) for row in rows]

    def events_head(self) -> int:
        # The counter moves in the same transaction as the events it numbers.
        rows = self.select_rows("SELECT VALUE n FROM ONLY $c", {"c": compiler.EVENTS_COUNTER})
        return int(rows[0]) if rows and isinstance(rows[0], int) else 0

    def dump(self, table: str) -> dict[str, Document]:
        """Every stored record of a table, read directly: the contract suite's back door."""
        rows = self.select_rows(f"SELECT * FROM {compiler.ident(table)}", {})
        return {_key(row): _strip(row) for row in rows}


_UNIQUES = {table: spec.uniques for table, spec in TABLES.items()}
# The fields an index leads, table by table: what a scan can start from.
_LEADS = {
    table: {fields[0] for fields in (*spec.uniques, *spec.lookups)}
    for table, spec in TABLES.items()
}
_UNIQUE_FIELDS = {
    table: {name for fields in spec.uniques for name in fields}
    | ({"position"} if table == EVENT_TABLE else set())
    for table, spec in TABLES.items()
}


def _locked(lock: Path, target: Path) -> str:
    return (
        f"{lock} exists: a backup goes beside none (another backup into {target.name} is"
        f" under way, or one was stopped before it finished and left it, with its partial"
        f" copy .{target.name[:200]}.* beside it, or a backup made there was removed since"
        " and its lock file left: remove those to back up there)"
    )


def _selection(table: str, where: Mapping[str, Any]) -> tuple[str, dict[str, Any], list[str]]:
    """`SELECT * FROM table WHERE ...` for `where` as the engine's indexes answer it, its
    parameters, and the conditions to apply exactly to what it finds (`_exactly`)."""
    params: dict[str, Any] = {}
    clauses: list[str] = []
    exact: list[str] = []  # applied to what the index scan found
    if (
        table != "execution"  # whose lookups the tenant leads too: the planner takes them
        and isinstance(where.get("tenant"), str | AnyOf)
        and any(
            name in _LEADS[table] and not isinstance(value, Range)
            for name, value in where.items()
            if name != "tenant"
        )
    ):
        # SurrealDB core 2.3.10's planner takes a unique index the tenant leads (every one
        # of the tenant's records: all of them, in most stores) over an index the rest of
        # the filter leads: that one is scanned, and the tenant checked on what it finds.
        where = _checked_after("tenant", where, params, exact)
    if table == "execution" and "state" in where and isinstance(where.get("workflow_name"), str):
        # The planner scans the workflow's index for a filter on both: every execution of
        # the workflow, where the state's are the few a listing wants.
        where = _checked_after("workflow_name", where, params, exact)
    for n, (name, value) in enumerate(where.items()):
        field = compiler.ident(name)
        if isinstance(value, AnyOf):
            # SurrealDB core 2.3.10 answers `IN` on a field of a unique index the filter
            # does not cover whole from that index as if its values were whole keys,
            # finding nothing (on its leading field, or after an equality on that one):
            # there, what the other fields find is scanned.
            partly = any(name in u and not set(u) <= set(where) for u in _UNIQUES[table])
            clauses.append(f"$w{n} CONTAINS {field}" if partly else f"{field} IN $w{n}")
            params[f"w{n}"] = list(value.values)
        elif isinstance(value, Range):
            for bound, op, key, widened in (
                (value.above, ">", f"w{n}", -_SECOND),
                (value.below, "<", f"u{n}", _SECOND),
            ):
                if bound is None:
                    continue
                clauses.append(f"{field} {op} ${key}")
                params[key] = bound
                if isinstance(bound, datetime):
                    # SurrealDB core 2.3.10 orders datetimes within one second wrongly
                    # in an index (12:00:00 after 12:00:00.001, 12:00:00.1 after
                    # 12:00:00.15): the index is scanned a second wider, and the exact
                    # bound applied to what it finds.
                    params[key] = _plus(bound, widened)
                    exact.append(f"{field} {op} ${key}x")
                    params[f"{key}x"] = bound
            if value.above is None:
                clauses.append(f"{field} != NONE")  # NONE sorts below all: no range has it
        else:
            clauses.append(f"{field} = $w{n}")
            params[f"w{n}"] = value
    text = f"SELECT * FROM {compiler.ident(table)}"
    if any(isinstance(where[name], Range) for name in _UNIQUE_FIELDS[table] & set(where)):
        # SurrealDB core 2.3.10 scans ranges of a unique index's fields wrongly: past the
        # 500th record it leaves one out, and `>=` a value its leading field holds finds
        # nothing. The port's own reads never range over those; others scan the table.
        text += " WITH NOINDEX"
    if clauses:
        text += " WHERE " + " AND ".join(clauses)
    return text, params, exact


def _checked_after(
    name: str, where: Mapping[str, Any], params: dict[str, Any], exact: list[str]
) -> dict[str, Any]:
    """`where` without `name`, which goes to the conditions applied to what the scan finds."""
    value = where[name]
    several = isinstance(value, AnyOf)
    params[name] = list(value.values) if several else value
    exact.append(f"{name} IN ${name}" if several else f"{name} = ${name}")
    return {k: v for k, v in where.items() if k != name}


def _exactly(text: str, exact: list[str]) -> str:
    """What `text` finds, read whole, then filtered by the `exact` conditions."""
    return f"SELECT * FROM ({text})" + (" WHERE " + " AND ".join(exact) if exact else "")


def _plus(instant: datetime, delta: timedelta) -> datetime:
    # At the ends of time there is nothing a second further to scan for.
    try:
        return instant + delta
    except OverflowError:
        return instant


def _copy(doc: Document) -> Document:
    return {k: (list(v) if isinstance(v, list) else v) for k, v in doc.items()}


def _size(doc: Document) -> int:
    return sum(len(v) if isinstance(v, str) else 16 for v in doc.values())


def _key(row: dict[str, Any]) -> str:
    return str(row["id"].id)


def _strip(row: dict[str, Any]) -> Document:
    return {k: v for k, v in row.items() if k != "id"}


_SEGMENT = re.compile(r"^[0-9]{20}\.clog\Z")
_REPAIRING = re.compile(r"^[0-9]{20}\.repair\Z")
_REFUSED_BY_THE_MACHINE = (
    # A file size limit first: freeing space would not help there.
    ((errno.EFBIG,), compiler.FILE_SIZE_LIMIT),
    ((errno.ENOSPC, errno.EDQUOT), compiler.DISK_FULL),
    (
        (errno.EMFILE, errno.ENFILE),
        "the process may open no more files: raise its limit (ulimit -n)",
    ),
    (
        (errno.EACCES, errno.EPERM, errno.EROFS),
        "the store's files may not be written here: check their permissions and mount",
    ),
)


# What the embedded engine needs open besides its log's segments (its runtime's threads,
# pipes and files): with fewer left it aborts the process, a Rust panic no caller can catch.
ENGINE_DESCRIPTORS = 16


def _descriptors_short(directory: Path | None) -> str | None:
    """Why this process has too few file descriptors left to open the engine, or None."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        used = len(os.listdir("/proc/self/fd"))
    except OSError:  # no /proc to count them by: left to the engine
        return None
    try:
        segments = len(os.listdir(directory / "clog")) if directory is not None else 0
    except OSError:
        segments = 0
    needed = ENGINE_DESCRIPTORS + segments
    if soft == resource.RLIM_INFINITY or soft - used >= needed:
        return None
    return (
        f"this process may open {max(soft - used, 0)} more files (ulimit -n {soft}, {used}"
        f" open), and the embedded engine needs {needed}: raise the limit, or close files"
    )


def _machine_hint(cause: str) -> str | None:
    """What to do when the engine's words say the machine refused it (an `os error` code
    of a full disk, a limit, a permission), else None."""
    for codes, hint in _REFUSED_BY_THE_MACHINE:
        if any(f"(os error {code})" in cause for code in codes):
            return f"; {hint}, then open it again"
    return None


def _engine_files_hint(directory: Path | None, cause: str) -> str:
    """What to try when the engine cannot read its own files in a store's directory: a file
    in its log directory that is none of its segments, or a damaged manifest, which the
    engine rebuilds from the log when it is gone (the log itself is never to be removed)."""
    if directory is None or "Failed to create datastore" not in cause:
        return ""
    # What the machine refused is no damage: moving files aside would not help, and a log
    # the engine set aside to repair it (NAME.repair) is what the next open repairs from.
    refused = _machine_hint(cause)
    if refused is not None:
        return refused
    try:
        strays = sorted(
            p.name
            for p in (directory / "clog").iterdir()
            if not _SEGMENT.match(p.name) and not _REPAIRING.match(p.name)
        )
    except OSError:
        strays = []
    if strays:
        return (
            f"; {directory / 'clog' / strays[0]} is not one of the engine's log segments:"
            " move it out of the store's directory"
        )
    if "segment" in cause.lower():  # the log's own segments, not the manifest, are damaged
        return (
            f"; its log ({directory / 'clog'}) is damaged where the engine cannot repair it:"
            " restore the store from a backup"
        )
    return (
        f"; if its manifest is what is damaged, moving {directory / 'manifest'} aside lets"
        " the engine rebuild it from the log (never remove the log, clog)"
    )


# The process that started the embedded engine: its threads do not survive fork(), and a
# forked child's every call to it (its parent's store, or a store of its own) waited for good.
_engine_pid: int | None = None


# Stores on the embedded engine, open in this process.
_EMBEDDED_OPEN: weakref.WeakSet[SurrealStore] = weakref.WeakSet()


def _keep_inherited_engines() -> None:
    """In a forked child, the parent's engine handles are kept for good: dropping one joins
    the engine's threads, which do not exist here, and the child hung as it exited."""
    for store in list(_EMBEDDED_OPEN):
        handle = getattr(store._db, "_db", None)
        if handle is not None:
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(handle))


os.register_at_fork(after_in_child=_keep_inherited_engines)


def _engine_here() -> None:
    """Claim the embedded engine for this process, or refuse a forked child of one that
    started it."""
    global _engine_pid
    if _engine_pid is not None and _engine_pid != os.getpid():
        raise StorageUnavailable(_forked(_engine_pid))
    _engine_pid = os.getpid()


def _forked(parent: int) -> str:
    return (
        f"the embedded SurrealDB engine does not survive fork(): this process is a fork of"
        f" process {parent}, which had started it. Start worker processes with"
        " multiprocessing's 'spawn' or 'forkserver' method, or open embedded stores in the"
        " children only"
    )


# OpenSSL's verification codes: X509_V_ERR_HOSTNAME_MISMATCH, _IP_ADDRESS_MISMATCH, and
# X509_V_ERR_CERT_HAS_EXPIRED.
_NOT_THIS_HOST = (62, 64)
_EXPIRED = 10


def _remote_cause(exc: Exception, cfg: SurrealConfig) -> str:
    """Why a server could not be used, naming its host (never the URL's userinfo) and never
    repeating the server's own words, which may quote what it was sent."""
    where = cfg.server
    name = type(exc).__name__
    if name == "NotAllowedError":
        return (
            f"{where} refused the credentials (GOVKERNEL_SURREAL_USERNAME,"
            " GOVKERNEL_SURREAL_PASSWORD) as a root user, and as a user of namespace"
            f" {cfg.namespace!r} or of its database {cfg.database!r}"
        )
    if isinstance(exc, socket.gaierror):
        return f"host {urlsplit(cfg.url).hostname or '?'} not found"
    if isinstance(exc, ConnectionRefusedError):
        return f"{where} refused the connection"
    if isinstance(exc, TimeoutError):
        return f"{where} did not answer within {cfg.reply_timeout:g} s"
    if name in ("InvalidStatus", "InvalidHandshake", "InvalidURI"):
        return f"{where} is not a SurrealDB WebSocket endpoint ({name})"
    if name == "InvalidMessage":  # the handshake cut short: another service, or a restart
        return (
            f"{where} did not finish the WebSocket handshake (InvalidMessage): not a SurrealDB"
            " endpoint, or a server going down"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        if exc.verify_code in _NOT_THIS_HOST:
            return (
                f"{where}: its TLS certificate is for another name ({exc.verify_message}):"
                " connect by a name the certificate was issued for"
            )
        if exc.verify_code == _EXPIRED:
            return f"{where}: its TLS certificate has expired ({exc.verify_message})"
        return (
            f"{where}: its TLS certificate is not trusted here ({exc.verify_message}): name"
            " the authority that signed it in SSL_CERT_FILE"
        )
    if isinstance(exc, ssl.SSLError):
        return f"{where}: the TLS handshake failed ({name}): does it serve wss://, or only ws://?"
    if name.startswith("CBOR") or isinstance(exc, AttributeError | KeyError | TypeError):
        # The SDK reading a reply it does not understand.
        return f"{where} answered with what is not SurrealDB's protocol ({name})"
    return f"{where}: {name}"


def _brief(value: object) -> str:
    text = str(value)
    return text if len(text) <= 200 else text[:200] + "..."


class SurrealUnitOfWork(StoreUnitOfWork[SurrealStore]):
    """A unit of work on a SurrealDB store."""


# A backup copies in chunks of this many bytes: a progress bar moves as a log segment (up to
# 512 MiB) is copied.
BACKUP_CHUNK = 16 * 1024 * 1024


# At most these permissions for what govkernel makes of a store (the engine makes its own
# directories 0750): whatever the umask, never writable by others, who could swap the log
# and its seal together, or lock the owner out by rewriting the seal.
STORE_DIRECTORY_MODE = 0o750
STORE_FILE_MODE = 0o644


def _make_directories(path: Path) -> None:
    """`path` and any parent it lacks, each made at most STORE_DIRECTORY_MODE (the umask
    narrows it further); directories that exist are left as they are."""
    missing: list[Path] = []
    while not path.is_dir() and path != path.parent:
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(mode=STORE_DIRECTORY_MODE, exist_ok=True)


def _copy_mode(source: Path, target: Path, most: int) -> None:
    os.chmod(target, stat.S_IMODE(source.stat().st_mode) & most)


def _copy_chunk(source: Path, target: Path, at: int) -> int:
    _make_directories(target.parent)
    with source.open("rb") as given, target.open("r+b" if at else "wb") as copy:
        given.seek(at)
        data = given.read(BACKUP_CHUNK)
        copy.seek(at)
        copy.write(data)
    return len(data)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(path: Path) -> None:
    with contextlib.suppress(OSError):  # some file systems cannot: the files are synced
        _fsync(path)
