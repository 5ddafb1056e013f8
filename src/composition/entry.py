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
    # Said once: a signal after the first, while it is said and the process exits, is only
    # recorded (raised, it gave a traceback; ignored, a race message; let through, it killed
    # the process with its own status).
    if len(_arrived) == 1:
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

        for signum, handler in before.items():  # inside: a signal meanwhile is caught below
            signal.signal(signum, handler)
    except (KeyboardInterrupt, _Stopped):
        _arrived[:] = _arrived or [signal.SIGINT]
    if _arrived:  # (its exception may have been lost on the way)
        # The process is exiting as the first one said: later ones are held back, undelivered
        # (let through as Python's exit resets the handlers, one killed it with its own
        # status), and one the handler has already seen is only recorded.
        signal.pthread_sigmask(signal.SIG_BLOCK, stops)
        for signum in stops:
            signal.signal(signum, _stop)
        raise _stopped(_arrived[0]) from None
    run()
