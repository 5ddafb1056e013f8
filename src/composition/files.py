"""Reading the files a user names (settings, anchors): bounded, and only regular files."""

from __future__ import annotations

import os
import stat
from pathlib import Path


class UnreadableFile(Exception):
    """Why a named file was not read, in words that can follow its path."""


def open_unwaiting(path: str | Path) -> int:
    """A descriptor to read `path` from, opened without waiting for a pipe's writer: a
    named pipe nobody writes to then gives nothing at once instead of holding the command.
    Reads block as usual: a writer there may take its time."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    os.set_blocking(fd, True)
    return fd


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of `path`, a regular file of at most `limit` bytes.

    A device or FIFO is refused without being read: `/dev/zero` would never end, and a FIFO
    would hold the command until someone wrote to it. The size is checked before reading.
    """
    try:
        # Non-blocking, so that opening a FIFO returns at once; regular files ignore it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UnreadableFile("not found") from None
    except IsADirectoryError:
        raise UnreadableFile("is a directory, not a file") from None
    except OSError as exc:
        raise UnreadableFile(f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    except UnicodeEncodeError:  # a name the file system encoding cannot spell (LC_ALL=C)
        raise UnreadableFile(
            "cannot be named in this system's file name encoding: use a UTF-8 locale, or"
            " Python's UTF-8 mode (PYTHONUTF8=1)"
        ) from None
    except ValueError:  # a NUL in it: no file has such a name
        raise UnreadableFile("is no file name (it holds a NUL character)") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
        os.close(fd)
        if stat.S_ISDIR(info.st_mode):
            raise UnreadableFile("is a directory, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableFile("is not a regular file")
        raise UnreadableFile(f"is over {limit:,} bytes")
    with os.fdopen(fd, "rb") as file:
        try:
            data = file.read(limit + 1)  # the file may have grown since
        except OSError as exc:
            raise UnreadableFile(f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    if len(data) > limit:
        raise UnreadableFile(f"is over {limit:,} bytes")
    return data
