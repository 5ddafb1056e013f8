"""The dependency-injector wiring. The only module of govkernel that imports it.

Its providers are untyped; nothing outside this package sees them: `composition.container`
turns the wiring into the typed `App` facade. Importing this module builds nothing: providers
are resolved when an `App` is opened.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Protocol

from dependency_injector import containers, providers

from adapters.memory import MemoryStore
from adapters.surrealdb import SurrealConfig, SurrealStore
from composition.settings import (
    EMBEDDED_SURREAL_SCHEMES,
    MEMORY_SCHEMES,
    REMOTE_SCHEMES,
    ConfigurationError,
    Problem,
    Settings,
)
from domain.model.execution import WorkflowExecution
from domain.model.policy import Policy
from domain.model.runtime import Clock, IdGenerator, RuntimeContext
from domain.model.seal import AuditKey
from domain.orchestration.definition import WorkflowDefinition
from domain.orchestration.orchestrator import Orchestrator
from domain.services.governance import Gate
from domain.services.knowledge import KnowledgeService
from domain.workflows import knowledge_publication
from ports.clock import SystemClock, UuidIds
from ports.unit_of_work import UnitOfWork, UnitOfWorkFactory


class Store(Protocol):
    """What the composition needs of a store: units of work, its id, and closing it once."""

    # Which store this is, however it is reached (None: not known, to a read-only server user).
    store_id: str | None

    def unit_of_work(self) -> UnitOfWork: ...

    def close(self) -> None: ...


def audit_key(settings: Settings) -> AuditKey | None:
    return None if settings.audit_key is None else AuditKey.from_text(settings.audit_key)


def throwaway_store(settings: Settings) -> MemoryStore:
    """A store in memory to build the app on where the real one must not be touched: with
    the settings' audit key, which a store given in code must hold."""
    return MemoryStore(audit_key=audit_key(settings))


def make_store(settings: Settings, create: bool = True, upgrade: bool = True) -> Store:
    """The store named by the URL's scheme; an unknown scheme is an error, never a fallback.
    With `create=False` a SurrealDB store must already hold govkernel's data; with
    `upgrade=False`, of this govkernel's schema (an older one is refused, left as it is)."""
    scheme = settings.store_scheme
    key = audit_key(settings)
    if scheme in MEMORY_SCHEMES:
        return MemoryStore(audit_key=key)
    if scheme in EMBEDDED_SURREAL_SCHEMES + REMOTE_SCHEMES:
        remote = scheme in REMOTE_SCHEMES
        return SurrealStore(
            SurrealConfig(
                url=settings.store_url,
                namespace=settings.namespace,
                database=settings.database,
                # Embedded engines have no users: credentials only travel to a server.
                username=settings.username if remote else None,
                password=settings.password if remote else None,
                create=create,
                upgrade=upgrade,
                audit_key=key,
            )
        )
    allowed = ", ".join(
        f"{s}://" for s in MEMORY_SCHEMES + EMBEDDED_SURREAL_SCHEMES + REMOTE_SCHEMES
    )
    source = settings.sources.get("store_url", "store")
    raise ConfigurationError(
        [Problem("store_url", source, f"unknown store scheme {scheme + '://'!r}", allowed)]
    )


def open_store(settings: Settings, create: bool = True, upgrade: bool = True) -> Iterator[Store]:
    """The store as a resource: opened once, closed when the container shuts down."""
    store = make_store(settings, create, upgrade)
    try:
        yield store
    finally:
        # An app never closed is shut down by the interpreter's exit, part of which is
        # gone by then (files, imports): closing there printed a traceback. The store is
        # left as a crash leaves it, as documented, and the next open checks it.
        if not sys.is_finalizing():
            store.close()


def runtime_context(
    settings: Settings, clock: Clock, ids: IdGenerator, trace_id: str | None
) -> RuntimeContext:
    """The one place a RuntimeContext is built."""
    return RuntimeContext(
        environment=settings.environment,
        tenant=settings.tenant,
        service=settings.service,
        actor=settings.actor,
        clock=clock,
        ids=ids,
        trace_id=trace_id or ids.new_id("trace"),
        change_freeze=settings.change_freeze,
    )


def store_factory(store: Store) -> UnitOfWorkFactory:
    return store.unit_of_work


def workflow_registry(service: KnowledgeService) -> Mapping[str, WorkflowDefinition]:
    workflows = (knowledge_publication.definition(service),)
    return {w.name: w for w in workflows}


def make_gate(uow_factory: UnitOfWorkFactory, policies: Sequence[Policy] | None) -> Gate:
    return Gate(uow_factory, policies)


def identity(value: object) -> object:
    return value


def no_retired(service: KnowledgeService) -> tuple[WorkflowDefinition, ...]:
    return ()


class Container(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=Settings)

    clock = providers.Singleton(SystemClock)
    ids = providers.Singleton(UuidIds)
    trace_id: providers.Object[str | None] = providers.Object(None)
    runtime = providers.Singleton(
        runtime_context, settings=settings, clock=clock, ids=ids, trace_id=trace_id
    )

    # False for commands that only read or follow up: they never create a store.
    create_store: providers.Object[bool] = providers.Object(True)
    # False for a backup: a store of an older schema is refused, never upgraded first.
    upgrade_store: providers.Object[bool] = providers.Object(True)
    store = providers.Resource(open_store, settings, create_store, upgrade_store)
    store_uow_factory = providers.Singleton(store_factory, store)
    # Override this one to wrap the store's factory (fault injection, tracing, ...).
    uow_factory = providers.Singleton(identity, store_uow_factory)

    policies: providers.Object[Sequence[Policy] | None] = providers.Object(None)
    gate = providers.Singleton(make_gate, uow_factory, policies)
    knowledge_service = providers.Singleton(KnowledgeService, gate)
    workflows = providers.Singleton(workflow_registry, knowledge_service)
    # Earlier versions kept to finish what they started (see `Orchestrator`); none built in.
    retired = providers.Singleton(no_retired, knowledge_service)

    on_transition: providers.Object[Callable[[WorkflowExecution], None] | None] = providers.Object(
        None
    )
    # A fresh orchestrator per call (keyword arguments replace the wired ones, e.g. runtime).
    orchestrator_factory = providers.Factory(
        Orchestrator,
        uow_factory=uow_factory,
        runtime=runtime,
        workflows=workflows,
        on_transition=on_transition,
        retired=retired,
    )
    orchestrator = providers.Singleton(
        Orchestrator,
        uow_factory=uow_factory,
        runtime=runtime,
        workflows=workflows,
        on_transition=on_transition,
        retired=retired,
    )


def override(provider: object, value: object) -> None:
    """Replace a provider's result with a value."""
    provider.override(providers.Object(value))  # type: ignore[attr-defined]


def use_workflows(
    container: Container,
    workflows: Callable[[KnowledgeService], Mapping[str, WorkflowDefinition]],
) -> None:
    """Run the workflows `workflows(knowledge service)` returns instead of the built-in
    registry (include `workflow_registry(service)` in it to keep those too)."""
    container.workflows.override(providers.Singleton(workflows, container.knowledge_service))


def use_retired(
    container: Container,
    retired: Callable[[KnowledgeService], Sequence[WorkflowDefinition]],
) -> None:
    """Drive the executions the definitions `retired(knowledge service)` returns started,
    beside the current ones (earlier versions: they start nothing)."""
    container.retired.override(providers.Singleton(retired, container.knowledge_service))


def wrap_uow_factory(
    container: Container, wrapper: Callable[[UnitOfWorkFactory], UnitOfWorkFactory]
) -> None:
    """Use `wrapper(store factory)` as the unit-of-work factory everywhere (e.g. a fault
    injector): the gate, the services and the orchestrator all receive the wrapped one."""
    container.uow_factory.override(providers.Singleton(wrapper, container.store_uow_factory))


__all__ = [
    "Container",
    "Store",
    "make_store",
    "override",
    "runtime_context",
    "use_retired",
    "use_workflows",
    "workflow_registry",
    "wrap_uow_factory",
]
