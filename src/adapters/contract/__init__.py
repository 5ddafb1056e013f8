"""The unit-of-work contract suite, shipped as a pytest plugin (entry point `govkernel_contract`).

An adapter passes it by subclassing `UnitOfWorkContract` and providing two fixtures,
`uow_factory` and `backdoor`: see `adapters.contract.cases`.
"""

import pytest

# Registered before the modules are imported, so their asserts explain failures in detail.
pytest.register_assert_rewrite(
    "adapters.contract.atomicity",
    "adapters.contract.cases",
    "adapters.contract.state",
    "adapters.contract.stateful",
)

from adapters.contract.atomicity import FAULT_CASES, FaultCase, check_fault_case  # noqa: E402
from adapters.contract.backdoor import (  # noqa: E402
    Backdoor,
    MemoryBackdoor,
    Snapshot,
    SurrealBackdoor,
)
from adapters.contract.cases import UnitOfWorkContract  # noqa: E402

__all__ = [
    "FAULT_CASES",
    "Backdoor",
    "FaultCase",
    "MemoryBackdoor",
    "Snapshot",
    "SurrealBackdoor",
    "UnitOfWorkContract",
    "check_fault_case",
]
