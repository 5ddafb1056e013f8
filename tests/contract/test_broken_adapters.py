"""The contract's cases can fail: each catches an adapter broken the way it names, and the
sound in-memory adapter passes the very same case."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest

from adapters.contract import MemoryBackdoor, UnitOfWorkContract
from adapters.memory import MemoryStore, MemoryUnitOfWork
from ports.unit_of_work import UnitOfWork, UnitOfWorkFactory
from tests.contract import broken

Make = Callable[[], tuple[MemoryStore, UnitOfWorkFactory]]


def _store(kind: type[MemoryStore]) -> Make:
    def make() -> tuple[MemoryStore, UnitOfWorkFactory]:
        store = kind()
        return store, store.unit_of_work

    return make


def _units(kind: type[MemoryUnitOfWork]) -> Make:
    def make() -> tuple[MemoryStore, UnitOfWorkFactory]:
        store = MemoryStore()

        def factory() -> UnitOfWork:
            return kind(store)

        return store, factory

    return make


BROKEN: dict[str, tuple[Make, str]] = {
    "positions-taken-when-a-unit-opens": (
        _units(broken.PositionsFromOpen),
        "test_units_open_together_get_distinct_positions",
    ),
    "lease-changes-merged-unchecked": (
        _store(broken.LeaseMergedUnchecked),
        "test_two_claims_of_one_version_one_conflicts",
    ),
    "stale-look-up-index": (
        _store(broken.StaleIndex),
        "test_a_listing_by_state_follows_a_transition",
    ),
    "counts-past-ranges": (
        _store(broken.CountsPastRanges),
        "test_a_count_is_the_length_of_the_listing_it_counts",
    ),
    "reads-share-stored-documents": (
        _store(broken.SharedReads),
        "test_a_document_read_is_the_callers_own_copy",
    ),
}


def _run(case: str, make: Make) -> None:
    store, factory = make()
    test = getattr(UnitOfWorkContract(), case)
    # (A parametrized case is run as stored records first: `staged` False.)
    fixtures = {"uow_factory": factory, "backdoor": MemoryBackdoor(store), "staged": False}
    try:
        test(**{k: v for k, v in fixtures.items() if k in inspect.signature(test).parameters})
    finally:
        store.close()


@pytest.mark.parametrize("name", list(BROKEN))
def test_a_contract_case_catches_the_adapter_broken_its_way(name: str) -> None:
    make, case = BROKEN[name]
    _run(case, _store(MemoryStore))  # the sound adapter passes it
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        _run(case, make)
