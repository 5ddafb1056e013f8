"""The unit-of-work port: explicit commit, discard by default, all-or-nothing.

    with uow_factory() as uow:
        uow.sources.add(source)
        uow.commit()

Leaving the block without commit(), or through an exception, discards every staged write.
After commit or rollback the unit is closed. Reads see the unit's own staged writes; other
units see nothing until commit. Every versioned record read is checked again at commit.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar, cast

from domain.model.errors import shown
from domain.model.seal import AuditKey
from domain.model.validation import plain
from ports import fields
from ports.errors import (
    ConcurrencyConflict,
    DuplicateRecord,
    InvalidRecord,
    RecordNotFound,
    UnitOfWorkClosed,
    UnitOfWorkEntered,
    UnitOfWorkLent,
)
from ports.repositories import (
    Analyses,
    AuditTrail,
    Capsules,
    Decisions,
    EventLog,
    EvidenceManifests,
    Executions,
    KnowledgeSources,
)
from ports.storage import (
    EVENT_TABLE,
    MAX_LISTED,
    MAX_POSITION,
    TABLES,
    AnyOf,
    Batch,
    CommitReceipt,
    Document,
    Op,
    Range,
    Write,
    count,
    sort_key,
)

Key = tuple[str, str]


class UnitOfWork(abc.ABC):
    def __init__(self) -> None:
        self._writes: list[Write] = []
        self._pending: dict[Key, Write] = {}
        # Appended events are not readable before commit (their position is not known yet),
        # but a second append of one id is still a duplicate, refused as it is staged.
        self._appended: set[str] = set()
        self._read_versions: dict[Key, int] = {}
        self._closed = False
        self._depth = 0  # `with` blocks open on it
        self._borrower: str | None = None
        self._borrower_tenant: str | None = None
        self._refused: str | None = None
        self.receipt: CommitReceipt | None = None
        # Seals each execution saved (domain.model.seal); None: executions go unsealed.
        self.audit_key: AuditKey | None = None
        self.sources = KnowledgeSources(self)
        self.analyses = Analyses(self)
        self.capsules = Capsules(self)
        self.evidence = EvidenceManifests(self)
        self.decisions = Decisions(self)
        self.events = EventLog(self)
        self.executions = Executions(self)
        self.audit = AuditTrail(self)

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self._ensure_open()
        if self._depth and self._borrower is None:  # (a step's own block is the borrower's)
            raise UnitOfWorkEntered(
                "this unit of work is already in a `with` block: the inner block's end would"
                " roll back the outer one's writes; use the unit without entering it again"
            )
        self._depth += 1
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._depth = max(self._depth - 1, 0)
        if self._closed:
            return
        if self._borrower is None:
            self.rollback()
        elif exc_type is not None:
            # A borrower's block ends, not the unit; but one left through an error meant its
            # writes discarded, which only failing the borrower's attempt does.
            self._refused = (
                f"{self._borrower} left a block of its unit of work through an error"
                f" ({exc_type.__name__}): its writes go with its attempt"
            )

    def commit(self) -> CommitReceipt:
        self._ensure_open()
        self._ensure_held("commit")
        batch = self._batch()
        try:
            self.receipt = self._apply(batch) if batch.writes else CommitReceipt()
        except RecordNotFound as gone:
            if (gone.table, gone.key) in self._read_versions:  # (kept until the unit ends)
                # Read by this unit, deleted by another before it committed: a race lost, as
                # for a version changed (the orchestrator retries those), not a bad request.
                raise ConcurrencyConflict(
                    gone.table, gone.key, "deleted since it was read"
                ) from None
            raise
        finally:
            self._close()
        return self.receipt

    def rollback(self) -> None:
        if not self._closed:
            self._ensure_held("roll back")
            self._close()

    def lend(self, borrower: str | None, *, tenant: str | None = None) -> str | None:
        """Lend the unit to `borrower` (a workflow step), or take it back with None. A
        borrower stages and reads; committing or rolling back is refused
        (`UnitOfWorkLent`), before anything is written: the lender commits what it staged
        together with its own writes, or discards it all. Lent for a `tenant`, a write of
        another tenant's record is refused too. Taking it back returns what the borrower was
        refused, if anything, even if it caught the error and went on."""
        refused, self._refused = self._refused, None
        self._borrower = borrower
        self._borrower_tenant = tenant if borrower is not None else None
        return refused

    def refuse_other_tenant(self, tenant: str, what: str) -> None:
        """Refuse work done through this unit for another `tenant` than the one it is lent
        for (a step's), as a write of that tenant's record is refused (`InvalidRecord`); `what`
        says what it was. Nothing when the unit is not lent for a tenant."""
        wanted = self._borrower_tenant
        if wanted is not None and tenant != wanted:
            self._refused = (
                f"{self._borrower} of tenant {shown(wanted)} may not {what} of tenant"
                f" {shown(tenant)}"
            )
            raise InvalidRecord(self._refused)

    def _refuse_other_tenants(self, write: Write) -> None:
        """A step writes as its execution's tenant: a record of another tenant, as given or
        as stored (an update, a delete), is refused, as a commit of its own is."""
        wanted = self._borrower_tenant
        tenants = [write.document.get("tenant")] if write.document is not None else []
        if write.op in (Op.UPDATE, Op.DELETE):  # (a read more: steps rarely change records)
            stored = self.get(write.table, write.key)
            tenants += [stored.get("tenant")] if stored is not None else []
        # (A record without one is refused by the schema, as it would be unlent.)
        others = [t for t in tenants if t is not None and t != wanted]  # (plain text by now)
        if others:
            self.refuse_other_tenant(others[0], f"write {_a(write.table)} {write.table} record")

    def _ensure_held(self, what: str) -> None:
        if self._borrower is not None:
            self._refused = (
                f"{self._borrower} may not {what} its unit of work: it stages, and whoever"
                " lent it the unit commits (the orchestrator commits a step's writes together"
                " with its checkpoint)"
            )
            raise UnitOfWorkLent(self._refused)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def staged(self) -> tuple[Write, ...]:
        return tuple(self._writes)

    def _batch(self) -> Batch:
        written = {(w.table, w.key) for w in self._writes}
        checks = [
            Write(Op.CHECK, table, key, expected_version=version)
            for (table, key), version in self._read_versions.items()
            if (table, key) not in written
        ]
        # Deletes first: a record deleted and created again in one unit, or a unique value
        # its holder's deletion frees, is then the same on every adapter whatever the order
        # the unit staged them in (SurrealDB runs the batch in order).
        writes = sorted(self._writes, key=lambda w: w.op is not Op.DELETE)
        return Batch((*checks, *writes))

    def _close(self) -> None:
        self._closed = True
        self._writes.clear()
        self._pending.clear()
        self._appended.clear()
        self._release()

    def _ensure_open(self) -> None:
        if self._closed:
            raise UnitOfWorkClosed("this unit of work was already committed or rolled back")

    # -- primitives the repositories use ---------------------------------------------------

    def get(self, table: str, key: str) -> Document | None:
        self._ensure_open()
        _known(table)
        if not _valid_key(key):  # no such key could have been stored: not found, everywhere
            return None
        key = plain(key)
        pending = self._pending.get((table, key))
        if pending is not None:
            return None if pending.op is Op.DELETE else _own(pending.document or {})
        document = self._load(table, key)
        self._note_read(table, key, document)
        return document

    def get_many(
        self, table: str, keys: Iterable[str], *, fresh: bool = False
    ) -> dict[str, Document]:
        """Several records of one table in one read; missing keys are simply absent.

        `fresh` reads storage itself, past any cache of records that never change
        legitimately: for verification, which looks for changes made behind our back.
        """
        self._ensure_open()
        _known(table)
        if isinstance(keys, str | bytes) or not isinstance(keys, Iterable):  # str: its letters
            raise ValueError(f"keys must be a list of keys, got {type(keys).__name__}")
        found: dict[str, Document] = {}
        to_load = []
        for key in dict.fromkeys(plain(k) for k in keys if _valid_key(k)):
            pending = self._pending.get((table, key))
            if pending is None:
                to_load.append(key)
            elif pending.op is not Op.DELETE:
                found[key] = _own(pending.document or {})
        for key, document in self._load_many(table, to_load, fresh=fresh).items():
            self._note_read(table, key, document)
            found[key] = document
        return found

    def _note_read(self, table: str, key: str, document: Document | None) -> None:
        # Immutable records cannot change after commit: checking them again would be waste.
        if document is not None and "version" in document and not TABLES[table].immutable:
            self._read_versions.setdefault((table, key), document["version"])

    def select(
        self,
        table: str,
        where: Mapping[str, Any],
        *,
        order_by: str | None = None,
        descending: bool = False,
        limit: int | None = None,
    ) -> list[tuple[str, Document]]:
        """Equality filter over stored and staged records, staged ones taking precedence.

        A value no record can hold (text with NUL or a lone surrogate) matches nothing, in
        every adapter; a limit beyond what any store lists at once means no limit."""
        self._ensure_open()
        _known(table)
        if limit is not None:
            limit = min(count("limit", limit, least=0), MAX_LISTED)
        if not isinstance(where, Mapping):
            raise ValueError(f"where must be a mapping of field to value, got {where!r}")
        if order_by is not None and order_by not in fields.FIELDS[table]:
            raise InvalidRecord(f"{table}: no field {order_by!r} to order by")
        if not isinstance(descending, bool):
            raise ValueError(f"descending must be True or False, got {shown(descending)}")
        matchable = _matchable(table, where)
        if matchable is None:
            return []
        where = matchable
        mine = {k: w for (t, k), w in self._pending.items() if t == table}
        stored_limit = None if limit is None else min(limit + len(mine), MAX_LISTED)
        rows = {
            key: doc
            for key, doc in self._query(table, where, order_by, descending, stored_limit)
            if key not in mine
        }
        for key, write in mine.items():
            doc = write.document
            if (
                write.op is not Op.DELETE
                and doc
                and all(_match(doc.get(f), v) for f, v in where.items())
            ):
                rows[key] = _own(doc)
        result = sorted(rows.items())
        if order_by is not None:
            result.sort(key=lambda kv: sort_key(kv[1].get(order_by)))
        if descending:  # by key alone without `order_by`
            result.reverse()
        return result if limit is None else result[:limit]

    def count(self, table: str, where: Mapping[str, Any]) -> int:
        """How many records `select(table, where)` would list, without reading them out."""
        self._ensure_open()
        _known(table)
        if not isinstance(where, Mapping):
            raise ValueError(f"where must be a mapping of field to value, got {where!r}")
        matchable = _matchable(table, where)
        if matchable is None:
            return 0
        if any(t == table for t, _ in self._pending):  # its own writes count: as select sees
            return len(self.select(table, where))
        return self._count(table, matchable)

    def events_after(self, position: int, limit: int) -> list[Document]:
        self._ensure_open()
        position, limit = count("position", position), count("limit", limit, least=1)
        if position >= MAX_POSITION:  # past any position an event can have
            return []
        return self._events_after(position, min(limit, MAX_LISTED, MAX_POSITION - position))

    def events_head(self) -> int:
        """The position of the last event committed (0 before the first)."""
        self._ensure_open()
        return self._events_head()

    def stage(self, write: Write) -> None:
        self._ensure_open()
        if write.table not in TABLES:
            raise InvalidRecord(f"unknown table {write.table!r}")
        if (write.table == EVENT_TABLE) != (write.op is Op.APPEND):
            # The log's positions are the adapter's to assign, once: an event is appended
            # (`uow.events.append`), never created, updated or deleted.
            raise InvalidRecord(
                f"{write.op.value} on {write.table} refused: events are appended, and only"
                " events are (the event log is append-only)"
            )
        if write.op in (Op.UPDATE, Op.DELETE) and TABLES[write.table].immutable:
            # Adapters cache immutable records and skip their version checks: keep it true.
            raise InvalidRecord(f"{write.table} records are immutable once created")
        if self._borrower is not None and write.table in _LENDERS_OWN:
            # A step deleting its own execution left it running under a lease, every retry
            # failing with "not found": executions and their trails are the lender's. Kept
            # as refused, as a commit is: the attempt fails even if the step goes on.
            self._refused = f"{self._borrower} may not write {write.table} records"
            raise InvalidRecord(f"{self._refused}: the orchestrator keeps them")
        if type(write.key) is not str and isinstance(write.key, str):  # stored as its text
            write = Write(
                write.op, write.table, plain(write.key), write.document, write.expected_version
            )
        if write.document is not None and type(write.document) is not dict:
            # A mapping of another kind is stored as the items it gives: checked as them too.
            document = dict(write.document.items())
            write = Write(write.op, write.table, write.key, document, write.expected_version)
        if write.document is not None and _checked(write.table, write.key, write.document):
            # Stored as the same instant in UTC: an offset with seconds in it (historical zones
            # have them) is one SurrealDB cannot even parse. Text as plain text: SurrealDB
            # keeps no subclass, and the in-memory adapter must not keep one either (its own
            # __eq__ would decide what a filter matches).
            try:
                as_stored = {k: _plain(v) for k, v in write.document.items()}
            except OverflowError:
                raise InvalidRecord(
                    f"{write.table} {write.key!r}: an instant is past the ends of time in UTC"
                ) from None
            write = Write(write.op, write.table, write.key, as_stored, write.expected_version)
        if self._borrower_tenant is not None and "tenant" in fields.FIELDS[write.table]:
            self._refuse_other_tenants(write)  # on the values as they will be stored
        key = (write.table, write.key)
        earlier = self._pending.get(key)
        if (write.op is Op.APPEND and write.key in self._appended) or (
            write.op is Op.CREATE and earlier is not None and earlier.op is not Op.DELETE
        ):
            raise DuplicateRecord(write.table, write.key, "already staged in this unit of work")
        replaced = None
        if write.op in (Op.UPDATE, Op.DELETE) and earlier is not None:
            if earlier.op is Op.DELETE:
                raise RecordNotFound(write.table, write.key)
            replaced = earlier
            if earlier.op is Op.CREATE:
                # Updating a record created in this unit folds into the create: one write.
                if write.op is Op.DELETE:
                    self._writes.remove(earlier)
                    # Made again after the unit deleted the stored one: that deletion stands.
                    deleted = [w for w in self._writes if (w.table, w.key) == key]
                    if deleted:
                        self._pending[key] = deleted[-1]
                    else:
                        del self._pending[key]
                    return
                write = Write(Op.CREATE, write.table, write.key, write.document)
            else:
                write = Write(
                    write.op, write.table, write.key, write.document, earlier.expected_version
                )
        # The hook may refuse the write (fault injection): what is staged stays as it was.
        self._before_stage(write)
        if replaced is not None:
            self._writes.remove(replaced)
        self._writes.append(write)
        if write.op is Op.APPEND:
            self._appended.add(write.key)
        else:
            self._pending[key] = write

    # -- adapter hooks ---------------------------------------------------------------------

    def _before_stage(self, write: Write) -> None:
        """Hook for wrappers (fault injection); the default does nothing."""

    def _release(self) -> None:
        """Hook for adapters holding per-unit resources."""

    @abc.abstractmethod
    def _load(self, table: str, key: str) -> Document | None: ...

    def _load_many(
        self, table: str, keys: list[str], *, fresh: bool = False
    ) -> dict[str, Document]:
        """Adapters with a cheaper bulk read, or a cache, override this."""
        return {k: d for k in keys if (d := self._load(table, k)) is not None}

    @abc.abstractmethod
    def _query(
        self,
        table: str,
        where: Mapping[str, Any],
        order_by: str | None,
        descending: bool,
        limit: int | None,
    ) -> Iterable[tuple[str, Document]]: ...

    def _count(self, table: str, where: Mapping[str, Any]) -> int:
        """Adapters with a count that reads nothing out override this."""
        return sum(1 for _ in self._query(table, where, None, False, None))

    @abc.abstractmethod
    def _events_after(self, position: int, limit: int) -> list[Document]: ...

    @abc.abstractmethod
    def _events_head(self) -> int: ...

    @abc.abstractmethod
    def _apply(self, batch: Batch) -> CommitReceipt:
        """Apply every write or none; raise only port errors."""


UnitOfWorkFactory = Callable[[], UnitOfWork]


class Store(Protocol):
    """Committed state an adapter keeps; the unit of work above it does the staging. It may
    also count what `query` would list, `count(table, where) -> int`, without reading it out:
    one without is counted by listing."""

    def load(self, table: str, key: str) -> Document | None: ...

    def load_many(
        self, table: str, keys: list[str], *, fresh: bool = False
    ) -> dict[str, Document]: ...

    def query(
        self,
        table: str,
        where: Mapping[str, Any],
        order_by: str | None,
        descending: bool,
        limit: int | None,
    ) -> Iterable[tuple[str, Document]]: ...

    def events_after(self, position: int, limit: int) -> list[Document]: ...

    def events_head(self) -> int: ...

    def apply(self, batch: Batch) -> CommitReceipt: ...


StoreT = TypeVar("StoreT", bound=Store)


class StoreUnitOfWork(UnitOfWork, Generic[StoreT]):
    """The usual adapter shape: a unit of work over one store object."""

    def __init__(self, store: StoreT) -> None:
        super().__init__()
        self._store = store
        # A store holding an audit key (not part of the Store protocol: adapters written
        # before seals have none) seals every execution written through its units.
        self.audit_key = getattr(store, "audit_key", None)

    def _load(self, table: str, key: str) -> Document | None:
        return self._store.load(table, key)

    def _load_many(
        self, table: str, keys: list[str], *, fresh: bool = False
    ) -> dict[str, Document]:
        return self._store.load_many(table, keys, fresh=fresh)

    def _query(
        self,
        table: str,
        where: Mapping[str, Any],
        order_by: str | None,
        descending: bool,
        limit: int | None,
    ) -> Iterable[tuple[str, Document]]:
        return self._store.query(table, where, order_by, descending, limit)

    def _count(self, table: str, where: Mapping[str, Any]) -> int:
        # Optional in the Store protocol: a store written before counts lists what it counts.
        counted = getattr(self._store, "count", None)
        return super()._count(table, where) if counted is None else int(counted(table, where))

    def _events_after(self, position: int, limit: int) -> list[Document]:
        return self._store.events_after(position, limit)

    def _events_head(self) -> int:
        return self._store.events_head()

    def _apply(self, batch: Batch) -> CommitReceipt:
        return self._store.apply(batch)


def _matchable(table: str, where: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """`where` as stores compare it, or None if no record can match: instants in UTC, and
    what no stored value can be (text with NUL, an instant or integer past the ends of its
    kind) matches nothing, or bounds nothing. A field the table does not have, or a value
    of another kind than its field's, is refused alike by every adapter."""
    out: dict[str, Any] = {}
    known = fields.FIELDS[table]
    for name, wanted in where.items():
        if name not in known:
            raise InvalidRecord(f"{table}: no field {name!r} to select by")
        kind = known[name].kind
        if type(wanted) is str and kind in _TEXT:  # the common cases, settled at once
            if not _storable(wanted):
                return None
            out[name] = wanted
            continue
        if type(wanted) is AnyOf and kind in _TEXT and all(type(v) is str for v in wanted.values):
            kept = tuple(v for v in wanted.values if _storable(cast(str, v)))
            if not kept:
                return None
            out[name] = wanted if len(kept) == len(wanted.values) else AnyOf(kept)
            continue
        if not isinstance(wanted, _FILTERABLE):
            raise ValueError(
                f"{table}.{name}: a filter compares text, numbers, bools, instants, None,"
                f" AnyOf or Range, got {type(wanted).__name__}"
            )
        _comparable(table, name, kind, wanted)
        if isinstance(wanted, AnyOf):
            kept = tuple(
                form
                for form in map(_stored_form, wanted.values)
                if form is not _EARLY and form is not _LATE
            )
            if not kept:
                return None
            wanted = AnyOf(kept)
        elif isinstance(wanted, Range):
            if any(isinstance(b, str) and not _storable(b) for b in (wanted.above, wanted.below)):
                raise ValueError(
                    f"{table}.{name}: a range bound no text can be (NUL, lone surrogate)"
                )
            above, below = _stored_form(wanted.above), _stored_form(wanted.below)
            if above is _LATE or below is _EARLY:
                return None  # nothing stored is above the last of its kind, nor below the first
            wanted = Range(None if above is _EARLY else above, None if below is _LATE else below)
        else:
            wanted = _stored_form(wanted)
            if wanted is _EARLY or wanted is _LATE:
                return None
        out[name] = wanted
    return out


_FILTERABLE = (str, int, float, datetime, type(None), AnyOf, Range)
_TEXT = frozenset((fields.Kind.STRING, fields.Kind.OPTIONAL_STRING))
# Past every value a record can hold of its kind, or before every one.
_LATE, _EARLY = object(), object()


def _comparable(table: str, name: str, kind: fields.Kind, wanted: object) -> None:
    """Refuse a filter value of another kind than its field's: stores would compare it
    differently (True against 1, a number against text), or not at all."""
    if isinstance(wanted, AnyOf):
        values: tuple[object, ...] = wanted.values
    elif isinstance(wanted, Range):
        values = (wanted.above, wanted.below)
    else:
        values = (wanted,)
    for value in values:
        if value is not None and (kind is fields.Kind.STRINGS or not kind.admits(value)):
            raise ValueError(
                f"{table}.{name}: a filter on this {kind.value} field cannot compare"
                f" {value!r} ({type(value).__name__})"
            )


def _stored_form(value: Any) -> Any:
    """A filter value as a stored one compares with it: an instant in UTC (SurrealDB cannot
    even parse an offset with seconds in it); `_LATE` or `_EARLY` for an instant whose UTC
    reading, or an integer, is past the ends of what a record holds; `_EARLY` also for text
    no record holds (it matches nothing)."""
    if isinstance(value, str):
        return plain(value) if _storable(value) else _EARLY
    if isinstance(value, datetime):
        try:
            return _utc(value)
        except OverflowError:  # behind UTC near the last instant, or ahead near the first
            return _LATE if value.utcoffset() < timedelta(0) else _EARLY  # type: ignore[operator]
    if isinstance(value, int) and not isinstance(value, bool):
        return _LATE if value >= 2**63 else _EARLY if value < -(2**63) else value
    return value


# What a borrower (a workflow step) may read but never write.
_LENDERS_OWN = frozenset({"execution", "execution_input", "audit"})


def _own(doc: Document) -> Document:
    """A staged document as a reader may keep it: its lists too are the reader's, or a
    change to one would reach the commit past the checks made when it was staged."""
    return {k: list(v) if isinstance(v, list) else v for k, v in doc.items()}


def _a(noun: str) -> str:
    return "an" if noun[:1] in "aeiou" else "a"


def _known(table: str) -> None:
    if not isinstance(table, str) or table not in TABLES:
        raise InvalidRecord(f"unknown table {shown(table)}")


def _valid_key(key: object) -> bool:
    return isinstance(key, str) and bool(key) and _storable(key)


def _match(value: object, wanted: object) -> bool:
    return wanted.matches(value) if isinstance(wanted, AnyOf | Range) else value == wanted


def _checked(table: str, key: str, document: Document) -> bool:
    """Refuse what no store can keep faithfully, before anything is sent anywhere; True if a
    value in it is to be made plain (`_plain`): a datetime off UTC, text of a str subclass."""
    if not isinstance(key, str) or not key or not _storable(key):
        raise InvalidRecord(f"{table}: record key must be non-empty Unicode text without NUL")
    known = fields.FIELDS[table]
    texts, instants = _TEXT_FIELDS[table], _INSTANT_FIELDS[table]
    replain = False
    for name, value in document.items():
        if name not in known:
            raise InvalidRecord(f"{table} {key!r}: field `{name}` is not part of the schema")
        if type(value) is str and name in texts:  # most fields: settled before the rest
            if ("\x00" in value or not value.isascii()) and not _storable(value):
                raise InvalidRecord(
                    f"{table} {key!r}: field {name} contains NUL or a lone surrogate"
                )
            continue
        if isinstance(value, datetime) and name in instants:
            if value.tzinfo is None:  # names no instant; SurrealDB would take it for UTC
                raise InvalidRecord(f"{table} {key!r}: field {name} is a datetime without a zone")
            replain = replain or _off_utc(value)
            continue
        # What SurrealDB would hand back as another type, or refuse, no adapter keeps.
        if isinstance(value, tuple):
            raise InvalidRecord(f"{table} {key!r}: field {name} is a tuple; give a list")
        kind = known[name].kind
        if type(value) not in _EXACT[kind] and not kind.admits(value):
            # Refused here, as the memory adapter refuses it: SurrealDB would store 1.0, a
            # Decimal or a UUID as what its schema's type makes of them, and a value it has
            # no encoding for would fail as the commit is sent, its outcome left unknown.
            raise InvalidRecord(
                f"{table} {key!r}: field `{name}` must be {kind.value}, got {type(value).__name__}"
            )
        if type(value) is int and not -(2**63) <= value < 2**63:
            raise InvalidRecord(f"{table} {key!r}: field {name} does not fit in 64 bits")
        for item in value if isinstance(value, list) else (value,):
            if not isinstance(item, str):
                if item is value:
                    continue
                raise InvalidRecord(
                    f"{table} {key!r}: field `{name}` must be {kind.value}, holds a"
                    f" {type(item).__name__}"
                )
            # (Text of a str subclass comes here too.) ASCII text without NUL, the common
            # case, is settled without a call.
            if ("\x00" in item or not item.isascii()) and not _storable(item):
                raise InvalidRecord(
                    f"{table} {key!r}: field {name} contains NUL or a lone surrogate"
                )
            replain = replain or type(item) is not str
    return replain


# The exact types each kind takes at once; anything else is asked of `Kind.admits` (a str
# subclass, say), so that the common case costs a set look-up.
_EXACT: dict[fields.Kind, frozenset[type]] = {
    fields.Kind.STRING: frozenset({str}),
    fields.Kind.INT: frozenset({int}),
    fields.Kind.BOOL: frozenset({bool}),
    fields.Kind.DATETIME: frozenset({datetime}),
    fields.Kind.STRINGS: frozenset({list}),
    fields.Kind.OPTIONAL_STRING: frozenset({str, type(None)}),
    fields.Kind.OPTIONAL_DATETIME: frozenset({datetime, type(None)}),
}


# The fields whose kind takes text, or an instant: a str or datetime anywhere else is refused.
_TEXT_FIELDS = {
    table: frozenset(n for n, f in specs.items() if f.kind in _TEXT)
    for table, specs in fields.FIELDS.items()
}
_INSTANT_FIELDS = {
    table: frozenset(
        n
        for n, f in specs.items()
        if f.kind in (fields.Kind.DATETIME, fields.Kind.OPTIONAL_DATETIME)
    )
    for table, specs in fields.FIELDS.items()
}


def _off_utc(value: datetime) -> bool:
    # Any zone but UTC itself, even at offset zero (GMT, London in winter): SurrealDB hands
    # every instant back in UTC, and the in-memory adapter must do the same.
    return value.tzinfo is not None and value.tzinfo is not UTC


def _utc(value: object) -> object:
    return value.astimezone(UTC) if isinstance(value, datetime) and _off_utc(value) else value


def _plain(value: object) -> object:
    """A field's value as every store keeps it: instants in UTC, text as plain `str`."""
    if isinstance(value, str):
        return plain(value)
    if isinstance(value, list):
        return [plain(v) if isinstance(v, str) else v for v in value]
    return _utc(value)


def _storable(text: str) -> bool:
    if "\x00" in text:
        return False
    if text.isascii():  # the common case, checked without building a copy
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class WrappingUnitOfWork(UnitOfWork):
    """A unit of work that stages for itself and hands everything else to another unit:
    the base of wrappers (fault injection, probes) that intercept staging or the commit."""

    def __init__(self, inner: UnitOfWork) -> None:
        super().__init__()
        self._inner = inner
        self.audit_key = inner.audit_key

    def _before_stage(self, write: Write) -> None:
        self._inner._before_stage(write)

    def _load(self, table: str, key: str) -> Document | None:
        return self._inner._load(table, key)

    def _load_many(
        self, table: str, keys: list[str], *, fresh: bool = False
    ) -> dict[str, Document]:
        return self._inner._load_many(table, keys, fresh=fresh)

    def _query(
        self,
        table: str,
        where: Mapping[str, Any],
        order_by: str | None,
        descending: bool,
        limit: int | None,
    ) -> Iterable[tuple[str, Document]]:
        return self._inner._query(table, where, order_by, descending, limit)

    def _count(self, table: str, where: Mapping[str, Any]) -> int:
        return self._inner._count(table, where)

    def _events_after(self, position: int, limit: int) -> list[Document]:
        return self._inner._events_after(position, limit)

    def _events_head(self) -> int:
        return self._inner._events_head()

    def _apply(self, batch: Batch) -> CommitReceipt:
        return self._inner._apply(batch)

    def _release(self) -> None:
        self._inner.rollback()
