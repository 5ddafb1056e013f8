"""Threads racing to run or recover one execution: leases are ignored on purpose, so only
the version checks stand between them and a step done twice."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

from adapters.faults import FaultInjector
from domain.model.lifecycle import ExecutionState
from domain.orchestration.definition import StepContext
from domain.orchestration.orchestrator import Orchestrator
from domain.workflows import knowledge_publication as kp
from ports.clock import FixedClock
from ports.unit_of_work import UnitOfWork
from tests.workflow.harness import (
    T0,
    WORKFLOW,
    BackDoor,
    Calls,
    assert_exactly_once,
    open_store,
    orchestrator,
    request,
    service,
    variant,
)

THREADS = 4
STEPS = ("ingest", "analyse", "publish", "verify")


def _dawdle(n: int, uow: UnitOfWork, ctx: StepContext) -> None:
    time.sleep(0.002)


ROUNDS = {"memory": 8, "surreal": 4}


def _race(workers: list[Orchestrator], act: Callable[[Orchestrator], object]) -> list[str]:
    barrier = threading.Barrier(len(workers))
    errors: list[str] = []

    def go(worker: Orchestrator) -> None:
        barrier.wait()
        try:
            act(worker)
        except Exception as exc:  # every error is a finding
            errors.append(f"{worker.worker_id}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=go, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a racing worker hung"
    return errors


@pytest.mark.parametrize("kind", ["memory", "surreal"])
@pytest.mark.parametrize("how", ["run", "recover"])
def test_racing_workers_do_each_step_exactly_once(kind: str, how: str) -> None:
    # Commits attempted beyond the four that win: proof that the workers really raced.
    lost = sum(_round(kind, how, n) for n in range(ROUNDS[kind]))
    assert lost > 0, "the workers never overlapped; the race proved nothing"


def _round(kind: str, how: str, n: int) -> int:
    store = open_store(kind)
    try:
        door = BackDoor(store)
        clock = FixedClock(T0)
        starter = orchestrator(store.unit_of_work, clock, worker_id="starter")
        pending = starter.start(
            WORKFLOW, request(f"pub-race-{n}"), idempotency_key="race", run=False
        )
        counting = FaultInjector(store.unit_of_work)  # no plan: it only counts
        # Every step dawdles a little after staging its writes (releasing the GIL), so the
        # racers really overlap instead of one finishing before the others start.
        slow = variant(
            kp.definition(service(counting)),
            WORKFLOW,
            {name: Calls().wrap(_dawdle) for name in STEPS},
        )
        workers = [
            orchestrator(counting, clock, worker_id=f"racer-{i}", workflows={WORKFLOW: slow})
            for i in range(THREADS)
        ]
        if how == "run":
            errors = _race(workers, lambda w: w.run(pending.id, ignore_leases=True))
        else:
            errors = _race(workers, lambda w: w.recover(ignore_leases=True))
        assert errors == [], errors

        done = starter.get(pending.id)
        assert done.state is ExecutionState.SUCCEEDED
        assert_exactly_once(door, starter)
        # Each step was checkpointed once, whoever won it.
        steps = Counter(
            d.get("step") for d in door.table("audit").values() if d["to_state"] == "running"
        )
        assert steps == Counter({None: 1, "ingest": 1, "analyse": 1, "publish": 1, "verify": 1})
        return counting.commits - 4
    finally:
        store.close()
