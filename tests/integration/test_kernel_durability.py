"""A surrealkv:// store keeps every committed unit across processes, and only one may hold it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from attrs import evolve

from adapters.contract import SurrealBackdoor, samples
from adapters.surrealdb import SurrealConfig, SurrealStore
from ports.errors import DuplicateRecord, StorageUnavailable
from tests.integration.store_child import jsonable

CHILD = Path(__file__).with_name("store_child.py")


def in_child(command: str, path: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(CHILD), command, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def open_store(path: Path) -> SurrealStore:
    return SurrealStore(SurrealConfig(f"surrealkv://{path}"))


def test_a_new_process_finds_every_committed_unit(tmp_path: Path) -> None:
    path = tmp_path / "store"
    sources = [samples.source() for _ in range(5)]
    capsule = samples.capsule()
    with open_store(path) as store:
        for source in sources:
            with store.unit_of_work() as uow:
                uow.sources.add(source)
                uow.evidence.add(samples.evidence(source.id))
                uow.events.append(samples.event())
                uow.commit()
        with store.unit_of_work() as uow:
            uow.capsules.add(capsule)
            uow.executions.save(samples.execution())
            uow.commit()
        with store.unit_of_work() as uow:
            uow.capsules.update(evolve(capsule, title="second version"))
            uow.commit()
        with store.unit_of_work() as uow:  # rolled back: must not appear anywhere
            uow.sources.add(samples.source(id="rolled-back"))
        with store.unit_of_work() as uow:  # failed: must not appear either
            uow.sources.add(samples.source(id="failed"))
            uow.sources.add(sources[0])
            with pytest.raises(DuplicateRecord):
                uow.commit()
        expected = jsonable(SurrealBackdoor(store).snapshot())

    assert in_child("dump", path) == {"snapshot": expected}
    assert len(expected["knowledge_source"]) == 5
    assert expected["capsule"][capsule.id]["version"] == 2
    assert sorted(e["position"] for e in expected["event"].values()) == [1, 2, 3, 4, 5]

    # And the other way round: what a child commits, a reopened parent sees, in sequence.
    assert in_child("commit", path) == {"positions": [6]}
    with open_store(path) as store, store.unit_of_work() as uow:
        assert uow.sources.get("from-child") is not None
        assert [e.id for e in uow.events.read_after(5)] == ["from-child"]


def test_a_second_process_cannot_open_a_store_in_use(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with open_store(path):
        refused = in_child("open", path)
        assert refused["error"] == "StorageUnavailable"
        assert "in use by another process" in refused["message"]
        assert f"pid {os.getpid()}" in refused["message"]
        assert str(path) in refused["message"]
    # Closing releases the lock.
    assert in_child("open", path) == {"opened": True}


def test_a_second_store_in_the_same_process_is_refused_too(tmp_path: Path) -> None:
    # flock is per open file, so even this process cannot open the directory twice.
    path = tmp_path / "store"
    with open_store(path), pytest.raises(StorageUnavailable, match="in use by another process"):
        open_store(path)
