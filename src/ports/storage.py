"""What a unit of work hands an adapter: tables, documents and one atomic batch of writes.

Repositories (ports.repositories) turn domain objects into documents; adapters only ever see
documents, so each adapter implements five primitives instead of one class per repository.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from attrs import field, frozen

from domain.model.errors import shown

# A document is a flat mapping of field name to str, int, float, bool, datetime or a list of
# str. Absent means None. Nested structures travel as canonical JSON strings: SurrealDB drops
# NONE members of nested objects, so JSON is the only way they round-trip verbatim everywhere.
Document = dict[str, Any]
Scalar = str | int | float | bool | datetime


@frozen
class TableSpec:
    name: str
    # Natural keys: no two records share the values of one of these field sets, and a
    # record's values are fixed when it is created (an update that changes them is refused
    # with `InvalidRecord`), so adapters may index them by value once and for all.
    uniques: tuple[tuple[str, ...], ...] = ()
    lookups: tuple[tuple[str, ...], ...] = ()
    # Records never updated or deleted once committed: adapters may cache them by key.
    immutable: bool = False


def _several(values: object) -> tuple[Scalar, ...]:
    # Text is one value, not its letters (`value in "abc"` would match "ab").
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise ValueError(f"AnyOf takes a list or tuple of values, got {type(values).__name__}")
    return tuple(values)


@frozen
class AnyOf:
    """A `select` filter value matching any of several values (SQL `IN`)."""

    values: tuple[Scalar, ...] = field(converter=_several)

    def matches(self, value: object) -> bool:
        return value in self.values


Bound = int | float | str | datetime


@frozen
class Range:
    """A `select` filter value matching values strictly between `above` and `below`; a bound
    that is None does not limit."""

    above: Bound | None = None
    below: Bound | None = None

    def matches(self, value: object) -> bool:
        try:
            return (
                value is not None
                and (self.above is None or value > self.above)  # type: ignore[operator]
                and (self.below is None or value < self.below)  # type: ignore[operator]
            )
        except TypeError:  # a value of another kind (edited in storage) is not in range
            return False


Filter = AnyOf | Range


def sort_key(value: object) -> tuple[bool, str, Any]:
    """None first (SurrealDB sorts NONE below every value), then values of one kind in
    their order. A value of another kind (edited in storage: text where an instant
    belongs) sorts apart instead of failing the listing."""
    return (value is not None, type(value).__name__, value)


# Beyond these no store has anything to list (SurrealDB's LIMIT takes 32 bits, its integers
# 64): a larger limit is no limit, a larger position has no event after it.
MAX_LISTED = 2**32 - 1
MAX_POSITION = 2**63 - 1


def count(name: str, value: object, *, least: int = 0) -> int:
    """An integer argument of a read (a position, a limit): bools and other types refused."""
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {shown(value)}")
    return value


EVENT_TABLE = "event"

TABLES: Mapping[str, TableSpec] = {
    spec.name: spec
    for spec in (
        # One source per content at one address, one analysis per set of inputs: reused,
        # never stored twice, even when two workflows ingest the same document at once.
        TableSpec(
            "knowledge_source",
            uniques=(("tenant", "source_url", "content_digest"),),
            immutable=True,
        ),
        TableSpec("analysis", uniques=(("tenant", "inputs_digest"),), immutable=True),
        TableSpec(
            "capsule",
            uniques=(("tenant", "publication_id"),),
        ),
        TableSpec("evidence", lookups=(("tenant", "subject"),), immutable=True),
        TableSpec("decision", immutable=True),
        TableSpec(EVENT_TABLE, uniques=(("event_id",),)),
        TableSpec(
            "execution",
            uniques=(("tenant", "idempotency_key"),),
            # By state, workflow or time within one tenant (every listing, count and recovery
            # scan of the orchestrator and the CLI: the tenant first, or a small tenant's
            # reads every tenant's executions), and across tenants (a query naming none).
            lookups=(
                ("tenant", "state", "created_at"),
                ("tenant", "workflow_name", "created_at"),
                ("tenant", "created_at"),
                ("state", "created_at"),
                ("workflow_name", "created_at"),
                ("created_at",),
            ),
        ),
        TableSpec("audit", lookups=(("execution_id", "sequence"),)),
        # An execution's input, written once: the execution record changes at every step,
        # and rewriting documents of up to a million characters each time would multiply
        # what every step writes.
        TableSpec("execution_input", immutable=True),
    )
}


class Op(enum.Enum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    CHECK = "check"  # a record read but not written must still be at the version read
    APPEND = "append"  # an event; the adapter assigns its position at commit
    ABORT = "abort"  # planted by fault injection: the adapter must fail the whole batch here


@frozen
class Write:
    op: Op
    table: str
    key: str
    document: Document | None = None
    expected_version: int | None = None


@frozen
class Batch:
    writes: tuple[Write, ...]


@frozen
class CommitReceipt:
    event_positions: tuple[int, ...] = ()
