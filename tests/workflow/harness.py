"""Shared wiring for the workflow tests: stores, runtimes, requests and the invariant checks.

Everything here reads stored state through a back door (the memory store's tables, or the
SurrealDB store's `dump`), never through the repositories under test.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from attrs import define, evolve

from adapters.memory import MemoryStore
from adapters.surrealdb import SurrealConfig, SurrealStore
from domain.model.environment import Environment
from domain.model.evidence import EventType
from domain.model.lifecycle import AuditEntry, ExecutionState, verify_chain
from domain.model.runtime import Clock, IdGenerator, RuntimeContext
from domain.orchestration.definition import RetryPolicy, StepContext, StepFn, WorkflowDefinition
from domain.orchestration.orchestrator import Orchestrator
from domain.services.governance import Gate
from domain.services.knowledge import KnowledgeService
from domain.workflows import knowledge_publication as kp
from ports.clock import FixedClock, SequentialIds
from ports.records import audit_from, audit_key
from ports.storage import Document
from ports.unit_of_work import UnitOfWork, UnitOfWorkFactory

T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
TENANT = "tenant-a"
WORKFLOW = kp.NAME
DOMAIN_TABLES = ("knowledge_source", "analysis", "capsule", "evidence", "decision")

Store = MemoryStore | SurrealStore


def runtime(
    clock: Clock, ids: IdGenerator | None = None, *, actor: str = "operator"
) -> RuntimeContext:
    return RuntimeContext(
        environment=Environment.TEST,
        tenant=TENANT,
        service="govkernel-tests",
        actor=actor,
        clock=clock,
        ids=ids or SequentialIds(),
        trace_id="trace-workflow-tests",
    )


def request(
    publication_id: str, *, documents: int = 2, required_roles: Sequence[str] = ()
) -> dict[str, Any]:
    """A valid knowledge_publication input with `documents` distinct primary sources."""
    raw = {
        "documents": [
            {
                "kind": "imf",
                "title": f"{publication_id} document {n}",
                "source_url": f"https://www.imf.org/en/Publications/{publication_id}/{n}",
                "format": "text",
                "classification": "internal",
                "content_text": f"Inflation outlook for {publication_id}, part {n}. " * 3,
            }
            for n in range(documents)
        ],
        "title": f"Capsule {publication_id}",
        "publication_id": publication_id,
        "policy_refs": ["POL-KNOWLEDGE-1"],
        "required_roles": list(required_roles),
    }
    return kp.PublicationRequest.parse(raw).to_input()


def service(factory: UnitOfWorkFactory) -> KnowledgeService:
    return KnowledgeService(Gate(factory))


def definitions(
    factory: UnitOfWorkFactory, *extra: WorkflowDefinition
) -> dict[str, WorkflowDefinition]:
    out = {WORKFLOW: kp.definition(service(factory))}
    out.update({d.name: d for d in extra})
    return out


def orchestrator(
    factory: UnitOfWorkFactory,
    clock: FixedClock,
    *,
    worker_id: str = "worker-1",
    workflows: Mapping[str, WorkflowDefinition] | None = None,
    ids: IdGenerator | None = None,
    **kwargs: Any,
) -> Orchestrator:
    kwargs.setdefault("sleep", lambda seconds: clock.advance(timedelta(seconds=seconds)))
    return Orchestrator(
        factory,
        runtime(clock, ids),
        workflows if workflows is not None else definitions(factory),
        worker_id=worker_id,
        **kwargs,
    )


# -- back doors ----------------------------------------------------------------------------------


@define
class BackDoor:
    """Stored state read without the adapter's unit of work."""

    store: Store
    # A snapshot reads each table once and answers from that copy (see `snapshot`).
    _cache: dict[str, dict[str, Document]] | None = None

    def snapshot(self) -> BackDoor:
        """A back door that reads every table at most once: for checks, not for tampering."""
        return BackDoor(self.store, {})

    def table(self, name: str) -> dict[str, Document]:
        if self._cache is not None and name in self._cache:
            return {k: dict(v) for k, v in self._cache[name].items()}
        if isinstance(self.store, MemoryStore):
            with self.store.lock:
                rows = {k: dict(v) for k, v in self.store.tables[name].items()}
        else:
            rows = self.store.dump(name)
        if self._cache is not None:
            self._cache[name] = {k: dict(v) for k, v in rows.items()}
        return rows

    def events(self) -> list[Document]:
        """The event log in position order (the memory store keeps it outside its tables)."""
        if self._cache is not None and "event" in self._cache:
            rows = list(self._cache["event"].values())
        elif isinstance(self.store, MemoryStore):
            with self.store.lock:
                rows = [dict(e) for e in self.store.events]
        else:
            rows = list(self.store.dump("event").values())
        if self._cache is not None:
            self._cache["event"] = {str(n): dict(e) for n, e in enumerate(rows)}
        return sorted((dict(e) for e in rows), key=lambda e: int(e["position"]))

    # -- tampering (the store's own storage, not the repositories) ---------------------------

    def edit_audit(self, execution_id: str, sequence: int, changes: Mapping[str, Any]) -> None:
        self._edit("audit", audit_key(execution_id, sequence), changes)

    def edit_execution(self, execution_id: str, changes: Mapping[str, Any]) -> None:
        self._edit("execution", execution_id, changes)

    def edit_input(self, execution_id: str, changes: Mapping[str, Any]) -> None:
        self._edit("execution_input", execution_id, changes)

    def _edit(self, table: str, key: str, changes: Mapping[str, Any]) -> None:
        if isinstance(self.store, MemoryStore):
            with self.store.lock:
                self.store._put(table, key, self.store.tables[table][key] | dict(changes))
            return
        from surrealdb import RecordID

        # Rewritten whole, as someone with access to the store can: the schema keeps natural
        # keys READONLY against updates, not against that.
        doc = self.store.dump(table)[key] | dict(changes)
        self.store.select_rows(
            "BEGIN; DELETE $r; CREATE $r CONTENT $d RETURN NONE; COMMIT;",
            {"r": RecordID(table, key), "d": {k: v for k, v in doc.items() if v is not None}},
        )

    def delete_audit(self, execution_id: str, sequence: int) -> None:
        self.delete("audit", audit_key(execution_id, sequence))

    def delete(self, table: str, key: str) -> None:
        if isinstance(self.store, MemoryStore):
            with self.store.lock:
                self.store._put(table, key, None)
            return
        from surrealdb import RecordID

        self.store.select_rows("DELETE $r RETURN NONE", {"r": RecordID(table, key)})

    def _memory_put(self, key: str, doc: Document | None) -> None:
        """Write `MemoryStore.tables['audit'][key]` directly, keeping the store's hash
        indexes in step with it (they are part of its storage, as SurrealDB's are)."""
        assert isinstance(self.store, MemoryStore)
        with self.store.lock:
            self.store._put("audit", key, doc)

    def add_audit(self, doc: Document, *, key: str | None = None) -> None:
        """Store `doc` as an entry of its own (a forged one), keyed by its execution and
        sequence unless `key` says otherwise."""
        key = key or audit_key(doc["execution_id"], doc["sequence"])
        if isinstance(self.store, MemoryStore):
            self._memory_put(key, dict(doc))
            return
        from surrealdb import RecordID

        self.store.select_rows(
            "CREATE $r CONTENT $d RETURN NONE", {"r": RecordID("audit", key), "d": dict(doc)}
        )

    def audit_doc(self, execution_id: str, sequence: int) -> Document:
        return self.table("audit")[audit_key(execution_id, sequence)]

    def replace_audit(self, execution_id: str, sequence: int, doc: Document) -> None:
        """Overwrite the stored entry at `sequence` with `doc`'s content (key unchanged)."""
        key = audit_key(execution_id, sequence)
        if isinstance(self.store, MemoryStore):
            self._memory_put(key, dict(doc))
            return
        from surrealdb import RecordID

        self.store.select_rows(
            "UPDATE $r CONTENT $d RETURN NONE", {"r": RecordID("audit", key), "d": dict(doc)}
        )


def open_store(kind: str) -> Store:
    if kind == "memory":
        return MemoryStore()
    if kind == "surreal":
        return SurrealStore(SurrealConfig("mem://"))
    raise ValueError(kind)


# -- invariants ----------------------------------------------------------------------------------

EXPECTED_STEPS = ("ingest", "analyse", "publish", "verify")


def documents_of(execution_input: Mapping[str, Any]) -> int:
    return len(execution_input["documents"])


@define
class Census:
    executions: dict[str, Document]
    counts: dict[str, int]
    events_by_type: Counter[str]
    positions: list[int]
    capsules_by_publication: Counter[str]


def census(door: BackDoor) -> Census:
    events = door.events()
    capsules = door.table("capsule")
    return Census(
        executions=door.table("execution"),
        counts={name: len(door.table(name)) for name in DOMAIN_TABLES},
        events_by_type=Counter(str(e["type"]) for e in events),
        positions=[int(e["position"]) for e in events],
        capsules_by_publication=Counter(str(c["publication_id"]) for c in capsules.values()),
    )


def expected_effects(docs_per_execution: Sequence[int], compensated: int = 0) -> dict[str, Any]:
    """Counts of records and events left by succeeded (and compensated) publications.

    Every succeeded publication of n fresh documents: n sources, 1 analysis, 1 capsule,
    n + 2 evidence manifests, 3 allowing decisions, n + 2 events. A compensation adds one
    decision, one manifest and one retraction event.
    """
    n = sum(docs_per_execution)
    k = len(docs_per_execution)
    return {
        "knowledge_source": n,
        "analysis": k,
        "capsule": k,
        "evidence": n + 2 * k + compensated,
        "decision": 3 * k + compensated,
        "events": Counter(
            {
                EventType.SOURCE_INGESTED.value: n,
                EventType.ANALYSIS_GENERATED.value: k,
                EventType.CAPSULE_PUBLISHED.value: k,
            }
        )
        + Counter({EventType.CAPSULE_RETRACTED.value: compensated}),
    }


def audit_chains(door: BackDoor) -> dict[str, list[AuditEntry]]:
    """Stored audit entries per execution, in storage-key order (as the repository reads)."""
    chains: dict[str, list[AuditEntry]] = {}
    table = door.table("audit")
    for key in sorted(table):
        entry = audit_from(table[key])
        chains.setdefault(entry.execution_id, []).append(entry)
    return chains


def event_subjects(door: BackDoor) -> Counter[tuple[str, str]]:
    """(event type, id of the record it reports) for every stored event."""
    ids = ("source_id", "analysis_id", "capsule_id")
    out: Counter[tuple[str, str]] = Counter()
    for event in door.events():
        payload = json.loads(event["payload_json"])
        out[(str(event["type"]), next(str(payload[k]) for k in ids if k in payload))] += 1
    return out


def assert_exactly_once(
    door: BackDoor,
    orch: Orchestrator,
    *,
    denials: int = 0,
    verify: Collection[str] | None = None,
) -> Census:
    """Every execution succeeded with its steps' effects exactly once; chains verify.

    Counts must match the succeeded executions, and each execution's own records must be
    there, each reported by exactly one event. `denials` policy denials (waits for approval)
    add a decision and a manifest each. Every chain is recomputed from the stored entries;
    `Orchestrator.verify` also checks those in `verify` (default: all).
    """
    door = door.snapshot()
    c = census(door)
    refused = [d for d in door.table("decision").values() if not d["allowed"]]
    assert len(refused) == denials, refused
    chains = audit_chains(door)
    sources = door.table("knowledge_source")
    analyses = door.table("analysis")
    capsules = door.table("capsule")
    subjects = event_subjects(door)
    docs = []
    inputs = door.table("execution_input")
    assert set(inputs) == set(c.executions), "an execution without its input, or the reverse"
    for execution_id, doc in c.executions.items():
        assert doc["state"] == ExecutionState.SUCCEEDED.value, (execution_id, doc["state"])
        outputs = json.loads(doc["outputs_json"])
        assert set(outputs) == set(EXPECTED_STEPS), (execution_id, outputs)
        assert doc["current_step"] == len(EXPECTED_STEPS)
        execution_input = json.loads(inputs[execution_id]["input_json"])
        docs.append(documents_of(execution_input))
        source_ids = outputs["ingest"]["source_ids"]
        assert len(source_ids) == documents_of(execution_input)
        for source_id in source_ids:
            assert source_id in sources
            assert subjects[(EventType.SOURCE_INGESTED.value, source_id)] == 1
        analysis_id = outputs["analyse"]["analysis_id"]
        assert analysis_id in analyses
        assert subjects[(EventType.ANALYSIS_GENERATED.value, analysis_id)] == 1
        capsule = capsules[outputs["publish"]["capsule_id"]]
        assert capsule["publication_id"] == execution_input["publication_id"]
        assert capsule["status"] == "published"
        assert subjects[(EventType.CAPSULE_PUBLISHED.value, outputs["publish"]["capsule_id"])] == 1
        report = verify_chain(
            execution_id,
            chains.get(execution_id, []),
            head_hash=doc["audit_head"],
            head_sequence=doc["audit_sequence"],
        )
        assert report.ok, report
        if verify is None or execution_id in verify:
            report = orch.verify(execution_id)
            assert report.ok, report
    assert set(chains) <= set(c.executions), "audit entries of no execution"
    want = expected_effects(docs)
    want["evidence"] += denials
    want["decision"] += denials
    got = {name: c.counts[name] for name in DOMAIN_TABLES}
    assert got == {name: want[name] for name in DOMAIN_TABLES}
    assert c.events_by_type == want["events"]
    assert c.positions == list(range(1, len(c.positions) + 1))
    assert all(n == 1 for n in c.capsules_by_publication.values())
    return c


# -- workflow variants -------------------------------------------------------------------------

Wrapper = Callable[[StepFn], StepFn]


def variant(
    base: WorkflowDefinition,
    name: str,
    wrappers: Mapping[str, Wrapper],
    *,
    retry: RetryPolicy | None = None,
) -> WorkflowDefinition:
    """`base` under another name, with some steps wrapped (and optionally a retry policy)."""
    steps = tuple(
        evolve(
            s,
            run=wrappers[s.name](s.run) if s.name in wrappers else s.run,
            retry=retry or s.retry,
        )
        for s in base.steps
    )
    return evolve(base, name=name, steps=steps)


@define
class Calls:
    """Counts a step's invocations; after the real step has staged its writes, runs `then`
    (which may raise, so that those writes must be discarded)."""

    n: int = 0

    def wrap(self, then: Callable[[int, UnitOfWork, StepContext], None]) -> Wrapper:
        def wrapper(run: StepFn) -> StepFn:
            def step(uow: UnitOfWork, ctx: StepContext) -> Any:
                self.n += 1
                output = run(uow, ctx)
                then(self.n, uow, ctx)
                return output

            return step

        return wrapper
