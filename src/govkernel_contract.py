"""pytest entry point of the contract suite (`adapters.contract`).

It only supplies defaults that explain what is missing: an adapter's own `uow_factory` and
`backdoor` fixtures (in its test class or conftest) take precedence over these. Loading the
plugin connects to nothing and needs neither hypothesis nor any storage engine.

pytest loads it in every project of an environment govkernel is installed in, so it is a
module of its own name that imports nothing of govkernel: a project with packages of its own
named `domain` or `adapters` (govkernel's top-level names) would otherwise not even start its
tests.
"""

from __future__ import annotations

from typing import NoReturn

import pytest

_HOW = "see adapters.contract.cases for an example"


@pytest.fixture
def uow_factory() -> NoReturn:
    pytest.fail(
        "the govkernel contract suite needs a `uow_factory` fixture: a zero-argument callable"
        f" returning a fresh ports.unit_of_work.UnitOfWork ({_HOW})",
        pytrace=False,
    )


@pytest.fixture
def backdoor() -> NoReturn:
    pytest.fail(
        "the govkernel contract suite needs a `backdoor` fixture: an object whose snapshot()"
        f" reads stored state without the unit of work ({_HOW})",
        pytrace=False,
    )
