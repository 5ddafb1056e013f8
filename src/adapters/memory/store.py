"""In-memory store: validate the whole batch against committed state and the field spec,
then apply it under a lock.

Hash indexes on every unique and lookup field prefix keep lookups independent of store size,
as SurrealDB's indexes do.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from domain.model.seal import AuditKey, key_or_none
from ports.errors import (
    ConcurrencyConflict,
    DuplicateRecord,
    InjectedFault,
    InvalidRecord,
    RecordNotFound,
    StorageUnavailable,
)
from ports.fields import violation
from ports.storage import (
    EVENT_TABLE,
    TABLES,
    AnyOf,
    Batch,
    CommitReceipt,
    Document,
    Op,
    Range,
    Write,
    sort_key,
)
from ports.unit_of_work import StoreUnitOfWork

IndexKey = tuple[Any, ...]


def _copy(doc: Document) -> Document:
    # Documents hold immutable scalars and lists of str: copying the lists is enough.
    return {k: (list(v) if isinstance(v, list) else v) for k, v in doc.items()}


def _matches(doc: Document, where: Mapping[str, Any]) -> bool:
    return all(
        v.matches(doc.get(f)) if isinstance(v, AnyOf | Range) else doc.get(f) == v
        for f, v in where.items()
    )


def _indexed_fields(table: str) -> list[tuple[str, ...]]:
    spec = TABLES[table]
    out: list[tuple[str, ...]] = []
    for fields in (*spec.uniques, *spec.lookups):
        for n in range(1, len(fields) + 1):
            if fields[:n] not in out:
                out.append(fields[:n])
    return out


class MemoryStore:
    def __init__(self, *, audit_key: AuditKey | None = None) -> None:
        # Seals the executions written through its units (domain.model.seal).
        self.audit_key = key_or_none(audit_key)
        self.tables: dict[str, dict[str, Document]] = {name: {} for name in TABLES}
        self.events: list[Document] = []
        self.lock = threading.Lock()
        self.commits = 0
        self.closed = False
        self.store_id: str | None = str(uuid.uuid4())  # which store this is: anchors name it
        # The events by id, as SurrealDB's `event` table holds them: what `get` and `select`
        # of that table read (the log itself is `events`, in order).
        self._events_by_id: dict[str, Document] = {}
        self._indexes: dict[str, dict[tuple[str, ...], dict[IndexKey, set[str]]]] = {
            name: {fields: {} for fields in _indexed_fields(name)} for name in TABLES
        }

    def unit_of_work(self) -> MemoryUnitOfWork:
        self._refuse_if_closed()
        return MemoryUnitOfWork(self)

    def close(self) -> None:
        """Nothing to release, but a closed store takes no more work, reads included, as
        SurrealDB's don't; a commit under way when it is called lands before it returns."""
        with self.lock:
            self.closed = True

    def _refuse_if_closed(self) -> None:
        if self.closed:
            raise StorageUnavailable("store is closed")

    def _rows(self, table: str) -> dict[str, Document]:
        """A table's records by key (held under the lock, by a store not closed)."""
        self._refuse_if_closed()
        return self._events_by_id if table == EVENT_TABLE else self.tables[table]

    # -- writes --------------------------------------------------------------------------------

    def apply(self, batch: Batch) -> CommitReceipt:
        with self.lock:
            self._refuse_if_closed()
            self._validate(batch)
            positions = []
            for w in batch.writes:
                if w.op in (Op.CREATE, Op.UPDATE):
                    self._put(w.table, w.key, _copy(w.document or {}))
                elif w.op is Op.DELETE:
                    self._put(w.table, w.key, None)
                elif w.op is Op.APPEND:
                    doc = _copy(w.document or {})
                    doc["position"] = len(self.events) + 1
                    self.events.append(doc)
                    self._events_by_id[doc["event_id"]] = doc
                    positions.append(doc["position"])
            self.commits += 1
            return CommitReceipt(tuple(positions))

    def _put(self, table: str, key: str, doc: Document | None) -> None:
        old = self.tables[table].pop(key, None)
        for fields, index in self._indexes[table].items():
            if old is not None:
                index[tuple(old.get(f) for f in fields)].discard(key)
            if doc is not None:
                index.setdefault(tuple(doc.get(f) for f in fields), set()).add(key)
        if doc is not None:
            self.tables[table][key] = doc

    def _validate(self, batch: Batch) -> None:
        written: dict[tuple[str, str], Document] = {}
        gone: set[tuple[str, str]] = set()  # deleted earlier in the batch, as SurrealDB runs it
        for index, w in enumerate(batch.writes):
            table = self.tables[w.table]
            if w.op is Op.ABORT:
                raise InjectedFault(f"injected fault inside the transaction at write {index}")
            here = w.key in table and (w.table, w.key) not in gone
            if w.op is Op.CREATE and (here or (w.table, w.key) in written):
                raise DuplicateRecord(w.table, w.key)
            if w.op in (Op.UPDATE, Op.DELETE) and not here:
                raise RecordNotFound(w.table, w.key)
            if w.op in (Op.UPDATE, Op.DELETE, Op.CHECK):
                current = table.get(w.key)
                if current is None or current.get("version") != w.expected_version:
                    raise ConcurrencyConflict(w.table, w.key)
                if w.op is Op.UPDATE:
                    _keep_natural_keys(w, current)
            if w.document is not None:
                assigned = ("position",) if w.op is Op.APPEND else ()
                problem = violation(w.table, w.document, assigned=assigned)
                if problem is not None:
                    raise InvalidRecord(f"{w.table} {w.key!r} refused: {problem}")
            if w.op in (Op.CREATE, Op.UPDATE):
                written[(w.table, w.key)] = w.document or {}
            if w.op is Op.DELETE:
                gone.add((w.table, w.key))
        self._validate_uniques(batch, written)

    def _validate_uniques(self, batch: Batch, written: dict[tuple[str, str], Document]) -> None:
        claimed: dict[tuple[str, tuple[str, ...], IndexKey], str] = {}
        deleted = {(w.table, w.key) for w in batch.writes if w.op is Op.DELETE}
        for (table, key), doc in written.items():
            for fields in TABLES[table].uniques:
                value = tuple(doc.get(f) for f in fields)
                holders = self._indexes[table][fields].get(value, set()) - {key}
                # A holder deleted in this very batch gives the value up.
                holders = {h for h in holders if (table, h) not in deleted}
                other = claimed.setdefault((table, fields, value), key)
                if holders or other != key:
                    raise DuplicateRecord(table, key, f"unique {'+'.join(fields)}")
        seen: set[str] = set()
        for w in batch.writes:
            if w.op is Op.APPEND:
                event_id = (w.document or {})["event_id"]
                if event_id in self._events_by_id or event_id in seen:
                    raise DuplicateRecord(EVENT_TABLE, event_id, "unique event_id")
                seen.add(event_id)

    # -- reads ---------------------------------------------------------------------------------

    def load(self, table: str, key: str) -> Document | None:
        with self.lock:
            doc = self._rows(table).get(key)
            return _copy(doc) if doc is not None else None

    def query(
        self,
        table: str,
        where: Mapping[str, Any],
        order_by: str | None,
        descending: bool,
        limit: int | None,
    ) -> list[tuple[str, Document]]:
        # Equality (and IN) filters go through a hash index when one exists; ranges filter
        # what it yields.
        exact = {f: v for f, v in where.items() if not isinstance(v, Range)}
        ranges = {f: v for f, v in where.items() if isinstance(v, Range)}
        with self.lock:
            docs = self._rows(table)
            # The index on exactly the fields given, in whichever order they were given.
            fields = next(
                (f for f in self._indexes[table] if len(f) == len(exact) and set(f) == set(exact)),
                None,
            )
            index = (
                self._indexes[table][fields]
                if fields is not None and docs is not self._events_by_id
                else None
            )
            if index is not None and fields is not None:
                choices = [
                    exact[f].values if isinstance(exact[f], AnyOf) else (exact[f],) for f in fields
                ]
                found: set[str] = set()
                for combination in itertools.product(*choices):
                    found |= index.get(combination, set())
                keys: Iterable[str] = sorted(found)
            else:
                keys = sorted(k for k, d in docs.items() if _matches(d, exact))
            rows = [(k, docs[k]) for k in keys if _matches(docs[k], ranges)]
            if order_by is not None:
                rows.sort(key=lambda kv: sort_key(kv[1].get(order_by)))
            if descending:  # by key alone without `order_by`, as SurrealDB orders by id
                rows.reverse()
            if limit is not None:
                rows = rows[:limit]
            return [(k, _copy(d)) for k, d in rows]

    def load_many(
        self, table: str, keys: list[str], *, fresh: bool = False
    ) -> dict[str, Document]:  # no cache: every read is fresh
        with self.lock:
            docs = self._rows(table)
            return {k: _copy(docs[k]) for k in keys if k in docs}

    def events_after(self, position: int, limit: int) -> list[Document]:
        with self.lock:
            self._refuse_if_closed()
            return [_copy(d) for d in self.events[position : position + limit]]

    def events_head(self) -> int:
        with self.lock:
            self._refuse_if_closed()
            return len(self.events)


class MemoryUnitOfWork(StoreUnitOfWork[MemoryStore]):
    """A unit of work on the in-memory store."""


def _keep_natural_keys(write: Write, current: Document) -> None:
    doc = write.document or {}
    for fields in TABLES[write.table].uniques:
        changed = [f for f in fields if doc.get(f) != current.get(f)]
        if changed:
            raise InvalidRecord(
                f"{write.table} {write.key!r} refused: {changed[0]} is part of a natural key,"
                " fixed when the record was created"
            )
