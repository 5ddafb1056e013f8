"""A torn tail of the `surrealkv://` commit log: what the crash test hits by chance, made
deterministic by truncating the log inside the last transaction.

A process killed while the engine writes a commit leaves a partial record at the end of
the log; on the next open the engine repairs the segment. Atomicity demands that nothing
of that last transaction survives. Measured with the SDK's embedded engine (SurrealDB core
2.3.10, surrealkv 0.9.3): truncating inside the record keeps a prefix of the transaction,
here an execution record without its audit entry. Nothing above the engine can undo that;
the audit chain is what notices it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from adapters.surrealdb import SurrealConfig, SurrealStore
from domain.model.lifecycle import verify_chain
from ports.clock import FixedClock, SequentialIds
from tests.workflow.harness import T0, WORKFLOW, BackDoor, audit_chains, orchestrator, request

CUTS = 24  # truncation points spread over the last transaction's bytes


def _segment(store: Path) -> Path:
    segments = sorted((store / "clog").iterdir())
    assert segments, "no commit log segment: has the engine's on-disk layout changed?"
    return segments[-1]


def _committed(path: Path, ids: SequentialIds, publication: str, *, run: bool) -> int:
    """Start (and maybe run) one publication, close the store cleanly; the log's size."""
    store = SurrealStore(SurrealConfig(f"surrealkv://{path}"))
    try:
        orchestrator(store.unit_of_work, FixedClock(T0), ids=ids).start(
            WORKFLOW, request(publication), idempotency_key=publication, run=run
        )
    finally:
        store.close()
    return _segment(path).stat().st_size


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    """A store whose log ends with one whole `start` transaction, and its byte range."""
    path = tmp_path_factory.mktemp("torn") / "store"
    ids = SequentialIds()
    before = _committed(path, ids, "pub-a", run=True)
    after = _committed(path, ids, "pub-b", run=False)
    assert after > before
    return path, before, after


def _open_truncated(logged: tuple[Path, int, int], cut: int, work: Path) -> list[str]:
    """Problems found in a copy of the store whose log was cut at byte `cut`."""
    source, _, _ = logged
    copy = work / f"cut-{cut}"
    shutil.copytree(source, copy)
    os.truncate(_segment(copy), cut)
    store = SurrealStore(SurrealConfig(f"surrealkv://{copy}"))
    try:
        door = BackDoor(store)
        chains = audit_chains(door)
        problems = []
        for execution_id, doc in door.table("execution").items():
            report = verify_chain(
                execution_id,
                chains.get(execution_id, []),
                head_hash=doc["audit_head"],
                head_sequence=doc["audit_sequence"],
            )
            if not report.ok:
                problems.append(f"cut at {cut}: {execution_id}: {report.problem}")
        return problems
    finally:
        store.close()
        shutil.rmtree(copy)


def test_cuts_at_transaction_boundaries_recover_cleanly(
    logged: tuple[Path, int, int], tmp_path: Path
) -> None:
    _, before, after = logged
    assert _open_truncated(logged, before, tmp_path) == []
    assert _open_truncated(logged, after, tmp_path) == []


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="the embedded engine (surrealkv 0.9.3) keeps a prefix of a torn last transaction",
)
def test_a_torn_last_transaction_leaves_nothing_behind(
    logged: tuple[Path, int, int], tmp_path: Path
) -> None:
    _, before, after = logged
    step = max((after - before) // CUTS, 1)
    problems = [
        problem
        for cut in range(before + 1, after, step)
        for problem in _open_truncated(logged, cut, tmp_path)
    ]
    assert problems == []
