"""The container, as the rest of govkernel sees it: a typed `App` built from settings.

    with build_app(load_settings()) as app:   # opens the store once, closes it on exit
        app.orchestrator.start(knowledge_publication.NAME, request.to_input())

The dependency-injector providers stay inside `composition.wiring`. `Overrides` replaces
parts of the wiring without touching code: a store the caller owns, a
wrapper around the unit-of-work factory (fault injection), a clock, an id generator, the
policies, or a transition callback.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

from attrs import field, frozen

from adapters.surrealdb import SurrealConfig
from composition import plugins, queries, wiring
from composition.settings import ConfigurationError, Problem, Settings
from domain.model.errors import InvalidInput
from domain.model.execution import WorkflowExecution
from domain.model.lifecycle import ChainReport
from domain.model.policy import Policy
from domain.model.runtime import Clock, IdGenerator, RuntimeContext
from domain.model.validation import text
from domain.orchestration.definition import WorkflowDefinition
from domain.orchestration.orchestrator import Orchestrator
from domain.services.governance import Gate
from domain.services.knowledge import KnowledgeService
from ports.errors import StorageUnavailable
from ports.unit_of_work import UnitOfWorkFactory

T = TypeVar("T")
TransitionCallback = Callable[[WorkflowExecution], object]  # what it returns is not used
Workflows = Mapping[str, WorkflowDefinition] | Sequence[WorkflowDefinition] | WorkflowDefinition


def _read_once(policies: Iterable[Policy] | None) -> Iterable[Policy] | None:
    if isinstance(policies, Iterable) and not isinstance(policies, str | bytes | Mapping):
        return tuple(policies)
    return policies  # refused by _check, naming what it is


@frozen
class Overrides:
    store: wiring.Store | None = None  # used as is and not closed by the app (the caller owns it)
    wrap_uow_factory: Callable[[UnitOfWorkFactory], UnitOfWorkFactory] | None = None
    clock: Clock | None = None
    ids: IdGenerator | None = None
    trace_id: str | None = None
    # Any iterable (a `filter` of `default_policies()`): read once, here, so that the same
    # Overrides builds every app with them.
    policies: Iterable[Policy] | None = field(default=None, converter=_read_once)
    on_transition: TransitionCallback | None = None
    # Refuse a store nothing has run on (a mistyped path, namespace or database).
    existing_store: bool = False
    # False: refuse a store an older govkernel wrote instead of upgrading it (to back it up
    # as it is first: an upgraded store is never opened by an older govkernel again).
    upgrade_store: bool = True
    # Your own workflows, built from the wired knowledge service (a mapping of name to
    # definition, a list of definitions, or one): they replace the built-in registry
    # (`wiring.workflow_registry(service)` gives it, to include it) and those the
    # `workflows` setting names.
    workflows: Callable[[KnowledgeService], Workflows] | None = None
    # Earlier versions of your workflows, kept to finish the executions they started while
    # `workflows` start new ones with other steps (see `Orchestrator`).
    retired: Callable[[KnowledgeService], Workflows] | None = None


@frozen
class App:
    settings: Settings
    runtime: RuntimeContext
    store: wiring.Store
    uow_factory: UnitOfWorkFactory
    gate: Gate
    service: KnowledgeService
    workflows: Mapping[str, WorkflowDefinition]
    orchestrator: Orchestrator
    _make_orchestrator: Callable[..., Any] = field(repr=False)
    _shutdown: Callable[[], None] = field(repr=False)
    _closed: list[bool] = field(factory=list, repr=False)
    _lock: threading.Lock = field(factory=threading.Lock, repr=False)
    # Whether the app opened its store itself, rather than being given one to share.
    _own_store: bool = field(default=True, repr=False)

    @property
    def exclusive_store(self) -> bool:
        """True when this app holds its store alone: one it opened itself (memory, mem://,
        surrealkv://), never one given in `Overrides(store=...)`, which other apps may share."""
        return self._own_store and self.settings.exclusive_store

    def orchestrator_for(
        self, *, actor: str | None = None, tenant: str | None = None
    ) -> Orchestrator:
        """A fresh orchestrator, wired like the default one, acting as `actor` for `tenant`
        (each validated as the settings are)."""
        runtime = self.runtime
        if actor is not None:
            runtime = runtime.with_actor(actor)
        if tenant is not None:
            runtime = runtime.with_tenant(tenant)
        return _typed(self._make_orchestrator(runtime=runtime), Orchestrator)

    @property
    def unclean_shutdown(self) -> str | None:
        """The pid of a process that died holding this store, until `check_after_crash`
        (or `govkernel recover`) has verified every audit chain; None otherwise."""
        crashed = getattr(self.store, "unclean_shutdown", None)
        return crashed if isinstance(crashed, str) else None

    def check_after_crash(
        self, progress: queries.Progress | None = None
    ) -> list[tuple[str, ChainReport]]:
        """After a crash, verify the audit chains of every tenant in the store, and forget
        the crash when all are intact. Returns (tenant, report) for each broken chain: empty
        when none is, or when there was no crash to check after. A service calls it with
        `orchestrator.recover()` when it starts."""
        if self.unclean_shutdown is None:
            return []
        broken = queries.broken_chains(self.uow_factory, progress)
        if not broken:
            getattr(self.store, "acknowledge_unclean_shutdown", lambda: None)()
        return broken

    def backup(
        self, destination: str | os.PathLike[str], progress: queries.Progress | None = None
    ) -> int:
        """Copy the store into `destination`, a new directory, while the app runs: commits
        wait while it copies (seconds per GiB), and the copy opens as a store closed
        cleanly. Only a `surrealkv://` store is a directory to copy (`StorageUnavailable`
        otherwise). Returns the bytes copied; `progress` is shown the chunks copied."""
        backup = getattr(self.store, "backup", None)
        if backup is None:
            raise StorageUnavailable(
                "a backup copies a surrealkv:// store's directory; this store is held in memory"
            )
        copied: int = backup(destination, progress)
        return copied

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed.append(True)
        self._shutdown()

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_app(settings: Settings, overrides: Overrides | None = None) -> App:
    """Wire and open everything (the store first, so a held lock fails fast). Close it."""
    o = overrides or Overrides()
    _check(o)
    _same_key(settings, o.store)
    container = wiring.Container(settings=settings)
    if o.store is not None:
        wiring.override(container.store, o.store)
    if o.upgrade_store is not None and not o.upgrade_store:  # (None: the default, as above)
        wiring.override(container.upgrade_store, False)
    if o.existing_store:
        wiring.override(container.create_store, False)
    # Yours, given in code, win over those the settings name (imported here, before the
    # store is opened, so a wrong reference needs no lock to be reported).
    workflows = (
        plugins.registry_in_code(o.workflows)
        if o.workflows is not None
        else plugins.registry(settings, wiring.workflow_registry)
    )
    if workflows is not None:
        wiring.use_workflows(container, workflows)
    retired = (
        plugins.retired_in_code(o.retired) if o.retired is not None else plugins.retired(settings)
    )
    if o.store is None and would_make(settings) and (workflows or retired):
        # Your workflows built first, over a throwaway store: a definition that raises or is
        # refused is reported before a store is made. (On a store that exists, opening it
        # first changes nothing: they are built once.)
        # Only what builds them is carried over: the caller's id generator, clock and
        # wrappers are not spent on it.
        throwaway = Overrides(
            store=wiring.throwaway_store(settings),
            workflows=o.workflows,
            retired=o.retired,
        )
        with build_app(settings, throwaway):
            pass
    if retired is not None:
        wiring.use_retired(container, retired)
    if o.wrap_uow_factory is not None:
        wiring.wrap_uow_factory(container, o.wrap_uow_factory)
    for name, value in (
        ("clock", o.clock),
        ("ids", o.ids),
        ("trace_id", o.trace_id),
        ("policies", o.policies),
        ("on_transition", o.on_transition),
    ):
        if value is not None:
            wiring.override(getattr(container, name), value)
    try:
        store = container.store()  # first: a store held by another process fails fast
        app = App(
            settings=settings,
            runtime=_typed(container.runtime(), RuntimeContext),
            store=store,
            uow_factory=_factory(container.uow_factory()),
            gate=_typed(container.gate(), Gate),
            service=_typed(container.knowledge_service(), KnowledgeService),
            workflows=_typed(container.workflows(), dict),
            orchestrator=_typed(_orchestrator(container, settings), Orchestrator),
            make_orchestrator=container.orchestrator_factory,
            shutdown=lambda: _shutdown(container),
            own_store=o.store is None,
        )
    except BaseException:
        container.shutdown_resources()
        raise
    return app


def _check(o: Overrides) -> None:
    """Each override of the kind it must be: a wrong one would fail later, as an
    AttributeError deep in the wiring or the first step, after the store was opened.
    (`workflows` and `retired` are checked as they are built.)"""
    if not isinstance(o, Overrides):
        raise ConfigurationError(
            [Problem("overrides", "build_app", f"is {_a(o)}: give Overrides(...)")]
        )
    policies = o.policies
    kinds: list[tuple[str, object, bool, str]] = [
        ("store", o.store, callable(getattr(o.store, "unit_of_work", None)), "a store"),
        ("wrap_uow_factory", o.wrap_uow_factory, callable(o.wrap_uow_factory), "a function"),
        ("clock", o.clock, callable(getattr(o.clock, "now", None)), "a clock (with now())"),
        ("ids", o.ids, callable(getattr(o.ids, "new_id", None)), "an id generator (new_id)"),
        ("trace_id", o.trace_id, isinstance(o.trace_id, str), "text"),
        ("policies", policies, isinstance(policies, tuple), "policy functions (any iterable)"),
        ("on_transition", o.on_transition, callable(o.on_transition), "a function"),
        ("existing_store", o.existing_store, _a_flag(o.existing_store), "a bool"),
        ("upgrade_store", o.upgrade_store, _a_flag(o.upgrade_store), "a bool"),
    ]
    problems = [
        Problem(key, f"Overrides({key}=...)", _wrong(value, kind))
        for key, value, fits, kind in kinds
        if value is not None and (not fits or isinstance(value, type))
    ]
    odd = (
        [p for p in policies if not callable(p) or isinstance(p, type)]
        if isinstance(policies, tuple)
        else []
    )
    if odd:
        problems.append(
            Problem("policies", "Overrides(policies=...)", f"holds {_a(odd[0])}: give functions")
        )
    problems += _instants(o.clock) if o.clock is not None and not problems else []
    if o.trace_id is not None and not problems:
        try:
            text("trace_id", o.trace_id, max_len=200, single_line=True)
        except InvalidInput as exc:
            problems.append(Problem("trace_id", "Overrides(trace_id=...)", exc.problem))
    if problems:
        raise ConfigurationError(problems)


def _same_key(settings: Settings, store: object) -> None:
    """A store given in code seals with the settings' audit key, if they name one: else
    the key would be ignored in silence, and executions left unsealed."""
    wanted = wiring.audit_key(settings)
    if store is None or wanted is None:
        return
    held = getattr(store, "audit_key", None)
    if getattr(held, "key_id", None) != wanted.key_id:
        raise ConfigurationError(
            [
                Problem(
                    "audit_key",
                    "Overrides(store=...)",
                    "the settings name an audit key, and the store given holds "
                    + ("none" if held is None else "another")
                    + ": give it the same key (MemoryStore(audit_key=...),"
                    " SurrealConfig(..., audit_key=...))",
                )
            ]
        )


def _a_flag(value: object) -> bool:
    # 0 and 1 as the bools they equal (a flag read from a config file); 2 is no flag.
    return isinstance(value, int) and value in (0, 1)


def _wrong(value: object, kind: str) -> str:
    if isinstance(value, type):  # FixedClock for FixedClock(...)
        return f"is the class {value.__name__}: give {kind}, an instance of it"
    return f"is {_a(value)}: give {kind}"


def _instants(clock: Clock) -> list[Problem]:
    """A clock whose now() is no aware datetime (`datetime.now(UTC)` given for a clock) would
    be refused only as the first record is written."""
    try:
        now = clock.now()
    except Exception as exc:  # a clock that cannot tell the time is no clock to wire
        said = f"its now() raised {type(exc).__name__}: {exc}"[:200]
        return [Problem("clock", "Overrides(clock=...)", said)]
    if isinstance(now, datetime) and now.utcoffset() is not None:  # aware, as Python reads it
        return []
    said = f"its now() gave {_a(now)}" + (" without a zone" if isinstance(now, datetime) else "")
    return [Problem("clock", "Overrides(clock=...)", f"{said}: give a clock of aware datetimes")]


def _a(value: object) -> str:
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def would_make(settings: Settings) -> bool:
    """Whether opening the configured store may make it: an embedded store on disk with
    nothing there yet, or a server's database (which cannot be told without connecting)."""
    if settings.store_scheme in ("ws", "wss"):
        return True
    if settings.store_scheme != "surrealkv":
        return False
    directory = SurrealConfig(settings.store_url).path
    return directory is not None and not (directory / "clog").is_dir()


def _orchestrator(container: wiring.Container, settings: Settings) -> object:
    """The wired orchestrator; a registry it refuses (one version of a workflow given twice,
    as current and retired, say) is a configuration error, like any other."""
    try:
        return container.orchestrator()
    except ValueError as exc:
        key = "retired_workflows" if str(exc).startswith("retired") else "workflows"
        raise ConfigurationError([Problem(key, settings.sources.get(key, key), str(exc))]) from None


@contextmanager
def build_app(settings: Settings, overrides: Overrides | None = None) -> Iterator[App]:
    app = open_app(settings, overrides)
    try:
        yield app
    finally:
        app.close()


def _shutdown(container: wiring.Container) -> None:
    container.shutdown_resources()


def _factory(value: object) -> UnitOfWorkFactory:
    if not callable(value):
        raise TypeError(f"container produced {type(value).__name__}, expected a factory")
    return value


def _typed(value: object, kind: type[T]) -> T:
    if not isinstance(value, kind):
        raise TypeError(f"container produced {type(value).__name__}, expected {kind.__name__}")
    return value
