"""Repositories: typed collections that stage writes in their unit of work.

They are concrete because they only translate between domain objects and documents; what
storage does with the documents is the adapter's business (ports.unit_of_work).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from domain.model.analysis import Analysis
from domain.model.capsule import Capsule
from domain.model.errors import shown
from domain.model.evidence import EventEnvelope, EvidenceManifest
from domain.model.execution import WorkflowExecution, read_pins
from domain.model.knowledge import KnowledgeSource
from domain.model.lifecycle import GENESIS, AuditEntry, ExecutionState
from domain.model.policy import PolicyDecision
from domain.model.validation import with_article
from ports import records
from ports.errors import CorruptRecord, ExecutionNotFound, InvalidRecord
from ports.storage import EVENT_TABLE, AnyOf, Document, Op, Range, Write, count

if TYPE_CHECKING:
    from ports.unit_of_work import UnitOfWork

# Each about ten times the last: the first window holding enough executions holds about ten
# times as many as are listed, at most, when they arrive at a steady rate.
RECENT_WINDOWS = (
    timedelta(seconds=1),
    timedelta(seconds=10),
    timedelta(minutes=2),
    timedelta(minutes=20),
    timedelta(hours=3),
    timedelta(days=1),
    timedelta(days=10),
    timedelta(days=100),
    timedelta(days=1000),
    None,
)


class _Repository:
    table: str

    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow


def _given(what: str, value: object, kind: type) -> None:
    """A repository takes its own entity: anything else failed later, as an AttributeError
    from deep inside the translation to a document."""
    if not isinstance(value, kind):
        raise InvalidRecord(
            f"{what} takes {with_article(kind.__name__)}, got {type(value).__name__}"
        )


class KnowledgeSources(_Repository):
    table = "knowledge_source"

    def add(self, source: KnowledgeSource) -> None:
        _given("sources.add", source, KnowledgeSource)
        self._uow.stage(Write(Op.CREATE, self.table, source.id, records.source_doc(source)))

    def get(self, source_id: str) -> KnowledgeSource | None:
        doc = self._uow.get(self.table, source_id)
        return None if doc is None else records.source_from(source_id, doc)

    def get_many(self, source_ids: Sequence[str]) -> dict[str, KnowledgeSource]:
        docs = self._uow.get_many(self.table, source_ids)
        return {k: records.source_from(k, d) for k, d in docs.items()}

    def find_identical(self, tenant: str, url: str, digest: str) -> KnowledgeSource | None:
        rows = self._uow.select(
            self.table,
            {"tenant": tenant, "source_url": url, "content_digest": digest},
            limit=1,
        )
        return records.source_from(*rows[0]) if rows else None


class Analyses(_Repository):
    table = "analysis"

    def add(self, analysis: Analysis) -> None:
        _given("analyses.add", analysis, Analysis)
        self._uow.stage(Write(Op.CREATE, self.table, analysis.id, records.analysis_doc(analysis)))

    def get(self, analysis_id: str) -> Analysis | None:
        doc = self._uow.get(self.table, analysis_id)
        return None if doc is None else records.analysis_from(analysis_id, doc)

    def find_by_inputs(self, tenant: str, inputs_digest: str) -> Analysis | None:
        rows = self._uow.select(
            self.table, {"tenant": tenant, "inputs_digest": inputs_digest}, limit=1
        )
        return records.analysis_from(*rows[0]) if rows else None


class Capsules(_Repository):
    table = "capsule"

    def add(self, capsule: Capsule) -> None:
        _given("capsules.add", capsule, Capsule)
        self._uow.stage(Write(Op.CREATE, self.table, capsule.id, records.capsule_doc(capsule)))

    def update(self, capsule: Capsule) -> None:
        """Stage a changed capsule; `capsule.version` is the version it was read at."""
        _given("capsules.update", capsule, Capsule)
        doc = records.capsule_doc(capsule) | {"version": capsule.version + 1}
        self._uow.stage(Write(Op.UPDATE, self.table, capsule.id, doc, capsule.version))

    def get(self, capsule_id: str) -> Capsule | None:
        doc = self._uow.get(self.table, capsule_id)
        return None if doc is None else records.capsule_from(capsule_id, doc)

    def by_publication(self, tenant: str, publication_id: str) -> Capsule | None:
        rows = self._uow.select(
            self.table, {"tenant": tenant, "publication_id": publication_id}, limit=1
        )
        return records.capsule_from(*rows[0]) if rows else None


class EvidenceManifests(_Repository):
    table = "evidence"

    def add(self, manifest: EvidenceManifest) -> None:
        _given("evidence.add", manifest, EvidenceManifest)
        self._uow.stage(Write(Op.CREATE, self.table, manifest.id, records.evidence_doc(manifest)))

    def get(self, manifest_id: str) -> EvidenceManifest | None:
        doc = self._uow.get(self.table, manifest_id)
        return None if doc is None else records.evidence_from(manifest_id, doc)

    def get_many(self, manifest_ids: Sequence[str]) -> dict[str, EvidenceManifest]:
        docs = self._uow.get_many(self.table, manifest_ids)
        return {k: records.evidence_from(k, d) for k, d in docs.items()}

    def for_subject(self, tenant: str, subject: str) -> list[EvidenceManifest]:
        return self.for_subjects(tenant, [subject])

    def for_subjects(self, tenant: str, subjects: Sequence[str]) -> list[EvidenceManifest]:
        rows = self._uow.select(self.table, {"tenant": tenant, "subject": AnyOf(subjects)})
        return [records.evidence_from(k, d) for k, d in rows]


class Decisions(_Repository):
    table = "decision"

    def add(self, decision: PolicyDecision) -> None:
        _given("decisions.add", decision, PolicyDecision)
        self._uow.stage(Write(Op.CREATE, self.table, decision.id, records.decision_doc(decision)))

    def get(self, decision_id: str) -> PolicyDecision | None:
        doc = self._uow.get(self.table, decision_id)
        return None if doc is None else records.decision_from(decision_id, doc)


class EventLog(_Repository):
    """Append-only. Positions are assigned at commit, strictly increasing without gaps."""

    table = EVENT_TABLE

    def append(self, event: EventEnvelope) -> None:
        """Stage a sealed event (`event.sealed()`): its integrity hash is what `events`
        checks every event it lists against."""
        if not isinstance(event, EventEnvelope) or not event.intact:
            what = "an EventEnvelope" if isinstance(event, EventEnvelope) else type(event).__name__
            raise InvalidRecord(
                f"event {shown(getattr(event, 'id', '?'))} refused: {what} not sealed (or changed"
                " since): append event.sealed()"
            )
        self._uow.stage(Write(Op.APPEND, self.table, event.id, records.event_doc(event)))

    def read_after(self, position: int, limit: int = 100) -> list[EventEnvelope]:
        """Up to `limit` events after `position`, in order (ValueError for a position below
        0, a limit below 1, or either not an integer)."""
        return [records.event_from(d) for d in self._uow.events_after(position, limit)]

    def head(self) -> int:
        """The position of the last event committed (0 before the first)."""
        return self._uow.events_head()


INPUT_TABLE = "execution_input"


class Executions(_Repository):
    table = "execution"

    def save(self, execution: WorkflowExecution, *, vouch: bool = False) -> None:
        """Stage the execution and every audit entry it made since it was read.

        The entity's version moves on at once, so a second save in the same unit folds into
        the first and keeps the version originally read as the commit-time guard.

        With the unit's audit key, its head is sealed anew only where the seal it was read
        with vouched for the head it was read with (or it is new): a head rewritten in
        storage is never sealed by a worker that merely moves it on (a lease renewal, say).
        `vouch` seals it as it stands all the same: `audit seal`'s deliberate act.
        """
        _given("executions.save", execution, WorkflowExecution)
        new_version = execution.version + 1
        self._seal(execution, vouch)
        doc = records.execution_doc(execution, new_version)
        if execution.version == 0:
            self._uow.stage(Write(Op.CREATE, self.table, execution.id, doc))
            input_doc = records.execution_input_doc(execution)
            self._uow.stage(Write(Op.CREATE, INPUT_TABLE, execution.id, input_doc))
        else:
            self._uow.stage(Write(Op.UPDATE, self.table, execution.id, doc, execution.version))
        for entry in execution.new_audit:
            self._uow.audit.add(entry)
        execution.new_audit.clear()
        execution.version = new_version

    def _seal(self, execution: WorkflowExecution, vouch: bool) -> None:
        key = self._uow.audit_key
        if key is None:
            if execution.new_audit:  # the head moved on: a seal of the one before is void
                execution.seal = None
            return
        first = execution.new_audit[0] if execution.new_audit else None
        read = (
            (first.sequence - 1, first.prev_hash)
            if first is not None
            else (execution.audit_sequence, execution.audit_head)
        )
        if vouch or execution.version == 0 or not key.problem(execution.seal, execution.id, *read):
            execution.seal = key.seal(execution.id, execution.audit_sequence, execution.audit_head)

    def get(
        self, execution_id: str, *, with_input: bool = True, fresh: bool = False
    ) -> WorkflowExecution | None:
        """`fresh` reads the input from storage itself, past any cache (for verification)."""
        doc = self._uow.get(self.table, execution_id)
        if doc is None:
            return None
        return self._with_inputs([(execution_id, doc)], with_input, fresh=fresh)[0]

    def require(
        self, execution_id: str, *, with_input: bool = True, fresh: bool = False
    ) -> WorkflowExecution:
        execution = self.get(execution_id, with_input=with_input, fresh=fresh)
        if execution is None:
            raise ExecutionNotFound(execution_id)
        return execution

    def tenant_of(self, execution_id: str) -> str | None:
        """The tenant a stored execution names, read even if the rest of it cannot be; None
        for an execution not stored, or one whose tenant cannot be told."""
        try:
            doc = self._uow.get(self.table, execution_id)
        except CorruptRecord:
            doc = {}
        if doc is None:
            return None
        tenant = doc.get("tenant")
        if isinstance(tenant, str):
            return tenant
        # Its record names none that reads (the store cannot hand it back: a NUL written
        # into it; a tenant that is no text): the tenant its first audit entry pinned, if
        # that entry is as it was written, for the chain covers what it pins.
        try:
            found = self._uow.get("audit", records.audit_key(execution_id, 1))
            first = None if found is None else records.audit_from(found)
        except CorruptRecord:
            first = None
        if first is None or first.execution_id != execution_id or first.prev_hash != GENESIS:
            return None
        return _pinned_tenant(first.pinned) if first.recomputed() == first.hash else None

    def by_idempotency_key(self, tenant: str, key: str) -> WorkflowExecution | None:
        rows = self._uow.select(self.table, {"tenant": tenant, "idempotency_key": key}, limit=1)
        return self._with_inputs(rows)[0] if rows else None

    def _with_inputs(
        self,
        rows: Sequence[tuple[str, Document]],
        with_input: bool = True,
        unreadable: list[str] | None = None,
        *,
        fresh: bool = False,
    ) -> list[WorkflowExecution]:
        """`with_input=False` is for listings that never look at inputs, which can run to
        megabytes each: those executions carry `records.INPUT_NOT_LOADED` instead.

        A record that cannot be read raises `CorruptRecord`, or, when the caller passes an
        `unreadable` list, has its key added there and is left out: one damaged record must
        not hide every other one from a listing.
        """
        keys = [key for key, _ in rows]
        inputs = self._uow.get_many(INPUT_TABLE, keys, fresh=fresh) if with_input else {}
        found = []
        for key, doc in rows:
            given = inputs.get(key) if with_input else records.INPUT_NOT_LOADED
            try:
                found.append(records.execution_from(key, doc, given))
            except CorruptRecord:
                if unreadable is None:
                    raise
                unreadable.append(key)
        return found

    def in_state(
        self,
        state: ExecutionState,
        limit: int | None = None,
        *,
        tenant: str | None = None,
        with_input: bool = True,
        unreadable: list[str] | None = None,
    ) -> list[WorkflowExecution]:
        """Oldest first: every tenant's, or `tenant`'s."""
        if not isinstance(state, ExecutionState):  # None lists every state elsewhere, not here
            raise ValueError(f"state must be an ExecutionState, got {shown(state)}")
        _listing(limit=limit, state=state)
        rows = self._uow.select(
            self.table, _filter(state, tenant, None), order_by="created_at", limit=limit
        )
        return self._with_inputs(rows, with_input, unreadable)

    def count(
        self,
        state: ExecutionState | None = None,
        *,
        tenant: str | None = None,
        workflow: str | None = None,
    ) -> int:
        """How many executions there are (in a state, of a tenant, of a workflow), counted
        by the store: nothing is read out."""
        _listing(limit=None, state=state)
        return self._uow.count(self.table, _filter(state, tenant, workflow))

    def every(
        self,
        tenant: str | None = None,
        *,
        with_input: bool = True,
        unreadable: list[str] | None = None,
    ) -> list[WorkflowExecution]:
        """Every execution (of a tenant), oldest first: for whole-store work such as audit
        verification."""
        where = {} if tenant is None else {"tenant": tenant}
        rows = self._uow.select(self.table, where, order_by="created_at")
        return self._with_inputs(rows, with_input, unreadable)

    def recent(
        self,
        *,
        now: datetime,
        limit: int = 50,
        state: ExecutionState | None = None,
        tenant: str | None = None,
        workflow: str | None = None,
        before: WorkflowExecution | None = None,
        with_input: bool = True,
        unreadable: list[str] | None = None,
    ) -> list[WorkflowExecution]:
        """The newest executions (in a state, of a workflow), newest first; with `before`,
        the ones listed after it (older, or as old with a smaller id): the next page of a
        listing.

        SurrealDB cannot walk an index backwards: a newest-first LIMIT reads and sorts every
        match. So each window of creation time, back from now or from `before`, is read whole
        (that is cheap while it is small), looking back through widening windows until one
        holds enough; the cost stays proportional to what is listed, not to everything ever
        stored.
        """
        _listing(limit=count("limit", limit, least=1), state=state, before=before)
        if not isinstance(now, datetime) or now.tzinfo is None:
            raise ValueError(f"now must be a datetime with a zone, got {shown(now)}")
        where = _filter(state, tenant, workflow)
        ties: list[tuple[str, Document]] = []
        if before is not None:
            # Listings break ties in time by id: the rest of `before`'s instant comes first.
            at_once = self._uow.select(
                self.table,
                where | {"created_at": before.created_at},
                order_by="created_at",
                descending=True,
            )
            ties = [(key, doc) for key, doc in at_once if key < before.id]
        end = now if before is None else before.created_at
        # A window reaching back past the first instant there is has no lower bound.
        reach = end - datetime.min.replace(tzinfo=end.tzinfo)
        rows: list[tuple[str, Document]] = []
        for window in RECENT_WINDOWS:
            if len(ties) >= limit:
                break
            span = Range(
                above=None if window is None or window >= reach else end - window,
                below=None if before is None else end,
            )
            rows = self._uow.select(
                self.table,
                where if span == Range() else where | {"created_at": span},
                order_by="created_at",
                descending=True,
                limit=None if window is not None else limit - len(ties),
            )
            if len(ties) + len(rows) >= limit:
                break
        return self._with_inputs((ties + rows)[:limit], with_input, unreadable)


def _filter(
    state: ExecutionState | None, tenant: str | None, workflow: str | None
) -> dict[str, Any]:
    where: dict[str, Any] = {} if state is None else {"state": state.value}
    for field, value in (("tenant", tenant), ("workflow_name", workflow)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{field} must be text, got {shown(value)}")
        if value is not None:
            where[field] = value
    return where


def _listing(*, limit: int | None, state: object, before: object = None) -> None:
    """Refuse a listing's arguments of the wrong kind, as every adapter would."""
    if limit is not None:
        count("limit", limit, least=1)
    if state is not None and not isinstance(state, ExecutionState):
        raise ValueError(f"state must be an ExecutionState, got {shown(state)}")
    if before is not None and not isinstance(before, WorkflowExecution):
        raise ValueError(
            f"before must be a WorkflowExecution (the last one listed), got {shown(before)}"
        )


class AuditTrail(_Repository):
    table = "audit"

    def add(self, entry: AuditEntry) -> None:
        _given("audit.add", entry, AuditEntry)
        doc = records.audit_doc(entry)  # first: it refuses an entry whose sequence is no number
        key = records.audit_key(entry.execution_id, doc["sequence"])
        self._uow.stage(Write(Op.CREATE, self.table, key, doc))

    def entry(self, execution_id: str, sequence: int) -> AuditEntry | None:
        """One entry of an execution's trail, by its sequence number."""
        sequence = count("sequence", sequence, least=1)
        doc = self._uow.get(self.table, records.audit_key(execution_id, sequence))
        return None if doc is None else records.audit_from(doc)

    def for_execution(self, execution_id: str) -> list[AuditEntry]:
        """Entries in storage-key order (not by their own sequence field), so a swap shows."""
        rows = self._uow.select(self.table, {"execution_id": execution_id})
        entries = []
        for place, (key, doc) in enumerate(rows, start=1):
            try:
                entries.append(records.audit_from(doc))
            except CorruptRecord as exc:
                said = str(exc).partition(" cannot be read: ")[2] or str(exc)
                raise CorruptRecord(
                    f"stored audit entry {key!r} cannot be read: {said}"[:300], entry=place
                ) from None
        return entries

    def stored(self, execution_id: str) -> int:
        """How many entries of the execution's trail are in storage, read or not: what a
        report of a trail that cannot be verified still says of it."""
        return len(self._uow.select(self.table, {"execution_id": execution_id}))

    def starts(self) -> dict[str, str | None]:
        """Every execution whose first entry is in storage, with the tenant that entry pinned
        (None for trails from before pins): for whole-store checks, such as an execution
        whose record is gone while its trail remains. Reads every first entry."""
        rows = self._uow.select(self.table, {"sequence": 1})
        return {
            doc["execution_id"]: _pinned_tenant(doc.get("pinned"))
            for _, doc in rows
            if isinstance(doc.get("execution_id"), str)
        }


def _pinned_tenant(pinned: object) -> str | None:
    facts = read_pins(pinned)
    tenant = None if facts is None else facts.get("tenant")
    return tenant if isinstance(tenant, str) else None
