"""The import contracts hold on the real tree, and each one fails when a violation is planted."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(cwd: Path, src: Path) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH first, so the packages under `src` win over the editable install's path;
    # then the checkout's root, for the contract type contracts.ini registers from `tests`.
    env = os.environ | {"PYTHONPATH": os.pathsep.join((str(src), str(ROOT)))}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", "contracts.ini", "--no-cache"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_real_tree_keeps_every_contract() -> None:
    done = lint_imports(ROOT, ROOT / "src")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


# (module to plant the import in, the import, the contract that must break, the offending line)
PLANTS = {
    "framework-in-domain": (
        "domain/model/environment.py",
        "import surrealdb",
        "Domain and ports import no frameworks",
        "domain.model.environment -> surrealdb",
    ),
    "codec-in-ports": (
        "ports/records.py",
        "import cbor2",
        "Domain and ports import no frameworks",
        "ports.records -> cbor2",
    ),
    # Not named anywhere in contracts.ini: installed (a dependency's dependency), it is
    # refused all the same, as any package but the standard library and attrs is.
    "unnamed-package-in-domain": (
        "domain/model/errors.py",
        "import typing_extensions",
        "Domain and ports import no frameworks",
        "domain.model.errors -> typing_extensions (not allowed)",
    ),
    # In 3.11's standard library, gone from 3.12's: refused whichever Python checks.
    "removed-stdlib-in-ports": (
        "ports/fields.py",
        "import distutils",
        "Domain and ports import no frameworks",
        "ports.fields -> distutils (not allowed)",
    ),
    "adapter-in-ports": (
        "ports/storage.py",
        "import adapters.memory",
        "Layers only import downwards",
        "ports.storage -> adapters.memory",
    ),
    "adapter-in-adapter": (
        "adapters/memory/store.py",
        "import adapters.surrealdb.compiler",
        "Adapters are independent of each other",
        "adapters.memory.store -> adapters.surrealdb.compiler",
    ),
}


@pytest.mark.parametrize("plant", list(PLANTS))
def test_a_planted_violation_breaks_its_contract(tmp_path: Path, plant: str) -> None:
    module, statement, contract, line = PLANTS[plant]
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "contracts.ini", tmp_path / "contracts.ini")
    target = src / module
    target.write_text(target.read_text() + f"\n{statement}  # planted by the canary test\n")

    done = lint_imports(tmp_path, src)
    assert done.returncode != 0, done.stdout
    assert f"{contract} BROKEN" in done.stdout
    assert line in done.stdout
