"""The `govkernel` command's entry point, kept apart from what it loads: Ctrl-C, SIGTERM or
SIGHUP while the command line's modules load (about half a second) ends it with one line, as
each does later, not with a traceback or a silent death."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from types import FrameType

_SAID = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated", signal.SIGHUP: "hung up"}


class _Stopped(BaseException):
    """A signal before the command line installed its own handling of it."""


# The signals that arrived while loading. The exception a handler raises can be lost: one
# raised while Python compiles a module (no cached bytecode) reaches no frame, and the
# command ran on to the end, a service manager's stop ignored.
_arrived: list[int] = []


def _stop(signum: int, frame: FrameType | None) -> None:
    _arrived.append(signum)
    # Said once: a second signal raising while the first is said gave a traceback.
    for each in _SAID:
        if signal.getsignal(each) is _stop:
            signal.signal(each, signal.SIG_IGN)
    raise KeyboardInterrupt if signum == signal.SIGINT else _Stopped


def _stopped(signum: int) -> SystemExit:
    how = _SAID.get(signal.Signals(signum), "interrupted")
    sys.stderr.write(f"error: {how} while starting; nothing was changed\n")
    args = sys.argv[1:]
    if "--json" in args and "run" in args:
        # A run's record, as one stopped later prints it (a script reads stdout): nothing
        # of it was started, let alone stored.
        record = dict.fromkeys(("execution_id", "state", "idempotency_key"))
        left = {"interrupted": how, **record, "left": "nothing was started"}
        with contextlib.suppress(OSError, ValueError):  # stdout gone: stderr said it
            sys.stdout.write(json.dumps(left, indent=2) + "\n")
            sys.stdout.flush()
    return SystemExit(128 + signum)


def main() -> None:
    # A signal started ignored (a background job's Ctrl-C, SIGHUP under nohup) stays ignored.
    stops = [s for s in _SAID if signal.getsignal(s) != signal.SIG_IGN]
    before = {s: signal.signal(s, _stop) for s in stops}
    try:
        from composition.cli import main as run
    except (KeyboardInterrupt, _Stopped):
        raise _stopped(_arrived[0] if _arrived else signal.SIGINT) from None
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
    if _arrived:  # its exception was lost on the way
        raise _stopped(_arrived[0])
    run()
