"""In-memory store: validate the whole batch against committed state, then apply under a lock."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from ports.errors import ConcurrencyConflict, DuplicateRecord, InjectedFault, RecordNotFound
from ports.storage import EVENT_TABLE, TABLES, Batch, CommitReceipt, Document, Op
from ports.unit_of_work import UnitOfWork


class MemoryStore:
    def __init__(self) -> None:
        self.tables: dict[str, dict[str, Document]] = {name: {} for name in TABLES}
        self.events: list[Document] = []
        self.lock = threading.Lock()
        self.commits = 0

    def unit_of_work(self) -> MemoryUnitOfWork:
        return MemoryUnitOfWork(self)

    def close(self) -> None:
        """Nothing to release; present so every store can be closed the same way."""

    def apply(self, batch: Batch) -> CommitReceipt:
        with self.lock:
            self._validate(batch)
            for w in batch.writes:
                if w.op in (Op.CREATE, Op.UPDATE):
                    self.tables[w.table][w.key] = copy.deepcopy(w.document or {})
                elif w.op is Op.DELETE:
                    del self.tables[w.table][w.key]
            positions = []
            for w in batch.writes:
                if w.op is Op.APPEND:
                    position = len(self.events) + 1
                    self.events.append(copy.deepcopy(w.document or {}) | {"position": position})
                    positions.append(position)
            self.commits += 1
            return CommitReceipt(tuple(positions))

    def _validate(self, batch: Batch) -> None:
        created: dict[str, dict[str, Document]] = {}
        for index, w in enumerate(batch.writes):
            table = self.tables[w.table]
            if w.op is Op.ABORT:
                raise InjectedFault(f"injected fault inside the transaction at write {index}")
            if w.op is Op.CREATE and (w.key in table or w.key in created.get(w.table, {})):
                raise DuplicateRecord(w.table, w.key)
            if w.op in (Op.UPDATE, Op.DELETE) and w.key not in table:
                raise RecordNotFound(w.table, w.key)
            if w.op in (Op.UPDATE, Op.DELETE, Op.CHECK):
                current = table.get(w.key)
                if current is None or current.get("version") != w.expected_version:
                    raise ConcurrencyConflict(w.table, w.key)
            if w.op in (Op.CREATE, Op.UPDATE):
                created.setdefault(w.table, {})[w.key] = w.document or {}
        self._validate_uniques(batch, created)

    def _validate_uniques(self, batch: Batch, written: dict[str, dict[str, Document]]) -> None:
        for table_name, docs in written.items():
            spec = TABLES[table_name]
            for fields in spec.uniques:
                taken: dict[tuple[Any, ...], str] = {
                    tuple(d.get(f) for f in fields): k
                    for k, d in self.tables[table_name].items()
                    if k not in docs
                }
                for key, doc in docs.items():
                    value = tuple(doc.get(f) for f in fields)
                    if value in taken and taken[value] != key:
                        raise DuplicateRecord(table_name, key, f"unique {'+'.join(fields)}")
                    taken[value] = key
        appended = [w.document or {} for w in batch.writes if w.op is Op.APPEND]
        if appended:
            ids = {e["event_id"] for e in self.events}
            for doc in appended:
                if doc["event_id"] in ids:
                    raise DuplicateRecord(EVENT_TABLE, doc["event_id"], "unique event_id")
                ids.add(doc["event_id"])


class MemoryUnitOfWork(UnitOfWork):
    def __init__(self, store: MemoryStore) -> None:
        super().__init__()
        self._store = store

    def _load(self, table: str, key: str) -> Document | None:
        with self._store.lock:
            doc = self._store.tables[table].get(key)
            return copy.deepcopy(doc) if doc is not None else None

    def _query(
        self,
        table: str,
        where: Mapping[str, Any],
        order_by: str | None,
        descending: bool,
        limit: int | None,
    ) -> Iterable[tuple[str, Document]]:
        with self._store.lock:
            rows = [
                (k, copy.deepcopy(d))
                for k, d in sorted(self._store.tables[table].items())
                if all(d.get(f) == v for f, v in where.items())
            ]
        if order_by is not None:
            rows.sort(key=lambda kv: (kv[1].get(order_by) is None, kv[1].get(order_by)))
            if descending:
                rows.reverse()
        return rows if limit is None else rows[:limit]

    def _events_after(self, position: int, limit: int) -> list[Document]:
        with self._store.lock:
            return copy.deepcopy(self._store.events[position : position + limit])

    def _apply(self, batch: Batch) -> CommitReceipt:
        return self._store.apply(batch)
