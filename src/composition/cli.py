"""The `govkernel` command line: run, approve and inspect governed workflow executions.

Exit statuses: 0 ok; 1 denied by policy, a failed execution or a verification failure;
2 usage or configuration error (including a store held by another process, an unknown
execution or invalid input). Errors are one line on stderr (a traceback only with --debug).
With --json, stdout carries exactly one JSON document and nothing else.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import io
import logging
import os
import re
import shlex
import signal
import stat
import sys
import threading
import traceback
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TextIO, TypeVar, cast

import click
from attrs import define, field

import composition
from adapters.surrealdb import SurrealConfig
from adapters.surrealdb.store import LogSeal
from adapters.surrealdb.wire import deferring
from composition import anchors, files, queries, render, strict_json, wiring
from composition.container import App, Overrides, build_app, would_make
from composition.documents import (
    DocumentError,
    SourceFile,
    derived_title,
    publication_request,
    read_source,
)
from composition.settings import (
    DEFAULT_POLICY_REF,
    ENV_VARS,
    NO_DIRECTORY,
    ConfigurationError,
    Settings,
    working_directory,
)
from composition.settings import load_settings as _load_settings
from domain.model.errors import DomainError, IllegalTransition, InvalidInput, InvalidState
from domain.model.errors import PolicyDenied as _PolicyDenied
from domain.model.execution import WorkflowExecution, started_steps
from domain.model.knowledge import Classification, SourceFormat, SourceKind
from domain.model.lifecycle import AuditEntry, ChainReport, ExecutionState
from domain.model.policy import Approval, ImpactTier
from domain.model.seal import AuditKey
from domain.model.validation import IDENTIFIER, IDENTIFIER_RULE, both_ends, same_person, shown
from domain.orchestration import sealing
from domain.orchestration.definition import WorkflowDefinition
from domain.orchestration.orchestrator import (
    RECOVERABLE,
    RecoveryIncomplete,
    idempotency_key_of,
    reused,
)
from domain.workflows import knowledge_publication as kp
from ports.clock import UuidIds
from ports.errors import CorruptRecord, PortError, RecordNotFound, StorageUnavailable

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
PROGRESS_THRESHOLD = 5
MAX_POSITION = 2**63 - 1  # event positions are signed 64-bit integers in every store
MAX_LIMIT = 10_000
DEFAULT_LIST_LIMIT = 20
# A workflow's input from the command line: a publication's hundred documents fit well inside.
MAX_INPUT_CHARS = 256 * 1024 * 1024
# Stores that live and die with this process: no later command can reach their executions.
TRANSIENT_SCHEMES = ("memory", "mem")
TRANSIENT_NOTE = "the in-memory store does not outlive this command"
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
S = ExecutionState

EXITS = (
    "Exit statuses: 0 ok; 1 denied, failed or verification failure; "
    "2 usage or configuration error (including a store in use by another process)."
)
ROOT_EPILOG = (
    "Settings come from GOVKERNEL_* environment variables and an optional TOML file "
    f"(--config or $GOVKERNEL_CONFIG): {', '.join(ENV_VARS)}. {EXITS}"
)


class Failed(Exception):
    """A command's negative outcome: one line on stderr and an exit status."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


# -- the session ---------------------------------------------------------------------------


@define
class Session:
    """Global options, the settings (read once, lazily) and the output channels."""

    store: str | None = None
    config: str | None = None
    json: bool = False
    debug: bool = False
    read_only: bool = False  # the command changes nothing: an interrupt leaves nothing to resume
    # The idempotency key of a start in progress: what an interrupt tells the user to reuse;
    # and the execution, once a commit of it was seen.
    starting: str | None = None
    started: str | None = None
    starts: bool = False  # the command starts an execution (a `run`)
    started_state: S | None = None  # as last seen committed
    # What a command (approve, reject, cancel) acts on (its verb, the execution), and, once
    # it has read the execution, how to tell from it as stored whether the command was
    # recorded: read again after an interrupt. Stopped before that read, it wrote nothing.
    command: tuple[str, str] | None = None
    recorded: Callable[[App, WorkflowExecution], bool] | None = None
    command_recorded: bool | None = None  # None: not known (the read failed)
    lost_output: OSError | None = None  # the first failure to write stdout (a reader gone aside)
    did: str | None = None  # what a command that acts on many executions did (recover)
    # What finishes the command's work when it is stopped midway, if not `recover`.
    again: str | None = None
    _settings: Settings | None = field(default=None, alias="_settings")
    log: _Log | None = None  # --debug: govkernel's log shown on stderr

    def settings(self) -> Settings:
        if self._settings is None:
            overrides = {"store_url": (self.store, "--store")} if self.store else {}
            self._settings = _load_settings(config_file=self.config, overrides=overrides)
        return self._settings

    @contextmanager
    def app(
        self, *, existing: bool = False, check: Callable[[App], object] | None = None
    ) -> Iterator[tuple[App, Printer]]:
        """The application on the configured store; `existing` for commands that only make
        sense on a store something already ran on, so a mistyped path is not created.
        When opening it would make the store, the application is first built over a
        throwaway one, and `check` called on it: what that refuses (your workflows, a
        command's input) is refused before the store is made."""
        settings = self.settings()
        login = os.environ.get("USER") or os.environ.get("LOGNAME")
        if settings.sources.get("actor") == "default" and login and login != settings.actor:
            # Every such login would be recorded as the same actor: say so.
            self.warn(
                render.safe(
                    f"note: the login name {login!r} is not a valid actor name; acting as"
                    f" {settings.actor!r} (set GOVKERNEL_ACTOR)"
                )
            )
        if check is not None and would_make(settings):
            with build_app(
                settings, Overrides(store=wiring.throwaway_store(settings))
            ) as throwaway:
                check(throwaway)
        printer = Printer(self)
        # A store that ends with its process is always new: there is nothing to refuse.
        must_exist = existing and not self.transient()
        overrides = Overrides(on_transition=printer, existing_store=must_exist)
        with build_app(settings, overrides) as app:
            repair = getattr(app.store, "torn_repair", None)
            if repair is not None:  # whichever command opened the store first, it says so
                self.warn(
                    f"note: the store's last transaction was cut short (by a crash, or by"
                    f" damage to its log); it was {repair.action} ({repair.writes} writes)"
                )
            aside = getattr(app.store, "segment_set_aside", None)
            if aside is not None:
                self.warn(
                    render.safe(
                        f"note: the store's newest log segment was cut inside its header (by"
                        f" a crash as the engine began it; it held no record): moved aside to"
                        f" {aside}"
                    )
                )
            upgraded = getattr(app.store, "upgraded_from", None)
            if isinstance(upgraded, int):  # a read too: older govkernels now refuse it
                self.warn(
                    f"note: the store was upgraded from schema version {upgraded}; a"
                    " govkernel older than this one no longer opens it"
                )
            printer.bind(app)
            try:
                yield app, printer
            except BaseException as stop:
                if not isinstance(stop, Exception) or isinstance(stop, click.Abort):
                    self._look_again(app)
                raise
        unsealed = getattr(app.store, "seal_unwritten", None)  # known once it closed
        if unsealed:
            self.warn(
                render.safe(
                    f"note: the store's log seal ({LogSeal.NAME}) could not be written"
                    f" ({unsealed}): damage to the end of its log since it was last written"
                    " would go unnoticed at the next open"
                )
            )

    def commanding(self, verb: str, xid: str) -> None:
        self.command = (verb, xid)

    def acting_on(self, recorded: Callable[[App, WorkflowExecution], bool]) -> None:
        self.recorded = recorded

    def landed(self, execution: WorkflowExecution) -> None:
        """The command's commit returned: where it left the execution (driven on, perhaps)."""
        self.command_recorded = True
        self.started, self.started_state = execution.id, execution.state

    def _look_again(self, app: App) -> None:
        """After an interrupt, read what was stored: a signal held while the engine
        committed is raised as it returns, before the commit was seen (and printed). By
        what the command itself records, not by any change: another worker's is not it."""
        try:
            if self.started is None and self.starting is not None:
                found = _started_by(app, self.starting)
                self.started = None if found is None else found.id
            if self.command is not None:
                if self.recorded is not None:  # else stopped before it could write anything
                    _, xid = self.command
                    now = app.orchestrator.get(xid, with_input=False)
                    self.command_recorded = self.recorded(app, now)
                    if self.command_recorded:
                        self.started, self.started_state = xid, now.state
            elif self.started is not None:
                self.started_state = app.orchestrator.get(self.started, with_input=False).state
        except BaseException:  # a second Ctrl-C too: the first one is what is said
            return

    def echo(self, text: str = "") -> None:
        """Human output: stdout, or stderr when stdout is reserved for JSON."""
        self._print(text, err=self.json)

    def emit(self, record: object) -> None:
        stdout = _reserved or sys.stdout
        self._print(render.dumps(record, ascii_only=not _carries_unicode(stdout)), err=False)

    def warn(self, text: str) -> None:
        self._print(text, err=True)

    def printing(self) -> None:
        """For a command whose product is what it prints: with stdout closed from the start
        (`>&-`, which leaves Python no stream), refused before it does anything."""
        if sys.stdout is None:
            raise Failed(
                "standard output is closed: what this command prints would be lost", EXIT_USAGE
            )

    def _print(self, text: str, *, err: bool) -> None:
        failed = _write(text, err=err)
        # stderr carries extras (notes, hints, progress): failing to write them changes
        # nothing. Nor does a reader of stdout that went away: it wanted no more (`| head`).
        # Any other failure on stdout loses the command's output: said as it ends.
        if failed is not None and not err and not isinstance(failed, BrokenPipeError):
            self.lost_output = self.lost_output or failed

    def transient(self) -> bool:
        """Whether the store ends with this process, so follow-up commands cannot reach it."""
        return self.settings().store_scheme in TRANSIENT_SCHEMES

    def suggest(self, width: int, *commands: tuple[str, str]) -> None:
        """Print labelled follow-up commands, or, on a transient store, why there are none."""
        if self.transient():
            self.echo(
                f"  {'note':<{width}}  {TRANSIENT_NOTE}: to follow up, use --store surrealkv://DIR"
            )
            return
        hint = self.hint()
        for label, command in commands:
            self.echo(render.safe(f"  {label:<{width}}  govkernel{hint} {command}"))

    def hint(self) -> str:
        """Global options to repeat in suggested follow-up commands."""
        settings = self.settings()
        parts = []
        if self.config:
            parts.append(f" --config {shlex.quote(self.config)}")
        if settings.sources.get("store_url") == "--store":
            parts.append(f" --store {shlex.quote(settings.display_store)}")
        return "".join(parts)


class Printer:
    """The orchestrator's transition callback: prints each audit entry as it commits."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._app: App | None = None
        self._seen: dict[str, int] = {}
        self._current: str | None = None

    def bind(self, app: App) -> None:
        self._app = app

    def mark(self, execution: WorkflowExecution) -> None:
        """Print only what happens to `execution` from now on."""
        self._seen[execution.id] = execution.audit_sequence

    def __call__(self, execution: WorkflowExecution) -> None:
        app = self._app
        last = self._seen.get(execution.id, 0)
        if app is None or execution.audit_sequence <= last:
            return
        self._seen[execution.id] = execution.audit_sequence
        if self._session.starting == execution.idempotency_key:
            self._session.started = execution.id
            self._session.started_state = execution.state
        try:
            entries = [
                e
                for e in queries.audit_trail(app.uow_factory, app.runtime.tenant, execution.id)
                if last < e.sequence <= execution.audit_sequence
            ]
        except (PortError, DomainError) as exc:  # printing must never break a run
            self._session.warn(render.safe(f"  (cannot show transitions of {execution.id}: {exc})"))
            return
        if self._current != execution.id:
            self._current = execution.id
            tier = execution.metadata.risk_tier.value
            self._session.echo(
                render.safe(
                    f"execution {execution.id}  ({execution.workflow_name}"
                    f" v{execution.workflow_version}, {tier})"
                )
            )
        for entry in entries:
            self._session.echo(transition_line(entry, execution))


def transition_line(entry: AuditEntry, execution: WorkflowExecution) -> str:
    reason = entry.reason
    checkpoint = entry.from_state is S.RUNNING and entry.to_state is S.RUNNING and entry.step
    if checkpoint and entry.step in execution.step_outputs:
        output = execution.step_outputs[entry.step]
        reason = f"{reason}: {render.step_output(render.built_in(execution), entry.step, output)}"
    return f"  #{entry.sequence:<3} {entry.to_state.value:<17} {render.safe(reason)}"


def _write(text: str, *, err: bool) -> OSError | None:
    """Print a line; a stream that cannot be written (a reader that went away, `| head`; a
    full disk) is silenced, never the work: a run whose output nobody reads still runs to
    its end. The failure is returned, for the caller to judge."""
    stream = sys.stderr if err else (_reserved or sys.stdout)
    try:
        if err or stream is None:  # (closed: click writes nothing)
            click.echo(text, err=err)
        else:
            _put(stream, text + "\n")
    except OSError as exc:
        _silence(stream)
        return exc
    return None


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


def _reserve_stdout() -> None:
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
    _reserved = open(  # noqa: SIM115 - kept until _release_stdout
        kept, "w", encoding=stdout.encoding, errors=stdout.errors, closefd=True
    )


def _release_stdout() -> None:
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


def _carries_unicode(stream: IO[str] | None) -> bool:
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


# -- shared options --------------------------------------------------------------------------


def _set_json(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(Session).json = True
        _reserve_stdout()  # before any of your code is imported or run


def json_option(fn: F) -> F:
    return click.option(
        "--json",
        "json_output",
        is_flag=True,
        expose_value=False,
        callback=_set_json,
        help="Print the records as JSON on stdout (and nothing else there).",
    )(fn)


class WholeNumber(click.IntRange):
    """A bounded integer written in the digits 0-9 alone: click's own `int()` also takes
    ' 5', '1_000' and the digits of other scripts, which no operator means."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not (value.isascii() and value.isdigit()):
            self.fail(
                f"{render.safe(repr(value[:40]))} is not a non-negative integer in the digits 0-9",
                param,
                ctx,
            )
        if isinstance(value, str) and len(value) > 40:  # click would repeat all of it
            self.fail(f"{value[:20]}... ({len(value)} digits) is out of range", param, ctx)
        return super().convert(value, param, ctx)


def limit_option(default: int) -> Callable[[F], F]:
    return click.option(
        "--limit",
        type=WholeNumber(min=1, max=MAX_LIMIT),
        default=default,
        show_default=True,
        metavar="N",
        help=f"At most N records (1 to {MAX_LIMIT}).",
    )


class _Path(click.Path):
    """A path, never empty: click would take '' for the current directory."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value == "":
            self.fail("must not be empty", param, ctx)
        return super().convert(value, param, ctx)


def not_blank(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Refuse an empty option value: it would otherwise fall back to the default unnoticed."""
    values = value if isinstance(value, tuple) else (value,)
    if any(isinstance(v, str) and not v.strip() for v in values):
        raise click.BadParameter("must not be empty", ctx=ctx, param=param)
    return value


class _InputFile(click.File):
    """A file to read, as `click.File` opens it; but a pipe is opened without waiting for a
    writer: a named pipe nobody writes to then gives nothing (refused as empty input)
    instead of holding the command for good."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value == "-" and sys.stdin is None:  # closed (`<&-`): Python gave it no stream
            self.fail(
                "standard input is closed: give a file, a pipe, or standard input redirected"
                " from a file",
                param,
                ctx,
            )
        if isinstance(value, str) and value != "-":
            with contextlib.suppress(OSError):
                if stat.S_ISFIFO(os.stat(value).st_mode):
                    return os.fdopen(files.open_unwaiting(value), "r", encoding="utf-8")
        return super().convert(value, param, ctx)


def a_file(ctx: click.Context, param: click.Parameter, value: str | None) -> Path | None:
    """A file's path as typed: not empty (`Path("")` is the current directory), and not
    ending in a slash, which names a directory (`Path` would drop it, and write a file)."""
    if value is None:
        return None
    not_blank(ctx, param, value)
    if value.endswith(os.sep):
        raise click.BadParameter(
            "ends in a slash, which names a directory: give a file", ctx=ctx, param=param
        )
    if not os.path.isabs(value) and working_directory() is None:
        raise click.BadParameter(f"is relative to {NO_DIRECTORY}", ctx=ctx, param=param)
    return Path(value)


def an_id(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """An execution id as typed: bounded, so that a mistake is not echoed back whole."""
    if isinstance(value, str) and len(value) > anchors.MAX_ID_CHARS:
        raise click.BadParameter(
            f"is {len(value):,} characters long: no execution id is over {anchors.MAX_ID_CHARS:,}",
            ctx=ctx,
            param=param,
        )
    return not_blank(ctx, param, value)


def an_idempotency_key(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A key as `start` takes it, checked before the store is opened (or made)."""
    if value is None:
        return None
    try:
        return idempotency_key_of(value)
    except InvalidInput as exc:
        raise click.BadParameter(exc.problem, ctx=ctx, param=param) from None


def a_workflow_name(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A workflow's name as definitions spell them: anything else names none."""
    if value is not None and not IDENTIFIER.match(value):
        raise click.BadParameter(
            f"is not a workflow name: {IDENTIFIER_RULE}",
            ctx=ctx,
            param=param,
        )
    return value


def session_of(ctx: click.Context) -> Session:
    return ctx.ensure_object(Session)


# -- the root group --------------------------------------------------------------------------


@click.group(epilog=ROOT_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--store",
    metavar="URL",
    callback=not_blank,
    help="Store URL: memory://, mem://, surrealkv://PATH, ws://HOST:PORT or wss://HOST:PORT"
    " [env: GOVKERNEL_STORE; default: surrealkv://<data dir>/store].",
)
@click.option(
    "--config",
    metavar="FILE",
    callback=not_blank,
    help="TOML settings file [env: GOVKERNEL_CONFIG].",
)
@click.option(
    "--json",
    "json_output",
    is_flag=True,
    expose_value=False,
    callback=_set_json,
    help="Print records as JSON on stdout (every command).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="govkernel", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, store: str | None, config: str | None, debug: bool) -> None:
    """govkernel: governed, durable and auditable knowledge workflows."""
    session = session_of(ctx)
    session.store = store
    session.config = config
    session.debug = session.debug or debug
    if session.debug and sys.stderr is not None and session.log is None:
        session.log = _Log()


class _Log:
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
        return _inert_lines(super().format(record))


def _inert_lines(text: str) -> str:
    return "\n".join(render.safe(line) for line in text.split("\n"))


# -- run -------------------------------------------------------------------------------------


@cli.group(epilog=EXITS)
@json_option  # `govkernel run --json ...` as well as before or after
def run() -> None:
    """Run a workflow."""


def _enum_choice(values: Sequence[str]) -> click.Choice[str]:
    return click.Choice(list(values), case_sensitive=False)


@run.command("knowledge-publication", epilog=EXITS)
@click.argument("files", nargs=-1, required=True, type=_Path(path_type=Path))
@click.option(
    "--title",
    callback=not_blank,
    help="Publication title [default: derived from the documents].",
)
@click.option(
    "--publication-id",
    metavar="ID",
    callback=not_blank,
    help="Publication id [default: a fresh pub-... id].",
)
@click.option(
    "--tier",
    type=_enum_choice([t.value for t in ImpactTier]),
    metavar="[" + "|".join(t.value for t in ImpactTier) + "]",
    default=ImpactTier.TIER0.value,
    show_default=True,
    help="Impact tier: Tier1 needs one approval, Tier2 and Tier3 two.",
)
@click.option(
    "--idempotency-key",
    metavar="KEY",
    callback=an_idempotency_key,
    help="Starting twice with one key returns the first execution.",
)
@click.option(
    "--kind",
    type=_enum_choice([k.value for k in SourceKind]),
    help="Source kind of every file [default: each file's front matter].",
)
@click.option(
    "--url",
    metavar="URL",
    callback=not_blank,
    help="Source URL of every file [default: front matter].",
)
@click.option(
    "--classification",
    type=_enum_choice([c.value for c in Classification]),
    help="Classification of every file [default: front matter, else internal].",
)
@click.option(
    "--format",
    "fmt",
    type=_enum_choice([f.value for f in SourceFormat]),
    help="Format of every file [default: front matter, else from the extension].",
)
@click.option(
    "--policy-ref",
    "policy_refs",
    multiple=True,
    metavar="REF",
    callback=not_blank,
    help=f"Policy reference (repeatable) [default: {DEFAULT_POLICY_REF}].",
)
@click.option(
    "--required-role",
    "required_roles",
    multiple=True,
    metavar="ROLE",
    callback=not_blank,
    help="A role that must approve (repeatable).",
)
@json_option
@click.pass_context
def run_knowledge_publication(
    ctx: click.Context,
    files: tuple[Path, ...],
    title: str | None,
    publication_id: str | None,
    tier: str,
    idempotency_key: str | None,
    kind: str | None,
    url: str | None,
    classification: str | None,
    fmt: str | None,
    policy_refs: tuple[str, ...],
    required_roles: tuple[str, ...],
) -> None:
    """Ingest FILE..., analyse them and publish a capsule, durably and under policy.

    Each file may start with front matter (a '---' block of 'key: value' lines: kind, url
    (or source_url), title, classification, format); options override it. A denied run
    exits 1 with the reasons; a run awaiting approval prints how to approve it and exits 0.
    """
    s = session_of(ctx)
    s.starts = True
    s.settings()  # configuration problems first, before any file is read
    sources = read_sources(s, files)

    def request_of(strict: bool) -> kp.PublicationRequest:
        return publication_request(
            sources,
            title=default_title(sources) if title is None else title,
            publication_id=UuidIds().new_id("pub") if publication_id is None else publication_id,
            policy_refs=policy_refs or (DEFAULT_POLICY_REF,),
            required_roles=required_roles,
            options={"kind": kind, "url": url, "classification": classification, "format": fmt},
            strict=strict,
        )

    # Validated before the store is opened: a typo needs no lock to be reported. Unless it
    # repeats a run whose key is known: that one is shown, as its input was checked then.
    request: kp.PublicationRequest | None
    try:
        request = request_of(strict=True)
    except InvalidInput:
        if not _known_key(s, idempotency_key):
            raise
        try:
            request = request_of(strict=False)
        except InvalidInput:
            request = None  # not even as stored: another request under that key
    with s.app() as (app, _):
        found = _started_by(app, idempotency_key, kp.NAME)
        if found is not None:
            differs = request is None or _differs(
                ctx, found, request.to_input(), tier, publication_id is None
            )
            _show_reused(s, app, found, differs)
            return
        if request is None:  # the key's execution went since it was looked up
            request = request_of(strict=True)
        s.echo(
            f"starting {kp.NAME}: {len(request.documents)} document"
            f"{'s' * (len(request.documents) != 1)}, {tier}, publication {request.publication_id}"
        )
        s.starting = idempotency_key or UuidIds().new_id("idem")
        execution = app.orchestrator.start(
            kp.NAME,
            request.to_input(),
            idempotency_key=s.starting,
            risk_tier=ImpactTier(tier),
        )
        conclude(s, app, execution, ok={S.SUCCEEDED, S.AWAITING_APPROVAL}, extra={"reused": False})


@run.command("workflow", epilog=EXITS)
@click.argument("name")
@click.option(
    "--input",
    "input_text",
    metavar="JSON",
    help="The input, a JSON object [default: {}].",
)
@click.option(
    "--input-file",
    type=_InputFile("r", encoding="utf-8"),
    help="Read the input (a JSON object) from FILE; - for stdin.",
)
@click.option(
    "--tier",
    type=_enum_choice([t.value for t in ImpactTier]),
    metavar="[" + "|".join(t.value for t in ImpactTier) + "]",
    help="Impact tier [default: the workflow's own].",
)
@click.option(
    "--idempotency-key",
    metavar="KEY",
    callback=an_idempotency_key,
    help="Starting twice with one key returns the first execution.",
)
@json_option
@click.pass_context
def run_workflow(
    ctx: click.Context,
    name: str,
    input_text: str | None,
    input_file: IO[str] | None,
    tier: str | None,
    idempotency_key: str | None,
) -> None:
    """Run the workflow NAME (see `govkernel workflows`) on a JSON input.

    Your own workflows are those the `workflows` setting names (GOVKERNEL_WORKFLOWS). A run
    awaiting approval prints how to approve it and exits 0; a failed one exits 1.
    """
    s = session_of(ctx)
    s.starts = True
    s.settings()
    if input_text is not None and input_file is not None:
        raise click.UsageError("give --input or --input-file, not both")
    if input_file is not None and _a_device(input_file):
        # /dev/zero would be read to the bound (a quarter of a gigabyte) before it is refused.
        what = "standard input is" if input_file.name == "<stdin>" else "is"
        raise click.BadParameter(
            f"{what} a device (such as /dev/null): give a file, a pipe, or standard input"
            " redirected from a file",
            param_hint="--input-file",
        )
    if input_file is not None and _regular_size(input_file) > MAX_INPUT_CHARS:
        # A file is sized before it is read (a stream is read up to the bound).
        raise click.BadParameter(
            f"is over {MAX_INPUT_CHARS:,} bytes (256 MiB)", param_hint="--input-file"
        )
    try:
        given = input_file.read(MAX_INPUT_CHARS + 1) if input_file is not None else input_text
    except UnicodeDecodeError:
        raise click.BadParameter("is not UTF-8 text", param_hint="--input-file") from None
    except OSError as exc:  # opened, then refused while read (EIO, EISDIR on some systems)
        raise click.BadParameter(
            f"cannot be read: {exc.strerror or exc}", param_hint="--input-file"
        ) from None
    if given is not None and not _utf8(given):  # bytes in the argument that are no UTF-8
        raise click.BadParameter("is not UTF-8 text", param_hint="--input")
    if given is not None and len(given) > MAX_INPUT_CHARS:
        raise click.BadParameter(
            f"is over {MAX_INPUT_CHARS:,} characters", param_hint="--input-file/--input"
        )
    where = "--input-file" if input_file is not None else "--input"
    if given is not None and given.startswith("\ufeff"):  # a byte-order mark, as editors save
        given = given[1:]
    if given is not None and not given.strip():
        raise click.BadParameter("is empty: give a JSON object, such as {}", param_hint=where)
    workflow_input = {} if given is None else _json_object(where, given)

    def unknown(app: App) -> click.UsageError:
        known = ", ".join(sorted(app.workflows)) or "none"
        retired = sorted(d.version for d in app.orchestrator.definitions() if d.name == name)
        if retired:  # known, to finish what it started: the setting of current ones is next
            return click.UsageError(
                f"workflow {shown(name)} is registered as retired only (version"
                f" {', '.join(retired)}): it starts nothing; name a current version in"
                f" GOVKERNEL_WORKFLOWS (current: {known})"
            )
        hint = (
            ""
            if app.settings.workflows
            else " (your own are known when the `workflows` setting names them:"
            " GOVKERNEL_WORKFLOWS=package.module:attribute)"
        )
        return click.UsageError(f"unknown workflow {shown(name)}; known: {known}{hint}")

    def checked(app: App) -> None:  # a store to be made holds no known key
        if name not in app.workflows:
            raise unknown(app)
        app.orchestrator.check_input(name, workflow_input)

    # A store that may be made holds no known key, but a server's database may be there
    # already (it cannot be told without connecting): a key it knows is shown, unchecked.
    check = None if would_make(s.settings()) and _known_key(s, idempotency_key) else checked
    with s.app(check=check) as (app, _):
        # A known key shows its execution first: its version may be retired, or gone.
        found = _started_by(app, idempotency_key)
        if name not in app.workflows and (found is None or found.workflow_name != name):
            raise unknown(app)
        if found is not None:
            reused(found, name)  # another workflow's key is refused, as `start` refuses it
            differs = dict(found.input) != workflow_input or (
                tier is not None and found.metadata.risk_tier.value != tier
            )
            _show_reused(s, app, found, differs)
            return
        app.orchestrator.check_input(name, workflow_input)  # refused before "starting"
        s.echo(render.safe(f"starting {name}"))
        s.starting = idempotency_key or UuidIds().new_id("idem")
        execution = app.orchestrator.start(
            name,
            workflow_input,
            idempotency_key=s.starting,
            risk_tier=None if tier is None else ImpactTier(tier),
        )
        conclude(s, app, execution, ok={S.SUCCEEDED, S.AWAITING_APPROVAL}, extra={"reused": False})


def _known_key(s: Session, idempotency_key: str | None) -> bool:
    """Whether the key started an execution in the configured store, looked up without
    making the store (none there: no key is known)."""
    if idempotency_key is None:
        return False
    try:
        with s.app(existing=True) as (app, _):
            return _started_by(app, idempotency_key) is not None
    except StorageUnavailable as exc:
        if str(exc).endswith("nothing has run there yet"):
            return False
        raise


def _started_by(
    app: App, idempotency_key: str | None, workflow: str | None = None
) -> WorkflowExecution | None:
    """The execution the key started, if any; for a run of `workflow`, one of another
    workflow's is refused (`InvalidInput`), as `Orchestrator.start` refuses it."""
    if idempotency_key is None:
        return None
    with app.uow_factory() as uow:
        found = uow.executions.by_idempotency_key(app.runtime.tenant, idempotency_key)
    return found if found is None or workflow is None else reused(found, workflow)


def _show_reused(s: Session, app: App, found: WorkflowExecution, differs: bool) -> None:
    """A run whose idempotency key already started `found`: that one is shown instead."""
    s.echo(render.safe(f"idempotency key {found.idempotency_key!r} already started {found.id}"))
    if differs:
        s.warn(
            "note: it was started for a different request; this one was not started (use"
            " another --idempotency-key to start it)"
        )
    elif found.state in (S.FAILED, S.COMPENSATED, S.CANCELLED):
        # Its error would read as this run's: nothing ran now.
        s.warn(
            f"note: nothing ran now: it had already ended {found.state.value} (a key starts"
            " one execution, ever: another --idempotency-key starts the request again)"
        )
    reused = {"reused": True, "request_differs": differs}
    conclude(s, app, found, ok={S.SUCCEEDED, S.AWAITING_APPROVAL}, extra=reused)


def _definition(app: App, x: WorkflowExecution) -> WorkflowDefinition | None:
    """The definition that started `x`, current or retired, if this command has it: another
    version's steps would describe it wrongly (a step count of theirs, a step name)."""
    return app.orchestrator.registered(x.workflow_name, x.workflow_version)


def _describing(
    s: Session,
    app: App,
    found: Sequence[WorkflowExecution],
    shapes: Mapping[str, Any] | None = None,
    *,
    unregistered_note: bool = True,
) -> Callable[[WorkflowExecution], WorkflowDefinition | None]:
    """The definition each of `found` is described by (its step count, its step's name):
    the one that started it, unless that version's steps changed since, which a note on
    stderr then says. `shapes`: the steps each started with, if already read."""
    if shapes is None:  # (only those with a definition to compare them with)
        compared = [x.id for x in found if _definition(app, x) is not None]
        shapes = queries.started_shapes(app.uow_factory, compared) if compared else {}
    changed = {
        x.id
        for x in found
        if (d := _definition(app, x)) is not None and shapes.get(x.id) not in (None, d.shape())
    }
    if changed:
        first = next(x for x in found if x.id in changed)
        s.warn(
            render.safe(
                f"note: {len(changed)} execution{'s' * (len(changed) != 1)} ({first.id} first)"
                f" started with other steps than {first.workflow_name} version"
                f" {first.workflow_version} as registered here has: shown without their step;"
                " commands refuse to drive them until that version's own steps are registered"
            )
        )
    unknown = [x for x in found if _definition(app, x) is None] if unregistered_note else []
    if unknown:
        first = unknown[0]
        s.warn(
            render.safe(
                f"note: {len(unknown)} execution{'s' * (len(unknown) != 1)} ({first.id} first)"
                f" run{'s' * (len(unknown) == 1)} a workflow not registered here"
                f" ({first.workflow_name} version {first.workflow_version} first): shown"
                " without their steps; name the module that has it in GOVKERNEL_WORKFLOWS"
                " (an earlier version in GOVKERNEL_RETIRED_WORKFLOWS)"
            )
        )
    return lambda x: None if x.id in changed else _definition(app, x)


def _after_a_crash(s: Session, app: App, found: Sequence[WorkflowExecution]) -> None:
    """A note when what is shown as unfinished may be a dead process's, not in progress."""
    if app.unclean_shutdown and any(x.state in RECOVERABLE for x in found):
        s.warn(
            f"note: the last process on this store (pid {app.unclean_shutdown}) died holding"
            f" it: what it left unfinished resumes with `govkernel{s.hint()} recover`"
        )


def _regular_size(file: IO[str]) -> int:
    """The size of a regular file behind `file`, or 0 (stdin, a pipe)."""
    try:
        info = os.fstat(file.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        return 0
    return info.st_size if stat.S_ISREG(info.st_mode) else 0


def _a_device(file: IO[str]) -> bool:
    """Whether `file` is a character or block device other than a terminal."""
    try:
        mode = os.fstat(file.fileno()).st_mode
        return (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) and not os.isatty(file.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        return False


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_kind(value: object) -> str:
    """What a JSON value is called in JSON's own words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "a string" if isinstance(value, str) else "an array"


def _json_object(where: str, text: str) -> dict[str, Any]:
    """Strict JSON: NaN, Infinity and a key given twice are refused, as the store would."""
    try:
        value = strict_json.loads(text)
    except ValueError as exc:  # JSONDecodeError included: it names the line and column
        raise click.BadParameter(render.safe(str(exc)), param_hint=where) from None
    if not isinstance(value, dict):
        raise click.BadParameter(
            f"must be a JSON object, got {_json_kind(value)}", param_hint=where
        )
    return value


@cli.command("workflows", epilog=EXITS)
@json_option
@click.pass_context
def workflows_command(ctx: click.Context) -> None:
    """The workflows this command can run, recover and approve: the built-in ones and those
    the `workflows` setting names, and the earlier versions `retired_workflows` names (they
    only finish what they started). Opens no store."""
    s = session_of(ctx)
    s.printing()
    settings = s.settings()
    # Definitions are built from a knowledge service; one on a throwaway store will do.
    with build_app(settings, Overrides(store=wiring.throwaway_store(settings))) as app:
        definitions = sorted(app.orchestrator.definitions(), key=lambda d: (d.name, d.version))
        current = {id(d) for d in app.workflows.values()}
    if s.json:
        s.emit(
            {
                "workflows": [
                    render.workflow_json(d) | {"retired": id(d) not in current} for d in definitions
                ]
            }
        )
        return
    rows = [
        (
            d.name,
            d.version + ("" if id(d) in current else " (retired)"),
            " > ".join(d.step_names()),
            d.compensation.name if d.compensation else "-",
            d.metadata.risk_tier.value,
        )
        for d in definitions
    ]
    s.echo(render.table(("NAME", "VERSION", "STEPS", "COMPENSATION", "TIER"), rows))


def _differs(
    ctx: click.Context,
    found: WorkflowExecution,
    wanted: Mapping[str, Any],
    tier: str,
    generated_publication_id: bool,
) -> bool:
    """Whether a repeated run asks for something else than the execution its key started;
    what the user left to defaults (a fresh publication id, the tier) is not compared."""
    stored = dict(found.input)
    wanted = dict(wanted)
    if generated_publication_id:
        stored.pop("publication_id", None)
        wanted.pop("publication_id", None)
    tier_given = ctx.get_parameter_source("tier") is not click.core.ParameterSource.DEFAULT
    return stored != wanted or (tier_given and found.metadata.risk_tier.value != tier)


def read_sources(s: Session, files: Sequence[Path]) -> list[SourceFile]:
    with _maybe_progress(files, "reading documents", at_least=PROGRESS_THRESHOLD) as each:
        return [read_source(path) for path in each]


def default_title(sources: Sequence[SourceFile]) -> str:
    first = sources[0]
    name = first.meta.get("title") or derived_title(first.path.stem)
    more = len(sources) - 1
    return name if not more else f"{name} and {more} more document{'s' * (more != 1)}"


# -- approvals and cancellation ----------------------------------------------------------------


@cli.command(epilog=EXITS)
@click.argument("execution_id", metavar="EXECUTION", callback=an_id)
@click.option(
    "--role",
    required=True,
    callback=not_blank,
    help="The role you approve in (e.g. reviewer).",
)
@click.option(
    "--approver",
    metavar="NAME",
    callback=not_blank,
    help="Who approves [default: the acting identity, GOVKERNEL_ACTOR]. The policy refuses"
    " self-approval: the actor who started the execution can neither approve it nor record"
    " anyone's approval of it.",
)
@json_option
@click.pass_context
def approve(ctx: click.Context, execution_id: str, role: str, approver: str | None) -> None:
    """Approve an execution awaiting approval, then let it continue.

    The execution continues on behalf of the actor who started it; Tier2 and Tier3 need
    two distinct approvers, so a second approval may be required.
    """
    s = session_of(ctx)
    s.commanding("approval", execution_id)
    with s.app(existing=True) as (app, printer):
        execution = app.orchestrator.get(execution_id)
        actor, approver = app.settings.actor, approver or app.settings.actor
        if same_person(approver, execution.requested_by):
            spelled = "" if approver == execution.requested_by else f"; {approver!r} is them"
            raise Failed(
                f"{execution.requested_by!r} started execution {execution_id} and cannot"
                f" approve it (separation of duties){spelled}",
                EXIT_FAILED,  # a refusal by policy, as a denial is
            )
        if same_person(actor, execution.requested_by):
            raise Failed(
                f"{execution.requested_by!r} started execution {execution_id} and cannot"
                f" record an approval of it, by {approver!r} or anyone (separation of duties):"
                " the approver runs the command (GOVKERNEL_ACTOR)",
                EXIT_FAILED,
            )
        printer.mark(execution)
        mine = sum(_is(a, approver, role) for a in execution.approvals)  # 0: refused otherwise
        s.acting_on(lambda _, now: sum(_is(a, approver, role) for a in now.approvals) > mine)
        s.landed(result := app.orchestrator.approve(execution_id, approver=approver, role=role))
        s.landed(result := finish(app, result))
        conclude(s, app, result, ok={S.SUCCEEDED, S.AWAITING_APPROVAL})


@cli.command(epilog=EXITS)
@click.argument("execution_id", metavar="EXECUTION", callback=an_id)
@click.option(
    "--reason",
    required=True,
    callback=not_blank,
    help="Why it is rejected (recorded in the audit trail).",
)
@json_option
@click.pass_context
def reject(ctx: click.Context, execution_id: str, reason: str) -> None:
    """Reject an execution awaiting approval: it fails (compensating if it published)."""
    s = session_of(ctx)
    s.commanding("rejection", execution_id)
    with s.app(existing=True) as (app, printer):
        printer.mark(found := app.orchestrator.get(execution_id))
        s.acting_on(_entry_after(found, "rejected: "))
        s.landed(result := app.orchestrator.reject(execution_id, reason=reason))
        s.landed(result := finish(app, result))
        conclude(s, app, result, ok={S.FAILED, S.COMPENSATED})


@cli.command(epilog=EXITS)
@click.argument("execution_id", metavar="EXECUTION", callback=an_id)
@click.option(
    "--reason",
    default="cancel requested",
    show_default=True,
    callback=not_blank,
    help="Why it is cancelled (recorded in the audit trail).",
)
@json_option
@click.pass_context
def cancel(ctx: click.Context, execution_id: str, reason: str) -> None:
    """Cancel an unfinished execution; what it published is retracted by compensation.

    An execution that has ended (succeeded, failed, ...) cannot be cancelled: its
    publication stands."""
    s = session_of(ctx)
    s.commanding("cancellation", execution_id)
    with s.app(existing=True) as (app, printer):
        printer.mark(app.orchestrator.get(execution_id))
        s.acting_on(lambda _, now: now.cancel_requested)
        s.landed(result := app.orchestrator.cancel(execution_id, reason=reason))
        s.landed(result := finish(app, result))
        conclude(s, app, result, ok={S.CANCELLED, S.COMPENSATED})


def _is(approval: Approval, approver: str, role: str) -> bool:
    return same_person(approval.approver, approver) and approval.role == role


def _entry_after(
    before: WorkflowExecution, reason: str
) -> Callable[[App, WorkflowExecution], bool]:
    """Whether the trail gained an entry of that reason since `before`."""

    def recorded(app: App, now: WorkflowExecution) -> bool:
        trail = queries.audit_trail(app.uow_factory, app.runtime.tenant, now.id)
        new = (e for e in trail if e.sequence > before.audit_sequence)
        return any(e.reason.startswith(reason) for e in new)

    return recorded


def _role_wanted(x: WorkflowExecution, now: datetime) -> str:
    """The role an approval of `x` is still wanted in, when its request names one (the
    built-in workflow's `required_roles`); else a placeholder. An expired approval is none."""
    roles = x.input.get("required_roles") if render.built_in(x) else None
    approved = {a.role.casefold() for a in x.approvals if a.valid_at(now)}
    wanted = [r for r in roles or () if isinstance(r, str) and r.casefold() not in approved]
    return wanted[0] if len(wanted) == 1 else "ROLE"


def finish(app: App, execution: WorkflowExecution) -> WorkflowExecution:
    """On a store this process holds alone, no one else can be running the execution: drive
    it on even if a crashed run's lease has not expired yet."""
    state = execution.state
    if app.exclusive_store and not state.terminal and state is not S.AWAITING_APPROVAL:
        return app.orchestrator.run(execution.id, ignore_leases=True)
    return execution


def conclude(
    s: Session,
    app: App,
    x: WorkflowExecution,
    *,
    ok: set[ExecutionState],
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Report where an execution stands; raise Failed for an unexpected end."""
    definition = _definition(app, x)
    waiting = _why_waiting(app, x) if x.state is S.AWAITING_APPROVAL else None
    if s.json:
        record = render.execution_json(x, definition, detail=True) | dict(extra or {})
        s.emit(record | ({} if waiting is None else {"why": waiting}))
    if x.state is S.SUCCEEDED:
        published = x.step_outputs.get("publish") if render.built_in(x) else None
        if not isinstance(published, Mapping):
            published = {}
        capsule = f": capsule {published['capsule_id']}" if "capsule_id" in published else ""
        s.echo(render.safe(f"succeeded{capsule}"))
        if "artifact_hash" in published:
            s.echo(render.safe(f"  artifact hash  {published['artifact_hash']}"))
        if published.get("published") is False:
            # The same content under a publication id used before: nothing new (a title
            # given now is not the capsule's).
            s.echo(
                render.safe(
                    f"  note           publication {x.input.get('publication_id')} was"
                    " published already with this content: the capsule stands as it was"
                )
            )
        s.suggest(13, ("details", f"executions show {x.id}"))
        return
    if waiting is not None:
        s.echo(render.safe(f"awaiting approval: execution {x.id}"))
        s.echo(f"  why      {render.safe(waiting)}")
        s.suggest(
            7,
            ("approve", f"approve {x.id} --role {_role_wanted(x, app.runtime.clock.now())}"),
            ("reject", f"reject {x.id} --reason TEXT"),
        )
        if not s.transient():
            s.echo(
                render.safe(
                    f"  (run by the approver, GOVKERNEL_ACTOR=NAME: {x.requested_by} started"
                    " it, and can neither approve it nor record an approval of it)"
                )
            )
        return
    if x.state in ok:
        s.echo(
            render.safe(
                f"{x.state.value}: execution {x.id}"
                + (f" ({x.last_error})" if x.last_error else "")
            )
        )
        return
    if not x.state.terminal:
        # An embedded store is this process's alone: a live lease on it is a dead run's.
        leased = x.lease_owner not in (None, app.orchestrator.worker_id)
        live = not x.lease_expired(app.runtime.clock.now())
        running_elsewhere = not app.exclusive_store and leased and live
        if s.transient():
            resume = f"{TRANSIENT_NOTE}, so it cannot be resumed"
        elif running_elsewhere:
            # A cancellation, say, of a run in progress: that worker acts on it.
            resume = (
                f"worker {x.lease_owner} holds it until {render.when(x.lease_expires_at)} UTC and"
                " takes it on at its next step; if that worker died, `govkernel"
                f"{s.hint()} recover` resumes it once that time has passed"
            )
        elif definition is None:
            resume = (
                f"it runs {x.workflow_name} version {x.workflow_version}, which this command"
                " does not have: `govkernel recover` finishes it once the module that has"
                " that version is named in GOVKERNEL_RETIRED_WORKFLOWS (retired_workflows)"
            )
        else:
            resume = f"it resumes with `govkernel{s.hint()} recover`"
        said = render.safe(
            f"execution {x.id} is {x.state.value}; {resume}"
            + (f" (last error: {x.last_error})" if x.last_error else "")
        )
        if x.state is S.COMPENSATING and S.COMPENSATED not in ok:
            # Only its undo is left (retried later): it has failed, as a compensated end has.
            raise Failed(said)
        s.echo(said)
        return
    raise Failed(failure_message(x))


_DENIED = re.compile(r"(?:PolicyDenied|ApprovalRequired): (\w+) denied: (.*)$", re.DOTALL)


def failure_message(x: WorkflowExecution) -> str:
    if x.state is S.CANCELLED:
        return f"execution {x.id} was cancelled"
    if x.state is S.COMPENSATED and x.cancel_requested and not x.last_error:
        return f"execution {x.id} was cancelled, and what it had done was undone"
    error = x.last_error or "no error recorded"
    denied = _DENIED.search(error)
    if denied:
        return (
            f"policy denied {denied.group(1)}: {denied.group(2)} (execution {x.id} {x.state.value})"
        )
    return f"execution {x.id} {x.state.value}: {error}"


# -- executions --------------------------------------------------------------------------------


@cli.group(epilog=EXITS)
@json_option  # `govkernel executions --json ...` as well as before or after
def executions() -> None:
    """List and inspect workflow executions."""


@executions.command("list", epilog=EXITS)
@click.option("--state", type=_enum_choice([st.value for st in ExecutionState]))
@limit_option(DEFAULT_LIST_LIMIT)
@click.option(
    "--workflow",
    metavar="NAME",
    callback=a_workflow_name,
    help="Only the executions of this workflow (any of its versions).",
)
@click.option(
    "--before",
    metavar="EXECUTION",
    callback=an_id,
    help="The next page: executions listed after this one (older, or as old).",
)
@json_option
@click.pass_context
def executions_list(
    ctx: click.Context, state: str | None, workflow: str | None, limit: int, before: str | None
) -> None:
    """Executions, newest first."""
    s = session_of(ctx)
    s.read_only = True
    s.printing()
    with s.app(existing=True) as (app, _):
        unreadable: list[str] = []
        found = queries.recent_executions(
            app.uow_factory,
            app.runtime.tenant,
            now=app.runtime.clock.now(),
            state=ExecutionState(state) if state else None,
            workflow=workflow,
            limit=limit + 1,  # one past the page: whether a next page has anything
            before=None if before is None else app.orchestrator.get(before, with_input=False),
            unreadable=unreadable,
        )
        more = len(found) + len(unreadable) > limit
        found = found[:limit]
        described = _describing(s, app, found)
        _after_a_crash(s, app, found)
        if s.json:
            s.emit([render.execution_json(x, described(x)) for x in found])
        elif not found:
            s.echo(
                render.safe(
                    "no executions"
                    + (f" of workflow {workflow}" if workflow else "")
                    + (f" in state {state}" if state else "")
                    + (f" listed after {before}" if before else "")
                    + f" in tenant {app.runtime.tenant!r}"
                    + (
                        " (no workflow of that name is registered here: `govkernel workflows`"
                        " lists those that are)"
                        if workflow
                        and workflow not in {d.name for d in app.orchestrator.definitions()}
                        else ""
                    )
                )
            )
        else:
            s.echo(render.executions_table(found, described))
        if found and more:  # on stderr beside --json
            also = (
                (f" --state {state}" if state else "")
                + (f" --workflow {workflow}" if workflow else "")
                + (f" --limit {limit}" if limit != DEFAULT_LIST_LIMIT else "")
            )
            s.echo(
                render.safe(
                    f"(--before {found[-1].id}{also} shows the next {limit};"
                    f" --limit N shows up to {MAX_LIMIT} at once)"
                )
            )
        if unreadable:
            raise Failed(
                f"{len(unreadable)} stored execution{'s' * (len(unreadable) != 1)} cannot be"
                f" read and {'is' if len(unreadable) == 1 else 'are'} not listed, first"
                f" {unreadable[0]}: `govkernel audit verify` reports on each",
                EXIT_FAILED,
            )


@executions.command("show", epilog=EXITS)
@click.argument("execution_id", metavar="EXECUTION", callback=an_id)
@json_option
@click.pass_context
def executions_show(ctx: click.Context, execution_id: str) -> None:
    """An execution's details and its audit trail."""
    s = session_of(ctx)
    s.read_only = True
    s.printing()
    with s.app(existing=True) as (app, _):
        x = app.orchestrator.get(execution_id)
        try:
            trail = queries.audit_trail(app.uow_factory, app.runtime.tenant, execution_id)
        except CorruptRecord:  # an entry that does not read: the verification names it
            trail = []
        report = app.orchestrator.verify(execution_id)
        definition = _describing(s, app, [x], {x.id: started_steps(trail)})(x)
        _after_a_crash(s, app, [x])
        if s.json:
            record = render.execution_json(x, definition, detail=True)
            record["audit"] = [render.audit_json(e) for e in trail]
            record["verification"] = render.report_json(report)
            s.emit(record)
            if not report.ok:  # the same exit status as the text form
                raise Failed(
                    f"audit trail of {x.id} is broken at entry"
                    f" #{report.first_bad_sequence}: {report.problem}"
                )
            return
        m = x.metadata
        rows: list[tuple[str, object]] = [
            ("execution", x.id),
            ("workflow", f"{x.workflow_name} v{x.workflow_version}"),
            ("state", x.state.value),
            (
                "tier",
                f"{m.risk_tier.value} (consistency {m.consistency_class.value},"
                f" rollback {m.rollback_strategy.value})",
            ),
            ("step", f"{render.progress(x, definition)} {render.step_name(x, definition)}"),
            ("tenant", x.tenant),
            *([] if x.environment is None else [("environment", x.environment.value)]),
            (
                "requested by",
                x.requested_by
                + (" (who may not approve it)" if x.state is S.AWAITING_APPROVAL else ""),
            ),
            ("idempotency", x.idempotency_key),
            ("correlation", x.correlation_id),
            ("created", render.when(x.created_at)),
            ("updated", render.when(x.updated_at)),
            ("attempts", ", ".join(f"{k} {v}" for k, v in x.attempts.items()) or "-"),
            (
                "approvals",
                ", ".join(f"{a.approver} as {a.role}" for a in x.approvals) or "-",
            ),
            (
                "lease",
                f"{x.lease_owner} until {render.when(x.lease_expires_at)}"
                if x.lease_owner
                else "-",
            ),
            ("last error", x.last_error or "-"),
            *([] if x.retry_at is None else [("retries at", render.when(x.retry_at))]),
        ]
        summary = render.input_summary(x) if render.built_in(x) else {}
        if "publication_id" in summary:
            rows.append(
                ("publication", f"{summary['publication_id']}  {summary.get('title', '-')!r}")
            )
        documents = summary.get("documents")
        for doc in documents if isinstance(documents, list) else []:
            rows.append(
                ("document", f"{doc.get('kind')}  {doc.get('source_url')}  {doc.get('title')!r}")
            )
        order = [*(definition.step_names() if definition else ()), "retract"]
        for step in sorted(x.step_outputs, key=lambda n: order.index(n) if n in order else 99):
            rows.append(
                (
                    f"output {step}",
                    render.step_output(render.built_in(x), step, x.step_outputs[step]),
                )
            )
        width = max(len(k) for k, _ in rows)
        for key, value in rows:
            s.echo(render.safe(f"{key:<{width}}  {value}"))
        verdict = (
            "chain intact"
            if report.ok
            else f"CHAIN BROKEN at #{report.first_bad_sequence}: {report.problem}"
        )
        s.echo()
        stored = len(trail) if trail else report.entries
        s.echo(render.safe(f"audit trail ({stored} entries, {verdict})"))
        s.echo(render.audit_table(trail))
        if not report.ok:
            raise Failed(
                f"audit trail of {x.id} is broken at entry"
                f" #{report.first_bad_sequence}: {report.problem}"
            )


# -- audit -------------------------------------------------------------------------------------


@cli.group(epilog=EXITS)
@json_option  # `govkernel audit --json ...` as well as before or after
def audit() -> None:
    """Verify audit trails, and anchor their heads outside the store."""


@audit.command("verify", epilog=EXITS)
@click.argument("execution_id", metavar="[EXECUTION]", required=False, callback=an_id)
@click.option(
    "--anchors",
    "anchor_file",
    metavar="FILE",
    callback=a_file,
    help="Also check the trails against the heads `audit anchor` recorded in FILE.",
)
@json_option
@click.pass_context
def audit_verify(ctx: click.Context, execution_id: str | None, anchor_file: Path | None) -> None:
    """Recompute the hash chain of one execution (or of all): exit 1 on any tampering.

    With --anchors, a trail rolled back or rewritten since the anchors were taken (which
    its own chain cannot show) is reported too, and so is an anchored execution deleted.
    """
    s = session_of(ctx)
    s.read_only = True
    s.printing()
    s.settings()
    taken = None if anchor_file is None else _read_anchors(s, anchor_file)
    with s.app(existing=True) as (app, _):
        other_store = None if taken is None else _other_store(app, taken)
        anchored = {a.execution_id for a in taken.anchors} if taken is not None else set()
        results = verify_chains(s, app, execution_id, anchored)
        checked: dict[str, Any] | None = None
        if taken is not None:
            chosen = [a for a in taken.anchors if execution_id in (None, a.execution_id)]
            failed = anchors.check(app.uow_factory, app.runtime.tenant, chosen)
            # An anchor's verdict is news only where the chain itself was found intact.
            broken = {r["execution_id"] for r in results if not r["ok"]}
            by_id = {r.execution_id: render.report_json(r) for r in failed}
            results = [by_id.pop(r["execution_id"], r) if r["ok"] else r for r in results]
            results += [r for xid, r in by_id.items() if xid not in broken]
            checked = {
                "file": str(anchor_file),
                "taken_at": render.iso(taken.taken_at),
                "checked": len(chosen),
                "failed": len(failed),
                "store_matches": other_store is None,
            }
        keyed = getattr(app.store, "audit_key", None) is not None
        unchecked = 0 if keyed else _sealed(app, execution_id)
        if unchecked:  # a key forgotten (or its variable misspelt) must not pass unsaid
            s.warn(
                f"note: {unchecked} execution{'s' * (unchecked != 1)} here carr"
                f"{'ies' if unchecked == 1 else 'y'} audit seals, not checked: no audit key"
                " given (GOVKERNEL_AUDIT_KEY)"
            )
        if s.json:
            s.emit(
                {
                    "ok": all(r["ok"] for r in results) and other_store is None,
                    "executions": len(results),
                    "entries": sum(r["entries"] for r in results),
                    "seals_checked": keyed,
                    "reports": results,
                }
                | ({"anchors": checked} if checked is not None else {})
            )
        else:
            rows = [
                (
                    r["execution_id"],
                    r["entries"],
                    "ok"
                    if r["ok"]
                    else f"SEAL: {r['problem']}"
                    if r["seal"]
                    else f"BROKEN at #{r['first_bad_sequence']}: {r['problem']}",
                )
                for r in results
            ]
            s.echo(
                render.table(("EXECUTION", "ENTRIES", "CHAIN"), rows)
                if rows
                else render.safe(f"no executions in tenant {app.runtime.tenant!r}")
            )
        bad = [r for r in results if not r["ok"]]
        if bad:
            first = bad[0]
            entry = None if first["seal"] else first["bad_entry"]
            if entry is not None and not s.json:
                s.echo()
                s.echo(render.safe(f"first bad entry of {first['execution_id']}:"))
                for key in (
                    "sequence",
                    "at",
                    "actor",
                    "from_state",
                    "to_state",
                    "step",
                    "reason",
                    "hash",
                ):
                    value = "-" if entry[key] is None else entry[key]
                    s.echo(f"  {key:<10}  {render.safe(value)}")
            what = (
                f"audit seal of {first['execution_id']} does not hold"
                if first["seal"]
                else f"audit trail of {first['execution_id']} is broken at entry"
                f" #{first['first_bad_sequence']}"
            )
            raise Failed(
                (f"{other_store}; " if other_store else "")
                + f"{what}: {first['problem']}"
                + (f" ({len(bad)} executions affected)" if len(bad) > 1 else "")
            )
        if other_store is not None:
            held = checked["checked"] if checked else 0
            raise Failed(
                f"{other_store}; the {held} anchor{'s' * (held != 1)} checked"
                f" {'hold' if held != 1 else 'holds'} here all the same"
            )
        if not s.json:
            total = sum(r["entries"] for r in results)
            plural = "s" * (len(results) != 1)
            s.echo(f"verified {len(results)} execution{plural}, {total} entries: all chains intact")
            if checked is not None and checked["checked"]:
                s.echo(
                    f"and every one of the {checked['checked']} anchored heads (taken"
                    f" {checked['taken_at']}) is still in its trail"
                )
            elif checked is not None:
                none = f"{execution_id} is not anchored" if execution_id else "no anchors are"
                s.echo(render.safe(f"{none} in {anchor_file}: nothing checked against them"))


def _sealed(app: App, execution_id: str | None) -> int:
    """How many of the executions verified carry a seal."""
    try:
        if execution_id is not None:
            return int(app.orchestrator.get(execution_id, with_input=False).seal is not None)
        listed = queries.every_execution(app.uow_factory, app.runtime.tenant, [])
    except (CorruptRecord, RecordNotFound):  # what verify reported already
        return 0
    return sum(x.seal is not None for x in listed)


def _read_anchors(s: Session, path: Path) -> anchors.Anchors:
    try:
        taken = anchors.read(path)
    except anchors.AnchorFileError as exc:
        raise Failed(render.safe(str(exc)), EXIT_USAGE) from None
    tenant = s.settings().tenant
    if taken.tenant != tenant:
        raise Failed(
            render.safe(
                f"anchor file {path} holds the anchors of tenant {taken.tenant!r}, and this is"
                f" tenant {tenant!r} (GOVKERNEL_TENANT)"
            ),
            EXIT_USAGE,
        )
    return taken


def _in_the_store(store_url: str, path: Path) -> bool:
    """Whether `path` is one of an on-disk store's files: inside its directory, or its lock."""
    directory = SurrealConfig(store_url).path if store_url.startswith("surrealkv:") else None
    if directory is None:
        return False
    target = Path(os.path.realpath(path))
    home = Path(os.path.realpath(directory))
    lock = home.with_name(home.name + ".lock")
    if target in (lock, home) or home in target.parents:
        return True
    # The same directories under other paths (a bind mount): told by device and inode, as
    # the store's lock tells them.
    return _same_file(target, lock) or any(_same_file(p, home) for p in (target, *target.parents))


def _same_file(one: Path, other: Path) -> bool:
    try:
        return os.path.samefile(one, other)
    except OSError:  # one of them is not there (yet)
        return False


def _other_store(app: App, taken: anchors.Anchors) -> str | None:
    """What to say when the anchors name another store than this one, or None.

    Not a reason to check nothing: the store's writers, whom anchors guard against, can
    change its id as they can anything in it. The anchors are checked all the same, and the
    mismatch is a failure of its own."""
    if None in (taken.store, app.store.store_id) or taken.store == app.store.store_id:
        return None
    return render.safe(
        f"the anchor file names store {taken.store}, and this is store {app.store.store_id}:"
        " it was taken from another store, or this store's id was changed"
    )


@audit.command("seal", epilog=EXITS)
@click.argument("execution_id", metavar="[EXECUTION]", required=False, callback=an_id)
@click.option(
    "--unsealed",
    is_flag=True,
    help="Also seal executions that have no seal, as they stand (written before the store"
    " had a key; one whose seal was removed reads the same).",
)
@json_option
@click.pass_context
def audit_seal(ctx: click.Context, execution_id: str | None, unsealed: bool) -> None:
    """Seal the store's executions (every tenant's; or EXECUTION, of this tenant) with the
    audit key, GOVKERNEL_AUDIT_KEY.

    Executions are sealed as they are written once the store has a key. This moves to it
    the seals of the key it replaces (GOVKERNEL_AUDIT_PREVIOUS_KEY), and with --unsealed
    seals those written before the store had a key. Only trails that verify are sealed; a
    seal that does not match is never replaced; an execution a worker holds is left for
    later. Exit 1 when any is left unsealed.
    """
    s = session_of(ctx)
    s.printing()
    s.again = "nothing was sealed"  # until the store is open
    settings = s.settings()
    if settings.audit_key is None:
        raise Failed("no audit key to seal with: set GOVKERNEL_AUDIT_KEY", EXIT_USAGE)
    key_id = AuditKey.from_text(settings.audit_key).key_id
    previous = settings.previous_audit_key
    before = None if previous is None else AuditKey.from_text(previous)
    with s.app(existing=True) as (app, _):
        s.again = "what it sealed stands; the same `govkernel audit seal` seals the rest"
        tenant = None if execution_id is None else app.runtime.tenant
        if execution_id is not None:
            ids = [execution_id]
        else:
            unreadable: list[str] = []
            with app.uow_factory() as uow:
                listed = uow.executions.every(with_input=False, unreadable=unreadable)
            ids = [x.id for x in listed] + unreadable
        outcomes = []
        with _maybe_progress(ids, "sealing") as items:
            for xid in items:
                outcomes.append(
                    sealing.seal(
                        app.uow_factory,
                        tenant,
                        xid,
                        now=app.runtime.clock.now(),
                        previous=before,
                        unsealed=unsealed,
                    )
                )
    counts = {o: sum(r.outcome is o for r in outcomes) for o in sealing.Sealing}
    done = (sealing.Sealing.SEALED, sealing.Sealing.MOVED, sealing.Sealing.ALREADY)
    left = [r for r in outcomes if r.outcome not in done]
    if s.json:
        s.emit(
            {
                "ok": not left,
                "key_id": key_id,
                **{o.name.lower(): counts[o] for o in sealing.Sealing},
                "results": [
                    {
                        "execution_id": r.execution_id,
                        "outcome": r.outcome.value,
                        "problem": r.problem,
                    }
                    for r in outcomes
                ],
            }
        )
    else:
        rows = [(r.execution_id, r.outcome.value, r.problem or "") for r in outcomes]
        s.echo(render.table(("EXECUTION", "SEAL", "WHY NOT"), rows) if rows else "no executions")
        s.echo(", ".join(f"{o.value} {counts[o]}" for o in sealing.Sealing) + f" (key id {key_id})")
    if before is not None:
        # Seals are moved on that key's word alone: kept set, it lets whoever still holds
        # the old key have any trail they rewrite and seal with it moved by a later run.
        s.warn(
            "note: once the seals are moved, remove GOVKERNEL_AUDIT_PREVIOUS_KEY"
            " (previous_audit_key): while it is set, `audit seal` moves any seal made with"
            " that key, forged ones too"
        )
    if left:
        first = left[0]
        hint = {
            sealing.Sealing.UNSEALED: "; if it was written before the store had a key,"
            " `audit seal --unsealed` seals it as it stands",
            sealing.Sealing.BUSY: "",
        }.get(first.outcome, "")
        raise Failed(
            render.safe(
                f"{first.execution_id} was not sealed: {first.problem}{hint}"
                + (f" ({len(left)} executions not sealed)" if len(left) > 1 else "")
            )
        )


ANCHORS_LOST = "the anchor document could not be written"


@audit.command("anchor", epilog=EXITS)
@click.option(
    "--output",
    "-o",
    metavar="FILE",
    callback=a_file,
    help="Write the anchors to FILE, replacing it whole; anchors it already holds are"
    " checked first [default: stdout].",
)
@json_option
@click.pass_context
def audit_anchor(ctx: click.Context, output: Path | None) -> None:
    """Record the audit head of every execution whose chain verifies, to keep outside the
    store (`audit verify --anchors FILE` checks against it).

    A trail rolled back or rewritten by someone who can write the store still verifies on
    its own; against anchors taken before, it does not. Executions whose chain is broken are
    not anchored: they are reported, and the command exits 1.
    """
    s = session_of(ctx)
    s.read_only = True
    if output is None and sys.stdout is None:  # its only product: refused before any work
        raise Failed(
            f"{ANCHORS_LOST}: standard output is closed (--output FILE writes it to a file)",
            EXIT_USAGE,
        )
    if output is None:  # the anchors are the record: stdout holds them alone
        _reserve_stdout()
    if s.json:  # the summary
        s.printing()
    s.settings()
    if output is not None and not output.parent.is_dir():
        raise Failed(
            render.safe(f"cannot write {output}: no directory {output.parent}"), EXIT_USAGE
        )
    if output is not None and _in_the_store(s.settings().store_url, output):
        raise Failed(
            render.safe(f"cannot write {output}: it is the store's own (keep anchors outside it)"),
            EXIT_USAGE,
        )
    # An empty regular file (made ready with `touch`, say), or a link to none yet, holds no
    # anchors to check first; anything else there is read, and refused if it is no anchor
    # file (a FIFO, a device).
    fresh_file = output is not None and output.is_file() and output.stat().st_size == 0
    exists = output is not None and output.exists()
    earlier = _read_anchors(s, output) if output is not None and exists and not fresh_file else None
    with s.app(existing=True) as (app, _):
        if earlier is not None and output is not None:
            other_store = _other_store(app, earlier)
            if other_store is not None:
                raise Failed(f"{output} was left as it is: {other_store}; anchor into another file")
            failed = anchors.check(app.uow_factory, app.runtime.tenant, earlier.anchors)
            if failed:
                first = failed[0]
                raise Failed(
                    render.safe(
                        f"{output} was left as it is: {len(failed)} of its anchors no longer"
                        f" hold, first {first.execution_id}: {first.problem}"
                        " (`govkernel audit verify --anchors` lists them)"
                    )
                )
        taken, broken = anchors.take(
            app.uow_factory,
            app.runtime.tenant,
            app.orchestrator.verify,
            store=app.store.store_id,
            now=app.runtime.clock.now(),
            progress=lambda items: _maybe_progress(items, "anchoring"),
        )
    if earlier is not None:
        taken = anchors.renewed(taken, earlier)
    if output is not None:
        try:
            anchors.write(taken, output)
        except anchors.AnchorFileError as exc:
            raise Failed(render.safe(str(exc)), EXIT_USAGE) from None
        except OSError as exc:
            # Exit 2, whatever stopped the write (a file it may not write, a full disk): 1
            # says a chain was found broken, and a monitor must tell tampering from a disk.
            raise Failed(
                render.safe(f"cannot write {output}: {exc.strerror or exc}"), EXIT_USAGE
            ) from None
    summary = {
        "anchored": len(taken.anchors),
        "taken_at": render.iso(taken.taken_at),
        "output": None if output is None else str(output),
        "broken": [render.report_json(r) for r in broken],
    }
    if s.json and output is not None:
        s.emit(summary)
    elif output is None:  # the anchors are the record: stdout holds them alone
        unwritten = _write(render.dumps(taken.to_json()), err=False)
        if unwritten is not None:  # a reader gone too: no one has them
            raise Failed(render.safe(f"{ANCHORS_LOST}: {unwritten}"), EXIT_USAGE)
    where = "" if output is None else f" in {output}"
    count = len(taken.anchors)
    s.warn(render.safe(f"anchored {count} execution{'s' * (count != 1)}{where}"))
    if broken:
        first = broken[0]
        raise Failed(
            render.safe(
                f"{len(broken)} execution{'s' * (len(broken) != 1)} not anchored: the audit"
                f" trail of {first.execution_id} is broken at entry #{first.first_bad_sequence}:"
                f" {first.problem}"
            )
        )


def _as_now(app: App, x: WorkflowExecution) -> WorkflowExecution:
    """`x` read again, or as it was if it no longer reads."""
    try:
        return app.orchestrator.get(x.id)
    except (PortError, DomainError):
        return x


def _why_waiting(app: App, x: WorkflowExecution) -> str:
    """What the execution awaits approval for, as the entry that made it wait says."""
    trail = queries.audit_trail(app.uow_factory, app.runtime.tenant, x.id)
    return trail[-1].reason.removeprefix("ApprovalRequired: ") if trail else ""


def verify_chains(
    s: Session, app: App, execution_id: str | None, anchored: Container[str] = ()
) -> list[dict[str, Any]]:
    """Each execution's chain report; with `execution_id`, that one's: its record gone, its
    trail left is reported as the whole-store check reports it, and none left either is for
    its anchor to report (`anchored`), or not found."""
    # Ids only: a record that cannot be read is verified (and reported broken) like any
    # other, instead of stopping the check of all the rest.
    if execution_id is not None:
        with app.uow_factory() as uow:
            doc = uow.get("execution", execution_id)
        moved = doc is not None and not queries.of_tenant(doc, app.runtime.tenant)
        if doc is None or moved:
            left = queries.orphan_trail(
                app.uow_factory, app.runtime.tenant, execution_id, moved=moved
            )
            if left:
                return [render.report_json(queries.orphan_report(execution_id, left))]
            if execution_id in anchored:
                return []
            raise RecordNotFound("execution", execution_id)
        ids = [execution_id]
    else:
        unreadable: list[str] = []
        listed = queries.every_execution(app.uow_factory, app.runtime.tenant, unreadable)
        ids = [x.id for x in listed] + unreadable
    results = []
    with _maybe_progress(ids, "verifying") as items:
        for xid in items:
            report = app.orchestrator.verify(xid)
            bad_entry = None
            if not report.ok and report.first_bad_sequence:
                try:
                    trail = queries.audit_trail(app.uow_factory, app.runtime.tenant, xid)
                except CorruptRecord:  # the record itself is what is broken: nothing to show
                    trail = []
                if 0 < report.first_bad_sequence <= len(trail):
                    bad_entry = trail[report.first_bad_sequence - 1]
            results.append(render.report_json(report, bad_entry))
    if execution_id is None:
        for xid, (count, _) in queries.orphan_trails(app.uow_factory, app.runtime.tenant).items():
            results.append(render.report_json(queries.orphan_report(xid, count)))
    return results


@contextmanager
def _maybe_progress(items: Sequence[T], label: str, at_least: int = 20) -> Iterator[Iterable[T]]:
    # A bar only helps someone watching a terminal that can draw it: piped, click would print
    # its label as a stray line; on a dumb terminal (TERM=dumb, as in an editor's shell, or
    # none set) its cursor codes would show as garbage.
    watched = sys.stderr is not None and sys.stderr.isatty()
    if len(items) < at_least or not watched or os.environ.get("TERM", "dumb") in ("", "dumb"):
        yield items
        return
    stream = cast(TextIO, _Extra(sys.stderr))  # (click asks for a TextIO; it uses a text stream)
    with click.progressbar(items, label=label, file=stream, show_pos=True) as bar:
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


# -- recover -----------------------------------------------------------------------------------


@cli.command(epilog=EXITS)
@json_option
@click.pass_context
def recover(ctx: click.Context) -> None:
    """Resume interrupted executions (pending, running, retrying, cancelling,
    compensating) to completion.

    On an embedded store (memory://, mem://, surrealkv://) this process holds the store
    alone, so leases of crashed runs are ignored; on ws:// only expired leases are taken.
    """
    s = session_of(ctx)
    with s.app(existing=True) as (app, printer):
        unreadable: list[str] = []
        candidates = queries.executions_in(
            app.uow_factory, app.runtime.tenant, RECOVERABLE, unreadable
        )
        mode = (
            "exclusive store: leases ignored"
            if app.exclusive_store
            else "shared store: only expired leases are taken over"
        )
        s.echo(render.safe(f"recovering on {app.settings.display_store} ({mode})"))
        crashed = app.unclean_shutdown
        broken: list[tuple[str, ChainReport]] = []
        if crashed:
            # A process died holding this store: the whole store is in question, whichever
            # tenant it was working for, so every tenant's chains are checked (and said so
            # first: before any is resumed) and the crash is forgotten only when all are
            # intact. Other tenants' executions are only counted, never named.
            s.echo(
                f"the store was not closed cleanly (pid {crashed}):"
                " verifying the audit chains of every tenant"
            )
            broken = app.check_after_crash(lambda ids: _maybe_progress(ids, "verifying"))
            if not broken:
                s.echo("every audit chain intact")
        if not candidates and not unreadable:
            s.echo("nothing to recover")
        for xid in unreadable:
            s.echo(render.safe(f"  found {xid}  (its record does not read back)"))
        described = _describing(s, app, candidates, unregistered_note=False)  # it says why
        for x in candidates:
            printer.mark(x)
            definition = described(x)
            unknown = (
                ""
                if definition is not None or _definition(app, x) is not None
                else (f"  ({x.workflow_name} version {x.workflow_version} is not registered here)")
            )
            s.echo(
                render.safe(
                    f"  found {x.id}  {x.state.value}  step {render.progress(x, definition)}"
                    f" {render.step_name(x, definition)}{unknown}"
                )
            )
        ours = [r for tenant, r in broken if tenant == app.runtime.tenant]
        now = app.runtime.clock.now()
        try:
            resumed = app.orchestrator.recover(ignore_leases=app.exclusive_store)
            failures: list[tuple[str, str]] = []
        except RecoveryIncomplete as incomplete:
            resumed, failures = incomplete.resumed, incomplete.failures
        s.did = (
            f"the recovery ran all the same: `govkernel{s.hint()} executions list` shows where"
            " each execution stands"
        )
        here = app.runtime.environment
        other_environments = [x for x in candidates if not x.runs_in(here)]
        handled = {x.id for x in resumed} | {xid for xid, _ in failures}
        handled |= {x.id for x in other_environments}
        # What recovery left for later, as found before recovering: a retry not due yet (one
        # another worker holds a live lease on is that worker's, as recovery has it).
        mine = (None, app.orchestrator.worker_id)
        not_due = [
            x
            for x in candidates
            if x.id not in handled
            and x.retry_not_due(now)
            and (app.exclusive_store or x.lease_owner in mine or x.lease_expired(now))
        ]
        # As they stand now: some were claimed by another worker since they were found.
        leased = [_as_now(app, x) for x in candidates if x.id not in handled and x not in not_due]
        if s.json:
            s.emit(
                {
                    "found": len(candidates) + len(unreadable),
                    "resumed": [render.execution_json(x, _definition(app, x)) for x in resumed],
                    "not_due": [
                        {"execution_id": x.id, "retry_at": render.iso(x.retry_at)} for x in not_due
                    ],
                    "failed": [{"execution_id": xid, "error": error} for xid, error in failures],
                    "left_leased": [
                        {
                            "execution_id": x.id,
                            "lease_owner": x.lease_owner,
                            "lease_expires_at": render.iso(x.lease_expires_at),
                        }
                        for x in leased
                    ],
                    "left_to_other_environments": [
                        {"execution_id": x.id, "environment": _environment_of(x)}
                        for x in other_environments
                    ],
                    "torn_transaction": _torn_json(app),
                    "unclean_shutdown": _crash_json(crashed),
                    "broken_after_crash": [render.report_json(r) for r in ours],
                    "broken_after_crash_in_other_tenants": len(broken) - len(ours),
                }
            )
        for xid, error in failures:
            s.echo(render.safe(f"could not resume {xid}: {_with_hint(error)}"))
        for x in not_due:
            s.echo(render.safe(f"not due yet: {x.id} retries at {render.iso(x.retry_at)}"))
        for x in resumed:
            s.echo(
                render.safe(
                    f"resumed {x.id}: {x.state.value}"
                    + (f" ({x.last_error})" if x.last_error else "")
                )
            )
        if leased:
            until = max((x.lease_expires_at for x in leased if x.lease_expires_at), default=None)
            named = ", ".join(x.id for x in leased[:3])
            s.echo(
                f"{len(leased)} execution{'s' * (len(leased) != 1)} left alone: leased by"
                f" another worker (or one that stopped) until {render.iso(until) or 'it expires'}"
                f" ({named}{', ...' if len(leased) > 3 else ''});"
                " recover takes it on after that"
            )
        if other_environments:
            started_in = sorted({_environment_of(x) for x in other_environments})
            n = len(other_environments)
            s.echo(
                render.safe(
                    f"{n} execution{'s' * (n != 1)} left alone:"
                    f" started in {' and '.join(started_in)}, and this command runs in"
                    f" {here.value} (GOVKERNEL_ENVIRONMENT="
                    f"{started_in[0] if len(started_in) == 1 else 'THEIRS'} recovers them)"
                )
            )
        ours_found = len(candidates) - len(other_environments) + len(unreadable)
        if ours_found:
            later = f", {len(not_due)} not due yet" if not_due else ""
            s.echo(f"recovered {len(resumed)} of {ours_found}{later}")
        if broken:
            others = len(broken) - len(ours)
            first = f", first {ours[0].execution_id}: {ours[0].problem}" if ours else ""
            elsewhere = f" ({others} in other tenants)" if others else ""
            what = (
                "seal(s) that do not hold" if all(r.seal for _, r in broken) else "chain(s) broken"
            )
            raise Failed(
                f"{len(broken)} audit {what} after the crash{elsewhere}{first}",
                EXIT_FAILED,
            )
        if failures:
            raise Failed(
                f"{len(failures)} execution(s) could not be resumed, first {failures[0][0]}:"
                f" {failures[0][1]}",
                EXIT_FAILED,
            )


def _crash_json(crashed: str | None) -> dict[str, Any] | None:
    """A crash found, as its neighbour `torn_transaction` is: an object (the pid of the process
    that died, an integer, or null when the lock file no longer said it), or null for none."""
    if crashed is None:
        return None
    return {"pid": int(crashed) if crashed.isascii() and crashed.isdigit() else None}


def _torn_json(app: App) -> dict[str, Any] | None:
    """How opening the store repaired a transaction torn by a crash, if it did."""
    repair = getattr(app.store, "torn_repair", None)
    return None if repair is None else {"action": repair.action, "writes": repair.writes}


# -- events ------------------------------------------------------------------------------------


@cli.command(epilog=EXITS)
@click.option(
    "--after",
    type=WholeNumber(min=0, max=MAX_POSITION),
    default=0,
    show_default=True,
    metavar="POSITION",
)
@limit_option(50)
@json_option
@click.pass_context
def events(ctx: click.Context, after: int, limit: int) -> None:
    """The event log, in position order."""
    s = session_of(ctx)
    s.read_only = True
    s.printing()
    with s.app(existing=True) as (app, _):
        gap: queries.EventGap | None = None
        try:
            # One past the page: whether a next page has anything.
            found, read_to = queries.events_read(
                app.uow_factory, app.runtime.tenant, after, limit + 1
            )
        except queries.EventGap as exc:  # what comes before the gap is still shown
            gap, found, read_to = exc, exc.found, after
        more, found = len(found) > limit, found[:limit]
        if s.json:
            s.emit([render.event_json(e) for e in found])
        elif found:
            s.echo(render.events_table(found))
        elif gap is None:  # with a gap, the error says what is missing
            s.echo(
                render.safe(f"no events after position {after} in tenant {app.runtime.tenant!r}")
            )
        if found and more:  # on stderr beside --json
            s.suggest(4, ("more", f"events --after {found[-1].position}"))
        elif read_to > (found[-1].position or after if found else after):
            # Other tenants' events were read past to the end of the log: a consumer goes on
            # from there, not from its last event (read past again at every poll).
            s.suggest(4, ("next", f"events --after {read_to}"))
        if gap is not None:
            raise Failed(str(gap), EXIT_FAILED)
        broken = [e for e in found if not e.intact]
        if broken:
            raise Failed(
                f"{len(broken)} event(s) do not match their integrity hash, first at position"
                f" {broken[0].position}",
                EXIT_FAILED,
            )


# -- demo --------------------------------------------------------------------------------------


def default_examples() -> Path:
    """Installed with the package; in a checkout (an editable install), beside `src`."""
    package = Path(composition.__file__).resolve().parent
    installed = package / "examples"
    return installed if installed.is_dir() else package.parents[1] / "examples"


@cli.command(epilog=EXITS)
@click.option(
    "--examples",
    type=_Path(path_type=Path, file_okay=False),
    help="Directory of sample documents [default: the repository's examples/].",
)
@json_option
@click.pass_context
def demo(ctx: click.Context, examples: Path | None) -> None:
    """Publish the sample documents, list executions and verify every audit trail."""
    s = session_of(ctx)
    settings = s.settings()
    folder = examples or default_examples()
    paths = (
        sorted(p for p in folder.glob("*") if p.suffix in (".md", ".txt"))
        if folder.is_dir()
        else []
    )
    if not folder.is_dir():
        what = "is not a directory" if folder.exists() else "does not exist"
        raise Failed(f"--examples {folder} {what}", EXIT_USAGE)
    if not paths:
        raise Failed(
            f"no sample documents (*.md, *.txt) in {folder}; pass --examples DIR", EXIT_USAGE
        )
    sources = [read_source(p) for p in paths]
    s.echo("govkernel demo")
    s.echo(render.safe(f"  store        {settings.display_store}"))
    s.echo(
        render.safe(
            f"  runtime      {settings.environment.value}, tenant {settings.tenant},"
            f" actor {settings.actor}"
        )
    )
    with s.app() as (app, _):
        rt = app.runtime
        publication_id = f"demo-{rt.clock.now():%Y%m%dT%H%M%SZ}-{rt.ids.new_id('x')[-6:]}"
        request = publication_request(
            sources,
            title="Macro-financial briefing (govkernel demo)",
            publication_id=publication_id,
            policy_refs=(DEFAULT_POLICY_REF,),
        )
        s.echo()
        s.echo(render.safe(f"[1/3] {kp.NAME} on {len(sources)} sample documents from {folder}"))
        for doc in request.documents:
            s.echo(render.safe(f"  {doc.kind.value:<5} {doc.source_url}"))
        x = app.orchestrator.start(kp.NAME, request.to_input(), risk_tier=ImpactTier.TIER0)
        s.started, s.started_state = x.id, x.state  # what a lost output does not undo
        if x.state is not S.SUCCEEDED:
            conclude(s, app, x, ok={S.SUCCEEDED})
            raise Failed(f"demo execution {x.id} ended {x.state.value}")

        s.echo()
        newest = queries.recent_executions(
            app.uow_factory, app.runtime.tenant, now=app.runtime.clock.now(), limit=5
        )
        s.echo("[2/3] executions (newest first)")
        s.echo(_indent(render.executions_table(newest, lambda x: _definition(app, x))))

        s.echo()
        s.echo("[3/3] audit trail verification")
        results = verify_chains(s, app, None)
        broken = [r for r in results if not r["ok"]]
        entries = sum(r["entries"] for r in results)
        if broken:
            for r in broken:
                s.echo(
                    render.safe(
                        f"  BROKEN {r['execution_id']} at #{r['first_bad_sequence']}:"
                        f" {r['problem']}"
                    )
                )
        else:
            plural = "s" * (len(results) != 1)
            s.echo(
                f"  {len(results)} execution{plural}, {entries} audit entries: every chain intact"
            )

        after = list(queries.all_events(app.uow_factory, app.runtime.tenant))
        mine = [e for e in after if e.correlation_id == x.correlation_id]
        outputs = x.step_outputs
        s.echo()
        s.echo("summary")
        summary_rows = [
            ("outcome", f"{x.id} {x.state.value}"),
            ("publication", f"{publication_id}: {request.title}"),
            ("sources", render.step_output(render.built_in(x), "ingest", outputs.get("ingest"))),
            ("analysis", render.step_output(render.built_in(x), "analyse", outputs.get("analyse"))),
            ("capsule", render.step_output(render.built_in(x), "publish", outputs.get("publish"))),
            ("events", f"{len(mine)} appended by this run, {len(after)} in the log"),
            ("audit", "all chains intact" if not broken else f"{len(broken)} chains BROKEN"),
        ]
        for key, value in summary_rows:
            s.echo(render.safe(f"  {key:<12} {value}"))
        if s.json:
            s.emit(
                {
                    "execution": render.execution_json(x, _definition(app, x), detail=True),
                    "executions": len(results),
                    "verification": {
                        "ok": not broken,
                        "executions": len(results),
                        "entries": entries,
                        "reports": broken,
                    },
                    "events": {"appended": len(mine), "total": len(after)},
                }
            )
        if broken:
            raise Failed(f"{len(broken)} audit chains are broken")


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


# -- entry point -------------------------------------------------------------------------------


def _error(message: str) -> None:
    _write(f"error: {message}", err=True)


def run_cli(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit status (errors are mapped to clean messages)."""
    global _no_reserving
    session = Session()
    args = [_as_typed(arg) for arg in (sys.argv[1:] if argv is None else argv)]
    _no_reserving = _helping(args)
    try:
        code = _run(session, args)
    finally:
        if session.log is not None:
            session.log.close()
        _release_stdout()
    if session.lost_output is not None:
        # Said last, once it is known what the command did all the same. A command that
        # failed on its own keeps its status: the output lost is not all that went wrong.
        _error(_lost_output(session))
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
        stopped = "terminated" if terminated.happened else "interrupted"
        _error(render.safe(f"{stopped}{_notes(noted)}; {_unfinished(session)}"))
        return 128 + (signal.SIGTERM if terminated.happened else signal.SIGINT)
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
        _error(render.safe(_stopped_by(stop, session)))
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
    return "".join(f" {n}" for n in getattr(stop, "__notes__", ()) if isinstance(n, str))


def _stopped_by(stop: BaseException, session: Session) -> str:
    """What a stop that is no interrupt (sys.exit, a step's own BaseException) left, and
    what ends it: not `recover`, which would run the step, and stop, again."""
    where = _notes(stop)
    if isinstance(stop, SystemExit):
        what, does = f"sys.exit({stop.code!r})", "calls sys.exit"
    else:
        what, does = type(stop).__name__, f"raises {type(stop).__name__}"
    unfinished, advice = _unfinished(session), ""
    if "was not stored" in where:
        unfinished = "nothing of it was stored"
        advice = f" (a step that {does} stops every run of it: fix the step)"
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
    return f"stopped by {what}{where}; {unfinished}{advice}"


def _failed(session: Session, args: list[str], exc: Exception) -> int:
    """Print an error as one line (a traceback first with --debug); its exit status."""
    debug = session.debug or "--debug" in args
    if debug and sys.stderr is not None:  # closed, it would be printed on stdout
        with suppress(OSError):
            print(_inert_lines(traceback.format_exc().rstrip("\n")), file=sys.stderr)
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
        message += render.safe(f" in tenant {session._settings.tenant!r}")
    for line in message.split("\n"):
        _error(line)
    return code


class _Sigterm:
    """Stop on SIGTERM (a service manager's stop) as on Ctrl-C, so the store is closed on
    the way out. Only from the main thread, where Python delivers signals."""

    def __init__(self) -> None:
        self.happened = False
        self._before: Any = None
        self._before_int: Any = None
        if threading.current_thread() is threading.main_thread():
            # Both held while a request is inside the engine's codec (wire.deferring).
            self._before = signal.signal(signal.SIGTERM, deferring(self._stop))
            interrupt = signal.getsignal(signal.SIGINT)
            if callable(interrupt):  # not when ignored (started in the background)
                self._before_int = signal.signal(signal.SIGINT, deferring(interrupt))

    def _stop(self, signum: int, frame: object) -> None:
        self.happened = True
        raise KeyboardInterrupt

    def restore(self) -> None:
        if self._before is not None:
            signal.signal(signal.SIGTERM, self._before)
        if self._before_int is not None:
            signal.signal(signal.SIGINT, self._before_int)


def _unfinished(session: Session, *, not_stored: bool = False) -> str:
    if session.read_only:
        return "nothing was changed"
    try:
        transient = session.transient()
    except ConfigurationError:
        transient = False
    if transient:
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
        return EXIT_FAILED, _with_hint(str(exc))
    if isinstance(exc, DomainError | PortError):
        return EXIT_FAILED, _with_hint(f"{type(exc).__name__}: {exc}")
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


def _environment_of(x: WorkflowExecution) -> str:
    return "" if x.environment is None else x.environment.value


def _with_hint(message: str) -> str:
    """What the command line can add to an orchestrator's words."""
    if "this orchestrator does not have" in message:
        return (
            f"{message} (the govkernel command knows your workflows when the `workflows`"
            " setting names them: GOVKERNEL_WORKFLOWS)"
        )
    if "act on it from a worker of " in message:
        started_in = message.rsplit(" ", 1)[-1]
        return f"{message} (GOVKERNEL_ENVIRONMENT={started_in} for this command)"
    if "not sealed: written without the audit key" in message:
        return (
            f"{message}; if it was written before the store had a key, verify it, then"
            " `govkernel audit seal EXECUTION --unsealed` seals it as it stands"
        )
    if "(as current or retired)" in message:
        return (
            f"{message}: name the module that has it in the `retired_workflows` setting"
            " (GOVKERNEL_RETIRED_WORKFLOWS)"
        )
    return message


def _hold_closed_streams() -> None:
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


def main(argv: Sequence[str] | None = None) -> None:
    _hold_closed_streams()
    code = run_cli(argv)
    if threading.current_thread() is threading.main_thread():
        # Done, the store closed: a signal now would end the process by the signal, and
        # the command's own exit status would be lost. Only the exit is left to do.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(code)


if __name__ == "__main__":
    main()
