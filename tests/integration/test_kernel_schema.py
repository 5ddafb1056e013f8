"""The SCHEMAFULL schema: applied idempotently, versioned, enforced atomically."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from attrs import evolve
from surrealdb import RecordID

from adapters.contract import SurrealBackdoor, samples
from adapters.surrealdb import SurrealConfig, SurrealStore
from adapters.surrealdb import schema as surreal_schema
from adapters.surrealdb.store import StoreLock
from domain.model.evidence import EventEnvelope
from ports import records
from ports.errors import DuplicateRecord, InvalidRecord, StorageUnavailable
from ports.storage import Op, Write
from ports.unit_of_work import UnitOfWork

META = RecordID(surreal_schema.META_TABLE, "schema")


def open_store(path: Path) -> SurrealStore:
    return SurrealStore(SurrealConfig(f"surrealkv://{path}"))


def schema_version(store: SurrealStore) -> Any:
    return store.select_rows("SELECT VALUE version FROM ONLY $m", {"m": META})[0]


def set_schema_version(store: SurrealStore, version: int) -> None:
    store.select_rows("UPSERT $m SET version = $v", {"m": META, "v": version})


def database_info(store: SurrealStore) -> Any:
    return store.select_rows("INFO FOR DB", {})[0]


def test_schema_is_recorded_and_reopening_keeps_it_and_the_data(tmp_path: Path) -> None:
    path = tmp_path / "store"
    capsule = samples.capsule()
    with open_store(path) as store:
        assert schema_version(store) == surreal_schema.SCHEMA_VERSION
        info = database_info(store)
        with store.unit_of_work() as uow:
            uow.capsules.add(capsule)
            uow.commit()
    with open_store(path) as store:
        assert schema_version(store) == surreal_schema.SCHEMA_VERSION
        assert database_info(store) == info
        with store.unit_of_work() as uow:
            assert uow.capsules.get(capsule.id) == capsule


def test_reapplying_the_schema_converges_and_keeps_data_and_indexes(tmp_path: Path) -> None:
    path = tmp_path / "store"
    capsule = samples.capsule()
    with open_store(path) as store:
        info = database_info(store)
        with store.unit_of_work() as uow:
            uow.capsules.add(capsule)
            uow.commit()
        set_schema_version(store, 0)  # as if written by an older govkernel
    with open_store(path) as store:  # applies every definition again, over existing ones
        assert schema_version(store) == surreal_schema.SCHEMA_VERSION
        assert database_info(store) == info
        with store.unit_of_work() as uow:
            assert uow.capsules.get(capsule.id) == capsule
        with store.unit_of_work() as uow:  # the unique index still holds
            uow.capsules.add(samples.capsule(publication_id=capsule.publication_id))
            with pytest.raises(DuplicateRecord):
                uow.commit()


def test_a_newer_schema_is_refused_and_the_store_left_unlocked(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with open_store(path) as store:
        set_schema_version(store, surreal_schema.SCHEMA_VERSION + 1)
    with pytest.raises(StorageUnavailable, match="newer than this govkernel"):
        open_store(path)
    lock = StoreLock(path)
    lock.acquire()  # the refused open released its lock
    lock.release()


def _event_doc(**changes: Any) -> Write:
    event: EventEnvelope = samples.event()
    return Write(Op.APPEND, "event", event.id, records.event_doc(event) | changes)


VIOLATIONS: dict[str, tuple[str, Callable[[UnitOfWork], object]]] = {
    # name -> (field named in the error, staging function)
    "digest-length": (
        "content_digest",
        lambda uow: uow.sources.add(evolve(samples.source(), content_digest="abc")),
    ),
    "empty-title": ("title", lambda uow: uow.capsules.add(evolve(samples.capsule(), title=""))),
    "status-outside-set": (
        "status",
        lambda uow: uow.stage(
            Write(
                Op.CREATE,
                "capsule",
                "bad-status",
                records.capsule_doc(samples.capsule()) | {"status": "bogus"},
            )
        ),
    ),
    "wrong-type": (
        "version",
        lambda uow: uow.stage(
            Write(
                Op.CREATE,
                "evidence",
                "bad-type",
                records.evidence_doc(samples.evidence("s")) | {"version": "one"},
            )
        ),
    ),
    "event-type": ("type", lambda uow: uow.stage(_event_doc(type="other.thing"))),
}


@pytest.mark.parametrize("violation", list(VIOLATIONS))
@pytest.mark.parametrize("position", ["first", "last"])
def test_schema_violations_are_invalid_records_and_write_nothing(
    surreal_mem: SurrealStore, violation: str, position: str
) -> None:
    field, stage_bad = VIOLATIONS[violation]
    backdoor = SurrealBackdoor(surreal_mem)
    with surreal_mem.unit_of_work() as uow:
        uow.sources.add(samples.source())
        uow.commit()
    before = backdoor.snapshot()

    def stage_good(uow: UnitOfWork) -> None:
        source = samples.source()
        uow.sources.add(source)
        uow.evidence.add(samples.evidence(source.id))
        uow.events.append(samples.event())

    with surreal_mem.unit_of_work() as uow:
        if position == "first":
            stage_bad(uow)
            stage_good(uow)
        else:
            stage_good(uow)
            stage_bad(uow)
        with pytest.raises(InvalidRecord) as refused:
            uow.commit()
    assert f"`{field}`" in str(refused.value)
    assert backdoor.snapshot() == before
    # The event counter was rolled back too: the next event takes the first position.
    with surreal_mem.unit_of_work() as uow:
        uow.events.append(samples.event())
        assert uow.commit().event_positions == (1,)
