"""Compile a batch into one SurrealQL transaction and read its per-statement results back."""

from __future__ import annotations

import errno
import functools
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from attrs import frozen
from surrealdb import RecordID

from adapters.surrealdb.schema import COUNTER_TABLE, KEY_TABLE, KEYED, unique_index
from ports.errors import (
    CommitOutcomeUnknown,
    ConcurrencyConflict,
    CorruptRecord,
    DuplicateRecord,
    InjectedFault,
    InvalidRecord,
    PortError,
    RecordNotFound,
)
from ports.storage import EVENT_TABLE, TABLES, Batch, Op, Write

IDENT = re.compile(r"^[a-z_][a-z0-9_]*\Z")
EVENTS_COUNTER = RecordID(COUNTER_TABLE, "events")
COMMITTED_MARKER = RecordID(COUNTER_TABLE, "committed")
# Classified by the engine's own words where its messages begin, never by words anywhere in
# them: they quote the values and keys refused ("Found 'conflict' for field ..."), which are
# the caller's, and must not make a refused value read as a conflict or a duplicate.
_MARKER = re.compile(r"An error occurred: uow-(conflict|missing|abort):(\d+)")
_DUPLICATE = re.compile(
    r"Database record `.*` already exists|Database index `[^`]*` already contains .*", re.S
)
_RETRYABLE = (
    "Failed to commit transaction due to a read or write conflict",
    "Transaction conflict",
    "Transaction read conflict",
    "Transaction write conflict",
)
_SKIPPED = "The query was not executed due to a failed transaction"
_STORAGE_FAILED = ("Log error:", "IO error:")
# What to do when the machine refused the engine room (said as a commit fails, and as a
# store opens: store._REFUSED_BY_THE_MACHINE).
FILE_SIZE_LIMIT = "a file size limit was reached: raise it (ulimit -f)"
DISK_FULL = "the file system is full (or a disk quota was reached): free space"
_FULL = (errno.ENOSPC, errno.EDQUOT)
_WRAPPERS = (
    _SKIPPED,
    "Transaction failed and rolled back",
    "There was a problem with a datastore transaction",
    "Cannot COMMIT",
)


def ident(name: str) -> str:
    """Table and field names are code constants; refuse anything else before it nears a query."""
    if not IDENT.match(name):
        raise InvalidRecord(f"{name!r} is not a valid identifier")
    return name


@frozen
class Compiled:
    text: str
    params: dict[str, Any]
    # statement index (BEGIN/COMMIT excluded) -> index of the write it belongs to
    owners: tuple[int | None, ...]
    appends: int


# What the transaction text depends on: each write's operation and table, for an event its
# field names, and for a created record the natural keys it has (schema.KEYED). Services
# commit the same few shapes over and over, so the text (and the identifier checks in it) and
# the names of the parameters each write binds are worked out once per shape.
Shape = tuple[tuple[Op, str, tuple[str, ...], tuple[int, ...]], ...]


def compile_batch(batch: Batch, *, journal: bool = False) -> Compiled:
    """One transaction for the batch. With `journal`, its first write records how to undo the
    batch and its last marks it complete: see `repair`."""
    writes = batch.writes
    shape: Shape = tuple(
        (
            w.op,
            w.table,
            tuple(sorted(w.document)) if w.op is Op.APPEND and w.document else (),
            _keys_of(w),
        )
        for w in writes
    )
    text, owners, plan, appends = _text(shape, journal)
    params: dict[str, Any] = {}
    if journal or appends:
        params["k"], params["ctr"] = appends, EVENTS_COUNTER
    if journal:
        params["txn"], params["done"] = os.urandom(16).hex(), COMMITTED_MARKER
    for w, (record, document, version, keys) in zip(writes, plan, strict=True):
        if record:
            params[record] = RecordID(w.table, w.key)
        if document:
            params[document] = w.document
        if version:
            params[version] = w.expected_version
        for name, index, fields in keys:
            params[name] = key_record(index, fields, w.document or {})
    return Compiled(text, params, owners, appends)


def key_record(index: str, fields: tuple[str, ...], document: Mapping[str, Any]) -> RecordID:
    """The record holding a unique index's entry for `document` (see schema.KEYED)."""
    return RecordID(KEY_TABLE, [index, *(document[name] for name in fields)])


def _keys_of(write: Write) -> tuple[int, ...]:
    # A natural key with a field absent (an execution without an idempotency key) has no
    # entry to keep.
    if write.op is not Op.CREATE or write.table not in KEYED or not write.document:
        return ()
    doc = write.document
    return tuple(
        n
        for n, (_, fields) in enumerate(KEYED[write.table])
        if all(doc.get(name) is not None for name in fields)
    )


# Which parameters each write of a shape binds: its record, document and version names (empty
# when it binds none) and its key records (name, index, fields).
Plan = tuple[tuple[str, str, str, tuple[tuple[str, str, tuple[str, ...]], ...]], ...]


@functools.lru_cache(maxsize=256)
def _text(shape: Shape, journal: bool) -> tuple[str, tuple[int | None, ...], Plan, int]:
    plan: Plan = tuple(
        (
            "" if op is Op.ABORT else f"r{i}",
            f"d{i}" if op in (Op.CREATE, Op.UPDATE, Op.APPEND) else "",
            f"v{i}" if op in (Op.UPDATE, Op.DELETE, Op.CHECK) else "",
            tuple((f"k{i}_{n}", KEYED[table][n][0], KEYED[table][n][1]) for n in keys),
        )
        for i, (op, table, _, keys) in enumerate(shape)
    )
    lines: list[str] = []
    owners: list[int | None] = []
    appends = sum(op is Op.APPEND for op, _, _, _ in shape)
    if journal:
        lines.append(
            f"LET $base = (UPSERT ONLY $ctr SET n += $k, journal = {_journal(shape)}"
            " RETURN VALUE n) - $k;"
        )
        owners.append(None)
    elif appends:
        lines.append("LET $base = (UPSERT ONLY $ctr SET n += $k RETURN VALUE n) - $k;")
        owners.append(None)
    nth_append = 0
    for i, (op, table, names, keys) in enumerate(shape):
        r, d, v = f"$r{i}", f"$d{i}", f"$v{i}"
        ident(table)
        statements: list[str] = []
        if op is Op.CREATE:
            statements.append(f"CREATE {r} CONTENT {d} RETURN NONE;")
            # After the record, whose unique index refuses a duplicate; an upsert, so that a
            # key record left by a record deleted in storage is taken over, not a duplicate.
            statements += [f"UPSERT $k{i}_{n} SET ref = {r} RETURN NONE;" for n in keys]
        elif op is Op.UPDATE:
            statements.append(
                f"IF array::len((UPDATE {r} CONTENT {d} WHERE version = {v} RETURN id)) = 0"
                f" {{ {_refusal(r, i)} }};"
            )
        elif op is Op.DELETE and table in KEYED:
            # The key records go with the record, found from the values it held.
            g = f"$g{i}"
            statements.append(f"LET {g} = (DELETE {r} WHERE version = {v} RETURN BEFORE);")
            statements.append(f"IF array::len({g}) = 0 {{ {_refusal(r, i)} }};")
            for index, fields in KEYED[table]:
                values = ", ".join(f"{g}[0].{ident(name)}" for name in fields)
                statements.append(f"DELETE type::thing('{KEY_TABLE}', ['{index}', {values}]);")
        elif op is Op.DELETE:
            statements.append(
                f"IF array::len((DELETE {r} WHERE version = {v} RETURN BEFORE)) = 0"
                f" {{ {_refusal(r, i)} }};"
            )
        elif op is Op.CHECK:
            statements.append(
                f"IF (SELECT VALUE version FROM ONLY {r}) != {v} {{ THROW 'uow-conflict:{i}' }};"
            )
        elif op is Op.APPEND:
            # Fields set one by one, so that the position can be set beside them.
            nth_append += 1
            sets = ", ".join(f"{ident(name)} = {d}.{name}" for name in names)
            statements.append(
                f"CREATE {r} SET {sets}, position = $base + {nth_append} RETURN NONE;"
            )
        elif op is Op.ABORT:
            statements.append(f"THROW 'uow-abort:{i}';")
        lines += statements
        owners += [i] * len(statements)
    # The last statement reports the counter as this batch leaves it; with the journal, it is
    # also the last write, marking the journal complete.
    if journal:
        lines.append("UPSERT ONLY $done SET txn = $txn RETURN VALUE $base + $k;")
        owners.append(None)
    elif appends:
        lines.append("$base + $k;")
        owners.append(None)
    return _transaction(lines), tuple(owners), plan, appends


def _transaction(lines: list[str]) -> str:
    return "BEGIN TRANSACTION;\n" + "\n".join(lines) + "\nCOMMIT TRANSACTION;"


def _journal(shape: Shape) -> str:
    # What undoing the batch takes: the records it creates, and every record it changes or
    # deletes as it was just before (read inside the transaction, so never stale). Documents
    # it creates are not copied: undoing a creation needs only the record's id.
    created = [
        name
        for i, (op, _, _, keys) in enumerate(shape)
        if op in (Op.CREATE, Op.APPEND)
        for name in (f"$r{i}", *(f"$k{i}_{n}" for n in keys))
    ]
    before = [
        f"[$r{i}, (SELECT * FROM ONLY $r{i})]"
        for i, (op, _, _, _) in enumerate(shape)
        if op in (Op.UPDATE, Op.DELETE)
    ]
    # SET clauses apply in order: `n` here is the counter already advanced by this batch.
    return (
        f"{{ txn: $txn, base: n - $k, created: [{', '.join(created)}],"
        f" before: [{', '.join(before)}] }}"
    )


def event_positions(compiled: Compiled, rows: Sequence[dict[str, Any]]) -> tuple[int, ...]:
    if not compiled.appends:
        return ()
    last = int(rows[-1]["result"])
    return tuple(range(last - compiled.appends + 1, last + 1))


@frozen
class Repair:
    compiled: Compiled
    action: str  # "undone", or "re-applied" for the earlier journal format
    writes: int


def journal_problem(journal: Mapping[str, Any]) -> str | None:
    """What makes `journal` one govkernel never writes (edited in storage), or None: checked
    before a repair binds any of it, which would delete and re-create what it names."""

    def record(value: object) -> bool:
        return isinstance(value, RecordID) and value.table_name in _JOURNALED

    def count(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    if not isinstance(journal.get("txn"), str):
        return "`txn` is not text"
    if "writes" in journal:  # the earlier format
        writes = journal["writes"]
        if not count(journal.get("appends")):
            return "`appends` is not a count"
        if not isinstance(writes, list) or not all(
            isinstance(w, list)
            and len(w) == 3
            and isinstance(w[0], str)
            and record(w[1])
            and isinstance(w[2], dict | None if w[0] == "delete" else dict)
            for w in writes
        ):
            return "`writes` are not [operation, record, document] triples"
        return None
    if not count(journal.get("base")):
        return "`base` is not a count"
    created, before = journal.get("created"), journal.get("before")
    if not isinstance(created, list) or not all(record(r) for r in created):
        return "`created` is not a list of govkernel's records"
    if not isinstance(before, list) or not all(
        isinstance(b, list) and len(b) == 2 and record(b[0]) and isinstance(b[1], dict | None)
        for b in before
    ):
        return "`before` is not a list of [record, document] pairs"
    return None


_JOURNALED = frozenset(TABLES) | {KEY_TABLE}


def repair(journal: dict[str, Any], counter: int) -> Repair:
    """How to repair a journaled transaction whose completion marker is missing.

    The embedded engine can keep a prefix of a transaction torn at the tail of its log
    (tests/workflow/test_torn_log.py). The journal is the first key that transaction wrote, so
    it survives whenever anything else did. The repair undoes the whole transaction, whatever
    part of it survived: it was never acknowledged, so the state before it is the right one.
    Each record is deleted, and re-created as it was if it existed before, so index entries
    follow. The repair is itself prefix-safe and repeatable: it sets the event counter to an
    absolute value, keeps the journal, and marks it complete only at its end.
    """
    if "writes" in journal:  # the earlier format, from a store last written by an older govkernel
        return Repair(roll_forward(journal, counter), "re-applied", len(journal["writes"]))
    lines: list[str] = []
    params: dict[str, Any] = {
        "txn": journal["txn"],
        "done": COMMITTED_MARKER,
        "ctr": EVENTS_COUNTER,
        "base": int(journal["base"]),
    }
    for i, record in enumerate(journal["created"]):
        params[f"c{i}"] = record
        lines.append(f"DELETE $c{i};")
    for i, (record, document) in enumerate(journal["before"]):
        params[f"b{i}"] = record
        lines.append(f"DELETE $b{i};")
        if document is not None:
            params[f"d{i}"] = {f: v for f, v in document.items() if f != "id"}
            lines.append(f"CREATE $b{i} CONTENT $d{i} RETURN NONE;")
            # A record deleted by the torn transaction took its key records along.
            for n, (index, fields) in enumerate(KEYED.get(record.table_name, ())):
                if all(document.get(name) is not None for name in fields):
                    params[f"k{i}_{n}"] = key_record(index, fields, document)
                    lines.append(f"UPSERT $k{i}_{n} SET ref = $b{i} RETURN NONE;")
    lines.append("UPSERT $ctr SET n = $base RETURN NONE;")
    lines.append("UPSERT $done SET txn = $txn RETURN NONE;")
    compiled = Compiled(_transaction(lines), params, tuple(None for _ in lines), 0)
    return Repair(compiled, "undone", len(journal["created"]) + len(journal["before"]))


def roll_forward(journal: dict[str, Any], counter: int) -> Compiled:
    """Re-apply a torn transaction from the earlier journal format, which held every document
    it wrote (a store last written by an older govkernel). Deleting and re-creating each
    record restores the whole transaction, index entries included; repeatable, and marked
    complete at its end."""
    lines: list[str] = []
    params: dict[str, Any] = {"txn": journal["txn"], "done": COMMITTED_MARKER}
    position = counter - int(journal["appends"])
    for i, (op, record, document) in enumerate(journal["writes"]):
        params[f"r{i}"] = record
        lines.append(f"DELETE $r{i};")
        if op == "delete":
            continue
        doc = dict(document)
        if op == "append":
            position += 1
            doc["position"] = position
        params[f"d{i}"] = doc
        lines.append(f"CREATE $r{i} CONTENT $d{i} RETURN NONE;")
    lines.append("UPSERT $done SET txn = $txn RETURN NONE;")
    return Compiled(_transaction(lines), params, tuple(None for _ in lines), 0)


# What the engine says of a request it refused before running any of it.
UNRUN = ("Parse error", "Failed to decode CBOR request")


def rows_of(compiled: Compiled, response: dict[str, Any]) -> list[dict[str, Any]]:
    """The statements' results of a commit's reply. A reply that is an error, or not the
    results of those statements, says nothing of what the server did with the commit (an
    error in its reply, a reply garbled on the way): its outcome is unknown, and only a
    re-read can tell; but a request it could not parse ran nothing."""
    if "error" in response:
        said = _brief(_message(response["error"]))
        if said.startswith(UNRUN) or any(f": {m}" in said for m in UNRUN):
            raise InvalidRecord(f"query rejected: {said}")
        raise CommitOutcomeUnknown(f"commit outcome unknown: the server answered {said}")
    rows = response.get("result")
    if not isinstance(rows, list):
        raise CommitOutcomeUnknown("commit outcome unknown: its reply was not a query's results")
    statements = len(compiled.owners)
    if len(rows) == statements + 2:  # core 3 reports BEGIN and COMMIT as rows of their own
        rows = rows[1:-1]
    if len(rows) != statements:
        raise CommitOutcomeUnknown(
            f"commit outcome unknown: {statements} statement results expected, {len(rows)} came"
        )
    return rows


def failure(compiled: Compiled, batch: Batch, rows: Sequence[dict[str, Any]]) -> PortError | None:
    """The port error for the first statement that really failed, or None if all succeeded."""
    failed = [i for i, row in enumerate(rows) if row.get("status") != "OK"]
    if not failed:
        return None
    cause = next((i for i in failed if not _skipped(rows[i])), failed[0])
    message = str(rows[cause].get("result"))
    own = _unwrapped(message)
    marker = _MARKER.fullmatch(own)
    owner = int(marker.group(2)) if marker else compiled.owners[cause]
    write: Write | None = batch.writes[owner] if owner is not None else None
    table, key = (write.table, write.key) if write else ("?", "?")
    if marker and marker.group(1) == "abort":
        return InjectedFault(f"injected fault inside the transaction at write {owner}")
    if marker and marker.group(1) == "missing":
        return RecordNotFound(table, key)
    if marker:
        return ConcurrencyConflict(table, key, "version changed since it was read")
    if _DUPLICATE.fullmatch(own):
        detail = _unique_named(own)
        if table == EVENT_TABLE and detail == "unique position":
            # Positions come from the log's counter, in the same transaction: one taken
            # already is a counter set back in storage, which no retry mends.
            return CorruptRecord(
                "the event log's counter is behind its last event (a position it gave out is"
                " taken): changed in storage; set govkernel_counter:events to the last"
                " event's position"
            )
        return DuplicateRecord(table, key, detail)
    if own.startswith(_RETRYABLE):
        return ConcurrencyConflict(table, key, "concurrent transaction")
    if all(_skipped(rows[i]) for i in failed) or own.startswith(_STORAGE_FAILED):
        # No statement failed: the commit itself did (a full disk, an I/O error), or the
        # engine could not read or write its files as a statement ran (no descriptors
        # left): nothing about the record. Part of it may have reached the log, so only a
        # re-read can tell what stands.
        if f"(os error {errno.EFBIG})" in message:
            hint = f"; {FILE_SIZE_LIMIT}"
        elif any(f"(os error {c})" in message for c in _FULL):
            hint = f"; {DISK_FULL}"
        elif "fsync failed" in message:  # the engine's words, without the cause
            hint = "; the disk may be full, or a file size limit reached"
        else:
            hint = ""
        return CommitOutcomeUnknown(f"commit failed in the engine: {_brief(message)}{hint}")
    return InvalidRecord(f"{table} {key!r} refused: {_brief(message)}")


# The unique indexes by name, as the engine names the one that refused a record.
_UNIQUES = {
    unique_index(table, fields): fields
    for table, spec in TABLES.items()
    for fields in (*spec.uniques, *((("position",),) if table == EVENT_TABLE else ()))
}
_INDEX = re.compile(r"Database index `([^`]*)` already contains")


def _unique_named(message: str) -> str:
    """What a duplicate collided on, in the words the memory adapter uses: never the engine's
    own, which quote the values refused and the id of the record holding them (they reach a
    failed step's recorded error, and the audit trail)."""
    index = _INDEX.match(message)
    fields = _UNIQUES.get(index.group(1)) if index else None
    if fields is not None:
        return f"unique {'+'.join(fields)}"
    return "unique value" if index else ""  # a record of that id exists


def _unwrapped(message: str) -> str:
    """The engine's own words, past what wraps them: "not executed" before the commit's own
    failure, and the wrappers other engine releases put before any error ("Transaction
    failed and rolled back: ", "There was a problem with a datastore transaction: ")."""
    wrapped = True
    while wrapped:
        wrapped = False
        for prefix in _WRAPPERS:
            if message.startswith(prefix):
                message, wrapped = message.removeprefix(prefix).lstrip(". :"), True
    return message


def _refusal(record: str, i: int) -> str:
    """An update or delete that matched nothing: the record is gone (not found, as the memory
    adapter says), or holds another version (a conflict). Run only when it matched nothing."""
    return (
        f"IF record::exists({record}) {{ THROW 'uow-conflict:{i}' }}"
        f" ELSE {{ THROW 'uow-missing:{i}' }}"
    )


def _skipped(row: dict[str, Any]) -> bool:
    """A statement the engine did not run because another of the transaction failed."""
    return str(row.get("result")).startswith(_SKIPPED)


def _message(error: Any) -> str:
    return str(error.get("message", error)) if isinstance(error, dict) else str(error)


def _brief(message: str) -> str:
    # Engine messages can echo stored values; keep them short so large or sensitive values
    # never spill into logs in full.
    return message if len(message) <= 300 else message[:300] + "..."
