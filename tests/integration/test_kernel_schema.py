"""The SCHEMAFULL schema: applied idempotently and versioned (the contract suite checks that
every adapter enforces the field spec it is rendered from)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from surrealdb import RecordID

from adapters.contract import samples
from adapters.surrealdb import SurrealConfig, SurrealStore
from adapters.surrealdb import schema as surreal_schema
from adapters.surrealdb.store import StoreLock
from ports import records
from ports.errors import DuplicateRecord, StorageUnavailable

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


def test_a_schema_4_store_keeps_its_executions_inputs(tmp_path: Path) -> None:
    """Before schema 5 an execution's input lived in the execution record itself."""
    path = tmp_path / "store"
    execution = samples.execution()
    with open_store(path) as store:
        with store.unit_of_work() as uow:
            uow.executions.save(execution)
            uow.commit()
        key = RecordID("execution", execution.id)
        (moved,) = store.select_rows(
            "SELECT VALUE input_json FROM execution_input WHERE id = $i",
            {"i": RecordID("execution_input", execution.id)},
        )
        store.select_rows(  # as schema 4 had it
            "BEGIN; DEFINE FIELD input_json ON execution TYPE string;"
            " UPDATE $r SET input_json = $j RETURN NONE; DELETE $i; COMMIT;",
            {"r": key, "j": moved, "i": RecordID("execution_input", execution.id)},
        )
        set_schema_version(store, 4)
    with open_store(path) as store:
        assert schema_version(store) == surreal_schema.SCHEMA_VERSION
        with store.unit_of_work() as uow:
            stored = uow.executions.require(execution.id)
            assert stored.input == execution.input
            stored.release_lease()
            uow.executions.save(stored)  # its record can be written again
            uow.commit()
        with store.unit_of_work() as uow:
            assert uow.executions.require(execution.id).input == execution.input


def test_a_torn_schema_4_transaction_is_completed_then_migrated(tmp_path: Path) -> None:
    """The journal of a schema-4 commit holds the execution with its input inside: it is
    completed under that schema, and the migration then moves the input like any other."""
    path = tmp_path / "store"
    execution = samples.execution()
    with open_store(path) as store:
        doc = records.execution_doc(execution, 1) | {
            "input_json": records.execution_input_doc(execution)["input_json"]
        }
        store.select_rows(  # a schema-4 store whose last commit was torn before its execution
            "BEGIN; DEFINE FIELD input_json ON execution TYPE string;"
            " UPSERT $ctr SET n = 0, journal = { txn: 'torn', appends: 0,"
            " writes: [['put', $r, $d]] } RETURN NONE;"
            " UPSERT $done SET txn = 'earlier' RETURN NONE; COMMIT;",
            {
                "ctr": RecordID("govkernel_counter", "events"),
                "done": RecordID("govkernel_counter", "committed"),
                "r": RecordID("execution", execution.id),
                "d": doc,
            },
        )
        set_schema_version(store, 4)
    with open_store(path) as store:
        assert store.torn_repair is not None
        assert (store.torn_repair.action, store.torn_repair.writes) == ("re-applied", 1)
        assert schema_version(store) == surreal_schema.SCHEMA_VERSION
        with store.unit_of_work() as uow:
            assert uow.executions.require(execution.id).input == execution.input
