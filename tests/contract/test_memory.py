"""The in-memory adapter passes the unit-of-work contract."""

from __future__ import annotations

import pytest

from adapters.contract import Backdoor, MemoryBackdoor, UnitOfWorkContract
from adapters.memory import MemoryStore
from ports.unit_of_work import UnitOfWorkFactory


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
