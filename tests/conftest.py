"""Plugins and fixtures shared across test packages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adapters.surrealdb import SurrealConfig, SurrealStore

# Runs small pytest sessions in-process, to test the contract suite as an adapter author uses it.
pytest_plugins = ["pytester"]


@pytest.fixture
def surreal_mem() -> Iterator[SurrealStore]:
    """A fresh embedded in-memory SurrealDB store, closed after the test."""
    with SurrealStore(SurrealConfig("mem://")) as store:
        yield store
