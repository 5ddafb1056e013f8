"""One commit is one `query_raw` round trip, whatever the unit holds and however it ends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from attrs import evolve

from adapters.contract import samples
from adapters.surrealdb import SurrealStore, compiler
from benchmarks import workflow as workflow_bench
from ports.errors import (
    CommitOutcomeUnknown,
    ConcurrencyConflict,
    DuplicateRecord,
    InvalidRecord,
    PortError,
    RecordNotFound,
)
from ports.storage import Batch, Op, Write
from ports.unit_of_work import UnitOfWork


class SpyConnection:
    """Wraps the SDK connection and records every method the store calls on it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, str(args[0]) if args else ""))
            return attribute(*args, **kwargs)

        return call


def spy_on(store: SurrealStore) -> SpyConnection:
    spy = SpyConnection(store._db)
    store._db = spy
    return spy


def one_write(uow: UnitOfWork) -> None:
    uow.sources.add(samples.source())


def mutation(uow: UnitOfWork) -> None:
    source = samples.source()
    uow.sources.add(source)
    uow.evidence.add(samples.evidence(source.id))
    uow.events.append(samples.event())


def large(uow: UnitOfWork) -> None:
    for _ in range(50):
        mutation(uow)
    uow.executions.save(samples.execution())


@pytest.mark.parametrize(
    "stage", [one_write, mutation, large], ids=["one-write", "mutation", "150-writes"]
)
def test_a_commit_is_one_round_trip(
    surreal_mem: SurrealStore, stage: Callable[[UnitOfWork], None]
) -> None:
    with surreal_mem.unit_of_work() as uow:
        stage(uow)
        spy = spy_on(surreal_mem)
        before = surreal_mem.round_trips
        uow.commit()
    assert surreal_mem.round_trips - before == 1
    assert [name for name, _ in spy.calls] == ["query_raw"]
    text = spy.calls[0][1]
    assert text.startswith("BEGIN TRANSACTION;") and text.endswith("COMMIT TRANSACTION;")


def test_reads_and_version_checks_add_no_round_trip_to_the_commit(
    surreal_mem: SurrealStore,
) -> None:
    capsule, other = samples.capsule(), samples.capsule()
    with surreal_mem.unit_of_work() as uow:
        uow.capsules.add(capsule)
        uow.capsules.add(other)
        uow.commit()
    with surreal_mem.unit_of_work() as uow:
        assert uow.capsules.get(capsule.id) is not None  # read only: checked at commit
        uow.capsules.update(evolve(other, title="changed"))
        mutation(uow)
        spy = spy_on(surreal_mem)
        uow.commit()
    assert [name for name, _ in spy.calls] == ["query_raw"]


@pytest.mark.parametrize("failure", ["duplicate", "conflict"])
def test_a_failing_commit_is_one_round_trip_too(surreal_mem: SurrealStore, failure: str) -> None:
    capsule = samples.capsule()
    with surreal_mem.unit_of_work() as uow:
        uow.capsules.add(capsule)
        uow.commit()
    expected: type[PortError] = DuplicateRecord if failure == "duplicate" else ConcurrencyConflict
    with surreal_mem.unit_of_work() as uow:
        mutation(uow)
        if failure == "duplicate":
            uow.capsules.add(capsule)
        else:
            uow.capsules.update(evolve(capsule, version=7))
        spy = spy_on(surreal_mem)
        with pytest.raises(expected):
            uow.commit()
    assert [name for name, _ in spy.calls] == ["query_raw"]


def test_an_empty_commit_makes_no_round_trip(surreal_mem: SurrealStore) -> None:
    with surreal_mem.unit_of_work() as uow:
        spy = spy_on(surreal_mem)
        uow.commit()
    assert spy.calls == []


def test_a_commit_failing_in_the_engine_is_an_unknown_outcome() -> None:
    """Every statement ran, then the commit failed (a full disk): not a refusal of the data."""
    batch = Batch((Write(Op.CREATE, "knowledge_source", "s1", {"title": "t"}),))
    compiled = compiler.compile_batch(batch)
    lost = "The query was not executed due to a failed transaction: No space left on device"
    rows = [{"status": "ERR", "result": lost} for _ in compiled.owners]
    assert isinstance(compiler.failure(compiled, batch, rows), CommitOutcomeUnknown)
    # A statement that really failed still names the write it belongs to.
    rows[0] = {"status": "ERR", "result": "Found 7 for field `version`, expected an int"}
    refused = compiler.failure(compiled, batch, rows)
    assert isinstance(refused, InvalidRecord) and "'s1'" in str(refused)


@pytest.mark.parametrize(
    ("said", "hint"),
    [
        (  # what the engine says, without the cause
            "Log error: IO error: kind=other error, message=fsync failed",
            "; the disk may be full, or a file size limit reached",
        ),
        (
            "IO error: File too large (os error 27)",
            "; a file size limit was reached: raise it (ulimit -f)",
        ),
        (
            "IO error: No space left on device (os error 28)",
            "; the file system is full (or a disk quota was reached): free space",
        ),
    ],
)
def test_a_commit_the_disk_had_no_room_for_says_what_to_look_at(said: str, hint: str) -> None:
    """A full disk or a file size limit met mid-run was said as `fsync failed` alone (found
    by a crash and limits pass), and the two apart where the engine says which."""
    batch = Batch((Write(Op.CREATE, "knowledge_source", "s1", {"title": "t"}),))
    compiled = compiler.compile_batch(batch)
    rows = [{"status": "ERR", "result": said} for _ in compiled.owners]
    unknown = compiler.failure(compiled, batch, rows)
    assert isinstance(unknown, CommitOutcomeUnknown)
    assert str(unknown).endswith(hint)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("An error occurred: uow-conflict:0", ConcurrencyConflict),
        ("An error occurred: uow-missing:0", RecordNotFound),
        ("Database record `knowledge_source:s1` already exists", DuplicateRecord),
        ("Database index `u` already contains 'x', with record `c:1`", DuplicateRecord),
        (
            "The query was not executed due to a failed transaction. Failed to commit"
            " transaction due to a read or write conflict. This transaction can be retried",
            ConcurrencyConflict,
        ),
        # As other engine releases wrap them.
        (
            "There was a problem with a datastore transaction: Transaction write conflict",
            ConcurrencyConflict,
        ),
        (
            "Transaction failed and rolled back: Cannot COMMIT: Transaction conflict: x",
            ConcurrencyConflict,
        ),
        (
            "Transaction failed and rolled back: Database record `c:1` already exists",
            DuplicateRecord,
        ),
        (
            "Transaction failed and rolled back: An error occurred: uow-conflict:0",
            ConcurrencyConflict,
        ),
        # Its files failing it as a statement ran (no descriptors left): nothing about the
        # record, which was refused as `? '?'` (found by an operator's pass).
        (
            "There was a problem with a datastore transaction: Log error: IO error:"
            " kind=other, message=Too many open files (os error 24)",
            CommitOutcomeUnknown,
        ),
        # The engine quoting a value: the value's words are not the engine's.
        ("Found 'Log error: IO error: x (os error 24)' for field `title`", InvalidRecord),
        ("Found 'conflict already exists' for field `title`, but expected x", InvalidRecord),
        ("Found 'Transaction conflict' for field `title`, but expected x", InvalidRecord),
    ],
)
def test_engine_refusals_are_told_apart_by_the_engines_own_words(
    message: str, expected: type[Exception]
) -> None:
    batch = Batch((Write(Op.CREATE, "knowledge_source", "s1", {"title": "t"}),))
    compiled = compiler.compile_batch(batch)
    rows = [{"status": "ERR", "result": message} for _ in compiled.owners]
    assert type(compiler.failure(compiled, batch, rows)) is expected


def test_a_publication_workflow_is_four_commits_and_four_reads(surreal_mem: SurrealStore) -> None:
    """Start and ingest, analyse, publish, verify; the reads (without an idempotency key):
    the natural keys of the source, the analysis and the publication (each a read by id),
    and the capsule (fresh: it can change). The evidence ingested is read from the cache."""
    orch = workflow_bench.orchestrator(surreal_mem.unit_of_work)
    workflow_bench.run_workflows(orch, [workflow_bench.publication_input("warm", 0)])
    spy = spy_on(surreal_mem)
    workflow_bench.run_workflows(orch, [workflow_bench.publication_input("counted", 1)])
    commits = [text for _, text in spy.calls if text.startswith("BEGIN TRANSACTION;")]
    assert (len(commits), len(spy.calls) - len(commits)) == (4, 4), spy.calls


class _ReplyLost:
    """A server that runs the commit and then answers it with something else: an error (a
    reply it could not send whole, say), or a reply garbled on the way."""

    def __init__(self, inner: Any, reply: dict[str, Any]) -> None:
        self.inner, self.reply = inner, reply

    def query_raw(self, text: str, params: dict[str, Any]) -> dict[str, Any]:
        self.inner.query_raw(text, params)
        return self.reply

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize(
    "reply",
    [
        {"error": {"code": -32000, "message": "There was a problem with the database: too large"}},
        {"result": "garbled"},
        {"result": [{"status": "OK", "result": None}]},
    ],
    ids=["error", "not-results", "too-few-results"],
)
def test_a_commit_answered_with_anything_but_its_results_is_an_unknown_outcome(
    surreal_mem: SurrealStore, reply: dict[str, Any]
) -> None:
    """A server's error reply to a commit that landed read as `InvalidRecord`, which says
    nothing was written (found by a server-mode pass: an approval recorded, exit 1)."""
    source = samples.source()
    surreal_mem._db, real = _ReplyLost(surreal_mem._db, reply), surreal_mem._db
    try:
        with pytest.raises(CommitOutcomeUnknown), surreal_mem.unit_of_work() as uow:
            uow.sources.add(source)
            uow.commit()
    finally:
        surreal_mem._db = real
    with surreal_mem.unit_of_work() as uow:  # it did land: only a re-read could tell
        assert uow.sources.get(source.id) == source


def test_a_commit_the_server_could_not_parse_ran_nothing() -> None:
    batch = Batch((Write(Op.CREATE, "knowledge_source", "s1", {"title": "t"}),))
    compiled = compiler.compile_batch(batch)
    refused = {"error": {"message": "Parse error: Unexpected token `x`"}}
    with pytest.raises(InvalidRecord, match="query rejected: Parse error"):
        compiler.rows_of(compiled, refused)
