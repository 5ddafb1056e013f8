"""The README's Python examples run as written (on the in-memory store)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_service_example_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    example = next(b for b in blocks if "build_app(settings)" in b)
    for name in [n for n in os.environ if n.startswith("GOVKERNEL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("GOVKERNEL_STORE", "memory://")
    exec(compile(example, str(README), "exec"), {})
    assert capsys.readouterr().out.strip().splitlines() == [
        "ExecutionState.SUCCEEDED True",
        "ExecutionState.AWAITING_APPROVAL ExecutionState.SUCCEEDED",
    ]


def test_the_services_example_runs_and_ingests() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    example = next(b for b in blocks if "KnowledgeService(Gate(" in b)
    scope: dict[str, Any] = {}
    exec(compile(example, str(README), "exec"), scope)
    (draft,) = scope["drafts"]
    with scope["store"].unit_of_work() as uow:
        found = uow.sources.find_identical("acme", draft.source_url, draft.content_digest)
    assert found is not None and found.title == "Article IV note"


def test_the_config_file_example_loads(tmp_path: Path) -> None:
    from composition.settings import load_settings
    from domain.model.environment import Environment

    (example,) = re.findall(r"```toml\n(.*?)```", README.read_text(), re.S)
    path = tmp_path / "govkernel.toml"
    path.write_text(example)
    settings = load_settings({}, config_file=path)
    assert settings.environment is Environment.STAGING and settings.tenant == "acme"
    assert settings.store_url == "surrealkv:///var/lib/govkernel/store"
    assert (settings.namespace, settings.database) == ("govkernel", "govkernel")
    assert settings.workflows == ("payments.flows:payout",)


def test_the_own_workflow_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    example = next(b for b in blocks if "Overrides(workflows=" in b)
    exec(compile(example, str(README), "exec"), {})
    assert capsys.readouterr().out.strip() == "ExecutionState.SUCCEEDED {'reserved': 120}"


def test_the_step_tested_alone_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    scope: dict[str, Any] = {}
    for needle in (
        "KnowledgeService(Gate(",
        "Overrides(workflows=",
        'StepContext(runtime, execution, "reserve"',
    ):
        exec(compile(next(b for b in blocks if needle in b), str(README), "exec"), scope)
    assert scope["execution"].input == {"amount": 120}
