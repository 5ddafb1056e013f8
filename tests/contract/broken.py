"""Adapters broken in ways a shared contract case once let through (a mutation run against
the suite found each): the cases named in test_broken_adapters must catch them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.memory import MemoryStore, MemoryUnitOfWork
from ports.storage import Batch, CommitReceipt, Document, Op, Range, Write


class PositionsFromOpen(MemoryUnitOfWork):
    """Numbers its events from the head it saw when opened, not at commit."""

    def __init__(self, store: MemoryStore) -> None:
        super().__init__(store)
        self._head = store.events_head()

    def _apply(self, batch: Batch) -> CommitReceipt:
        receipt = self._store.apply(batch)
        positions = tuple(self._head + n for n in range(1, len(receipt.event_positions) + 1))
        with self._store.lock:
            for stored, given in zip(receipt.event_positions, positions, strict=True):
                self._store.events[stored - 1]["position"] = given
        return CommitReceipt(positions)


# What a claim changes: a store skipping the version check of such an update (as a merge or
# patch shortcut would) lets two workers both claim one execution.
_LEASE = {"lease_owner", "lease_expires_at", "updated_at", "version"}


class LeaseMergedUnchecked(MemoryStore):
    def _validate(self, batch: Batch) -> None:
        writes = []
        for w in batch.writes:
            current = self.tables[w.table].get(w.key)
            if w.table == "execution" and w.op is Op.UPDATE and current and w.document:
                fields = (set(current) | set(w.document)) - _LEASE
                if all(w.document.get(f) == current.get(f) for f in fields):
                    w = Write(w.op, w.table, w.key, w.document, current.get("version"))
            writes.append(w)
        super()._validate(Batch(tuple(writes)))


class StaleIndex(MemoryStore):
    """Leaves a changed record under its old values in the look-up indexes."""

    def _put(self, table: str, key: str, doc: Document | None) -> None:
        old = self.tables[table].pop(key, None)
        for fields, index in self._indexes[table].items():
            if old is not None and doc is None:
                index[tuple(old.get(f) for f in fields)].discard(key)
            if doc is not None:
                index.setdefault(tuple(doc.get(f) for f in fields), set()).add(key)
        if doc is not None:
            self.tables[table][key] = doc


class SharedReads(MemoryStore):
    """Hands out the stored documents themselves, not copies."""

    def load(self, table: str, key: str) -> Document | None:
        with self.lock:
            return self._rows(table).get(key)

    def load_many(self, table: str, keys: Any, *, fresh: bool = False) -> dict[str, Document]:
        with self.lock:
            rows = self._rows(table)
            return {k: rows[k] for k in keys if k in rows}


class CountsPastRanges(MemoryStore):
    """Counts by the equalities of a filter and leaves its ranges out (as a count reading only
    an index's exact keys would)."""

    def count(self, table: str, where: Mapping[str, Any]) -> int:
        exact = {f: v for f, v in where.items() if not isinstance(v, Range)}
        return len(self.query(table, exact, None, False, None))
