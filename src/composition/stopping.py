"""A service's stop signals, handled as the `govkernel` command handles its own.

Python's default SIGTERM ends the process at once: the store is left as a crash leaves it,
and the next start verifies every audit chain before it resumes anything (minutes on a big
store). Its default SIGINT raises KeyboardInterrupt at the next bytecode, which may be inside
the engine codec's C callbacks, where it is lost (the service runs on) or a damaged request
is sent.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from adapters.surrealdb.wire import deferring

STOPS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def _exit(signum: int, frame: Any) -> None:
    # SystemExit: `with build_app(...)` closes the store on its way out, a running step's
    # execution gives up its lease (recover takes it on at once), and the process ends with
    # the status a shell gives a signal's death (143 for SIGTERM).
    raise SystemExit(128 + signum)


@contextmanager
def stopping_on_signals() -> Iterator[None]:
    """Within it, SIGTERM, SIGHUP and SIGINT end the service cleanly: each raises
    `SystemExit(128 + signal)` in the main thread, held while a request is inside the
    engine and raised as soon as it returns. A signal ignored when it is entered (a service
    started with `nohup`, or in the background) stays ignored; the handlers before it are
    put back when it is left.

        with stopping_on_signals(), build_app(load_settings()) as app:
            ...  # serve (entered first, it covers the store's open and close too)
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("stopping_on_signals() works in the main thread only (signals do)")
    before = {
        s: signal.signal(s, deferring(_exit))
        for s in STOPS
        if signal.getsignal(s) is not signal.SIG_IGN
    }
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
