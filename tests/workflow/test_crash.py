"""SIGKILL a process running publications on `surrealkv://` at random moments; after each
kill, recover in this process and check that nothing was lost, duplicated or left behind.

GOVKERNEL_CRASH_TRIALS raises the number of kills (default 20); GOVKERNEL_CRASH_SEED
replays a run's random delays.

A kill can tear the engine's last log record; the store's journal undoes that transaction
on the next open (test_torn_log is the deterministic case), so every trial must pass its
checks. Trials whose open repaired a torn transaction are counted.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from attrs import define

from adapters.surrealdb import SurrealConfig, SurrealStore
from domain.model.lifecycle import ExecutionState
from ports.clock import FixedClock
from tests.workflow.harness import BackDoor, assert_exactly_once, orchestrator

CHILD = Path(__file__).with_name("crash_child.py")
TRIALS = int(os.environ.get("GOVKERNEL_CRASH_TRIALS", "20"))
SEED = int(os.environ.get("GOVKERNEL_CRASH_SEED", str(random.randrange(2**32))))
START_TIMEOUT = 30.0
KILLS_PER_STORE = 5  # consecutive kills on one store; then a fresh one keeps checks cheap

pytestmark = pytest.mark.slow


@define
class Tally:
    kills: int = 0
    interrupted: int = 0  # executions caught mid-flight by a kill and resumed by recovery
    executions: int = 0  # executions checked, over all stores
    torn_repairs: int = 0  # opens that undid a transaction torn by the kill


class Child:
    """The crash child, spawned early: it imports while the parent still checks the store."""

    def __init__(self, url: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(CHILD), url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def _expect(self, word: str) -> None:
        out = self.process.stdout
        assert out is not None
        ready, _, _ = select.select([out], [], [], START_TIMEOUT)
        line = out.readline() if ready else ""
        if line.strip() != word:
            self.stop()
            err = self.process.stderr.read() if self.process.stderr else ""
            pytest.fail(f"crash child: expected {word!r}, got {line!r}\n{err[-2000:]}")

    def go(self) -> None:
        """Let it open the store (ours is closed by now) and wait until it runs."""
        self._expect("ready")
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        self._expect("started")

    def kill(self) -> None:
        assert self.process.poll() is None, "the child stopped on its own before the kill"
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        assert self.process.returncode == -signal.SIGKILL

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def _recover_and_check(url: str, trial: int, tally: Tally, checked: set[str]) -> None:
    # The dead child's file lock went with it: opening the store must simply work.
    store = SurrealStore(SurrealConfig(url))
    tally.torn_repairs += store.torn_repair is not None
    try:
        door = BackDoor(store)
        clock = FixedClock(datetime.now(UTC))
        orch = orchestrator(store.unit_of_work, clock, worker_id=f"recovery-{trial}")
        before = door.table("execution")
        open_ = {k for k, d in before.items() if not ExecutionState(d["state"]).terminal}
        resumed = orch.recover(ignore_leases=True)
        assert {x.id for x in resumed} == open_
        # Every chain is recomputed from storage each time; the orchestrator's own verify
        # runs on the executions not checked after an earlier kill.
        census = assert_exactly_once(door, orch, verify=set(before) - checked)
        tally.interrupted += len(open_)
        tally.executions += len(set(census.executions) - checked)
        checked.update(census.executions)
    finally:
        store.close()


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    tally = Tally()
    checked: set[str] = set()
    url = f"surrealkv://{tmp_path / 'store-0'}"
    child = Child(url)
    try:
        for trial in range(TRIALS):
            child.go()
            time.sleep(rng.uniform(0.05, 0.6))
            child.kill()
            child.stop()
            tally.kills += 1
            rotate = (trial + 1) % KILLS_PER_STORE == 0
            next_url = f"surrealkv://{tmp_path / f'store-{trial + 1}'}" if rotate else url
            if trial + 1 < TRIALS:
                child = Child(next_url)  # it imports while we check
            try:
                _recover_and_check(url, trial, tally, checked)
            except Exception as exc:
                raise AssertionError(
                    f"trial {trial} (GOVKERNEL_CRASH_SEED={SEED}): {type(exc).__name__}: {exc};"
                    f" so far {tally}"
                ) from exc
            if rotate:
                url = next_url
                checked.clear()
    finally:
        child.stop()
    assert tally.executions > 0, f"no workflow ever committed: {tally}"
    if TRIALS >= 10:
        # Runs take milliseconds, so kills land mid-workflow nearly every time.
        assert tally.interrupted > 0, f"no kill ever interrupted a workflow: {tally}"
    print(f"crash trials (GOVKERNEL_CRASH_SEED={SEED}): {tally}")  # shown with -s
