"""One command's session: its global options, settings, store and output channels."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import click
from attrs import define, field

from adapters.surrealdb.store import UPGRADE_LOG, LogSeal
from composition import queries, render, wiring
from composition.cli.streams import (
    DebugLog,
    carries_unicode,
    json_stdout,
    show_status,
    write_out,
)
from composition.container import App, Overrides, build_app, would_make
from composition.settings import (
    ENV_VARS,
    Settings,
)
from composition.settings import load_settings as _load_settings
from domain.model.errors import DomainError
from domain.model.execution import WorkflowExecution
from domain.model.lifecycle import AuditEntry, ExecutionState
from domain.orchestration.orchestrator import (
    reused,
)
from ports.errors import PortError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BUSY = 75  # sysexits' EX_TEMPFAIL: the same command may work when tried again
PROGRESS_THRESHOLD = 5
MAX_POSITION = 2**63 - 1  # event positions are signed 64-bit integers in every store
MAX_LIMIT = 10_000
DEFAULT_LIST_LIMIT = 20
# A workflow's input from the command line: a publication's hundred documents fit well inside.
MAX_INPUT_CHARS = 256 * 1024 * 1024
# Stores that live and die with this process: no later command can reach their executions.
TRANSIENT_SCHEMES = ("memory", "mem")
TRANSIENT_NOTE = "the in-memory store does not outlive this command"
S = ExecutionState

EXITS = (
    "Exit statuses: 0 ok; 1 denied, failed or verification failure; "
    "2 usage or configuration error; 75 the store is in use by another process (try again"
    " once it is done); 130, 143, 129 stopped by Ctrl-C, SIGTERM, SIGHUP."
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


@define
class Session:
    """Global options, the settings (read once, lazily) and the output channels."""

    store: str | None = None
    config: str | None = None
    args: tuple[str, ...] = ()  # the command line as given
    json: bool = False
    debug: bool = False
    read_only: bool = False  # the command changes nothing: an interrupt leaves nothing to resume
    upgraded: bool = False  # opening it upgraded the store (said as a note)
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
    log: DebugLog | None = None  # --debug: govkernel's log shown on stderr
    emitted: bool = False  # the command's JSON document was printed
    store_lost: str | None = None  # the store's log went while the command held it

    def settings(self) -> Settings:
        if self._settings is None:
            overrides = {"store_url": (self.store, "--store")} if self.store else {}
            self._settings = _load_settings(config_file=self.config, overrides=overrides)
        return self._settings

    @contextmanager
    def app(
        self,
        *,
        existing: bool = False,
        check: Callable[[App], object] | None = None,
        upgrade: bool = True,
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
        overrides = Overrides(
            on_transition=printer, existing_store=must_exist, upgrade_store=upgrade
        )
        with _noting_upgrades(self.warn), build_app(settings, overrides) as app:
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
            exposed = getattr(app.store, "exposed", None)
            if exposed is not None:
                self.warn(
                    render.safe(
                        f"note: the store's directory {exposed} is writable by every user,"
                        " who could replace its log and seal together: `chmod o-w` it"
                    )
                )
            upgraded = getattr(app.store, "upgraded_from", None)
            if isinstance(upgraded, int):  # a read too: older govkernels now refuse it
                self.upgraded = True
                self.warn(
                    f"note: the store was upgraded from schema version {upgraded}; a"
                    " govkernel older than this one no longer opens it"
                )
            printer.bind(app)
            try:
                yield app, printer
            except BaseException as stop:
                # Looked at now: stopped mid-step, the store may not have looked since its
                # directory went (and would send the user to `recover` a store that is gone).
                with suppress(Exception):
                    getattr(app.store, "check_log", lambda: None)()
                lost = getattr(app.store, "log_lost", None)
                self.store_lost = lost if isinstance(lost, str) else None
                if self.store_lost is None and (
                    not isinstance(stop, Exception) or isinstance(stop, click.Abort)
                ):
                    self._look_again(app)
                raise
        lost = getattr(app.store, "log_lost", None)  # known once it closed
        if isinstance(lost, str):
            # Whatever it printed, what it did may not be kept: not a success.
            raise Failed(render.safe(f"{lost}; the next command refuses the store"), EXIT_USAGE)
        unsealed = getattr(app.store, "seal_unwritten", None)
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
                found = started_by(app, self.starting)
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
        self.emitted = True
        stdout = json_stdout()
        self._print(render.dumps(record, ascii_only=not carries_unicode(stdout)), err=False)

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
        failed = write_out(text, err=err)
        # stderr carries extras (notes, hints, progress): failing to write them changes
        # nothing. Nor does a reader of stdout that went away: it wanted no more (`| head`).
        # Any other failure on stdout loses the command's output: said as it ends.
        if failed is not None and not err and not isinstance(failed, BrokenPipeError):
            self.lost_output = self.lost_output or failed

    def transient(self) -> bool:
        """Whether the store ends with this process, so follow-up commands cannot reach it."""
        return self.settings().store_scheme in TRANSIENT_SCHEMES

    def nothing_here(self) -> str:
        """Said after "no executions" and the like: on a store that starts empty with each
        command, that nothing from an earlier command can be there."""
        return " (the in-memory store starts empty with each command)" if self.transient() else ""

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
            parts.append(f" --config {render.shell_word(self.config)}")
        if settings.sources.get("store_url") == "--store":
            parts.append(f" --store {render.shell_word(settings.display_store)}")
        return "".join(parts)


class Printer:
    """The orchestrator's transition callback: prints each audit entry as it commits."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._app: App | None = None
        self._seen: dict[str, int] = {}
        self._current: str | None = None
        self._sealed: set[str] = set()  # marked while carrying a seal

    def bind(self, app: App) -> None:
        self._app = app

    def mark(self, execution: WorkflowExecution) -> None:
        """Print only what happens to `execution` from now on."""
        self._seen[execution.id] = execution.audit_sequence
        if execution.seal is not None:
            self._sealed.add(execution.id)

    def __call__(self, execution: WorkflowExecution) -> None:
        app = self._app
        last = self._seen.get(execution.id, 0)
        if app is None or execution.audit_sequence <= last:
            return
        self._seen[execution.id] = execution.audit_sequence
        if execution.id in self._sealed and execution.seal is None:
            # Moved on without the key, its seal went: workers with the key now refuse it.
            self._sealed.discard(execution.id)
            self._session.warn(
                render.safe(
                    f"note: execution {execution.id} was sealed, and acted on without the audit"
                    " key (GOVKERNEL_AUDIT_KEY) it is not any more: workers with the key refuse"
                    f" it until `govkernel{self._session.hint()} audit seal {execution.id}"
                    " --unsealed` is run with the key"
                )
            )
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
        if self._app is None or execution.state is not S.RUNNING:
            return
        definition = self._app.orchestrator.registered(
            execution.workflow_name, execution.workflow_version
        )
        if definition is not None and execution.current_step < len(definition.steps):
            self.running(definition.steps[execution.current_step].name)

    def running(self, step: str) -> None:
        """Say, on a terminal, which step runs now: it may run for long."""
        show_status(f"  ... {step} running")


def transition_line(entry: AuditEntry, execution: WorkflowExecution) -> str:
    reason = entry.reason
    checkpoint = entry.from_state is S.RUNNING and entry.to_state is S.RUNNING
    if checkpoint and entry.step and entry.step in execution.step_outputs:
        output = execution.step_outputs[entry.step]
        reason = f"{reason}: {render.step_output(render.built_in(execution), entry.step, output)}"
    return f"  #{entry.sequence:<3} {entry.to_state.value:<17} {render.safe(reason)}"


def session_of(ctx: click.Context) -> Session:
    return ctx.ensure_object(Session)


def started_by(
    app: App, idempotency_key: str | None, workflow: str | None = None
) -> WorkflowExecution | None:
    """The execution the key started, if any; for a run of `workflow`, one of another
    workflow's is refused (`InvalidInput`), as `Orchestrator.start` refuses it."""
    if idempotency_key is None:
        return None
    with app.uow_factory() as uow:
        found = uow.executions.by_idempotency_key(app.runtime.tenant, idempotency_key)
    return found if found is None or workflow is None else reused(found, workflow)


@contextmanager
def _noting_upgrades(say: Callable[[str], None]) -> Iterator[None]:
    """A store upgrade said as it starts, not only once done: it may take a while."""

    class Noting(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            with suppress(Exception):
                say(render.safe(f"note: {record.getMessage()}"))

    handler = Noting(logging.INFO)
    UPGRADE_LOG.addHandler(handler)
    try:
        yield
    finally:
        UPGRADE_LOG.removeHandler(handler)
