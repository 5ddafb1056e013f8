"""The benchmark's quick mode runs end to end and produces sane figures.

Nothing here is about speed: only that every section runs, every figure is positive and the
JSON report is written. Quick mode never needs the DBOS peer's virtualenv, and says so.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from benchmarks import run


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    results = tmp_path_factory.mktemp("bench-results")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GOVKERNEL_BENCH_SCALE", "1000")  # quick mode must ignore it
        code = run.main(["--quick", "--results-dir", str(results)])
    assert code == 0
    written = sorted(p.name for p in results.iterdir())
    assert "quick-latest.json" in written
    assert any(name.startswith("quick-bench-") for name in written)
    report = json.loads((results / "quick-latest.json").read_text())
    return report, run.render(report)


def test_quick_mode_runs_every_section_without_errors(quick: tuple[dict[str, Any], str]) -> None:
    report, _ = quick
    assert report["quick"] is True
    assert report["errors"] == {}
    assert set(report["sections"]) == {name for name, _ in run.SECTIONS}
    machine = report["machine"]
    assert machine["cpu_count"] >= 1
    assert machine["python"] and machine["surrealdb_sdk"] and machine["platform"]


def test_peer_is_explicitly_not_run_in_quick_mode(quick: tuple[dict[str, Any], str]) -> None:
    workflow = quick[0]["sections"]["workflow"]
    assert workflow["peer"] == {"run": False, "reason": run.QUICK_PEER_REASON}
    assert workflow["ratio_surrealkv_over_peer"] is None


def test_workflow_figures_are_positive(quick: tuple[dict[str, Any], str]) -> None:
    stores = quick[0]["sections"]["workflow"]["stores"]
    assert set(stores) == {"surrealkv", "mem", "memory"}
    for store in stores.values():
        assert _positive(store["workflows_per_s"])
    assert _positive(stores["surrealkv"]["round_trips_per_workflow"])
    assert _positive(stores["memory"]["commits_per_workflow"])


def test_kernel_section_ran_or_says_why_not(quick: tuple[dict[str, Any], str]) -> None:
    kernel = quick[0]["sections"]["kernel"]
    assert kernel["run"] in (True, False)
    if kernel["run"]:
        assert kernel["rows"]
        # The hot path's profile: the engine's call among what it names, shares of a whole.
        hot = kernel["hot_path"]
        assert any("execute" in row["function"] for row in hot), hot
        assert 0 < sum(row["share"] for row in hot) <= 1.0 and "hot path" in quick[1]
    else:
        assert kernel["reason"]


def test_recovery_scaling_concurrency_and_memory_are_sane(
    quick: tuple[dict[str, Any], str],
) -> None:
    sections = quick[0]["sections"]
    for row in sections["recovery"]["rows"]:
        assert _positive(row["scan_s"])
        if row["full"]:
            assert _positive(row["executions_per_s"])
    for result in sections["scaling"].values():
        for row in result["rows"]:
            assert all(_positive(ms) for ms in row["ms"].values())
        assert all(_positive(r) for r in result["ratio_largest_over_smallest"].values())
        assert all(plan for plan in result["plans"].values())
    for row in sections["concurrency"]["rows"]:
        assert _positive(row["workflows_per_s"])
        assert row["lost_or_duplicated"] == 0, row["problems"]
    for memory in sections["memory"].values():
        assert _positive(memory["rss_end_mb"]) and _positive(memory["py_blocks_end"])


def test_rendered_table_names_every_section(quick: tuple[dict[str, Any], str]) -> None:
    text = quick[1]
    for heading in ("1. Kernel", "2. knowledge_publication", "3. Recovery", "4. Scaling"):
        assert heading in text
    assert "5. Concurrent" in text and "6. Memory" in text
    assert run.QUICK_PEER_REASON in text


def test_results_land_in_the_directory_given(tmp_path: Path) -> None:
    report = {"quick": True, "sections": {}}
    paths = run.write_results(report, tmp_path / "nested")
    assert all(p.is_file() and json.loads(p.read_text())["quick"] for p in paths)


def test_the_peers_directory_given_wins_over_the_one_beside_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks import peer

    beside = tmp_path / "repo"
    (tmp_path / "shared" / "peers").mkdir(parents=True)
    (tmp_path / "shared" / "peers" / peer.PEER_SCRIPT_NAME).write_text("# beside\n")
    given = tmp_path / "mine"
    given.mkdir()
    (given / peer.PEER_SCRIPT_NAME).write_text("# mine\n")
    monkeypatch.delenv(peer.PEERS_DIR_ENV, raising=False)
    assert peer.peer_script(beside) == tmp_path / "shared" / "peers" / peer.PEER_SCRIPT_NAME
    monkeypatch.setenv(peer.PEERS_DIR_ENV, str(given))
    assert peer.peer_script(beside) == given / peer.PEER_SCRIPT_NAME
    monkeypatch.setenv(peer.PEERS_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere"):  # not the other one, in silence
        peer.peer_script(beside)
