"""The SurrealDB adapter: embedded (`mem://`, `surrealkv://`) or remote (`ws://`, `wss://`)."""

from adapters.surrealdb.store import SurrealConfig, SurrealStore, SurrealUnitOfWork

__all__ = ["SurrealConfig", "SurrealStore", "SurrealUnitOfWork"]
