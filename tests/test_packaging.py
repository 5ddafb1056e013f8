"""The wheel holds what an install without a checkout needs: the packages and the samples
`govkernel demo` publishes."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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

    found = subprocess.run(
        [sys.executable, "-c", "import composition.cli as c; print(c.default_examples())"],
        env={"PYTHONPATH": str(tmp_path / "installed")},
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(found.stdout.strip()) == tmp_path / "installed" / "composition" / "examples"
