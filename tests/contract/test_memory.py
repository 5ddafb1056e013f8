"""The in-memory adapter passes the unit-of-work contract."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from adapters.contract import Backdoor, MemoryBackdoor, UnitOfWorkContract
from adapters.memory import MemoryStore
from ports.unit_of_work import UnitOfWork, UnitOfWorkFactory


class TestMemoryStore(UnitOfWorkContract):
    @pytest.fixture
    def store(self) -> MemoryStore:
        return MemoryStore()

    @pytest.fixture
    def uow_factory(self, store: MemoryStore) -> UnitOfWorkFactory:
        return store.unit_of_work

    @pytest.fixture
    def backdoor(self, store: MemoryStore) -> Backdoor:
        return MemoryBackdoor(store)


@pytest.mark.parametrize("kind", ["memory", "mem"])
def test_a_closed_store_takes_no_more_work(kind: str) -> None:
    """As every adapter: the in-memory one too, though it has nothing to release."""
    from adapters.contract import samples
    from adapters.surrealdb import SurrealConfig, SurrealStore
    from ports.errors import StorageUnavailable

    store = MemoryStore() if kind == "memory" else SurrealStore(SurrealConfig("mem://"))
    kept = samples.source()  # committed: SurrealDB's adapter keeps it in its cache
    with store.unit_of_work() as uow:
        uow.sources.add(kept)
        uow.commit()
    opened = store.unit_of_work()
    opened.sources.add(samples.source())
    reads: list[Callable[[UnitOfWork], object]] = [
        lambda uow: uow.sources.get("src-1"),
        lambda uow: uow.sources.get(kept.id),
        lambda uow: uow.get_many("knowledge_source", [kept.id]),
        lambda uow: uow.select("knowledge_source", {"tenant": "t"}),
        lambda uow: uow.get_many("knowledge_source", ["src-1"]),
        lambda uow: uow.events.read_after(0, 10),
        lambda uow: uow.events.head(),
    ]
    readers = [store.unit_of_work() for _ in reads]  # steps under way as the store closes
    store.close()
    with pytest.raises(StorageUnavailable, match="closed"):
        opened.commit()
    for read, uow in zip(reads, readers, strict=True):
        with pytest.raises(StorageUnavailable, match="closed"):
            read(uow)
    with pytest.raises(StorageUnavailable, match="closed"):
        store.unit_of_work()  # refused as it is asked for, by every adapter
