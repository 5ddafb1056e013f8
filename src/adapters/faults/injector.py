"""Plan a failure at an exact position and prove that nothing partial survives it.

Positions count across every unit made by the injector's factory (1-based), so a test can
crash the Nth write of a whole workflow. Each planned fault fires once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from attrs import define, field, frozen

from ports.errors import CommitOutcomeUnknown, InjectedFault
from ports.storage import Batch, CommitReceipt, Op, Write
from ports.unit_of_work import UnitOfWork, WrappingUnitOfWork


@frozen
class FaultPlan:
    fail_at_write: int | None = None  # raise while staging the Nth write
    fail_at_commit: int | None = None  # raise at the Nth commit, before storage sees it
    abort_in_commit: tuple[int, int] | None = None  # (Nth commit, after k writes) in-transaction
    ambiguous_commit: int | None = None  # apply the Nth commit, then report outcome unknown


@define
class FaultInjector:
    factory: Callable[[], UnitOfWork]
    plan: FaultPlan = FaultPlan()
    writes: int = 0
    commits: int = 0
    fired: list[str] = field(factory=list)
    _lock: threading.Lock = field(factory=threading.Lock)

    def __call__(self) -> FaultyUnitOfWork:
        return FaultyUnitOfWork(self.factory(), self)

    def arm(self, plan: FaultPlan) -> None:
        with self._lock:
            self.plan, self.writes, self.commits, self.fired = plan, 0, 0, []

    def on_stage(self) -> None:
        with self._lock:
            self.writes += 1
            if self.plan.fail_at_write == self.writes:
                self.fired.append(f"write {self.writes}")
                raise InjectedFault(f"injected fault at staged write {self.writes}")

    def on_commit(self, batch: Batch) -> tuple[Batch, bool]:
        """The batch to send (maybe with an ABORT planted) and whether to report ambiguity."""
        with self._lock:
            self.commits += 1
            n = self.commits
            if self.plan.fail_at_commit == n:
                self.fired.append(f"commit {n}")
                raise InjectedFault(f"injected fault at commit {n}, before storage")
            if self.plan.abort_in_commit and self.plan.abort_in_commit[0] == n:
                k = self.plan.abort_in_commit[1]
                writes = list(batch.writes)
                writes.insert(min(k, len(writes)), Write(Op.ABORT, writes[0].table, "-"))
                self.fired.append(f"abort in commit {n} after {k}")
                return Batch(tuple(writes)), False
            if self.plan.ambiguous_commit == n:
                self.fired.append(f"ambiguous commit {n}")
                return batch, True
            return batch, False


class FaultyUnitOfWork(WrappingUnitOfWork):
    def __init__(self, inner: UnitOfWork, injector: FaultInjector) -> None:
        super().__init__(inner)
        self._injector = injector

    def _before_stage(self, write: Write) -> None:
        self._injector.on_stage()
        # Forward the hook, so the wrapped adapter behaves as it would unwrapped.
        super()._before_stage(write)

    def _apply(self, batch: Batch) -> CommitReceipt:
        batch, ambiguous = self._injector.on_commit(batch)
        receipt = super()._apply(batch)
        if ambiguous:
            raise CommitOutcomeUnknown("injected: the commit was applied but the reply was lost")
        return receipt
