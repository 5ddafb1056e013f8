"""Service-test wiring: a RuntimeContext on injected ports, the gate, the service, back doors.

In the spirit of cosmicpython's bootstrap for `test_handlers`: every test gets the real
service wired to a real (in-memory) store, with a fixed clock and sequential ids so ids and
timestamps can be asserted exactly. The back doors read stored state without any unit of
work, so a test never trusts the code under test to report what it wrote.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from attrs import define, evolve

from adapters.memory import MemoryStore
from domain.model.analysis import Analysis
from domain.model.capsule import Capsule
from domain.model.environment import Environment
from domain.model.knowledge import SourceDraft
from domain.model.policy import Approval, EnforcementContext, ImpactTier
from domain.model.runtime import RuntimeContext
from domain.services.governance import Gate, enforcement_context
from domain.services.knowledge import IngestResult, KnowledgeService
from ports.clock import FixedClock, SequentialIds
from ports.errors import InjectedFault
from ports.storage import EVENT_TABLE, TABLES, Batch, CommitReceipt, Document, Write
from ports.unit_of_work import UnitOfWork, UnitOfWorkFactory, WrappingUnitOfWork

START = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
TENANT = "tenant-a"
OTHER_TENANT = "tenant-b"
ACTOR = "alice"
SERVICE = "govkernel-test"
TRACE = "trace-0001"
POLICY_REFS = ("pol-knowledge-001",)

# One URL per kind that the default allowlist accepts.
ALLOWED_URLS = {
    "imf": "https://www.imf.org/en/Publications",
    "bis": "https://www.bis.org/publ",
    "fsb": "https://www.fsb.org/work",
    "world_bank": "https://data.worldbank.org/indicator",
    "fred": "https://fred.stlouisfed.org/series",
    "official_document": "https://www.federalreserve.gov/monetarypolicy",
    "research_paper": "https://arxiv.org/abs",
    "secondary_context": "https://news.example.com/story",
}

Snapshot = dict[str, dict[str, Document]]


def draft(**overrides: Any) -> SourceDraft:
    fields: dict[str, Any] = {
        "kind": "imf",
        "title": "World Economic Outlook",
        "source_url": ALLOWED_URLS["imf"],
        "format": "text",
        "classification": "public",
        "content_text": (
            "Global inflation is easing. Growth remains resilient in emerging markets. "
            "Inflation expectations are anchored."
        ),
    }
    fields.update(overrides)
    return SourceDraft.parse(**fields)


def make_runtime(
    *,
    tenant: str = TENANT,
    actor: str = ACTOR,
    environment: Environment = Environment.TEST,
    clock: FixedClock | None = None,
    ids: SequentialIds | None = None,
    change_freeze: bool = False,
) -> RuntimeContext:
    return RuntimeContext(
        environment=environment,
        tenant=tenant,
        service=SERVICE,
        actor=actor,
        clock=clock or FixedClock(START),
        ids=ids or SequentialIds(),
        trace_id=TRACE,
        change_freeze=change_freeze,
    )


def memory_snapshot(store: MemoryStore) -> Snapshot:
    """Back door: the memory store's tables (and its event log keyed by event id)."""
    snap = {name: copy.deepcopy(store.tables[name]) for name in TABLES}
    assert not snap[EVENT_TABLE], "the memory store keeps events in .events only"
    snap[EVENT_TABLE] = {e["event_id"]: copy.deepcopy(e) for e in store.events}
    assert len(snap[EVENT_TABLE]) == len(store.events), "an event id was stored twice"
    return snap


@define
class Harness:
    """The service on a memory store, with the injected clock and ids at hand."""

    store: MemoryStore
    clock: FixedClock
    ids: SequentialIds
    runtime: RuntimeContext
    gate: Gate
    service: KnowledgeService

    @classmethod
    def build(
        cls, *, environment: Environment = Environment.TEST, change_freeze: bool = False
    ) -> Harness:
        store = MemoryStore()
        clock, ids = FixedClock(START), SequentialIds()
        runtime = make_runtime(
            environment=environment, clock=clock, ids=ids, change_freeze=change_freeze
        )
        gate = Gate(store.unit_of_work)
        return cls(store, clock, ids, runtime, gate, KnowledgeService(gate))

    # -- contexts ----------------------------------------------------------------------------

    def as_tenant(self, tenant: str) -> RuntimeContext:
        return evolve(self.runtime, tenant=tenant)

    def enforcement(
        self,
        runtime: RuntimeContext | None = None,
        *,
        tier: ImpactTier = ImpactTier.TIER0,
        policy_refs: Sequence[str] = POLICY_REFS,
        required_roles: Sequence[str] = (),
        approvals: Sequence[Approval] = (),
    ) -> EnforcementContext:
        return enforcement_context(
            runtime or self.runtime,
            tier=tier,
            policy_refs=policy_refs,
            required_roles=required_roles,
            approvals=approvals,
        )

    # -- each mutation in a committed unit of its own ----------------------------------------

    def ingest(
        self,
        *drafts: SourceDraft,
        runtime: RuntimeContext | None = None,
        enforcement: EnforcementContext | None = None,
    ) -> IngestResult:
        rt = runtime or self.runtime
        with self.store.unit_of_work() as uow:
            result = self.service.ingest(uow, rt, enforcement or self.enforcement(rt), drafts)
            uow.commit()
        return result

    def analyse(
        self,
        source_ids: Sequence[str],
        *,
        runtime: RuntimeContext | None = None,
        enforcement: EnforcementContext | None = None,
    ) -> Analysis:
        rt = runtime or self.runtime
        with self.store.unit_of_work() as uow:
            result = self.service.generate_analysis(
                uow, rt, enforcement or self.enforcement(rt), source_ids
            )
            uow.commit()
        return result

    def publish(
        self,
        source_ids: Sequence[str],
        *,
        publication_id: str = "pub-1",
        title: str = "Inflation capsule",
        analysis_ids: Sequence[str] = (),
        evidence_ids: Sequence[str] = (),
        runtime: RuntimeContext | None = None,
        enforcement: EnforcementContext | None = None,
        uow_factory: UnitOfWorkFactory | None = None,
    ) -> Capsule:
        rt = runtime or self.runtime
        with (uow_factory or self.store.unit_of_work)() as uow:
            result = self.service.publish(
                uow,
                rt,
                enforcement or self.enforcement(rt),
                publication_id=publication_id,
                title=title,
                source_ids=source_ids,
                analysis_ids=analysis_ids,
                evidence_ids=evidence_ids,
            )
            uow.commit()
        return result.capsule

    def retract(
        self,
        capsule_id: str,
        *,
        reason: str = "superseded",
        runtime: RuntimeContext | None = None,
        enforcement: EnforcementContext | None = None,
    ) -> Capsule:
        rt = runtime or self.runtime
        with self.store.unit_of_work() as uow:
            result = self.service.retract(
                uow, rt, enforcement or self.enforcement(rt), capsule_id=capsule_id, reason=reason
            )
            uow.commit()
        return result

    # -- back door ---------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return memory_snapshot(self.store)

    def table(self, name: str) -> dict[str, Document]:
        return self.store.tables[name]

    def counts(self) -> dict[str, int]:
        counts = {name: len(rows) for name, rows in self.store.tables.items()}
        counts[EVENT_TABLE] = len(self.store.events)
        return counts


class BatchProbe(WrappingUnitOfWork):
    """Wraps a unit of work; on commit it records the batch and refuses to apply it.

    Tells a test exactly how many writes (staged writes plus version checks) the adapter
    would receive, so a fault can be planted after every one of them.
    """

    def __init__(self, inner: UnitOfWork) -> None:
        super().__init__(inner)
        self.batch: Batch | None = None

    def _apply(self, batch: Batch) -> CommitReceipt:
        self.batch = batch
        raise InjectedFault("probe: batch recorded, not applied")


class QueryProbe(WrappingUnitOfWork):
    """Wraps a unit of work and records the table of every query (look-up by fields)."""

    def __init__(self, inner: UnitOfWork, queried: list[str]) -> None:
        super().__init__(inner)
        self.queried = queried

    def _query(
        self,
        table: str,
        where: Mapping[str, Any],
        order_by: str | None,
        descending: bool,
        limit: int | None,
    ) -> Iterable[tuple[str, Document]]:
        self.queried.append(table)
        return super()._query(table, where, order_by, descending, limit)


def expected_after(before: Snapshot, staged: Sequence[Write]) -> Snapshot:
    """The state `before` with every staged write applied (event positions left out)."""
    expected = copy.deepcopy(before)
    for w in staged:
        assert w.document is not None
        expected[w.table][w.key] = copy.deepcopy(w.document)
    return expected


def without_positions(snap: Snapshot) -> Snapshot:
    out = copy.deepcopy(snap)
    for doc in out[EVENT_TABLE].values():
        doc.pop("position", None)
    return out


Mutation = Callable[[UnitOfWork], object]


@define
class Backend:
    """A store under test: its unit-of-work factory and a back door to its stored state."""

    name: str
    factory: UnitOfWorkFactory
    snapshot: Callable[[], Snapshot]
    max_examples: int
