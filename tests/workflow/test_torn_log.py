"""A torn tail of the `surrealkv://` commit log: what the crash test can hit by chance, made
deterministic by truncating the log inside the last transaction.

A process killed while the engine writes a commit leaves a partial record at the end of the
log; on the next open the engine repairs the segment. Measured with the SDK's embedded engine
(SurrealDB core 2.3.10, surrealkv 0.9.3): the repair keeps a *prefix* of that transaction.
The store therefore journals how to undo every commit in its first write and marks it
complete in its last; an open that finds the marker missing undoes it (`compiler.repair`).

Each cut below must leave the store exactly as it was before the last transaction or exactly
as it was after it: every record, and every index lookup. With the journal turned off, the
same check catches the engine's prefix: it is what proves the check can fail.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.contract import SurrealBackdoor
from adapters.faults import FaultInjector, FaultPlan
from adapters.surrealdb import SurrealConfig, SurrealStore, compiler
from adapters.surrealdb import store as store_module
from adapters.surrealdb.compiler import EVENTS_COUNTER as COUNTER
from adapters.surrealdb.store import LogSeal
from domain.model.lifecycle import ExecutionState
from ports.clock import FixedClock, SequentialIds
from ports.errors import InjectedFault, StorageUnavailable
from tests.workflow.harness import T0, TENANT, WORKFLOW, orchestrator, request

CUTS = 24  # truncation points spread over the last transaction's bytes


def _segment(store: Path) -> Path:
    segments = sorted((store / "clog").iterdir())
    assert segments, "no commit log segment: has the engine's on-disk layout changed?"
    return segments[-1]


def _open(path: Path, *, journaled: bool) -> SurrealStore:
    store = SurrealStore(SurrealConfig(f"surrealkv://{path}"))
    store.journaled = journaled  # off only to show what the engine does without it
    return store


def _observed(store: SurrealStore) -> dict[str, Any]:
    """Every stored record, and what every index lookup answers about each of them."""
    records = SurrealBackdoor(store).snapshot()
    lookups: dict[str, Any] = {}
    with store.unit_of_work() as uow:
        for key, doc in records["knowledge_source"].items():
            found = uow.sources.find_identical(TENANT, doc["source_url"], doc["content_digest"])
            lookups[f"source {key}"] = found.id if found else None
        for key, doc in records["evidence"].items():
            found_ids = [m.id for m in uow.evidence.for_subject(TENANT, doc["subject"])]
            lookups[f"evidence {key}"] = key in found_ids
        for key, doc in records["execution"].items():
            by_key = uow.executions.by_idempotency_key(TENANT, doc["idempotency_key"])
            in_state = uow.executions.in_state(ExecutionState(doc["state"]))
            lookups[f"execution {key}"] = (
                by_key.id if by_key else None,
                key in [x.id for x in in_state],
                len(uow.audit.for_execution(key)),
            )
        lookups["events"] = [e.id for e in uow.events.read_after(0, 1000)]
    # The position the next event will take: a counter left ahead would open a gap.
    lookups["event counter"] = store.select_rows("SELECT VALUE n FROM ONLY $c", {"c": COUNTER})
    return {"records": records, "lookups": lookups}


def _size(path: Path) -> int:
    return _segment(path).stat().st_size


class Logged:
    """A store whose log ends with one whole step transaction (a second publication's first
    step, its execution moving from pending to running), the byte range of that transaction,
    and what the store held just before and just after it."""

    def __init__(self, path: Path, *, journaled: bool) -> None:
        self.path, self.journaled = path, journaled
        ids = SequentialIds()
        with _open(path, journaled=journaled) as store:
            orch = orchestrator(store.unit_of_work, FixedClock(T0), ids=ids)
            orch.start(WORKFLOW, request("pub-a"), idempotency_key="pub-a")
            pending = orch.start(WORKFLOW, request("pub-b"), idempotency_key="pub-b", run=False)
            self.state_before = _observed(store)
        self.before = _size(path)
        sealed = (path / "govkernel.seal").read_text()
        with _open(path, journaled=journaled) as store:
            crash_at_second_commit = FaultInjector(store.unit_of_work, FaultPlan(fail_at_commit=2))
            orch = orchestrator(crash_at_second_commit, FixedClock(T0), ids=ids)
            with pytest.raises(InjectedFault):
                orch.run(pending.id)
            self.state_after = _observed(store)
        self.after = _size(path)
        # The cuts stand for a crash during that transaction: the process never closed the
        # store after it, so the seal is the one of the close before.
        (path / "govkernel.seal").write_text(sealed)
        assert self.after > self.before
        assert self.state_after != self.state_before

    def open_cut(self, cut: int, work: Path) -> tuple[dict[str, Any], int]:
        """What a copy of the store holds once its log is cut at byte `cut` and reopened,
        and how many writes the open undid."""
        copy = work / f"cut-{cut}"
        shutil.copytree(self.path, copy)
        try:
            os.truncate(_segment(copy), cut)
            store = _open(copy, journaled=self.journaled)
            try:
                repair = store.torn_repair
                return _observed(store), repair.writes if repair else 0
            finally:
                store.close()
        finally:
            shutil.rmtree(copy)


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Logged:
    return Logged(tmp_path_factory.mktemp("torn") / "store", journaled=True)


def _cuts(logged: Logged) -> range:
    step = max((logged.after - logged.before) // CUTS, 1)
    return range(logged.before + 1, logged.after, step)


def test_cuts_at_transaction_boundaries_reopen_to_the_same_state(
    logged: Logged, tmp_path: Path
) -> None:
    assert logged.open_cut(logged.before, tmp_path) == (logged.state_before, 0)
    assert logged.open_cut(logged.after, tmp_path) == (logged.state_after, 0)


def test_a_torn_last_transaction_is_undone_on_the_next_open(logged: Logged, tmp_path: Path) -> None:
    undone = 0
    for cut in _cuts(logged):
        state, undone_writes = logged.open_cut(cut, tmp_path)
        if undone_writes:
            undone += 1
            assert state == logged.state_before, f"cut at {cut}: undone to another state"
        else:
            assert state in (logged.state_before, logged.state_after), f"cut at {cut}: partial"
    # Most cuts land after the journal (the transaction's first write): those are the ones
    # the engine would have kept a prefix of.
    assert undone >= CUTS // 2, f"only {undone} cuts were undone"


def test_the_repair_can_itself_be_torn_and_repeated(logged: Logged, tmp_path: Path) -> None:
    """A crash during the repair leaves a prefix of it; the next open runs it again. Each of
    its writes is idempotent, so applying it over itself must still give the state before."""
    cut = logged.before + (logged.after - logged.before) * 3 // 4
    copy = tmp_path / "twice"
    shutil.copytree(logged.path, copy)
    os.truncate(_segment(copy), cut)
    with _open(copy, journaled=False) as store:  # no repair at open: we run it by hand
        journal = store.select_rows("SELECT VALUE journal FROM ONLY $c", {"c": COUNTER})[0]
        repair = compiler.repair(journal, 0)
        assert repair.action == "undone" and repair.writes > 0
        for _ in range(2):
            store.select_rows(repair.compiled.text, repair.compiled.params)
        assert _observed(store) == logged.state_before


def test_what_is_written_after_a_crash_survives_the_next_open(
    logged: Logged, tmp_path: Path
) -> None:
    """At some cuts the engine opens without noticing the torn bytes and appends after them;
    the open after that finds them and cuts every later commit away (`_settle_log`). So
    each cut, opened as a crashed holder leaves it, takes a new commit, which must still be
    there, exactly, after the store is closed and opened again."""
    lost = []
    for n, cut in enumerate(sorted({logged.before + 1, *_cuts(logged)})):
        copy = tmp_path / f"later-{cut}"
        shutil.copytree(logged.path, copy)
        os.truncate(_segment(copy), cut)
        copy.with_name(copy.name + ".lock").write_text("4242")  # the holder that died
        with _open(copy, journaled=True) as store:
            assert store.unclean_shutdown == "4242"
            orch = orchestrator(store.unit_of_work, FixedClock(T0), ids=SequentialIds(10**5))
            orch.start(WORKFLOW, request(f"pub-later-{n}"), idempotency_key="later", run=False)
            written = _observed(store)
        with _open(copy, journaled=True) as store:
            if _observed(store) != written:
                lost.append(cut)
        shutil.rmtree(copy)
    assert not lost, f"commits lost at cuts {lost}"


def test_without_the_journal_the_engine_keeps_a_prefix(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    unjournaled = Logged(tmp_path_factory.mktemp("torn-raw") / "store", journaled=False)
    partial = [
        cut
        for cut in _cuts(unjournaled)
        if unjournaled.open_cut(cut, tmp_path)[0]
        not in (unjournaled.state_before, unjournaled.state_after)
    ]
    assert partial, "the engine no longer keeps a torn prefix: the journal may be unneeded"


def _executions(path: Path) -> int:
    with _open(path, journaled=True) as store:
        return len(SurrealBackdoor(store).snapshot()["execution"])


def test_a_log_damaged_further_in_is_refused_not_cut_silently(
    logged: Logged, tmp_path: Path
) -> None:
    """The engine repairs a damaged record by cutting its log there, with every transaction
    after it. The log only grows, so one shorter than when the store was last closed cleanly
    lost committed work: the store is refused, every time, until someone removes its seal to
    go on with what is left. The seal is inside the directory: a copy carries it."""
    copy = tmp_path / "damaged"
    shutil.copytree(logged.path, copy)
    seal = copy / "govkernel.seal"
    whole = _executions(copy)
    assert seal.read_text() == f"closed {_size(copy)}"
    with _segment(copy).open("r+b") as log:  # four bytes flipped in the middle of the log
        log.seek(_size(copy) // 2)
        log.write(b"\x00\x00\x00\x00")
    for _ in range(2):
        with pytest.raises(StorageUnavailable, match=r"was damaged: .* bytes cut are lost"):
            _open(copy, journaled=True)
    assert seal.read_text().startswith("damaged ")
    seal.unlink()
    assert _executions(copy) < whole  # what the engine cut is gone: the refusal said so


def test_damage_after_a_crash_is_still_refused(logged: Logged, tmp_path: Path) -> None:
    """A crash tears only what was written after the last clean close: the seal still holds."""
    copy = tmp_path / "crashed"
    shutil.copytree(logged.path, copy)
    _executions(copy)  # sealed
    copy.with_name(copy.name + ".lock").write_text("4242")  # then a holder died
    with _segment(copy).open("r+b") as log:
        log.seek(_size(copy) // 2)
        log.write(b"\x00\x00\x00\x00")
    with pytest.raises(StorageUnavailable, match="was damaged"):
        _open(copy, journaled=True)


def test_a_store_closed_cleanly_opens_again_and_again(tmp_path: Path) -> None:
    path = tmp_path / "store"
    for n in range(3):
        with _open(path, journaled=True) as store:
            orch = orchestrator(store.unit_of_work, FixedClock(T0), ids=SequentialIds(n * 1000))
            orch.start(WORKFLOW, request(f"pub-{n}"), idempotency_key=f"k{n}")
    assert _executions(path) == 3


def test_a_store_deleted_to_start_over_opens_new(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with _open(path, journaled=True) as store:
        orchestrator(store.unit_of_work, FixedClock(T0)).start(WORKFLOW, request("pub-1"))
    shutil.rmtree(path)
    assert _executions(path) == 0


def test_a_restored_backup_opens_as_it_was_backed_up(tmp_path: Path) -> None:
    path = tmp_path / "store"
    ids = SequentialIds()
    with _open(path, journaled=True) as store:
        orchestrator(store.unit_of_work, FixedClock(T0), ids=ids).start(WORKFLOW, request("p1"))
    shutil.copytree(path, tmp_path / "backup")  # its seal comes along
    with _open(path, journaled=True) as store:
        orchestrator(store.unit_of_work, FixedClock(T0), ids=ids).start(WORKFLOW, request("p2"))
    shutil.rmtree(path)
    shutil.copytree(tmp_path / "backup", path)
    assert _executions(path) == 1


def test_a_store_interrupted_while_opening_is_closed_all_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "store"
    _open(path, journaled=True).close()

    def interrupted(store: SurrealStore) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(SurrealStore, "_apply_schema", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _open(path, journaled=True)
    assert path.with_name("store.lock").read_text() == ""  # released: no crash to check


def test_a_store_whose_log_was_deleted_to_start_over_opens_new(tmp_path: Path) -> None:
    """Its directory kept (a mount point, say), only the engine's files removed."""
    path = tmp_path / "store"
    with _open(path, journaled=True) as store:
        orchestrator(store.unit_of_work, FixedClock(T0)).start(WORKFLOW, request("pub-1"))
    for engine_files in ("clog", "manifest"):
        shutil.rmtree(path / engine_files)
    assert _executions(path) == 0
    assert (path / "govkernel.seal").read_text() == f"closed {_size(path)}"


def test_a_log_removed_while_the_store_is_open_is_not_sealed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log's files removed under a running process (an operator's `rm`): the engine
    writes on into files nobody can open again. The seal is never lowered to what is left,
    so the next open says the store lost its work instead of opening it empty; and the
    store takes nothing more, saying why (it went on, and a command said it succeeded)."""
    monkeypatch.setattr(LogSeal, "EVERY", 0.0)
    path = tmp_path / "store"
    with _open(path, journaled=True) as store:
        orch = orchestrator(store.unit_of_work, FixedClock(T0))
        orch.start(WORKFLOW, request("pub-1"))
        whole = _size(path)
        for segment in (path / "clog").iterdir():
            segment.unlink()
        with pytest.raises(StorageUnavailable, match="was cut while this process held it"):
            orch.start(WORKFLOW, request("pub-2"))  # a commit after which the seal is kept up
    assert store.log_lost is not None and f"({whole} bytes when last known whole" in store.log_lost
    assert (path / "govkernel.seal").read_text().split()[:2] == ["damaged", str(whole)]
    with pytest.raises(StorageUnavailable, match="was damaged"):
        _open(path, journaled=True)
    # Its engine files gone whole as well: still not a store to open new, read-only or not.
    for engine_files in ("clog", "manifest"):
        shutil.rmtree(path / engine_files, ignore_errors=True)
    for create in (False, True):
        with pytest.raises(StorageUnavailable, match="was damaged"):
            SurrealStore(SurrealConfig(f"surrealkv://{path}", create=create))
    assert (path / "govkernel.seal").read_text().startswith("damaged ")
    (path / "govkernel.seal").unlink()  # as the message says: to go on with what is left
    assert _executions(path) == 0


def _found_gone_while_open(
    path: Path, take_away: Callable[[], object], *, then: Callable[[], object]
) -> None:
    """A store that ran one workflow has its directory taken away while open: the next
    start's commit looks at the log (LogSeal.EVERY is 0), finds it gone and says so; `then`
    runs before the store closes."""
    with _open(path, journaled=True) as store:
        orch = orchestrator(store.unit_of_work, FixedClock(T0))
        orch.start(WORKFLOW, request("pub-1"))
        take_away()
        with pytest.raises(
            StorageUnavailable, match="was removed or moved while this process held it"
        ):
            orch.start(WORKFLOW, request("pub-2"))
        then()


def _assert_removed_mark(lock: Path) -> None:
    assert lock.read_text() == f"removed {os.getpid()}"


def test_a_store_whose_whole_directory_was_removed_while_open_is_refused_not_made_anew(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seal that says a store lost its work lies in the store's directory: removed
    whole under a running command, nothing was left to say so, and the next run made an
    empty store in its place (found by an operator's pass). The lock file beside it keeps
    the mark, from the moment the loss is found (a kill after it must not lose it)."""
    monkeypatch.setattr(LogSeal, "EVERY", 0.0)
    path = tmp_path / "store"
    lock = tmp_path / "store.lock"
    _found_gone_while_open(
        path,
        lambda: shutil.rmtree(path),
        then=lambda: _assert_removed_mark(lock),  # from the moment it is found gone
    )
    _assert_removed_mark(lock)  # closing keeps it
    for create in (False, True):
        with pytest.raises(
            StorageUnavailable, match=r"was removed or moved while a process \(pid \d+\)"
        ):
            SurrealStore(SurrealConfig(f"surrealkv://{path}", create=create))
    assert not path.exists()  # nothing made in its place
    lock.unlink()  # as the message says: to start a new store there
    assert _executions(path) == 0


@pytest.mark.parametrize("left", ["4242", "unclean 4242"], ids=["killed", "crash-unchecked"])
def test_a_store_removed_after_its_holder_died_is_refused_not_made_anew(
    tmp_path: Path, left: str
) -> None:
    """Killed before it looked at its log, the holder left only its pid: the next run made
    an empty store where the removed one was (found by a re-test)."""
    path, lock = tmp_path / "store", tmp_path / "store.lock"
    with _open(path, journaled=True) as store:
        orchestrator(store.unit_of_work, FixedClock(T0)).start(WORKFLOW, request("pub-1"))
    lock.write_text(left)  # as a holder killed outright leaves it
    shutil.rmtree(path)
    for create in (False, True):
        with pytest.raises(StorageUnavailable, match="or after it died without closing it"):
            SurrealStore(SurrealConfig(f"surrealkv://{path}", create=create))
    assert not path.exists()
    path.mkdir()  # made again empty (`mkdir -p`, a volume): still not a store to make anew
    with pytest.raises(StorageUnavailable, match="or after it died without closing it"):
        SurrealStore(SurrealConfig(f"surrealkv://{path}"))
    lock.unlink()
    assert _executions(path) == 0


def test_a_store_renamed_away_and_back_while_open_opens_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found gone while open, it is marked removed; back in place with its seal, the seal
    says whether it is whole (a re-test found it refused as lost, every byte there)."""
    monkeypatch.setattr(LogSeal, "EVERY", 0.0)
    path, away = tmp_path / "store", tmp_path / "elsewhere"
    _found_gone_while_open(path, lambda: path.rename(away), then=lambda: away.rename(path))
    _assert_removed_mark(tmp_path / "store.lock")
    # The second start committed into the files, wherever they were, before the log was
    # looked at: both are there. The open takes it for a crash, to verify every chain.
    with _open(path, journaled=True) as store:
        assert len(SurrealBackdoor(store).snapshot()["execution"]) == 2
        assert store.unclean_shutdown == str(os.getpid())


def test_a_log_whose_size_cannot_be_told_for_a_moment_is_not_taken_for_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of file descriptors, say: the seal stays as it was, and is kept up after."""
    monkeypatch.setattr(LogSeal, "EVERY", 0.0)
    path = tmp_path / "store"
    real_iterdir = Path.iterdir

    def busy(directory: Path) -> Any:
        if directory.name == "clog":
            raise OSError(errno.EMFILE, "Too many open files")
        return real_iterdir(directory)

    with _open(path, journaled=True) as store:
        orch = orchestrator(store.unit_of_work, FixedClock(T0))
        orch.start(WORKFLOW, request("pub-1"))
        sealed = (path / "govkernel.seal").read_text()
        with monkeypatch.context() as moment:
            moment.setattr(Path, "iterdir", busy)
            orch.start(WORKFLOW, request("pub-2"))
        assert (path / "govkernel.seal").read_text() == sealed
    assert (path / "govkernel.seal").read_text() == f"closed {_size(path)}"
    assert _executions(path) == 2
    with monkeypatch.context() as moment:  # at open, though, a cut would go unseen: refused
        moment.setattr(Path, "iterdir", busy)
        with pytest.raises(StorageUnavailable, match=r"Too many open files|cannot tell the size"):
            _open(path, journaled=True)
    assert _executions(path) == 2
    seal = LogSeal(path)  # and the check itself, should only it not tell
    monkeypatch.setattr(store_module, "_log_bytes", lambda directory: None)
    with pytest.raises(StorageUnavailable, match="cannot tell the size of the store's log"):
        seal.check()


def test_a_store_whose_manifest_alone_was_removed_still_holds_its_work(tmp_path: Path) -> None:
    """The engine rebuilds its manifest from the log: such a store is not an empty one, for
    read-only opens either."""
    path = tmp_path / "store"
    with _open(path, journaled=True) as store:
        orchestrator(store.unit_of_work, FixedClock(T0)).start(WORKFLOW, request("pub-1"))
    shutil.rmtree(path / "manifest")
    with SurrealStore(SurrealConfig(f"surrealkv://{path}", create=False)) as store:
        assert len(SurrealBackdoor(store).snapshot()["execution"]) == 1


@pytest.mark.parametrize("kind", ["fifo", "directory", "symlink"])
def test_a_seal_that_is_not_a_regular_file_is_refused_not_waited_on(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "store"
    _open(path, journaled=True).close()
    seal = path / "govkernel.seal"
    seal.unlink()
    if kind == "fifo":
        os.mkfifo(seal)
    elif kind == "directory":
        seal.mkdir()
    else:
        seal.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StorageUnavailable, match="cannot use seal file"):
        _open(path, journaled=True)
    assert path.with_name("store.lock").read_text() == ""  # refused, not left held


@pytest.mark.parametrize(("left", "refused"), [("closed 4000", False), ("damaged 90000 100", True)])
def test_a_lock_file_from_the_commits_that_kept_sizes_there_is_read_as_meant(
    tmp_path: Path, left: str, refused: bool
) -> None:
    path = tmp_path / "store"
    _open(path, journaled=True).close()
    path.with_name("store.lock").write_text(left)
    if refused:
        for _ in range(2):  # carried into the seal: refused at every open
            with pytest.raises(StorageUnavailable, match="was damaged"):
                _open(path, journaled=True)
    else:
        with _open(path, journaled=True) as store:
            assert store.unclean_shutdown is None


@pytest.mark.parametrize("lost", [0, 100])
def test_a_size_those_commits_kept_in_the_lock_file_is_the_seal_of_a_store_without_one(
    tmp_path: Path, lost: int
) -> None:
    """Closed last by one of them (no seal file yet): a log cut since is refused, as they
    refused it, instead of sealed at its new size (found upgrading)."""
    path = tmp_path / "store"
    _open(path, journaled=True).close()
    (path / "govkernel.seal").unlink()
    path.with_name("store.lock").write_text(f"closed {_size(path) + lost}")
    if lost:
        for _ in range(2):
            with pytest.raises(StorageUnavailable, match=f"the {lost} bytes cut are lost"):
                _open(path, journaled=True)
    else:
        assert _executions(path) == 0
        assert (path / "govkernel.seal").read_text() == f"closed {_size(path)}"


def test_a_store_removed_to_start_over_opens_new_whatever_those_commits_kept(
    tmp_path: Path,
) -> None:
    """The lock file is beside the store's directory, and outlives its removal: the size it
    kept belongs to the log that was removed (found by a review: refused as damaged)."""
    path = tmp_path / "store"
    _open(path, journaled=True).close()
    path.with_name("store.lock").write_text(f"closed {_size(path) + 5000}")
    shutil.rmtree(path)
    with SurrealStore(SurrealConfig(f"surrealkv://{path}")) as store:
        assert SurrealBackdoor(store).snapshot()["execution"] == {}
    assert _executions(path) == 0  # and again, sealed at its own size
    assert (path / "govkernel.seal").read_text() == f"closed {_size(path)}"


@pytest.mark.parametrize(
    "content",
    ["garbage \x1b[31m", "closed", "closed 12 13", "closed -5", "damaged 5 7", "damaged 9 9",
     "closed 99999999999999999999999", "closed 1e9", "x" * 200],
    ids=["garbage", "no-size", "two-sizes", "negative", "grown", "equal", "huge", "float", "long"],
)  # fmt: skip
def test_a_seal_govkernel_did_not_write_is_refused_not_ignored(
    tmp_path: Path, content: str
) -> None:
    path = tmp_path / "store"
    _open(path, journaled=True).close()
    (path / "govkernel.seal").write_text(content)
    with pytest.raises(StorageUnavailable, match="does not hold what govkernel writes") as caught:
        _open(path, journaled=True)
    assert content not in str(caught.value)  # never echoed
    assert (path / "govkernel.seal").read_text() == content  # left for someone to look at
    (path / "govkernel.seal").unlink()
    assert _executions(path) == 0  # removed, the store opens


def test_an_empty_seal_is_no_seal(tmp_path: Path) -> None:
    path = tmp_path / "store"
    _open(path, journaled=True).close()
    (path / "govkernel.seal").write_text("")
    assert _executions(path) == 0
    assert (path / "govkernel.seal").read_text() == f"closed {_size(path)}"


@pytest.mark.parametrize(
    "left", ["manifest-only", "empty-log-dir", "empty-segment", "segment-cut-in-its-header"]
)
def test_a_store_whose_first_open_was_killed_early_opens_new(tmp_path: Path, left: str) -> None:
    """Killed while the engine created it: a manifest, and no log or a log without a record.
    Nothing was ever stored there, and the engine would refuse those files at every open."""
    path = tmp_path / "store"
    (path / "manifest").mkdir(parents=True)
    (path / "manifest" / "00000000000000000000.manifest").write_bytes(b"\x00" * 226)
    if left != "manifest-only":
        (path / "clog").mkdir()
    segment = path / "clog" / "00000000000000000000.clog"
    if left == "empty-segment":
        segment.write_bytes(b"")
    elif left == "segment-cut-in-its-header":
        segment.write_bytes(b"\x00\x00\x00\xaa\x00\x00")
    with pytest.raises(StorageUnavailable, match="nothing has run there yet"):  # read-only
        SurrealStore(SurrealConfig(f"surrealkv://{path}", create=False))
    with _open(path, journaled=True) as store:
        orchestrator(store.unit_of_work, FixedClock(T0)).start(WORKFLOW, request("pub-1"))
    assert _executions(path) == 1


@pytest.mark.parametrize("sealed_while_open", [True, False], ids=["sealed", "unsealed-canary"])
def test_damage_in_what_was_written_since_the_last_close_is_refused_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sealed_while_open: bool
) -> None:
    """A service runs for days without closing its store: the seal is kept up while it is
    open, so damage anywhere in what it wrote is caught after a crash. Without that (the
    canary), the engine cuts the log and the lost workflows go unnoticed."""
    monkeypatch.setattr(LogSeal, "EVERY", 0.0 if sealed_while_open else float("inf"))
    path = tmp_path / "store"
    store = _open(path, journaled=True)
    orch = orchestrator(store.unit_of_work, FixedClock(T0))
    for n in range(8):
        orch.start(WORKFLOW, request(f"pub-{n}"))
    crashed = tmp_path / "crashed"
    shutil.copytree(path, crashed)  # what a crash leaves: every commit was fsynced
    store.close()
    crashed.with_name("crashed.lock").write_text("4242")  # its holder died
    assert (crashed / "govkernel.seal").exists() is sealed_while_open
    with _segment(crashed).open("r+b") as log:  # damage in the last quarter of the log
        log.seek(_size(crashed) * 3 // 4)
        log.write(b"\x00\x00\x00\x00")
    if sealed_while_open:
        with pytest.raises(StorageUnavailable, match="was damaged"):
            _open(crashed, journaled=True)
    else:
        assert _executions(crashed) < 8  # opens, with workflows silently gone


def _cli(
    path: Path,
    *args: str,
    max_file_bytes: int | None = None,
    max_files: int | None = None,
    env: dict[str, str] | None = None,
) -> Any:
    """A `govkernel` process on the store at `path`, its files held below a size if given
    (a full disk, as the engine meets one: `File too large`), and its open files too."""
    import resource
    import subprocess
    import sys

    def limit() -> None:
        if max_file_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))
        if max_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max_files, max_files))

    given = env or {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOVKERNEL_")}
    env |= {"GOVKERNEL_STORE": f"surrealkv://{path}", "GOVKERNEL_ACTOR": "operator"} | given
    command = [sys.executable, "-m", "composition.cli", *args]
    return subprocess.run(
        command, env=env, preexec_fn=limit, capture_output=True, text=True, timeout=120
    )


def test_commands_on_a_full_disk_leave_the_seal_where_the_log_was_whole(tmp_path: Path) -> None:
    """A commit the disk had no room for tears the log's end; the next command's undo fails
    the same way. Neither may seal the torn bytes: the store, given room, opens and undoes
    them, instead of being refused as damaged for good (found by an operator's pass)."""
    path = tmp_path / "store"
    examples = sorted(str(p) for p in (Path(__file__).parents[2] / "examples").glob("*.md"))
    run = ("run", "knowledge-publication", *examples, "--title", "T")
    assert _cli(path, *run, "--publication-id", "p0").returncode == 0
    sealed = (path / "govkernel.seal").read_text()
    room = _size(path) + 6000  # less than a run needs
    said = []
    for n in (1, 2, 3):
        key = ("--idempotency-key", f"k{n}")
        full = _cli(path, *run, "--publication-id", f"p{n}", *key, max_file_bytes=room)
        assert full.returncode == 2  # the store could not be used
        assert (path / "govkernel.seal").read_text() == sealed
        said.append(full.stderr)
    # The first start's commit failed: read again, it is known not stored, and the
    # command says how to start it again without ever running it twice.
    assert "was not stored" in said[0] and "--idempotency-key k1 starts it" in said[0]
    assert "could not be undone" in said[1]  # its undo found no room either
    assert _cli(path, "recover").returncode == 0
    assert _cli(path, "audit", "verify").returncode == 0
    assert _cli(path, *run, "--publication-id", "p4").returncode == 0


def test_a_full_disk_as_a_store_opens_says_so_and_leaves_it_as_it_was(tmp_path: Path) -> None:
    """Writing the lock's pid, or the engine repairing a torn log: an internal error (a raw
    OSError from Python), and the engine's own repair file named as a stray to move away
    (found by an operator's pass: moving it lost the log the next open repairs from)."""
    path = tmp_path / "store"
    examples = sorted(str(p) for p in (Path(__file__).parents[2] / "examples").glob("*.md"))
    assert _cli(path, "run", "knowledge-publication", *examples, "--title", "T").returncode == 0
    lock = tmp_path / "store.lock"
    assert lock.read_text() == ""  # closed cleanly: the pid needs room the disk lacks
    full = _cli(path, "executions", "list", max_file_bytes=0)
    assert (full.returncode, lock.read_text()) == (2, "")
    assert f"cannot write lock file {lock}: File too large; a file size limit" in full.stderr
    [segment] = (path / "clog").iterdir()
    with segment.open("ab") as log:
        log.write(os.urandom(300))  # a torn tail, which the engine repairs as it opens
    full = _cli(path, "executions", "list", max_file_bytes=segment.stat().st_size // 2)
    assert full.returncode == 2
    assert "a file size limit was reached: raise it (ulimit -f)" in full.stderr
    assert "not one of the engine's log segments" not in full.stderr
    assert _cli(path, "audit", "verify").returncode == 0  # given room, it opens whole


def test_a_file_size_limit_after_a_crash_is_said_as_one_not_as_a_lost_log(
    tmp_path: Path,
) -> None:
    """The write that proves the log whole after a crash, refused by the limit, read as a
    log that kept losing writes: "restore it from a backup", for a store that was fine
    (found by a crash and limits pass). And a store made under the limit names it too."""
    import subprocess
    import sys

    path = tmp_path / "store"
    examples = sorted(str(p) for p in (Path(__file__).parents[2] / "examples").glob("*.md"))
    assert _cli(path, "run", "knowledge-publication", *examples, "--title", "T").returncode == 0
    crash = (
        "import os; from adapters.surrealdb import SurrealConfig, SurrealStore;"
        f" SurrealStore(SurrealConfig('surrealkv://{path}')); os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", crash], check=True, timeout=120)
    limited = _cli(path, "executions", "list", max_file_bytes=_size(path) // 2)
    assert limited.returncode == 2
    assert "could not be written as it opened" in limited.stderr
    assert "a file size limit was reached: raise it (ulimit -f)" in limited.stderr
    assert "restore it from a backup" not in limited.stderr
    assert _cli(path, "recover").returncode == 0  # given room, it is as it was
    fresh = _cli(tmp_path / "new", "run", "knowledge-publication", examples[0], max_file_bytes=1024)
    assert fresh.returncode == 2 and "a file size limit was reached" in fresh.stderr


@pytest.mark.parametrize("max_files", [8, 12, 15, 17, 20])
def test_too_few_file_descriptors_left_for_the_engine_is_said_not_a_crash(
    tmp_path: Path, max_files: int
) -> None:
    """With a few left, the engine's runtime panicked and aborted the process (exit 134),
    or a commit failed as a record refused (found by an operator's pass)."""
    path = tmp_path / "store"
    run = (
        "run",
        "knowledge-publication",
        str(Path(__file__).parents[2] / "examples" / "fred-federal-funds-rate-note.md"),
    )
    assert _cli(path, *run).returncode == 0
    for args in (("executions", "list"), run):
        short = _cli(path, *args, max_files=max_files)
        assert short.returncode == 2, short.stderr
        assert "raise the limit, or close files" in short.stderr
    assert "crash" not in _cli(path, "recover").stderr  # nothing was left held


def test_audit_seal_stopped_by_a_full_disk_says_the_same_command_seals_the_rest(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store"
    examples = sorted(str(p) for p in (Path(__file__).parents[2] / "examples").glob("*.md"))
    for n in range(3):
        run = ("run", "knowledge-publication", *examples, "--publication-id", f"p{n}")
        assert _cli(path, *run).returncode == 0
    [segment] = (path / "clog").iterdir()
    keyed = {"GOVKERNEL_AUDIT_KEY": "k" * 16 + "0123456789abcdef0123456789"}
    seal = ("audit", "seal", "--unsealed")
    full = _cli(path, *seal, max_file_bytes=segment.stat().st_size + 3000, env=keyed)
    assert full.returncode == 2
    assert "the same `govkernel audit seal --unsealed` seals the rest" in full.stderr
    done = _cli(path, *seal, env=keyed)
    assert done.returncode == 0 and "left unsealed 0" in done.stdout


@pytest.mark.parametrize("stray", [1, 2, 3])
def test_bytes_past_a_clean_close_are_settled_before_work_is_written_after_them(
    tmp_path: Path, stray: int
) -> None:
    """A log a crash left a few bytes longer than its seal, its lock file clean (copied
    so, or not at all): the engine opened it without noticing them and appended after them,
    and the next open cut back there every commit made since (found by an upgrade pass:
    a run reported succeeded, then lost, the store refused as damaged)."""
    path = tmp_path / "store"
    fred = str(Path(__file__).parents[2] / "examples" / "fred-federal-funds-rate-note.md")
    run = ("run", "knowledge-publication", fred)
    assert _cli(path, *run, "--publication-id", "a").returncode == 0
    [segment] = (path / "clog").iterdir()
    whole, sealed = segment.stat().st_size, (path / "govkernel.seal").read_bytes()
    assert _cli(path, *run, "--publication-id", "b").returncode == 0
    os.truncate(segment, whole + stray)  # the next record barely begun
    (path / "govkernel.seal").write_bytes(sealed)
    assert (tmp_path / "store.lock").read_text() == ""  # closed cleanly, as far as it says
    assert _cli(path, *run, "--publication-id", "c").returncode == 0
    listed = _cli(path, "--json", "executions", "list")
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 2  # a's and c's: b's bytes were torn
    assert _cli(path, "audit", "verify").returncode == 0
