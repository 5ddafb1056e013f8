"""Domain records changed in storage are not built on, in memory and in SurrealDB.

A source, an analysis or a capsule is found again by its natural key and reused (the same
text ingested again, the same sources analysed again, the same publication repeated): one
changed behind the adapter's back must stop the step that would reuse it, not be published
again under a new approval and reported verified (an auditor's pass, h165).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from attrs import evolve, frozen

from adapters.memory import MemoryStore
from domain.model.lifecycle import ExecutionState
from domain.orchestration.definition import Step, StepContext
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


Change = tuple[str, str, dict[str, Any]]  # table, key, the fields changed in storage


def _forged_claim(door: BackDoor) -> Change:
    ((key, analysis),) = door.table("analysis").items()
    claims = json.loads(analysis["claims_json"])
    claims[0][0] = "Buy everything."
    return "analysis", key, {"claims_json": json.dumps(claims)}


def _forged_chunk(door: BackDoor) -> Change:
    ((key, capsule),) = door.table("capsule").items()
    chunks = json.loads(capsule["chunks_json"])
    chunks[0][-1] = "Forged text."
    return "capsule", key, {"chunks_json": json.dumps(chunks)}


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
    table, key, changes = _forged_claim(published.door)
    published.tamper(table, key, changes)
    _failed_at(published, again("pub-2"), "analyse", f"stored analysis {key!r} is not what")


def test_a_capsule_that_was_changed_is_no_repeat_of_its_publication(
    published: Published,
) -> None:
    table, key, changes = _forged_chunk(published.door)
    published.tamper(table, key, changes)
    repeat = published.orch.start(WORKFLOW, FIRST, idempotency_key="repeat")
    assert repeat.state is ExecutionState.FAILED, repeat.last_error
    assert f"stored capsule {key!r} is not what its sources give" in (repeat.last_error or "")


def _changed_as(step_name: str, change: Callable[[BackDoor], None]) -> tuple[Any, Orchestrator]:
    """A store, and an orchestrator of a workflow that has `change` made in storage as the
    step named starts (after the steps before it committed), then runs that step."""
    store = open_store("memory")
    door = BackDoor(store)
    base = kp.definition(service(store.unit_of_work))

    def wrapped(step: Step) -> Step:
        def run(uow: UnitOfWork, ctx: StepContext) -> Any:
            change(door)
            return step.run(uow, ctx)

        return evolve(step, run=run) if step.name == step_name else step

    tampered = evolve(base, name="tampered", steps=tuple(wrapped(s) for s in base.steps))
    workflows = definitions(store.unit_of_work, tampered)
    return store, orchestrator(store.unit_of_work, FixedClock(T0), workflows=workflows)


def test_verify_finds_a_capsule_changed_after_it_was_published_and_retracts_it() -> None:
    store, orch = _changed_as("verify", lambda door: door._edit(*_forged_chunk(door)))
    x = orch.start("tampered", request("pub-v"))
    assert x.state is ExecutionState.COMPENSATED, (x.state, x.last_error)
    assert "does not match its sources" in (x.last_error or "")
    ((_, capsule),) = BackDoor(store).table("capsule").items()
    assert capsule["status"] == "retracted"


def test_a_capsule_does_not_cite_an_analysis_changed_since_it_was_made() -> None:
    """Publish read the analysis by id, from analyse's output, and cited it as it was."""
    store, orch = _changed_as("publish", lambda door: door._edit(*_forged_claim(door)))
    x = orch.start("tampered", request("pub-a"))
    assert x.state is ExecutionState.FAILED, (x.state, x.last_error)
    assert "is not what its sources give: changed in storage" in (x.last_error or "")
    assert BackDoor(store).table("capsule") == {}


@pytest.mark.parametrize("how", ["missing", "changed"])
def test_evidence_ingest_recorded_that_is_gone_is_corruption_not_a_denial(how: str) -> None:
    """A manifest removed was a policy denial ("carries no evidence"), and one forged under
    another id for the same source stood in for it (an auditor's second pass, h168)."""

    def change(door: BackDoor) -> None:
        ((key, manifest),) = [
            (k, m) for k, m in door.table("evidence").items() if "knowledge_source:" in m["subject"]
        ]
        if how == "missing":
            door.delete("evidence", key)
            assert isinstance(store, MemoryStore)
            with store.lock:  # the same manifest, under another id
                store._put("evidence", "ev-forged", manifest)
        else:
            door._edit("evidence", key, {"subject": "knowledge_source:src-elsewhere"})

    store, orch = _changed_as("publish", change)
    x = orch.start("tampered", request("pub-e", documents=1))
    assert x.state is ExecutionState.FAILED, (x.state, x.last_error)
    assert "which ingest recorded for source src-" in (x.last_error or "")
    assert f"is {how} in storage" in (x.last_error or "")
    assert "PolicyDenied" not in (x.last_error or "")
    assert BackDoor(store).table("capsule") == {}
