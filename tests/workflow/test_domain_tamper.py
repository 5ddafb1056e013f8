"""Domain records changed in storage are not built on, in memory and in SurrealDB.

A source, an analysis or a capsule is found again by its natural key and reused (the same
text ingested again, the same sources analysed again, the same publication repeated): one
changed behind the adapter's back must stop the step that would reuse it, not be published
again under a new approval and reported verified (an auditor's pass, h165).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from attrs import evolve, frozen

from adapters.memory import MemoryStore
from domain.model.lifecycle import ExecutionState
from domain.orchestration.definition import StepContext
from domain.orchestration.orchestrator import Orchestrator
from domain.workflows import knowledge_publication as kp
from ports.clock import FixedClock
from ports.errors import CorruptRecord
from ports.storage import Document
from ports.unit_of_work import UnitOfWork
from tests.workflow.harness import (
    T0,
    WORKFLOW,
    BackDoor,
    definitions,
    open_store,
    orchestrator,
    request,
    service,
)

FIRST = request("pub-1", documents=1)


def again(publication_id: str) -> dict[str, Any]:
    """The first request's documents, published under another id: every source and the
    analysis are the first run's, found again and reused."""
    return dict(FIRST) | {"publication_id": publication_id, "title": f"Capsule {publication_id}"}


@frozen
class Published:
    door: BackDoor
    orch: Orchestrator
    store: Any

    def only(self, table: str) -> tuple[str, Document]:
        rows = self.door.table(table)
        assert len(rows) == 1, rows
        return next(iter(rows.items()))

    def tamper(self, table: str, key: str, changes: dict[str, Any]) -> None:
        self.door._edit(table, key, changes)
        if not isinstance(self.store, MemoryStore):
            # What a process that opens the store after the change reads (this one keeps
            # the records it committed, which never change, in a cache).
            with self.store._cache_lock:
                self.store._immutable.clear()


@pytest.fixture(params=["memory", "surreal"])
def published(request: pytest.FixtureRequest) -> Iterator[Published]:
    store = open_store(request.param)
    try:
        orch = orchestrator(store.unit_of_work, FixedClock(T0))
        assert orch.start(WORKFLOW, FIRST).state is ExecutionState.SUCCEEDED
        yield Published(BackDoor(store), orch, store)
    finally:
        store.close()


def _failed_at(p: Published, input: dict[str, Any], step: str, said: str) -> None:
    capsules = len(p.door.table("capsule"))
    x = p.orch.start(WORKFLOW, input)
    assert x.state is ExecutionState.FAILED, (x.state, x.last_error)
    assert x.last_error is not None and said in x.last_error, x.last_error
    assert x.current_step == kp.definition(service(p.store.unit_of_work)).step_names().index(step)
    assert len(p.door.table("capsule")) == capsules  # nothing published
    assert p.orch.verify(x.id).ok  # the trail says what happened, as it happened


def test_a_source_whose_text_was_changed_is_not_reused(published: Published) -> None:
    key, source = published.only("knowledge_source")
    forged = source["content_text"].replace("Inflation", "Deflation")
    published.tamper("knowledge_source", key, {"content_text": forged})
    _failed_at(published, again("pub-2"), "ingest", "does not hash to its content_digest")
    with published.store.unit_of_work() as uow, pytest.raises(CorruptRecord, match=key):
        uow.sources.get(key)


def test_an_analysis_that_was_changed_is_not_reused(published: Published) -> None:
    key, analysis = published.only("analysis")
    claims = json.loads(analysis["claims_json"])
    claims[0][0] = "Prices will double."
    published.tamper("analysis", key, {"claims_json": json.dumps(claims)})
    _failed_at(published, again("pub-2"), "analyse", f"stored analysis {key!r} is not what")


def test_a_capsule_that_was_changed_is_no_repeat_of_its_publication(
    published: Published,
) -> None:
    key, capsule = published.only("capsule")
    chunks = json.loads(capsule["chunks_json"])
    chunks[0][-1] = "Forged text."
    published.tamper("capsule", key, {"chunks_json": json.dumps(chunks)})
    repeat = published.orch.start(WORKFLOW, FIRST, idempotency_key="repeat")
    assert repeat.state is ExecutionState.FAILED, repeat.last_error
    assert f"stored capsule {key!r} is not what its sources give" in (repeat.last_error or "")


def test_verify_finds_a_capsule_changed_after_it_was_published_and_retracts_it() -> None:
    store = open_store("memory")
    door = BackDoor(store)
    base = kp.definition(service(store.unit_of_work))
    verify = base.steps[-1]

    def changed_then_verified(uow: UnitOfWork, ctx: StepContext) -> Any:
        # Between publish's commit and verify's reads: as if written in storage meanwhile.
        ((key, capsule),) = door.table("capsule").items()
        chunks = json.loads(capsule["chunks_json"])
        chunks[0][-1] = "Forged text."
        door._edit("capsule", key, {"chunks_json": json.dumps(chunks)})
        return verify.run(uow, ctx)

    tampered = evolve(
        base, name="tampered", steps=(*base.steps[:-1], evolve(verify, run=changed_then_verified))
    )
    workflows = definitions(store.unit_of_work, tampered)
    orch = orchestrator(store.unit_of_work, FixedClock(T0), workflows=workflows)
    x = orch.start("tampered", request("pub-v"))
    assert x.state is ExecutionState.COMPENSATED, (x.state, x.last_error)
    assert "does not match its sources" in (x.last_error or "")
    ((_, capsule),) = door.table("capsule").items()
    assert capsule["status"] == "retracted"
