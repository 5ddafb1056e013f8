"""Back doors: read what a store really holds, without going through a unit of work.

The contract suite compares these snapshots with what it expects, so a unit of work can
never vouch for itself. A snapshot maps table -> record key -> stored document, for every
table in `ports.storage.TABLES`; events are keyed by their event id and carry `position`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from ports.storage import EVENT_TABLE, TABLES, Document

Snapshot = dict[str, dict[str, Document]]


def copy_document(doc: Document) -> Document:
    """A copy no later write can change: documents hold scalars and lists of scalars only."""
    return {k: list(v) if isinstance(v, list) else v for k, v in doc.items()}


def copy_snapshot(snapshot: Snapshot) -> Snapshot:
    return {t: {k: copy_document(d) for k, d in docs.items()} for t, docs in snapshot.items()}


class Backdoor(Protocol):
    def snapshot(self) -> Snapshot: ...


class _MemoryLike(Protocol):
    # Structural, so this package needs no adapter import (adapters stay independent).
    @property
    def tables(self) -> Mapping[str, Mapping[str, Document]]: ...
    @property
    def events(self) -> list[Document]: ...


class _Dumps(Protocol):
    def dump(self, table: str) -> dict[str, Document]: ...


class MemoryBackdoor:
    """Reads `MemoryStore.tables` and `MemoryStore.events` directly."""

    def __init__(self, store: _MemoryLike) -> None:
        self._store = store

    def snapshot(self) -> Snapshot:
        out: Snapshot = {
            name: {key: copy_document(doc) for key, doc in self._store.tables.get(name, {}).items()}
            for name in TABLES
        }
        for doc in self._store.events:
            out[EVENT_TABLE][doc["event_id"]] = copy_document(doc)
        return out


class SurrealBackdoor:
    """Reads raw rows with `SurrealStore.dump`, one table at a time."""

    def __init__(self, store: _Dumps) -> None:
        self._store = store

    def snapshot(self) -> Snapshot:
        return {name: self._store.dump(name) for name in TABLES}
