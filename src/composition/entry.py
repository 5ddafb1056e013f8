"""The `govkernel` command's entry point, kept apart from what it loads: Ctrl-C while the
command line's modules load (about half a second) ends it with one line, as it does later,
not with a traceback."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from composition.cli import main as run
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted while starting; nothing was changed\n")
        raise SystemExit(130) from None
    run()
