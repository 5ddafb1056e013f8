"""What a command writes where: stdout kept for the JSON alone under --json, one-line
errors on stderr, progress bars, and the --debug log."""

from __future__ import annotations

import codecs
import errno
import io
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import IO, TextIO, TypeVar, cast

import click

from composition import render


def write_out(text: str, *, err: bool) -> OSError | None:
    """Print a line; a stream that cannot be written (a reader that went away, `| head`; a
    full disk) is silenced, never the work: a run whose output nobody reads still runs to
    its end. The failure is returned, for the caller to judge."""
    stream = sys.stderr if err else json_stdout()
    try:
        if err or stream is None:  # (closed: click writes nothing)
            click.echo(text, err=err)
        else:
            _put(stream, text + "\n")
    except OSError as exc:
        _silence(stream)
        return exc
    return None


T = TypeVar("T")


def _put(stream: IO[str], text: str) -> None:
    """All of `text` on `stream`, or an OSError: a write the system took only part of (a
    disk filling up, a reader leaving mid-way) is no success, though Python's own streams
    can let it pass unsaid."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # no descriptor (a test's captured output): as given
        click.echo(text, nl=False)
        return
    stream.flush()
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        encoded = text.encode(encoding, getattr(stream, "errors", None) or "strict")
    except UnicodeEncodeError:  # a locale that cannot carry it (LC_ALL=C without UTF-8 mode)
        encoded = text.encode(encoding, "backslashreplace")
    data = memoryview(encoded)
    while data:
        written = os.write(fd, data)
        if not written:
            raise OSError(errno.ENOSPC, "no more of the output could be written")
        data = data[written:]


# Under --json, the command's own stdout, kept for the JSON alone while the descriptor every
# other writer uses (a workflow's `print`, a step's subprocess, the engine) is stderr's. (Not
# a pipe a thread empties: a step's subprocess left running would die of SIGPIPE when the
# thread ends with the command, and lines would come out of order.)
_reserved: IO[str] | None = None
_no_reserving = False  # help and the version: click prints them through sys.stdout


def json_stdout() -> IO[str]:
    """Where the JSON goes: the command's own stdout, kept for it under --json."""
    return _reserved or sys.stdout


def keep_stdout_for_click(keep: bool) -> None:
    """Help and the version: click prints them through sys.stdout, which stays as it is."""
    global _no_reserving
    _no_reserving = keep


def reserve_stdout() -> None:
    global _reserved
    stdout = sys.stdout
    if _reserved is not None or stdout is None or _no_reserving:
        return
    try:
        fd = stdout.fileno()
    except (OSError, ValueError):  # no descriptor (a test's captured output): as it is
        return
    stdout.flush()
    kept = os.dup(fd)
    try:
        os.dup2(2, fd)  # (a closed stderr is held open on /dev/null: see main)
    except OSError:
        os.close(kept)
        return
    _reserved = open(  # noqa: SIM115 - kept until release_stdout
        kept, "w", encoding=stdout.encoding, errors=stdout.errors, closefd=True
    )


def release_stdout() -> None:
    """The descriptor back where it was (for a caller running the CLI in its own process)."""
    global _reserved
    if _reserved is None or sys.stdout is None:
        return
    kept, _reserved = _reserved, None
    try:
        sys.stdout.flush()  # what your code wrote meanwhile, to stderr where it belongs
    except (OSError, ValueError):
        # A stderr that cannot be written: what stayed buffered goes nowhere, not into the
        # JSON once the descriptor is stdout's again.
        _silence(sys.stdout)
        with suppress(OSError, ValueError):
            sys.stdout.flush()
    with suppress(OSError, ValueError):
        os.dup2(kept.fileno(), sys.stdout.fileno())
    with suppress(OSError):
        kept.close()


def carries_unicode(stream: IO[str] | None) -> bool:
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        return codecs.lookup(encoding).name.startswith("utf")
    except LookupError:
        return False


def _silence(stream: IO[str]) -> None:
    """Later writes to `stream`, and the interpreter's flush at exit, go nowhere instead of
    failing (and, on stderr, saying so on a stream that cannot be written)."""
    with suppress(OSError, ValueError):  # (ValueError: a stream that has no descriptor)
        nowhere = os.open(os.devnull, os.O_WRONLY)
        os.dup2(nowhere, stream.fileno())
        os.close(nowhere)


class DebugLog:
    """govkernel's log on stderr for one command (--debug): a failed step's traceback, which
    its one-line error in the trail leaves out. Taken off again when the command ends."""

    def __init__(self) -> None:
        self._logger = logging.getLogger("govkernel")
        self._level = self._logger.level
        self._handler = logging.StreamHandler(cast(TextIO, _Extra(sys.stderr)))
        self._handler.setFormatter(_InertFormatter("%(levelname)s %(name)s: %(message)s"))
        self._logger.addHandler(self._handler)
        self._logger.setLevel(logging.DEBUG)

    def close(self) -> None:
        self._logger.removeHandler(self._handler)
        self._logger.setLevel(self._level)


class _InertFormatter(logging.Formatter):
    """Each line as inert terminal text: a step's error is the team's words, or a caller's."""

    def format(self, record: logging.LogRecord) -> str:
        return inert_lines(super().format(record))


def inert_lines(text: str) -> str:
    return "\n".join(render.safe(line) for line in text.split("\n"))


def _watched() -> bool:
    # Progress only helps someone watching a terminal that can draw it: piped, click would
    # print a bar's label as a stray line; on a dumb terminal (TERM=dumb, as in an editor's
    # shell, or none set) its cursor codes would show as garbage.
    watched = sys.stderr is not None and sys.stderr.isatty()
    return watched and os.environ.get("TERM", "dumb") not in ("", "dumb")


def show_status(text: str) -> None:
    """A line on a watched terminal saying what is under way (a step that may run for long):
    a line of its own, so that what the step prints meanwhile, or a stop, is not written
    over it."""
    if _watched():
        write_out(render.safe(text), err=True)


REDRAWS = 200


@contextmanager
def progress_bar(items: Sequence[T], label: str, at_least: int = 20) -> Iterator[Iterable[T]]:
    if len(items) < at_least or not _watched():
        yield items
        return
    stream = cast(TextIO, _Extra(sys.stderr))  # (click asks for a TextIO; it uses a text stream)
    # Drawn about REDRAWS times, not once an item: 20k executions sealed drew it 20k times,
    # 1.4 MB of terminal output (over ssh, say).
    every = max(1, -(-len(items) // REDRAWS))  # rounded up: 399 items drew it 400 times
    with click.progressbar(
        items, label=label, file=stream, show_pos=True, update_min_steps=every
    ) as bar:
        yield bar


class _Extra(io.TextIOBase):
    """A progress bar's stream: a failed write (a terminal gone) is dropped, as an extra's
    is, instead of stopping the work it shows."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__()
        self._stream = stream

    def write(self, text: str) -> int:
        with suppress(OSError):
            self._stream.write(text)
        return len(text)

    def flush(self) -> None:
        with suppress(OSError):
            self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()


def indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def say_error(message: str) -> None:
    write_out(f"error: {message}", err=True)


def hold_closed_streams() -> None:
    """A standard stream the caller closed (`>&-`) is held open on /dev/null (sys.stdout
    stays None: the command still knows it was closed). Else the next file opened takes its
    number (the store's lock file took stdout's), and whatever writes to that stream, a
    step's subprocess or the storage engine's own messages, writes into that file."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            held = os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one
            os.set_inheritable(held, True)  # a step's subprocess gets it too, as a stream
