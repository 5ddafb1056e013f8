"""The `govkernel` command's entry point, kept apart from what it loads: Ctrl-C or SIGTERM
while the command line's modules load (about half a second) ends it with one line, as
either does later, not with a traceback or a silent death."""

from __future__ import annotations

import signal
import sys


class _Terminated(BaseException):
    """SIGTERM before the command line installed its own handling of it."""


def _terminated(signum: int, frame: object) -> None:
    raise _Terminated


def main() -> None:
    before = signal.signal(signal.SIGTERM, _terminated)
    try:
        from composition.cli import main as run
    except (KeyboardInterrupt, _Terminated) as stop:
        how = "terminated" if isinstance(stop, _Terminated) else "interrupted"
        sys.stderr.write(f"error: {how} while starting; nothing was changed\n")
        raise SystemExit(143 if isinstance(stop, _Terminated) else 130) from None
    finally:
        signal.signal(signal.SIGTERM, before)
    run()
