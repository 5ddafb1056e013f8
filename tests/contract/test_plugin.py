"""The contract suite works as shipped: an installed pytest plugin plus two fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ADAPTER_CONFTEST = """
import pytest
from adapters.contract import MemoryBackdoor
from adapters.memory import MemoryStore

@pytest.fixture
def store():
    return MemoryStore()

@pytest.fixture
def uow_factory(store):
    return store.unit_of_work

@pytest.fixture
def backdoor(store):
    return MemoryBackdoor(store)
"""

ADAPTER_TESTS = """
from adapters.contract import UnitOfWorkContract

class TestMyAdapter(UnitOfWorkContract):
    pass
"""


def test_the_plugin_is_loaded_from_its_entry_point(pytestconfig: pytest.Config) -> None:
    plugin = pytestconfig.pluginmanager.get_plugin("govkernel_contract")
    assert plugin is not None and plugin.__name__ == "govkernel_contract"


def test_an_adapter_author_needs_only_two_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(ADAPTER_CONFTEST)
    pytester.makepyfile(test_my_adapter=ADAPTER_TESTS)
    # The state machine is left out only to keep this run short; test_memory runs it.
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-k", "not random_units")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) > 40
    assert set(outcomes) <= {"passed", "deselected"}


def test_missing_fixtures_are_explained(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_my_adapter=ADAPTER_TESTS)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-k", "empty_commit")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*needs a `uow_factory` fixture*"])


def test_a_project_with_packages_named_as_govkernels_runs_its_tests(tmp_path: Path) -> None:
    """pytest loads the plugin in every project of the environment: one with a `domain` and
    an `adapters` package of its own must still run (the plugin imports nothing of ours)."""
    for package in ("domain", "adapters"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(f"NAME = {package!r}\n")
    (tmp_path / "test_own.py").write_text(
        "import adapters, domain\n"
        "def test_own():\n"
        "    assert (domain.NAME, adapters.NAME) == ('domain', 'adapters')\n"
    )
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_own.py"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "1 passed" in ran.stdout
