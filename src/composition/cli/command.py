"""Running one `govkernel` command line: its exit status, and the one line it says when it
fails (a traceback only with --debug)."""

from __future__ import annotations

import errno
import os
import shlex
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

import click

from adapters.surrealdb.store import UPGRADED_BEFORE_THE_STOP
from adapters.surrealdb.wire import deferring
from composition import render
from composition.cli.outcome import with_hint
from composition.cli.root import cli
from composition.cli.session import (
    EXIT_BUSY,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    TRANSIENT_NOTE,
    Failed,
    S,
    Session,
)
from composition.cli.streams import (
    hold_closed_streams,
    inert_lines,
    keep_stdout_for_click,
    release_stdout,
    say_error,
)
from composition.documents import (
    DocumentError,
)
from composition.settings import (
    ConfigurationError,
)
from domain.model.errors import (
    DomainError,
    IllegalTransition,
    InvalidInput,
    InvalidState,
    both_ends,
)
from domain.model.errors import PolicyDenied as _PolicyDenied
from domain.orchestration.orchestrator import UNSTORED
from ports.errors import PortError, RecordNotFound, StorageUnavailable, StoreInUse


def run_cli(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit status (errors are mapped to clean messages)."""
    args = [_as_typed(arg) for arg in (sys.argv[1:] if argv is None else argv)]
    session = Session(args=tuple(args))
    keep_stdout_for_click(_helping(args))
    try:
        code = _run(session, args)
    finally:
        if session.log is not None:
            session.log.close()
        release_stdout()
    if session.lost_output is not None:
        # Said last, once it is known what the command did all the same. A command that
        # failed on its own keeps its status: the output lost is not all that went wrong.
        say_error(_lost_output(session))
        code = EXIT_USAGE if code == EXIT_OK else code
    return code


def _run(session: Session, args: list[str]) -> int:
    terminated = _Sigterm()
    try:
        result = cli.main(args=args, prog_name="govkernel", obj=session, standalone_mode=False)
        return result if isinstance(result, int) else EXIT_OK
    except click.ClickException as exc:
        if sys.stderr is not None:  # closed (`2>&-`), click would print it on stdout
            with suppress(OSError):  # nor can a stderr that fails say anything
                _inert(exc).show()
        return exc.exit_code
    except (click.Abort, KeyboardInterrupt) as stop:
        # Stopped like Ctrl-C, the store closed on the way out: not a crash to recover from.
        # (Where a step was running, the orchestrator's note says which.)
        # click turns Ctrl-C into an Abort raised from it: the notes are the interrupt's.
        noted = stop.__cause__ if isinstance(stop, click.Abort) and stop.__cause__ else stop
        stopped = terminated.said if terminated.happened else "interrupted"
        where = _notes(noted)
        # Stopped as the store opened, once its upgrade stood (said in the note).
        session.upgraded = session.upgraded or UPGRADED_BEFORE_THE_STOP in where
        unfinished = _unfinished(session, not_stored=UNSTORED in where)
        say_error(render.safe(f"{stopped}{where}; {unfinished}"))
        _emit_stopped(session, stopped, unfinished)
        return 128 + (terminated.signum or signal.SIGINT)
    except BaseException as stop:
        if _helping(args) and isinstance(stop, OSError | SystemExit):
            # Help and the version are written by click itself: a reader gone (click then
            # exits 1) is a quiet end, as for any command; another failure, said as one.
            if isinstance(stop, OSError) and stop.errno != errno.EPIPE:
                session.lost_output = stop
            return EXIT_OK
        if isinstance(stop, Exception):
            return _failed(session, args, stop)
        # sys.exit, or another BaseException (gevent's, trio's, a step's own): stopping, as
        # the orchestrator takes it. Raised by a step, it stops every run of it.
        stopped, where, left = _stopped_by(stop, session)
        say_error(render.safe(f"{stopped}{where}; {left}"))
        _emit_stopped(session, stopped, left)
        return EXIT_FAILED
    finally:
        terminated.restore()


# A group run without a command: click 8.2 and later raise this, the group's help as its
# message (8.1 printed the help itself).
_HELP_FOR_NO_ARGUMENTS: tuple[type[Exception], ...] | type[Exception] = getattr(
    click.exceptions, "NoArgsIsHelpError", ()
)


def _inert(exc: click.ClickException) -> click.ClickException:
    """`exc` with the text it quotes from the command line made inert: click repeats some
    arguments as typed (an extra argument, a file it could not open), escapes and all."""
    if isinstance(exc, _HELP_FOR_NO_ARGUMENTS):  # the help text itself: ours, lines and all
        return exc
    # (click declares these Final: they are set once, here, before it formats them.)
    vars(exc)["message"] = render.safe(exc.message)
    if isinstance(exc, click.FileError):
        vars(exc)["ui_filename"] = render.safe(exc.ui_filename)
    return exc


def _as_typed(arg: str) -> str:
    """An argument as typed: in a locale that is not UTF-8 (LC_ALL=C without Python's UTF-8
    mode) Python gives the bytes of `Grüße` as escapes, refused as not UTF-8; read as UTF-8
    when they are."""
    if not any("\udc80" <= c <= "\udcff" for c in arg):
        return arg
    try:
        return os.fsencode(arg).decode("utf-8")
    except UnicodeError:  # not UTF-8 bytes either: refused as such later
        return arg


def _helping(args: Sequence[str]) -> bool:
    return any(arg in ("--help", "-h", "--version") for arg in args)


def _lost_output(session: Session) -> str:
    """What a failure to write stdout lost: the output, not the work, if the command did
    any; then that it did, and how to see it."""
    said = render.safe(f"could not write to standard output: {session.lost_output}")
    if session.did is not None:
        return f"{said}; {session.did}"
    if session.command is not None and session.command_recorded:
        verb, xid = session.command
        done, state = f"the {verb} of {xid} was recorded all the same", session.started_state
    elif session.started is not None:
        xid, state = session.started, session.started_state
        done = f"execution {xid} was started all the same"
    else:
        return said
    now = "" if state is None else f" (now {state.value})"
    if session.transient():  # nothing can show it later
        return render.safe(f"{said}; {done}{now}")
    show = f"`govkernel{session.hint()} executions show {xid}` shows it"
    return render.safe(f"{said}; {done}{now}: {show}")


def _notes(stop: BaseException) -> str:
    notes = [n for n in getattr(stop, "__notes__", ()) if isinstance(n, str)]
    # The command's own on_transition hook is what prints its progress: said so, not in the
    # words of the library a user of the command never saw.
    return "".join(
        f" {n.replace('while the on_transition hook ran on', 'while it printed the progress of')}"
        for n in notes
    )


def _emit_stopped(session: Session, stopped: str, left: str) -> None:
    """A run stopped before its record was printed (a CI job's timeout, a step's sys.exit):
    which execution to follow up, on stdout under --json, for a script, not only in words on
    stderr."""
    if session.json and not session.emitted and session.starts:
        state = session.started_state
        session.emit(
            {
                "interrupted": stopped,
                "execution_id": session.started,
                "state": None if state is None else state.value,
                "idempotency_key": session.starting,
                "left": left,
            }
        )


def _stopped_by(stop: BaseException, session: Session) -> tuple[str, str, str]:
    """What a stop that is no interrupt (sys.exit, a step's own BaseException) was, where it
    came, and what it left and what ends that: not `recover`, which would run the step, and
    stop, again."""
    where = _notes(stop)
    if isinstance(stop, SystemExit):
        what, does = f"sys.exit({stop.code!r})", "calls sys.exit"
    else:
        what, does = type(stop).__name__, f"raises {type(stop).__name__}"
    unfinished, advice = _unfinished(session), ""
    fix = f" (a step that {does} stops every run of it: fix the step)"
    if UNSTORED in where:
        unfinished, advice = "nothing of it was stored", fix
    elif _transient(session):  # nothing is left to cancel or recover: the store is gone
        advice = fix
    elif "while step " in where:
        unfinished = "its execution was left running"
        advice = (
            f" (a step that {does} stops every run of it, `recover`'s too:"
            " `govkernel cancel` ends its execution)"
        )
    elif "while compensation " in where:
        unfinished = "its execution was left compensating"
        advice = (
            f" (a compensation that {does} stops every run of it, `recover`'s too, and an"
            " execution compensating cannot be cancelled: fix the compensation)"
        )
    return f"stopped by {what}", where, f"{unfinished}{advice}"


def _failed(session: Session, args: list[str], exc: Exception) -> int:
    """Print an error as one line (a traceback first with --debug); its exit status."""
    debug = session.debug or "--debug" in args
    if debug and sys.stderr is not None:  # closed, it would be printed on stdout
        with suppress(OSError):
            print(inert_lines(traceback.format_exc().rstrip("\n")), file=sys.stderr)
    code, message = describe(exc, debug=debug)
    if isinstance(exc, StorageUnavailable) and session.starting is not None:
        # The store lost mid-run (a server gone): what happened to the run is said too.
        message += render.safe(f"; {_unfinished(session, not_stored='not stored' in message)}")
    elif isinstance(exc, StorageUnavailable) and session.starts:
        message += "; nothing was started"  # the store would not open (held, full, gone)
    elif isinstance(exc, StorageUnavailable) and session.recorded is not None:
        # Lost once the command had read what it acts on (a server gone mid-commit):
        # whether it was recorded, or how to tell.
        message += render.safe(f"; {_unfinished(session)}")
    elif isinstance(exc, StorageUnavailable) and session.again is not None:
        message += render.safe(f"; {session.again}")  # lost part-way (a full disk)
    elif isinstance(exc, RecordNotFound) and exc.table == "execution" and session._settings:
        # Another tenant's is not found either: a GOVKERNEL_TENANT left out reads so.
        message += render.safe(f" in tenant {session._settings.tenant!r}{session.nothing_here()}")
    for line in message.split("\n"):
        say_error(line)
    return code


class _Sigterm:
    """Stop on SIGTERM (a service manager's stop), and on SIGHUP (the terminal closed) unless
    ignored (nohup), as on Ctrl-C, so the store is closed on the way out: not left as a
    crash to check after. Only from the main thread, where Python delivers signals."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.happened = False
        self._before: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            # Each held while a request is inside the engine's codec (wire.deferring).
            self._before[signal.SIGTERM] = signal.signal(signal.SIGTERM, deferring(self._stop))
            if signal.getsignal(signal.SIGHUP) == signal.SIG_DFL:
                self._before[signal.SIGHUP] = signal.signal(signal.SIGHUP, deferring(self._stop))
            interrupt = signal.getsignal(signal.SIGINT)
            if callable(interrupt):  # not when ignored (started in the background)
                self._before[signal.SIGINT] = signal.signal(signal.SIGINT, deferring(interrupt))

    def _stop(self, signum: int, frame: object) -> None:
        self.happened, self.signum = True, signum
        raise KeyboardInterrupt

    @property
    def said(self) -> str:
        return "hung up" if self.signum == signal.SIGHUP else "terminated"

    def restore(self) -> None:
        for signum, before in self._before.items():
            signal.signal(signum, before)


def _transient(session: Session) -> bool:
    try:
        return session.transient()
    except ConfigurationError:
        return False


def _unfinished(session: Session, *, not_stored: bool = False) -> str:
    if session.store_lost is not None:  # nothing can be finished there, by recover or else
        return "the store is to be restored from a backup, or the work done again in a new one"
    if session.read_only:  # (what it made outside the store, said as `again`)
        return session.again or f"nothing {'else ' * session.upgraded}was changed"
    if _transient(session):
        return f"{TRANSIENT_NOTE}: an unfinished execution is lost"
    if session.again is not None:
        return session.again
    recorded = session.command_recorded
    if session.command is not None and recorded is None and session.recorded is None:
        recorded = False  # stopped before it read what it acts on: it wrote nothing
    if session.command is not None and not recorded:
        verb, xid = session.command
        if recorded is None:
            return (
                f"whether the {verb} of {xid} was recorded is not known: `govkernel executions"
                f" show {xid}` tells; if it was not, the same command records it"
            )
        return f"the {verb} of {xid} was not recorded: the same command records it"
    state = session.started_state
    if session.started is not None and state is not None and state.terminal:
        return f"execution {session.started} had ended {state.value}: nothing is left to do"
    if session.started is not None and state is S.AWAITING_APPROVAL:
        return f"execution {session.started} awaits approval: `govkernel approve` resumes it"
    if session.started is not None:
        left = "was stored" if state is None else f"was left {state.value}"
        return f"execution {session.started} {left}: `govkernel recover` finishes it"
    if session.starting is not None:
        key = shlex.quote(session.starting)
        if not_stored:  # read again after its commit failed: it is known not to be
            return f"the same command with --idempotency-key {key} starts it, never twice"
        return (
            f"if its start was stored, `govkernel recover` finishes it; the same command with"
            f" --idempotency-key {key} shows it, or starts it if it was not, never twice"
        )
    if session.starts:  # stopped before it came to start one
        return "nothing was started"
    return "what was left unfinished resumes with `govkernel recover`"


def describe(exc: Exception, *, debug: bool = False) -> tuple[int, str]:
    """(exit status, message) for an error: never a traceback, never a credential.

    The message is terminal-safe: its only line breaks separate problems (configuration),
    never ones carried by a value.
    """
    if isinstance(exc, ConfigurationError):
        return EXIT_USAGE, "\n".join(render.safe(f"configuration: {p}") for p in exc.problems)
    code, message = _describe(exc, debug=debug)
    return code, render.safe(message)


def _describe(exc: Exception, *, debug: bool) -> tuple[int, str]:
    if isinstance(exc, Failed):
        return exc.code, str(exc)
    if isinstance(exc, DocumentError):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, InvalidInput):
        return EXIT_USAGE, f"invalid input: {exc.field}: {exc.problem}"
    if isinstance(exc, RecordNotFound):
        return EXIT_USAGE, f"no {exc.table} {both_ends(str(exc.key), 120)!r}"
    if isinstance(exc, StoreInUse):  # not the command's fault: a script may try it again
        return EXIT_BUSY, f"store unavailable: {exc}"
    if isinstance(exc, StorageUnavailable):
        said = str(exc)
        if said.endswith("nothing has run there yet"):  # a mistyped path, or another directory
            said += "; a run makes it (a store elsewhere: --store or GOVKERNEL_STORE)"
        return EXIT_USAGE, f"store unavailable: {said}"
    if isinstance(exc, _PolicyDenied):
        return EXIT_FAILED, f"policy denied {exc.action}: " + "; ".join(exc.reasons)
    if isinstance(exc, IllegalTransition):
        return (
            EXIT_FAILED,
            f"execution {exc.execution_id}: cannot go from {exc.source} to {exc.target}",
        )
    if isinstance(exc, InvalidState):
        return EXIT_FAILED, with_hint(str(exc))
    if isinstance(exc, DomainError | PortError):
        return EXIT_FAILED, with_hint(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, PermissionError):  # a file or directory given to it, not a fault of its
        what = "" if exc.filename is None else f" {exc.filename}"
        return EXIT_USAGE, f"cannot use{what}: {exc.strerror or exc}"
    hint = "" if debug else " (--debug shows the traceback)"
    # An error of your code's that the kernel passes on as it is names where it came from.
    origin = next(
        (n for n in getattr(exc, "__notes__", ()) if str(n).startswith("raised by")), None
    )
    if origin is not None:
        return EXIT_FAILED, f"{type(exc).__name__}: {exc} ({origin}){hint}"
    return EXIT_FAILED, f"internal error: {type(exc).__name__}: {exc}{hint}"


def main(argv: Sequence[str] | None = None) -> None:
    hold_closed_streams()
    code = run_cli(argv)
    if threading.current_thread() is threading.main_thread():
        # Done, the store closed: a signal now would end the process by the signal, and
        # the command's own exit status would be lost. Only the exit is left to do.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
    sys.exit(code)
