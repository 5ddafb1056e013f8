"""The partial-write checks can fail: non-atomic adapters are caught at the right positions."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from adapters.contract import FAULT_CASES, FaultCase, MemoryBackdoor, check_fault_case
from adapters.faults import FaultPlan
from adapters.memory import MemoryStore, MemoryUnitOfWork
from tests.contract.non_atomic import WriteByWriteUnitOfWork, WriteThroughUnitOfWork

Adapter = Callable[[MemoryStore], MemoryUnitOfWork]

# Where each broken adapter has stored something before the fault: exactly where the check
# must fail. Elsewhere (nothing reached the store yet, or an ambiguous commit that did apply
# everything) the broken adapter happens to leave the right state and the check must pass.
CAUGHT: dict[str, set[str]] = {
    "write-through": {
        "staged-write-2",
        "staged-write-3",
        "commit-before-storage",
        "abort-in-transaction-after-0",
        "abort-in-transaction-after-1",
        "abort-in-transaction-after-2",
        "abort-in-transaction-after-3",
    },
    "write-by-write": {
        "abort-in-transaction-after-1",
        "abort-in-transaction-after-2",
        "abort-in-transaction-after-3",
    },
}
ADAPTERS: dict[str, Adapter] = {
    "write-through": WriteThroughUnitOfWork,
    "write-by-write": WriteByWriteUnitOfWork,
}


@pytest.mark.parametrize("case", FAULT_CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("adapter", list(ADAPTERS))
def test_partial_write_check_catches_non_atomic_adapters(adapter: str, case: FaultCase) -> None:
    store = MemoryStore()
    make = ADAPTERS[adapter]
    backdoor = MemoryBackdoor(store)
    if case.name in CAUGHT[adapter]:
        with pytest.raises(AssertionError, match="partial write survived"):
            check_fault_case(lambda: make(store), backdoor, case)
        assert backdoor.snapshot()["knowledge_source"], "the broken adapter wrote nothing"
    else:
        check_fault_case(lambda: make(store), backdoor, case)


def test_every_caught_position_is_a_real_fault_case() -> None:
    names = {case.name for case in FAULT_CASES}
    for caught in CAUGHT.values():
        assert caught <= names


def test_the_check_fails_when_the_planned_fault_never_fires() -> None:
    store = MemoryStore()
    never = FaultCase("staged-write-9", FaultPlan(fail_at_write=9))
    with pytest.raises(AssertionError, match="never fired"):
        check_fault_case(store.unit_of_work, MemoryBackdoor(store), never)


def test_the_correct_adapter_passes_the_same_checks() -> None:
    store = MemoryStore()
    for case in FAULT_CASES:
        check_fault_case(store.unit_of_work, MemoryBackdoor(store), case)
    assert len(store.events) == 1  # only the ambiguous commit applied its mutation
