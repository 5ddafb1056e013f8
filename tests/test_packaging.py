"""The wheel holds what an install without a checkout needs: the packages and the samples
`govkernel demo` publishes."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("domain", "ports", "adapters", "composition")


def test_the_wheel_carries_the_demo_documents_and_the_demo_finds_them(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("govkernel-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "installed")
    samples = sorted(p.name for p in (ROOT / "examples").glob("*.md"))
    assert samples and {f"composition/examples/{name}" for name in samples} <= names
    assert {"domain/__init__.py", "ports/__init__.py", "adapters/__init__.py"} <= names
    assert "govkernel_contract.py" in names  # the pytest plugin, loaded by its entry point
    assert {f"{package}/py.typed" for package in PACKAGES} <= names

    found = subprocess.run(
        [sys.executable, "-c", "import composition.cli.demo as c; print(c.default_examples())"],
        env={"PYTHONPATH": str(tmp_path / "installed")},
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(found.stdout.strip()) == tmp_path / "installed" / "composition" / "examples"


def test_a_services_own_code_is_type_checked_against_govkernels(tmp_path: Path) -> None:
    """Without the py.typed markers, mypy skips the installed packages ("missing library
    stubs or py.typed marker") and a service's steps are checked against nothing."""
    (tmp_path / "steps.py").write_text(
        "from typing import Any\n"
        "from domain.orchestration.definition import StepContext\n"
        "from ports.unit_of_work import UnitOfWork\n"
        "def reserve(uow: UnitOfWork, ctx: StepContext) -> dict[str, Any]:\n"
        "    return {'tenant': ctx.runtime.tenant}\n"
        "wrong: int = reserve.__name__\n"
        # What a service's own hooks and policies return, as any Python function may.
        "from datetime import datetime\n"
        "from composition.container import Overrides\n"
        "from domain.model.execution import WorkflowExecution\n"
        "from domain.model.policy import GuardedMutation, Policy\n"
        "def hook(x: WorkflowExecution) -> bool:\n"
        "    return True\n"
        "def policy(m: GuardedMutation, now: datetime) -> tuple[str, ...]:\n"
        "    return ()\n"
        "Overrides(on_transition=hook)\n"
        "kept: Policy = policy\n"
    )
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "c"), "steps.py"],
        cwd=tmp_path,  # outside the checkout: the packages as installed, not its mypy_path
        capture_output=True,
        text=True,
    )
    assert "import-untyped" not in checked.stdout, checked.stdout
    [error] = [line for line in checked.stdout.splitlines() if ": error:" in line]
    assert error.startswith("steps.py:6:") and '"str"' in error, checked.stdout
