"""Read-only queries the CLI needs beyond the orchestrator: listings, trails, events."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from domain.model.evidence import EventEnvelope
from domain.model.execution import WorkflowExecution
from domain.model.lifecycle import AuditEntry, ExecutionState
from ports.unit_of_work import UnitOfWorkFactory


def recent_executions(
    uow_factory: UnitOfWorkFactory,
    *,
    now: datetime,
    state: ExecutionState | None = None,
    limit: int = 50,
) -> list[WorkflowExecution]:
    """Newest first."""
    with uow_factory() as uow:
        return uow.executions.recent(now=now, state=state, limit=limit)


def every_execution(uow_factory: UnitOfWorkFactory) -> list[WorkflowExecution]:
    """Oldest first."""
    with uow_factory() as uow:
        return uow.executions.every()


def executions_in(
    uow_factory: UnitOfWorkFactory, states: tuple[ExecutionState, ...]
) -> list[WorkflowExecution]:
    """Oldest first, as recovery resumes them."""
    with uow_factory() as uow:
        found = [x for state in states for x in uow.executions.in_state(state)]
    return sorted(found, key=lambda x: x.created_at)


def audit_trail(uow_factory: UnitOfWorkFactory, execution_id: str) -> list[AuditEntry]:
    with uow_factory() as uow:
        uow.executions.require(execution_id)
        return uow.audit.for_execution(execution_id)


def events_after(uow_factory: UnitOfWorkFactory, position: int, limit: int) -> list[EventEnvelope]:
    with uow_factory() as uow:
        return uow.events.read_after(position, limit)


def all_events(uow_factory: UnitOfWorkFactory, page: int = 500) -> Iterator[EventEnvelope]:
    position = 0
    while True:
        batch = events_after(uow_factory, position, page)
        yield from batch
        if len(batch) < page:
            return
        position = batch[-1].position or position + len(batch)
