"""Fixtures for the service tests: the in-memory harness and both stores as backends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adapters.memory import MemoryStore
from adapters.surrealdb import SurrealConfig, SurrealStore
from ports.storage import TABLES
from tests.services.harness import Backend, Harness, memory_snapshot


@pytest.fixture
def h() -> Harness:
    return Harness.build()


@pytest.fixture(params=["memory", "surrealdb"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """One store per test function, shared by all its hypothesis examples."""
    if request.param == "memory":
        memory = MemoryStore()
        yield Backend("memory", memory.unit_of_work, lambda: memory_snapshot(memory), 25)
        return
    surreal = SurrealStore(SurrealConfig("mem://"))
    try:
        yield Backend(
            "surrealdb",
            surreal.unit_of_work,
            lambda: {name: surreal.dump(name) for name in TABLES},
            15,
        )
    finally:
        surreal.close()
