"""The port's own error types: adapters translate every storage failure into one of these."""

from __future__ import annotations

from typing import Any

from domain.model.errors import ECHOED, UnknownReference, reduced, shown


class PortError(Exception):
    """Base of every error a unit of work or repository raises."""

    def __reduce__(self) -> tuple[Any, ...]:
        return reduced(self)


class ConcurrencyConflict(PortError):
    """A record changed since it was read (or a concurrent writer won); nothing was written."""

    def __init__(self, table: str, key: str, detail: str = "") -> None:
        super().__init__(
            f"concurrency conflict on {table} {key!r}" + (f": {detail}" if detail else "")
        )
        self.table = table
        self.key = key


class DuplicateRecord(PortError):
    """Creating a record whose id, or unique field, already exists; nothing was written."""

    def __init__(self, table: str, key: str, detail: str = "") -> None:
        super().__init__(f"duplicate {table} {key!r}" + (f": {detail}" if detail else ""))
        self.table = table
        self.key = key


class RecordNotFound(PortError):
    def __init__(self, table: str, key: str) -> None:
        super().__init__(f"{table} {shown(key, ECHOED)} not found")
        self.table = table
        self.key = key


class ExecutionNotFound(RecordNotFound, UnknownReference):
    """No execution of that id in the caller's tenant (another tenant's reads as none): a
    refusal of what was asked, as an `UnknownReference` (a `DomainError`), and the
    `RecordNotFound` it always was."""

    def __init__(self, execution_id: str, why: str = "") -> None:
        # Both bases' words, and why, when there is more to say than that.
        shown_id = shown(execution_id, ECHOED)  # a caller's id, echoed cut
        Exception.__init__(self, f"execution {shown_id} not found" + (why and f": {why}"))
        self.table = self.kind = "execution"
        self.key = self.ref = self.execution_id = execution_id


class InvalidRecord(PortError):
    """The store refused a value (type, assertion, encoding); nothing was written."""


class CorruptRecord(PortError):
    """A stored record cannot be read back as what it should be: damaged or edited by hand.

    `entry`: for an audit entry, its place in its trail (1 for the first), so a report of
    the trail names the entry, not the trail's start."""

    def __init__(self, message: str, *, entry: int | None = None) -> None:
        super().__init__(message)
        self.entry = entry


class StorageUnavailable(PortError):
    """The store could not be reached or refused to work; nothing was written."""


class StoreInUse(StorageUnavailable):
    """Another process holds the store (an embedded one is one process's at a time): the
    same work can be tried again once that process is done; nothing was written."""


class CommitOutcomeUnknown(PortError):
    """The commit may or may not have been applied: resolve by re-reading, never blind retry."""


class UnitOfWorkClosed(PortError):
    """The unit of work was already committed or rolled back."""


class UnitOfWorkEntered(PortError):
    """A unit of work entered again inside its own `with` block: the inner block's end
    would discard the outer block's writes."""


class UnitOfWorkLent(PortError):
    """The unit of work is lent (to a workflow step): it stages and reads, and only its
    lender commits or rolls it back."""


class InjectedFault(PortError):
    """Raised by the fault-injecting adapter at a planned position; nothing was written."""
