"""Deliberately broken adapters: the contract's partial-write checks must catch them."""

from __future__ import annotations

from adapters.memory import MemoryStore, MemoryUnitOfWork
from ports.errors import InjectedFault
from ports.storage import Batch, CommitReceipt, Op, Write


class WriteThroughUnitOfWork(MemoryUnitOfWork):
    """Writes each record to the store the moment it is staged; commit only confirms."""

    def __init__(self, store: MemoryStore) -> None:
        super().__init__(store)
        self._positions: list[int] = []

    def _before_stage(self, write: Write) -> None:
        self._positions += self._store.apply(Batch((write,))).event_positions

    def _apply(self, batch: Batch) -> CommitReceipt:
        if any(w.op is Op.ABORT for w in batch.writes):
            raise InjectedFault("aborted, but the staged writes are already stored")
        return CommitReceipt(tuple(self._positions))


class WriteByWriteUnitOfWork(MemoryUnitOfWork):
    """Stages correctly but commits one write at a time, stopping at the first failure."""

    def _apply(self, batch: Batch) -> CommitReceipt:
        positions: list[int] = []
        for write in batch.writes:
            if write.op is Op.ABORT:
                raise InjectedFault("aborted half-way through the commit")
            positions += self._store.apply(Batch((write,))).event_positions
        return CommitReceipt(tuple(positions))
