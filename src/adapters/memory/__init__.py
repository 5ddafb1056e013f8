"""The in-memory adapter: a first-class store with the same semantics as SurrealDB."""

from adapters.memory.store import MemoryStore, MemoryUnitOfWork

__all__ = ["MemoryStore", "MemoryUnitOfWork"]
