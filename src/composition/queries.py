"""Read-only queries the CLI needs beyond the orchestrator: listings, trails, events.

Each is scoped to one tenant (a tenant's operator never sees another tenant's records), but
`started_shapes`, which describes executions the caller has already read as the tenant's.
Listings leave executions' inputs unread (they can run to megabytes each).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from domain.model.evidence import EventEnvelope
from domain.model.execution import WorkflowExecution, read_pins, started_steps
from domain.model.lifecycle import AuditEntry, ChainReport, ExecutionState
from ports import records
from ports.errors import CorruptRecord, ExecutionNotFound
from ports.progress import Progress as Progress
from ports.progress import quietly as quietly
from ports.storage import count as _count
from ports.unit_of_work import UnitOfWorkFactory


def recent_executions(
    uow_factory: UnitOfWorkFactory,
    tenant: str,
    *,
    now: datetime,
    state: ExecutionState | None = None,
    workflow: str | None = None,
    limit: int = 50,
    before: WorkflowExecution | None = None,
    unreadable: list[str] | None = None,
) -> list[WorkflowExecution]:
    """Newest first, from the one listed after `before` if given; keys of records that
    cannot be read go to `unreadable`, if given."""
    with uow_factory() as uow:
        return uow.executions.recent(
            now=now,
            state=state,
            workflow=workflow,
            limit=limit,
            tenant=tenant,
            before=before,
            with_input=False,
            unreadable=unreadable,
        )


def execution_counts(
    uow_factory: UnitOfWorkFactory,
    tenant: str,
    states: Iterable[ExecutionState],
    workflow: str | None = None,
) -> dict[ExecutionState, int]:
    """How many of the tenant's executions (of `workflow`) are in each of `states`, counted
    by the store without reading them out: one moving between two states meanwhile may be
    counted in both, or in neither."""
    with uow_factory() as uow:
        return {
            state: uow.executions.count(state, tenant=tenant, workflow=workflow) for state in states
        }


def orphan_trails(
    uow_factory: UnitOfWorkFactory, tenant: str | None
) -> dict[str, tuple[int, str | None]]:
    """Audit trails whose execution record is gone (deleted from storage): how many entries
    each holds and the tenant its first entry pinned. Those of `tenant`, or with None those
    of every tenant, trails from before pins included."""
    with uow_factory() as uow:
        starts = {
            xid: pinned
            for xid, pinned in uow.audit.starts().items()
            if tenant is None or pinned == tenant
        }
        present = uow.get_many("execution", list(starts))
        return {  # counted, not read: an entry that does not read must not stop the check
            xid: (uow.audit.stored(xid), pinned)
            for xid, pinned in starts.items()
            if xid not in present
            # (A record read with no fields cannot be read at all: its listing says so.)
            or (tenant is not None and present[xid] and not of_tenant(present[xid], tenant))
        }


def of_tenant(doc: Mapping[str, Any], tenant: str) -> bool:
    """Whether a stored execution is `tenant`'s. One moved to another tenant in storage, or
    whose tenant was made something other than text, is gone from its own: no tenant's
    listing finds it, so its trail left behind is what reports it there."""
    return doc.get("tenant") == tenant


def broken_chains(
    uow_factory: UnitOfWorkFactory, progress: Progress | None = None
) -> list[tuple[str, ChainReport]]:
    """(tenant, report) for every broken audit chain in the store, whatever its tenant:
    executions verified one at a time with their inputs, and trails whose execution is gone."""
    unreadable: list[str] = []
    with uow_factory() as uow:
        listed = uow.executions.every(with_input=False, unreadable=unreadable)
        tenants = {x.id: x.tenant for x in listed}
        # One whose tenant no longer reads as text, or at all: the tenant its trail pinned.
        odd = [key for key, tenant in tenants.items() if not isinstance(tenant, str)]
        tenants |= {key: uow.executions.tenant_of(key) or "" for key in odd + unreadable}
    broken = []
    with (progress or quietly)(list(tenants)) as items:
        for xid in items:
            try:
                with uow_factory() as uow:
                    x = uow.executions.require(xid, fresh=True)
                    entries = uow.audit.for_execution(xid)
                report = x.verify_trail(entries, key=uow.audit_key)
            except CorruptRecord as exc:
                with uow_factory() as uow:
                    stored = uow.audit.stored(xid)
                report = ChainReport(xid, stored, False, exc.entry or 1, str(exc))
            if not report.ok:
                broken.append((tenants[xid], report))
    for xid, (count, tenant) in orphan_trails(uow_factory, None).items():
        broken.append((tenant or "", orphan_report(xid, count)))
    return broken


def orphan_trail(
    uow_factory: UnitOfWorkFactory, tenant: str, execution_id: str, *, moved: bool = False
) -> int:
    """How many entries are left of the trail of an execution whose record is gone (0: none,
    or not this tenant's: its first entry pins another, or is gone too, and then only an
    anchor tells what became of it). `moved`: its record is there under another tenant; the
    trail is this tenant's only if its first entry pins this tenant (trails from before pins
    name none, and another tenant's execution must read as missing)."""
    with uow_factory() as uow:
        try:
            first = uow.audit.entry(execution_id, 1)
        except CorruptRecord:  # whose it is cannot be read
            return 0
        stored = uow.audit.stored(execution_id)
    if first is None:  # the entry that pins its tenant is gone too: not this tenant's to see
        return 0
    pins = read_pins(first.pinned)
    pinned = None if pins is None else pins.get("tenant")
    if not isinstance(pinned, str):
        return 0 if moved else stored
    return stored if pinned == tenant else 0


def verify_listed(verify: Callable[[str], ChainReport], execution_id: str) -> ChainReport:
    """The report of an execution a listing found; one that then reads as missing by its id
    (a record whose id is a number or a list: never one of ours) is reported broken, not
    taken for a mistyped id that ends the whole check."""
    try:
        return verify(execution_id)
    except ExecutionNotFound:
        return ChainReport(execution_id, 0, False, 1, NOT_TEXT)


NOT_TEXT = (
    "listed, but no execution reads by this id: its record's id is not text, which govkernel"
    " never writes, or neither its record nor its first audit entry reads back to tell whose"
    " it is (edited in storage)"
)


def orphan_report(execution_id: str, entries: int) -> ChainReport:
    return ChainReport(
        execution_id,
        entries,
        False,
        1,
        f"the execution record is gone (deleted, moved to another tenant, or its tenant no"
        f" longer reads), and its audit trail of {entries} entries remains",
    )


def every_execution(
    uow_factory: UnitOfWorkFactory, tenant: str, unreadable: list[str] | None = None
) -> list[WorkflowExecution]:
    """Oldest first; keys of records that cannot be read go to `unreadable`, if given."""
    with uow_factory() as uow:
        return uow.executions.every(tenant, with_input=False, unreadable=unreadable)


def executions_in(
    uow_factory: UnitOfWorkFactory,
    tenant: str,
    states: tuple[ExecutionState, ...],
    unreadable: list[str] | None = None,
) -> list[WorkflowExecution]:
    """Oldest first, as recovery resumes them. With `unreadable`, the ids of the tenant's
    records in those states that do not read back are added to it, and the rest listed."""
    others: list[str] = []
    with uow_factory() as uow:
        # By id: on a server one that moved between two states' reads is read in both.
        found = {
            x.id: x
            for state in states
            for x in uow.executions.in_state(
                state,
                tenant=tenant,
                with_input=False,
                unreadable=None if unreadable is None else others,
            )
            if x.tenant == tenant
        }
        if unreadable is not None:
            unreadable += [
                k for k in dict.fromkeys(others) if uow.executions.tenant_of(k) == tenant
            ]
    return sorted(found.values(), key=lambda x: x.created_at)


def started_shapes(uow_factory: UnitOfWorkFactory, execution_ids: Iterable[str]) -> dict[str, Any]:
    """The steps each execution started with, as its first audit entry pinned them (one
    read for them all); None for one started before steps were pinned, or unreadable."""
    keys = {xid: records.audit_key(xid, 1) for xid in execution_ids}
    with uow_factory() as uow:
        docs = uow.get_many("audit", list(keys.values()))
    shapes: dict[str, Any] = {}
    for xid, key in keys.items():
        try:
            shapes[xid] = started_steps([records.audit_from(docs[key])]) if key in docs else None
        except (KeyError, TypeError, ValueError):  # verification says what is wrong with it
            shapes[xid] = None
    return shapes


def audit_trail(uow_factory: UnitOfWorkFactory, tenant: str, execution_id: str) -> list[AuditEntry]:
    with uow_factory() as uow:
        try:
            execution = uow.executions.require(execution_id, with_input=False)
        except CorruptRecord:  # another tenant's that does not read back is missing, too
            if uow.executions.tenant_of(execution_id) != tenant:
                raise ExecutionNotFound(execution_id) from None
            raise
        if execution.tenant != tenant:
            raise ExecutionNotFound(execution_id)
        return uow.audit.for_execution(execution_id)


def entries_before(
    uow_factory: UnitOfWorkFactory, execution_id: str, sequence: int
) -> list[AuditEntry]:
    """The entries of a trail before `sequence`, the first that does not read: shown, as
    far as they go."""
    entries = []
    with uow_factory() as uow:
        for n in range(1, sequence):
            entry = uow.audit.entry(execution_id, n)
            if entry is None:
                break
            entries.append(entry)
    return entries


def events_after(
    uow_factory: UnitOfWorkFactory, tenant: str, position: int, limit: int
) -> list[EventEnvelope]:
    """Up to `limit` of the tenant's events after `position`, in position order; the log is
    shared by every tenant, so others' events are read past.

    Positions have no gaps, so a missing one means an event was removed from the store:
    that is a `CorruptRecord`, not a quiet end of the log that hides every later event.
    """
    return events_read(uow_factory, tenant, position, limit)[0]


def events_read(
    uow_factory: UnitOfWorkFactory, tenant: str, position: int, limit: int
) -> tuple[list[EventEnvelope], int]:
    """`events_after`, and the position the log was read to: a page short of `limit` read
    every event up to it, so a reader may go on from there without reading past other
    tenants' events again (a quiet tenant's cursor would otherwise never move)."""
    found: list[EventEnvelope] = []
    while len(found) < limit:
        unreadable: CorruptRecord | None = None
        with uow_factory() as uow:
            # Read first: every event up to the head had committed by then, so the page
            # must hold each of them it covers, whatever commits meanwhile.
            head = uow.events.head()
            try:
                page = uow.events.read_after(position, limit)
            except CorruptRecord as exc:  # the events before the damaged one still count
                unreadable, page = exc, []
                while len(page) < limit:
                    last = (page[-1].position or position) if page else position
                    try:
                        page += uow.events.read_after(last, 1)
                    except CorruptRecord:
                        break
        if unreadable is not None:
            found += [e for e in page if e.tenant == tenant]
            bad = ((page[-1].position or position) if page else position) + 1
            raise EventGap(bad, found[:limit], f"cannot be read ({unreadable})")
        for event in page:
            if event.position != position + 1:
                raise EventGap(position + 1, found)
            position += 1
            if event.tenant == tenant:
                found.append(event)
                if len(found) == limit:
                    return found, position
        if len(page) < limit:  # the end of the log, if the log ends here
            if position < head:
                raise EventGap(position + 1, found)
            return found, position
    return found, position


class EventGap(CorruptRecord):
    """A position of the event log is missing or cannot be read: `found` holds the events
    read before it."""

    def __init__(
        self,
        position: int,
        found: list[EventEnvelope],
        problem: str = (
            "is missing; an event was removed from the store (or the log's counter was moved"
            " past it)"
        ),
    ) -> None:
        super().__init__(
            f"event log: position {position} {problem}, and the events after it are not shown"
            f" (`--after {position}` reads on past it)"
        )
        self.position = position
        self.found = found


def all_events(
    uow_factory: UnitOfWorkFactory, tenant: str, page: int = 500
) -> Iterator[EventEnvelope]:
    """Every event of `tenant`, read `page` at a time (checked now, not at the first read)."""
    return _every_event(uow_factory, tenant, _count("page", page, least=1))


def _every_event(uow_factory: UnitOfWorkFactory, tenant: str, page: int) -> Iterator[EventEnvelope]:
    position = 0
    while True:
        batch = events_after(uow_factory, tenant, position, page)
        yield from batch
        if len(batch) < page:
            return
        position = batch[-1].position or position + len(batch)
