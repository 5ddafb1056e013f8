"""The SCHEMAFULL schema: applied idempotently and versioned (the contract suite checks that
every adapter enforces the field spec it is rendered from)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from surrealdb import RecordID, Surreal

from adapters.contract import samples
from adapters.surrealdb import SurrealConfig, SurrealStore, compiler
from adapters.surrealdb import schema as surreal_schema
from adapters.surrealdb.store import StoreLock
from domain.model.lifecycle import ExecutionState
from ports import records
from ports.errors import CorruptRecord, DuplicateRecord, StorageUnavailable
from ports.storage import Batch, Op, Write

META = RecordID(surreal_schema.META_TABLE, "schema")
DONE = RecordID(surreal_schema.META_TABLE, "upgraded")


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


def test_a_store_whose_schema_record_was_removed_is_refused_not_made_anew(
    tmp_path: Path,
) -> None:
    """It was said to be a place nothing had run yet, and a run would have applied the schema
    over data of a version nobody knew (a tamper pass, h168)."""
    path = tmp_path / "store"
    with open_store(path) as store:
        with store.unit_of_work() as uow:
            uow.executions.save(samples.execution())
            uow.commit()
        store.select_rows("DELETE $m", {"m": META})
    for create in (True, False):
        with pytest.raises(StorageUnavailable, match="holds executions but no schema record"):
            SurrealStore(SurrealConfig(f"surrealkv://{path}", create=create))
    shutil.rmtree(path)
    with open_store(path) as store:  # an empty place is still a new store
        assert schema_version(store) == surreal_schema.SCHEMA_VERSION


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
        assert store.upgraded_from == 0  # said (the CLI notes it): older ones now refuse it
        assert database_info(store) == info
    with open_store(path) as store:
        assert store.upgraded_from is None
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
    with pytest.raises(StorageUnavailable, match=r"newer than this govkernel.*restore a backup"):
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
        # Moved, not copied: the record no longer holds it.
        assert store.select_rows("SELECT VALUE input_json FROM ONLY $r", {"r": key}) == [None]
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


# -- key records: a natural key read by id (schema.KEYED) -------------------------------------


def _natural_keys_found(store: SurrealStore, stored: dict[str, Any]) -> dict[str, bool]:
    source, analysis, capsule, execution = (
        stored[k] for k in ("source", "analysis", "capsule", "execution")
    )
    with store.unit_of_work() as uow:
        return {
            "source": uow.sources.find_identical(
                source.tenant, source.source_url, source.content_digest
            )
            == source,
            "analysis": uow.analyses.find_by_inputs(analysis.tenant, analysis.inputs_digest)
            == analysis,
            "capsule": uow.capsules.by_publication(capsule.tenant, capsule.publication_id)
            == capsule,
            "execution": uow.executions.by_idempotency_key(
                execution.tenant, execution.idempotency_key
            )
            == execution,
        }


def _store_one_of_each(store: SurrealStore) -> dict[str, Any]:
    source, analysis = samples.source(), samples.analysis(text=samples.new_id("claim"))
    capsule, execution = samples.capsule(), samples.execution()
    with store.unit_of_work() as uow:
        uow.sources.add(source)
        uow.analyses.add(analysis)
        uow.capsules.add(capsule)
        uow.executions.save(execution)
        uow.commit()
    return {"source": source, "analysis": analysis, "capsule": capsule, "execution": execution}


def test_a_schema_6_store_gets_key_records_for_the_rows_it_holds(tmp_path: Path) -> None:
    path = tmp_path / "store"
    everything = dict.fromkeys(("source", "analysis", "capsule", "execution"), True)
    with open_store(path) as store:
        stored = _store_one_of_each(store)
        assert _natural_keys_found(store, stored) == everything
        # As schema 6 left them: no key records. Look-ups read them, so now they miss:
        store.select_rows(f"DELETE {surreal_schema.KEY_TABLE}", {})
        assert not any(_natural_keys_found(store, stored).values())
        set_schema_version(store, 6)
    with open_store(path) as store:  # the migration writes them
        assert _natural_keys_found(store, stored) == everything
        with store.unit_of_work() as uow:  # and the unique index still refuses a duplicate
            uow.capsules.add(samples.capsule(publication_id=stored["capsule"].publication_id))
            with pytest.raises(DuplicateRecord):
                uow.commit()


def test_an_upgrade_writes_the_key_records_missing_or_naming_another(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with open_store(path) as store:
        stored = _store_one_of_each(store)
        capsule, source = stored["capsule"], stored["source"]
        (index, fields), *_ = surreal_schema.KEYED["capsule"]
        key = compiler.key_record(index, fields, records.capsule_doc(capsule))
        store.select_rows("UPDATE $k SET ref = capsule:other", {"k": key})
        (index, fields), *_ = surreal_schema.KEYED["knowledge_source"]
        store.select_rows(
            "DELETE $k", {"k": compiler.key_record(index, fields, records.source_doc(source))}
        )
        set_schema_version(store, 9)
    with open_store(path) as store:
        assert _natural_keys_found(store, stored) == dict.fromkeys(stored, True)
        assert store.select_rows("SELECT VALUE ref FROM ONLY $k", {"k": key}) == [
            RecordID("capsule", capsule.id)
        ]


def test_a_key_record_naming_another_record_is_not_trusted(tmp_path: Path) -> None:
    with open_store(tmp_path / "store") as store:
        stored = _store_one_of_each(store)
        other = samples.capsule()
        with store.unit_of_work() as uow:
            uow.capsules.add(other)
            uow.commit()
        capsule = stored["capsule"]
        (index, fields), *_ = surreal_schema.KEYED["capsule"]
        key = compiler.key_record(index, fields, records.capsule_doc(capsule))
        store.select_rows(  # edited in storage to name the other capsule
            "UPDATE $k SET ref = $r", {"k": key, "r": RecordID("capsule", other.id)}
        )
        with store.unit_of_work() as uow:  # the index answers instead
            assert uow.capsules.by_publication(capsule.tenant, capsule.publication_id) == capsule


def _commit_torn(store: SurrealStore, batch: Batch) -> None:
    """`batch` committed without its completion marker: what a crash leaves of it."""
    compiled = compiler.compile_batch(batch, journal=True)
    *kept, _marker, commit = compiled.text.splitlines()
    store.select_rows("\n".join([*kept, commit]), compiled.params)


def test_a_torn_delete_is_undone_with_its_key_record(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with open_store(path) as store:
        stored = _store_one_of_each(store)
        capsule = stored["capsule"]
        _commit_torn(
            store, Batch((Write(Op.DELETE, "capsule", capsule.id, None, capsule.version),))
        )
        with store.unit_of_work() as uow:
            assert uow.capsules.by_publication(capsule.tenant, capsule.publication_id) is None
    with open_store(path) as store:
        assert store.torn_repair is not None and store.torn_repair.action == "undone"
        assert _natural_keys_found(store, stored)["capsule"]
        (index, fields), *_ = surreal_schema.KEYED["capsule"]
        key = compiler.key_record(index, fields, records.capsule_doc(capsule))
        assert store.select_rows("SELECT VALUE ref FROM ONLY $k", {"k": key}) == [
            RecordID("capsule", capsule.id)
        ]


@pytest.mark.parametrize(
    ("table", "key", "field", "named"),
    [
        ("govkernel_counter", "events", "n", "govkernel_counter:events or"),
        ("govkernel_counter", "committed", "txn", "or govkernel_counter:committed"),
        ("govkernel_meta", "schema", "version", "govkernel_meta:schema or"),
        ("govkernel_meta", "store", "store_id", "govkernel_meta:store"),
    ],
)
def test_a_nul_written_into_a_record_every_open_reads_is_named(
    tmp_path: Path, table: str, key: str, field: str, named: str
) -> None:
    """h173: every command failed with "a stored record holds text with a NUL character",
    naming no record, and as a CorruptRecord (exit 1) where the store cannot be used."""
    path = tmp_path / "store"
    with open_store(path) as store:
        _store_one_of_each(store)
        store.select_rows(
            f"UPDATE $r SET {field} = $v RETURN NONE", {"r": RecordID(table, key), "v": "x\x00"}
        )
    with pytest.raises(StorageUnavailable, match=f"{re.escape(named)}.*NUL.*from a backup$"):
        open_store(path).__enter__()


def test_a_record_found_by_its_natural_key_that_cannot_be_handed_back_is_named(
    tmp_path: Path,
) -> None:
    with open_store(tmp_path / "store") as store:
        source = _store_one_of_each(store)["source"]
        store.select_rows(
            "UPDATE $r SET content_text = $v RETURN NONE",
            {"r": RecordID("knowledge_source", source.id), "v": "x\x00"},
        )
        with store.unit_of_work() as uow, pytest.raises(CorruptRecord) as found:
            uow.sources.find_identical(source.tenant, source.source_url, source.content_digest)
    assert str(found.value).startswith(f"knowledge_source {source.id!r}: a stored record holds")


@pytest.mark.parametrize(
    ("damage", "value", "said"),
    [
        ("txn", None, "`txn` is not text"),
        ("base", "x", "`base` is not a count"),
        # A table's name where a record id belongs: the engine refused its `DELETE` (said raw).
        ("created", ["capsule"], "`created` is not a list of govkernel's records"),
        ("created", [RecordID("no_such_table", "x")], "`created` is not a list"),
        ("before", [["capsule", None]], "`before` is not a list of [record, document] pairs"),
        ("before", {"a": 1}, "`before` is not a list"),
        ("writes", [["put", "capsule", {}]], "`appends` is not a count"),  # the earlier format
    ],
)
def test_a_crash_journal_edited_in_storage_is_named_and_nothing_is_undone_by_it(
    tmp_path: Path, damage: str, value: Any, said: str
) -> None:
    """h173: a journal that was no dict of what govkernel writes failed every open with the
    bare KeyError (`cannot open SurrealDB store (surrealkv://): 'txn'`)."""
    path = tmp_path / "store"
    with open_store(path) as store:
        stored = _store_one_of_each(store)
        torn = records.source_doc(samples.source())
        _commit_torn(store, Batch((Write(Op.CREATE, "knowledge_source", "src-torn", torn),)))
        store.select_rows(
            "UPDATE $c SET journal[$f] = $v RETURN NONE",
            {"c": compiler.EVENTS_COUNTER, "f": damage, "v": value},
        )
    with pytest.raises(StorageUnavailable) as refused:
        open_store(path).__enter__()
    assert said in str(refused.value) and "govkernel_counter:events" in str(refused.value)
    with Surreal(f"surrealkv://{path}") as db:  # as it was: the repair bound none of it
        db.use("govkernel", "govkernel")
        capsules = db.query("SELECT VALUE id FROM capsule")
    assert capsules == [RecordID("capsule", stored["capsule"].id)]


def test_a_torn_append_is_undone_with_the_event_counter_so_the_log_has_no_gap(
    tmp_path: Path,
) -> None:
    """The repair sets the counter back to what the journal noted before the transaction
    (h170: with it left where the torn append moved it, the next event took position 4
    after 1)."""
    path = tmp_path / "store"
    with open_store(path) as store:
        with store.unit_of_work() as uow:
            uow.events.append(samples.event())
            uow.commit()
        torn = (samples.event(), samples.event())
        _commit_torn(
            store, Batch(tuple(Write(Op.APPEND, "event", e.id, records.event_doc(e)) for e in torn))
        )
    with open_store(path) as store:
        assert store.torn_repair is not None and store.torn_repair.action == "undone"
        with store.unit_of_work() as uow:
            assert uow.events_head() == 1
            uow.events.append(samples.event())
            assert uow.commit().event_positions == (2,)
        with store.unit_of_work() as uow:
            assert [e["position"] for e in uow.events_after(0, 10)] == [1, 2]


def test_a_repair_marks_itself_complete_so_the_next_open_repairs_nothing(tmp_path: Path) -> None:
    """Else every open, a read-only command's too, would undo the same transaction again
    and say so, until the next commit (h170)."""
    path = tmp_path / "store"
    with open_store(path) as store:
        source = samples.source()
        _commit_torn(
            store,
            Batch((Write(Op.CREATE, "knowledge_source", source.id, records.source_doc(source)),)),
        )
    with open_store(path) as store:
        assert store.torn_repair is not None and store.torn_repair.action == "undone"
    with open_store(path) as store:
        assert store.torn_repair is None
        with store.unit_of_work() as uow:
            assert uow.sources.get(source.id) is None


def test_a_schema_8_stores_executions_record_no_environment(tmp_path: Path) -> None:
    """Before schema 9 an execution did not record the environment it started in."""
    from domain.model.environment import Environment

    path = tmp_path / "store"
    execution = samples.execution()
    execution.environment = Environment.PRODUCTION
    with open_store(path) as store:
        with store.unit_of_work() as uow:
            uow.executions.save(execution)
            uow.commit()
        store.select_rows(  # as schema 8 had it
            "BEGIN; UPDATE $r SET environment = NONE RETURN NONE;"
            " REMOVE FIELD environment ON execution; COMMIT;",
            {"r": RecordID("execution", execution.id)},
        )
        set_schema_version(store, 8)
    with open_store(path) as store:
        assert (schema_version(store), store.upgraded_from) == (surreal_schema.SCHEMA_VERSION, 8)
        with store.unit_of_work() as uow:
            assert uow.executions.require(execution.id).environment is None
            stored = uow.executions.require(execution.id)
            stored.environment = Environment.TEST  # the field is back, and takes a value
            uow.executions.save(stored)
            uow.commit()
        with store.unit_of_work() as uow:
            assert uow.executions.require(execution.id).environment is Environment.TEST


def _meta_and_info(path: Path) -> tuple[Any, Any]:
    """What an older govkernel would read of a store: its schema record, and what the
    upgrade changes (key records written, an index defined), read without opening it as a
    store (which would upgrade it)."""
    db: Any = Surreal(f"surrealkv://{path}")  # the SDK's embedded connection
    db.connect()
    try:
        db.use("govkernel", "govkernel")
        meta = db.query("SELECT * FROM ONLY $m", {"m": META})
        done = db.query("SELECT VALUE txn FROM ONLY $d", {"d": DONE})
        keys = db.query("RETURN count(SELECT VALUE id FROM govkernel_key)")
        return (meta, done), (keys, db.query("INFO FOR TABLE execution"))
    finally:
        db.close()


def test_an_upgrade_cut_short_never_reads_as_the_older_schema(tmp_path: Path) -> None:
    """A log cut inside the upgrade's transaction (a power loss) keeps a first part of it.
    That part must read as the new version, unfinished (which the next open finishes, and
    an older govkernel refuses), never as the old one with its tables already changed."""
    path = tmp_path / "store"
    with open_store(path) as store:
        # Enough for the upgrade to span many of the log's blocks (the engine keeps whole
        # ones): the key records of 400 sources, which schema 7 writes for an older store.
        for _ in range(4):
            with store.unit_of_work() as uow:
                for _ in range(100):
                    uow.sources.add(samples.source())
                uow.commit()
        store.select_rows("DELETE govkernel_key RETURN NONE", {})
        store.select_rows("REMOVE INDEX ix_execution_state_created_at ON execution", {})
        set_schema_version(store, 6)
    _, old_info = _meta_and_info(path)
    segment = max((path / "clog").iterdir())
    before = segment.stat().st_size
    sealed = (path / "govkernel.seal").read_text()
    with open_store(path) as store:
        assert store.upgraded_from == 6
    after = segment.stat().st_size
    assert after > before
    _, new_info = _meta_and_info(path)
    # A cut stands for a power loss during the upgrade: the seal is the close's before it.
    (path / "govkernel.seal").write_text(sealed)
    finished = 0
    for cut in range(before + 1, after, max((after - before) // 24, 1)):
        copy = tmp_path / f"cut-{cut}"
        shutil.copytree(path, copy)
        os.truncate(max((copy / "clog").iterdir()), cut)
        (meta, done), info = _meta_and_info(copy)
        if meta["version"] == 6:
            assert info == old_info, f"cut at {cut}: the older schema's tables changed"
        else:
            assert meta["version"] == surreal_schema.SCHEMA_VERSION, f"cut at {cut}: {meta}"
            if done != meta["upgrade"]:  # cut short: the next open does it again
                finished += 1
                with open_store(copy) as store:
                    assert store.upgraded_from == 6
                (meta, done), info = _meta_and_info(copy)
            assert done == meta["upgrade"] and info == new_info, f"cut at {cut}"
        shutil.rmtree(copy)
    assert finished, "no cut kept only a part of the upgrade: the test cuts nothing"


@pytest.fixture
def upgrades(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The text of every schema upgrade the stores opened send."""
    sent: list[str] = []
    query = SurrealStore._query

    def recording(store: SurrealStore, text: str, params: dict[str, Any]) -> Any:
        if text.startswith("BEGIN TRANSACTION;\nUPSERT $m SET version"):
            sent.append(text)
        return query(store, text, params)

    monkeypatch.setattr(SurrealStore, "_query", recording)
    return sent


def _indexes_built(upgrade: str) -> set[str]:
    return set(re.findall(r"DEFINE INDEX OVERWRITE (\w+)", upgrade))


def test_an_upgrade_builds_only_the_indexes_it_lacks_and_removes_retired_ones(
    tmp_path: Path, upgrades: list[str]
) -> None:
    """Defining an index again reads every record of its table, and in the upgrade's one
    transaction took minutes on a large store: indexes already as this version defines them
    are kept as they are."""
    with open_store(tmp_path / "fresh") as fresh:
        wanted = fresh.select_rows("INFO FOR TABLE execution", {})[0]
    upgrades.clear()
    path = tmp_path / "store"
    with open_store(path) as store:
        assert _indexes_built(upgrades.pop()) == set(surreal_schema.indexes())  # a new store
        executions = [samples.execution() for _ in range(3)]
        with store.unit_of_work() as uow:
            for execution in executions:
                uow.executions.save(execution)
            uow.commit()
        store.select_rows(  # one index missing, one defined otherwise, one retired
            "REMOVE INDEX ix_execution_state_created_at ON execution;"
            " DEFINE INDEX OVERWRITE ix_execution_created_at ON execution"
            " FIELDS created_at, tenant;"
            " DEFINE INDEX ix_execution_retired ON execution FIELDS tenant;"
            # The same name on two tables, and one of govkernel's names on another table.
            " DEFINE INDEX ix_execution_retired ON event FIELDS tenant;"
            " DEFINE INDEX ix_execution_state_created_at ON execution_input FIELDS tenant;",
            {},
        )
        set_schema_version(store, 9)
    with open_store(path) as store:
        assert store.upgraded_from == 9
        (upgrade,) = upgrades
        assert _indexes_built(upgrade) == {
            "ix_execution_state_created_at",
            "ix_execution_created_at",
        }
        assert set(re.findall(r"REMOVE INDEX IF EXISTS (\w+ ON \w+)", upgrade)) == {
            "ix_execution_retired ON execution",
            "ix_execution_retired ON event",
            "ix_execution_state_created_at ON execution_input",
        }
        assert store.select_rows("INFO FOR TABLE execution", {})[0] == wanted
        found = store.select_rows(  # the index built holds the executions stored before
            "SELECT VALUE id FROM execution WITH INDEX ix_execution_state_created_at"
            " WHERE state = 'pending'",
            {},
        )
        assert sorted(found, key=str) == sorted(
            (RecordID("execution", x.id) for x in executions), key=str
        )


@pytest.mark.parametrize(
    ("building", "rebuilt"),
    [
        (["ix_execution_state_created_at"], {"ix_execution_state_created_at"}),
        # Cut short by a govkernel that defined every index again: which it had reached is
        # not known.
        (None, set(surreal_schema.indexes())),
        (5, set(surreal_schema.indexes())),  # edited by hand: refused the store before
        (["ix_execution_created_at", 5], set(surreal_schema.indexes())),
    ],
)
def test_an_upgrade_cut_short_builds_again_the_indexes_it_was_building(
    tmp_path: Path, upgrades: list[str], building: object, rebuilt: set[str]
) -> None:
    """Their definitions may have reached the log without all of their entries."""
    path = tmp_path / "store"
    with open_store(path) as store:
        cut_short = {"version": surreal_schema.SCHEMA_VERSION, "upgrade": "t1", "upgrade_from": 9}
        store.select_rows(
            "UPSERT $m CONTENT $c; UPSERT $d SET txn = 't0'",
            {"m": META, "d": DONE, "c": cut_short | ({"building": building} if building else {})},
        )
    upgrades.clear()
    with open_store(path) as store:
        assert store.upgraded_from == 9
        (upgrade,) = upgrades
        assert _indexes_built(upgrade) == rebuilt
    with open_store(path) as store:  # done: nothing is built again
        assert store.upgraded_from is None
        assert len(upgrades) == 1


@pytest.mark.parametrize(
    ("state", "workflow", "index"),
    [
        ("failed", None, "ix_execution_tenant_state_created_at"),
        ("running", None, "ix_execution_tenant_state_created_at"),
        ("running", "knowledge_publication", "ix_execution_tenant_state_created_at"),
        (None, "knowledge_publication", "ix_execution_tenant_workflow_name_created_at"),
        (None, None, "ix_execution_tenant_created_at"),
    ],
)
def test_a_tenants_listing_scans_its_own_executions_only(
    state: str | None, workflow: str | None, index: str
) -> None:
    """SurrealDB core 2.3.10 planned `state = $s AND tenant = $t` on the unique index the
    tenant leads: every execution of the tenant (all of them, in most stores) was read to
    list or count the few in one state; scanned by state, or time, alone, every tenant's
    executions were (a small tenant's listing walked the whole store); and `state AND
    workflow` on the workflow's index, every execution of the workflow. The scans a listing
    and a count issue must use an index the tenant leads with what else they filter on (the
    state's with a workflow too, the workflow checked on what it finds)."""
    with SurrealStore(SurrealConfig("mem://")) as store:
        ours, theirs = samples.execution(tenant="t-ours"), samples.execution(tenant="t-theirs")
        with store.unit_of_work() as uow:
            for execution in (ours, theirs):
                execution.transition(
                    ExecutionState.RUNNING, at=samples.T0, actor="w", reason="claimed"
                )
                uow.executions.save(execution)
            uow.commit()
        issued: list[tuple[str, dict[str, Any]]] = []
        original = store.select_rows

        def recording(text: str, params: dict[str, Any]) -> list[Any]:
            issued.append((text, params))
            return original(text, params)

        setattr(store, "select_rows", recording)  # noqa: B010 - this store only
        wanted = None if state is None else ExecutionState(state)
        with store.unit_of_work() as uow:
            listed = uow.executions.recent(
                now=samples.T0, state=wanted, tenant="t-ours", workflow=workflow
            )
            counted = uow.executions.count(wanted, tenant="t-ours", workflow=workflow)
        delattr(store, "select_rows")
        assert len(listed) == counted == (0 if state == "failed" else 1)
        scans = {
            inner
            for text, _ in issued
            for inner in re.findall(r"SELECT \* FROM execution WHERE [^)]*", text)
        }
        assert scans
        for inner in scans:
            params = next(p for text, p in issued if inner in text)
            plan = store.select_rows(inner + " EXPLAIN", params)
            used = [step["detail"]["plan"]["index"] for step in plan if "plan" in step["detail"]]
            assert used == [index], (inner, plan)


def test_a_schema_10_store_gets_the_tenants_indexes_over_what_it_holds(
    tmp_path: Path, upgrades: list[str]
) -> None:
    tenant_indexes = {
        "ix_execution_tenant_state_created_at",
        "ix_execution_tenant_workflow_name_created_at",
        "ix_execution_tenant_created_at",
    }
    url = f"surrealkv://{tmp_path / 'store'}"
    with SurrealStore(SurrealConfig(url)) as store:
        with store.unit_of_work() as uow:
            for _ in range(3):
                uow.executions.save(samples.execution(tenant="t-old"))
            uow.commit()
        for index in tenant_indexes:  # as schema 10 had none of them
            store.select_rows(f"REMOVE INDEX {index} ON execution", {})
        set_schema_version(store, 10)
    upgrades.clear()
    with SurrealStore(SurrealConfig(url)) as store:
        assert store.upgraded_from == 10
        assert _indexes_built(upgrades.pop()) == tenant_indexes  # those alone
        indexes = store.select_rows("INFO FOR TABLE execution", {})[0]["indexes"]
        assert tenant_indexes <= set(indexes)
        with store.unit_of_work() as uow:  # found through them: built over what was there
            assert uow.executions.count(ExecutionState.PENDING, tenant="t-old") == 3
            assert len(uow.executions.in_state(ExecutionState.PENDING, tenant="t-old")) == 3
