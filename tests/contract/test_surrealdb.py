"""The SurrealDB adapter passes the unit-of-work contract: in memory, on disk, over ws://."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from adapters.contract import Backdoor, SurrealBackdoor, UnitOfWorkContract
from adapters.surrealdb import SurrealConfig, SurrealStore
from ports.unit_of_work import UnitOfWorkFactory
from tests.support.ws_server import SurrealWsShim


class SurrealContract(UnitOfWorkContract):
    """Fixtures shared by every SurrealDB flavour; subclasses say how to open the store."""

    @pytest.fixture
    def store(self) -> Iterator[SurrealStore]:
        raise NotImplementedError

    @pytest.fixture
    def uow_factory(self, store: SurrealStore) -> UnitOfWorkFactory:
        return store.unit_of_work

    @pytest.fixture
    def backdoor(self, store: SurrealStore) -> Backdoor:
        return SurrealBackdoor(store)


class TestSurrealMem(SurrealContract):
    # Every step reads the whole store back through the SDK, which decodes rows in Python.
    stateful_examples: ClassVar[int] = 30
    stateful_steps: ClassVar[int] = 20

    @pytest.fixture
    def store(self) -> Iterator[SurrealStore]:
        with SurrealStore(SurrealConfig("mem://")) as store:
            yield store


class TestSurrealKv(SurrealContract):
    stateful_examples: ClassVar[int] = 25
    stateful_steps: ClassVar[int] = 20

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SurrealStore]:
        with SurrealStore(SurrealConfig(f"surrealkv://{tmp_path / 'store'}")) as store:
            yield store


# The SDK's blocking ws client opens its socket without a context manager.
@pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager")
class TestSurrealWebSocket(SurrealContract):
    # The basic cases are the point here; the machine runs short over the slower path.
    stateful_examples: ClassVar[int] = 12
    stateful_steps: ClassVar[int] = 12

    @pytest.fixture
    def store(self) -> Iterator[SurrealStore]:
        with (
            SurrealWsShim(username="root", password="root") as shim,
            SurrealStore(SurrealConfig(url=shim.url, username="root", password="root")) as store,
        ):
            yield store
