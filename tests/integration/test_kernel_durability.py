"""A surrealkv:// store keeps every committed unit across processes, and only one may hold it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from attrs import evolve

from adapters.contract import SurrealBackdoor, samples
from adapters.memory import MemoryStore
from adapters.surrealdb import SurrealConfig, SurrealStore
from adapters.surrealdb.store import LogSeal, StoreLock
from ports.errors import CommitOutcomeUnknown, DuplicateRecord, StorageUnavailable, StoreInUse
from tests.integration.store_child import jsonable

CHILD = Path(__file__).with_name("store_child.py")


def in_child(command: str, path: Path, **env: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(CHILD), command, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=os.environ | env,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def open_store(path: Path) -> SurrealStore:
    return SurrealStore(SurrealConfig(f"surrealkv://{path}"))


def store_one_source(path: Path) -> None:
    """A store at `path` holding one committed source, closed."""
    with open_store(path) as store, store.unit_of_work() as uow:
        uow.sources.add(samples.source())
        uow.commit()


def test_a_new_process_finds_every_committed_unit(tmp_path: Path) -> None:
    path = tmp_path / "store"
    sources = [samples.source() for _ in range(5)]
    capsule = samples.capsule()
    with open_store(path) as store:
        for source in sources:
            with store.unit_of_work() as uow:
                uow.sources.add(source)
                uow.evidence.add(samples.evidence(source.id))
                uow.events.append(samples.event())
                uow.commit()
        with store.unit_of_work() as uow:
            uow.capsules.add(capsule)
            uow.executions.save(samples.execution())
            uow.commit()
        with store.unit_of_work() as uow:
            uow.capsules.update(evolve(capsule, title="second version"))
            uow.commit()
        # Created and changed in one unit: a record the engine gets twice in one transaction
        # reads back, reopened, as its first write left it; the unit writes it once.
        folded = samples.capsule()
        with store.unit_of_work() as uow:
            uow.capsules.add(folded)
            uow.capsules.update(evolve(folded, title="changed in the unit that made it"))
            uow.commit()
        with store.unit_of_work() as uow:  # rolled back: must not appear anywhere
            uow.sources.add(samples.source(id="rolled-back"))
        with store.unit_of_work() as uow:  # failed: must not appear either
            uow.sources.add(samples.source(id="failed"))
            uow.sources.add(sources[0])
            with pytest.raises(DuplicateRecord):
                uow.commit()
        expected = jsonable(SurrealBackdoor(store).snapshot())

    assert in_child("dump", path) == {"snapshot": expected}
    assert len(expected["knowledge_source"]) == 5
    assert expected["capsule"][capsule.id]["version"] == 2
    assert expected["capsule"][folded.id]["title"] == "changed in the unit that made it"
    assert sorted(e["position"] for e in expected["event"].values()) == [1, 2, 3, 4, 5]

    # And the other way round: what a child commits, a reopened parent sees, in sequence.
    assert in_child("commit", path) == {"positions": [6]}
    with open_store(path) as store, store.unit_of_work() as uow:
        assert uow.sources.get("from-child") is not None
        assert [e.id for e in uow.events.read_after(5)] == ["from-child"]


def test_a_store_keeps_its_id_and_one_from_before_ids_is_given_one(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with open_store(path) as store:
        minted = store.store_id
        assert minted
    with open_store(path) as store:
        assert store.store_id == minted
        store.select_rows("DELETE govkernel_meta:store", {})  # as a store from before ids
    with open_store(path) as store:
        assert store.store_id not in (None, minted)
    with open_store(tmp_path / "another") as other:
        assert other.store_id != minted
    assert MemoryStore().store_id != MemoryStore().store_id


def test_a_second_process_cannot_open_a_store_in_use(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with open_store(path):
        refused = in_child("open", path)
        assert refused["error"] == "StoreInUse"  # a StorageUnavailable to try again
        assert "in use by another process" in refused["message"]
        assert f"pid {os.getpid()}" in refused["message"]
        assert str(path) in refused["message"]
    # Closing releases the lock.
    assert in_child("open", path) == {"opened": True}


def test_a_second_store_in_the_same_process_is_refused_too(tmp_path: Path) -> None:
    # flock is per open file, so even this process cannot open the directory twice.
    path = tmp_path / "store"
    with open_store(path), pytest.raises(StorageUnavailable, match="already open in this process"):
        open_store(path)


@pytest.mark.parametrize("spelling", ["symlink", "dotdot", "trailing-slash"])
def test_every_spelling_of_a_store_takes_the_same_lock(tmp_path: Path, spelling: str) -> None:
    path = tmp_path / "store"
    (tmp_path / "elsewhere").mkdir()
    other = {
        "symlink": tmp_path / "link",
        "dotdot": tmp_path / "elsewhere" / ".." / "store",
        "trailing-slash": Path(f"{path}/"),
    }[spelling]
    with open_store(path):
        if spelling == "symlink":
            other.symlink_to(path, target_is_directory=True)
        with pytest.raises(StorageUnavailable, match="already open in this process"):
            SurrealStore(SurrealConfig(f"surrealkv://{other}"))


def test_another_path_to_the_same_directory_is_refused_too(tmp_path: Path) -> None:
    """A bind mount or a container volume reaches the directory by a path no resolving
    can join to ours, so it finds a lock file of its own: the directory is locked too."""
    path = tmp_path / "store"
    with open_store(path):
        elsewhere = StoreLock(path)
        elsewhere.path = tmp_path / "mounted-elsewhere.lock"  # what the other path finds
        with pytest.raises(StoreInUse, match="through another path to its directory"):
            elsewhere.acquire()  # (75 from the command line: tried again once it is done)
        refused = in_child("open", path)
        assert "in use by another process" in refused["message"]
        path.with_name("store.lock").unlink()  # by hand, while the store is held
        refused = in_child("open", path)
        assert "its lock file (store.lock) was deleted while it was held" in refused["message"]
    elsewhere.acquire()  # closing the store released the directory too
    elsewhere.release()
    with open_store(path):  # and releasing it did the same
        pass


@pytest.mark.parametrize("where", ["under-a-file", "lock-is-a-directory", "root"])
def test_an_unusable_store_path_is_storage_unavailable(tmp_path: Path, where: str) -> None:
    (tmp_path / "afile").write_text("x")
    (tmp_path / "s2.lock").mkdir()
    path = {
        "under-a-file": tmp_path / "afile" / "sub",
        "lock-is-a-directory": tmp_path / "s2",
        "root": Path("/"),
    }[where]
    with pytest.raises(StorageUnavailable):
        SurrealStore(SurrealConfig(f"surrealkv://{path}"))


def test_a_crash_is_remembered_until_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with open_store(path) as store:
        assert store.unclean_shutdown is None
    lock = path.with_name("store.lock")
    lock.write_text("999999")  # what a holder that died leaves behind
    for _ in range(2):  # opening and closing cleanly does not forget it
        with open_store(path) as store:
            assert store.unclean_shutdown == "999999"
    with open_store(path) as store:
        store.acknowledge_unclean_shutdown()
        assert store.unclean_shutdown is None
    with open_store(path) as store:
        assert store.unclean_shutdown is None
    assert lock.read_text() == ""


@pytest.mark.parametrize(
    "left",
    [b"\xff\xfe\x00bin", b"\x00\x00\x00\x00", b"unclean \x1b[31mred", b"not a pid"],
    ids=["binary", "nul", "escape", "text"],
)
def test_whatever_a_lock_file_holds_is_taken_for_a_crash_and_never_echoed(
    tmp_path: Path, left: bytes
) -> None:
    path = tmp_path / "store"
    with open_store(path) as store:
        pass
    path.with_name("store.lock").write_bytes(left)  # a power loss or a hand wrote this
    with open_store(path) as store:
        assert store.unclean_shutdown == "unknown"


def test_a_lock_file_that_is_a_link_or_not_a_file_is_refused_and_left_alone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store"
    with open_store(path):
        pass
    lock = path.with_name("store.lock")
    victim = tmp_path / "precious.txt"
    victim.write_text("precious data")
    lock.unlink()
    lock.symlink_to(victim)
    with pytest.raises(StorageUnavailable, match=r"store\.lock: it is a symbolic link"):
        open_store(path)
    assert victim.read_text() == "precious data"
    lock.unlink()
    lock.mkdir()
    with pytest.raises(StorageUnavailable, match=r"store\.lock"):
        open_store(path)


def test_a_huge_lock_file_is_not_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with open_store(path):
        pass
    with path.with_name("store.lock").open("r+b") as lock:
        lock.truncate(256 * 1024 * 1024)  # sparse: what a damaged file system can leave
    tracemalloc.start()
    try:
        with open_store(path) as store:
            assert store.unclean_shutdown == "unknown"
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 1024 * 1024


def test_a_store_the_engine_cannot_open_says_why(tmp_path: Path) -> None:
    path = tmp_path / "store"
    store_one_source(path)
    (segment,) = sorted((path / "clog").iterdir())[-1:]
    os.truncate(segment, 10)  # inside the segment's header: beyond what the engine repairs
    with pytest.raises(StorageUnavailable) as refused:
        open_store(path)
    assert "cannot open SurrealDB store (surrealkv://)" in str(refused.value)
    assert "datastore" in str(refused.value).lower()  # the engine's own diagnosis


class _KilledAt:
    """A lock file whose process dies (raises) at one call of its rewrite."""

    def __init__(self, real: Any, at: str) -> None:
        self.real, self.at = real, at

    def __getattr__(self, name: str) -> Any:
        if name == self.at:
            raise _Killed
        return getattr(self.real, name)


class _Killed(Exception):
    pass


@pytest.mark.parametrize("at", ["write", "truncate"])
def test_a_lock_file_rewrite_cut_short_never_reads_as_a_clean_close(
    tmp_path: Path, at: str
) -> None:
    """A holder killed while it rewrites the lock file must leave something that reads as a
    crash: written over, then cut to length, never emptied first."""
    path = tmp_path / "store"
    path.with_name("store.lock").write_text("4242")  # a holder died before
    lock = StoreLock(path)
    lock.acquire()
    real = lock._file
    assert real is not None
    lock._file = _KilledAt(real, at)  # type: ignore[assignment]
    with pytest.raises(_Killed):
        lock._write("")  # the rewrite that says "closed cleanly", cut short
    real.close()  # the process is gone: its locks with it
    os.close(lock._directory_fd or -1)
    after = StoreLock(path)
    after.acquire()
    assert after.crashed_holder is not None  # still a crash to check, not a clean close
    after.release()


@pytest.mark.parametrize("found", ["", "unclean 4242", "4242"])
def test_a_stop_as_the_lock_is_taken_leaves_the_lock_file_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, found: str
) -> None:
    """Ctrl-C or SIGTERM (the CLI raises KeyboardInterrupt for both) in the fsync that
    records this process as the holder: nothing was done, and no crash is left to check."""
    path = tmp_path / "store"
    lock_file = path.with_name("store.lock")
    lock_file.write_text(found)
    real_fsync, calls = os.fsync, []

    def stopped_once(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            raise KeyboardInterrupt
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", stopped_once)
    with pytest.raises(KeyboardInterrupt):
        StoreLock(path).acquire()
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert lock_file.read_text() == found
    again = StoreLock(path)
    again.acquire()  # not held by the stopped one
    assert again.crashed_holder == (None if not found else "4242")
    again.release()


def test_a_commit_the_engine_failed_stops_the_seal_for_the_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(LogSeal, "EVERY", 0.0)  # else sealed after every commit
    path = tmp_path / "store"
    with open_store(path):
        pass
    sealed = (path / "govkernel.seal").read_text()
    store = open_store(path)

    class Failing:
        def __init__(self, real: Any) -> None:
            self.real = real

        def query_raw(self, text: str, params: dict[str, Any]) -> Any:
            if text.startswith("BEGIN"):
                raise RuntimeError("fsync failed")  # the engine may have written some of it
            return self.real.query_raw(text, params)

        def close(self) -> None:
            self.real.close()

    real = store._db
    store._db = Failing(real)
    with pytest.raises(CommitOutcomeUnknown), store.unit_of_work() as uow:
        uow.sources.add(samples.source())
        uow.commit()
    store._db = real
    with store.unit_of_work() as uow:  # later commits land, but seal nothing
        uow.sources.add(samples.source())
        uow.commit()
    store.close()
    assert (path / "govkernel.seal").read_text() == sealed


def test_a_process_whose_engine_does_not_fsync_refuses_a_store_that_must(tmp_path: Path) -> None:
    """The engine reads SURREAL_SYNC_DATA once per process, at its first surrealkv:// store."""
    script = (
        "from adapters.surrealdb import SurrealConfig, SurrealStore\n"
        "from ports.errors import StorageUnavailable\n"
        f"SurrealStore(SurrealConfig('surrealkv://{tmp_path}/a', sync_data=False)).close()\n"
        "try:\n"
        f"    SurrealStore(SurrealConfig('surrealkv://{tmp_path}/b')).close()\n"
        "except StorageUnavailable as exc:\n"
        "    print(exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SURREAL_SYNC_DATA"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert "would not fsync its commits" in done.stdout, done.stderr
    assert not (tmp_path / "b" / "clog").exists()  # refused before the engine wrote anything


@pytest.mark.parametrize(
    ("given", "syncs"),
    [
        ("TRUE", True),
        (" true", True),
        ("1", True),
        ("yes", True),
        ("", True),  # set empty, as `SURREAL_SYNC_DATA=$UNSET` sets it: as if not set
        (" ", True),
        ("false", False),
    ],
)
def test_a_sync_setting_meant_as_true_is_made_the_engines_and_false_is_honoured(
    tmp_path: Path, given: str, syncs: bool
) -> None:
    """The engine fsyncs only for exactly `true`: `TRUE` would silently turn it off."""
    script = (
        "import os\n"
        "from adapters.surrealdb import SurrealConfig, SurrealStore, store\n"
        f"SurrealStore(SurrealConfig('surrealkv://{tmp_path}/s')).close()\n"
        "print(repr(os.environ['SURREAL_SYNC_DATA']), store._engine_syncs())\n"
    )
    env = dict(os.environ) | {"SURREAL_SYNC_DATA": given}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == (["'true'", "True"] if syncs else ["'false'", "False"])


@pytest.mark.parametrize("given", ["ture", "enabled", "y"])
def test_a_sync_setting_that_is_neither_true_nor_false_is_refused(
    tmp_path: Path, given: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine would read it as false: fsync off, without a word."""
    monkeypatch.setenv("SURREAL_SYNC_DATA", given)
    with pytest.raises(StorageUnavailable, match=f"SURREAL_SYNC_DATA is '{given}'.*true"):
        open_store(tmp_path / "store")
    assert not (tmp_path / "store" / "clog").exists()  # nothing was made


def test_an_unsealed_store_with_a_damaged_header_is_not_taken_for_an_empty_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store"
    store_one_source(path)
    (path / "govkernel.seal").unlink()  # as the refusal message says to, or an older store
    (segment,) = sorted((path / "clog").iterdir())
    size = segment.stat().st_size
    with segment.open("r+b") as log:
        log.write(b"\x7f\xff\xff\xff")  # a header length no engine writes
    with pytest.raises(StorageUnavailable) as refused:
        open_store(path)
    assert "nothing has run" not in str(refused.value)
    assert segment.stat().st_size == size  # left for the engine to refuse, not wiped


def test_a_store_whose_log_alone_is_gone_is_refused_not_started_over(tmp_path: Path) -> None:
    """Its 20 executions were dropped without a word: called "nothing has run there yet" by
    a read, made anew by a run, with its seal forgotten (found by a pass damaging stores'
    files)."""
    path = tmp_path / "store"
    store_one_source(path)
    shutil.rmtree(path / "clog")
    for create in (False, True):
        with pytest.raises(StorageUnavailable, match="has lost its log: clog/ is gone") as refused:
            SurrealStore(SurrealConfig(f"surrealkv://{path}", create=create))
        assert "nothing has run" not in str(refused.value)
    assert not (path / "clog").exists()  # nothing made in its place
    shutil.rmtree(path / "manifest")  # and the rest, as the message says, to start over
    (path / "govkernel.seal").unlink()
    with open_store(path) as store, store.unit_of_work() as uow:
        assert uow.select("knowledge_source", {}) == []  # opens, empty


def test_a_file_in_the_logs_place_is_refused_and_the_seal_kept(tmp_path: Path) -> None:
    """A run failed on it after forgetting the seal: the file removed, the store was then
    made anew, empty (found by a pass swapping stores' files)."""
    path = tmp_path / "store"
    store_one_source(path)
    log = path / "clog"
    shutil.move(log, tmp_path / "clog.kept")
    log.write_bytes(b"not a log")
    for create in (False, True):
        with pytest.raises(StorageUnavailable, match=f"its log, {log}, is not a directory"):
            SurrealStore(SurrealConfig(f"surrealkv://{path}", create=create))
    assert (path / "govkernel.seal").exists()
    log.unlink()
    with pytest.raises(StorageUnavailable, match="has lost its log"):
        open_store(path)
    shutil.move(tmp_path / "clog.kept", log)
    with open_store(path) as store, store.unit_of_work() as uow:
        assert len(uow.select("knowledge_source", {})) == 1


def test_a_log_segment_that_is_not_a_regular_file_is_refused_without_waiting(
    tmp_path: Path,
) -> None:
    """A FIFO in a segment's place: every command waited for a writer, for ever."""
    path = tmp_path / "store"
    store_one_source(path)
    segment = max((path / "clog").iterdir())
    segment.unlink()
    os.mkfifo(segment)
    refused = in_child("open", path)
    assert refused["error"] == "StorageUnavailable"
    assert f"{segment} is not a regular file" in refused["message"]


def test_a_log_segment_damaged_before_the_last_is_named_not_the_manifest(
    tmp_path: Path,
) -> None:
    """The message sent the operator to move the manifest aside, which changes nothing: the
    log is what is damaged (found by a pass damaging stores of many segments)."""
    small = {"SURREAL_SURREALKV_MAX_SEGMENT_SIZE": "65536"}  # a long-lived store's many segments
    path = tmp_path / "store"
    assert in_child("fill", path, **small)
    segments = sorted((path / "clog").iterdir())
    assert len(segments) >= 3
    os.truncate(segments[1], segments[1].stat().st_size // 2)
    refused = in_child("open", path, **small)
    assert refused["error"] == "StorageUnavailable"
    said = f"its log ({path / 'clog'}) is damaged where the engine cannot repair it"
    assert said in refused["message"] and "manifest" not in refused["message"]


@pytest.mark.parametrize("damage", ["length", "count", "segment_id", "magic"])
@pytest.mark.parametrize(
    ("segment_size", "damaged"), [("65536", 1), ("400000", 0)], ids=["many", "two"]
)
def test_a_damaged_header_of_an_earlier_log_segment_is_refused_before_the_engine_opens(
    tmp_path: Path, damage: str, segment_size: str, damaged: int
) -> None:
    """The engine panicked (the process aborted, exit 134, its lock file left as a crash's)
    or opened the store with every table unreadable, `recover` then saying "nothing to
    recover" (found by a pass damaging stores of many segments). With two segments, the
    first check read no header to compare with, and let a damaged first one through."""
    env = {"SURREAL_SURREALKV_MAX_SEGMENT_SIZE": segment_size}
    path = tmp_path / "store"
    assert in_child("fill", path, **env)
    segments = sorted((path / "clog").iterdir())
    assert len(segments) >= 2 if damaged else len(segments) == 2
    header = segments[damaged].read_bytes()[:200]
    # Where a value lies varies: the header is a map, in no fixed order.
    field = {"segment_id": b"segment_id", "magic": b"magic"}.get(damage, b"")
    offset = {"length": 0, "count": 4}.get(damage, header.find(field) + len(field) + 4)
    with segments[damaged].open("r+b") as segment:
        segment.seek(offset)
        segment.write(b"\0\0\0\x09")
    refused = in_child("open", path, **env)
    assert refused["error"] == "StorageUnavailable"
    said = f"the header of its segment {segments[damaged].name} does not read back"
    assert said in refused["message"] and "restore the store from a backup" in refused["message"]


def test_a_segment_number_past_64_bits_is_the_engines_to_refuse(tmp_path: Path) -> None:
    """The check's own arithmetic failed on it: an internal error, exit 1."""
    path = tmp_path / "store"
    assert in_child("commit", path)
    (segment,) = sorted((path / "clog").iterdir())
    for number in (2**64, 10**20 - 1):  # (the first not the last: the last is not judged)
        shutil.copy(segment, path / "clog" / f"{number}.clog")
    refused = in_child("open", path)
    assert refused["error"] == "StorageUnavailable"


def test_a_store_started_over_and_killed_as_the_engine_began_opens_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine makes its manifest before its log: killed in between, with the old seal
    left, the next open took it for a store that lost its log (found by a pass looking for
    false refusals)."""
    path = tmp_path / "store"
    store_one_source(path)
    shutil.rmtree(path / "clog")
    shutil.rmtree(path / "manifest")  # to start over, as the README says
    connect = SurrealStore._connect

    def killed_after_the_manifest(store: SurrealStore, url: str) -> None:
        (path / "manifest").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(SurrealStore, "_connect", killed_after_the_manifest)
    with pytest.raises(KeyboardInterrupt):
        open_store(path)
    monkeypatch.setattr(SurrealStore, "_connect", connect)
    with open_store(path) as store, store.unit_of_work() as uow:
        assert uow.select("knowledge_source", {}) == []  # new, as it was meant to be


@pytest.mark.parametrize("begun", [b"", b"\0\0", b"\0\0\0\xaa\0\0\0\x06"])
def test_a_newest_log_segment_cut_inside_its_header_is_moved_aside_and_the_store_opens(
    tmp_path: Path, begun: bytes
) -> None:
    """A crash as the engine began a segment (every 512 MB of log) left a log it would not
    open ("failed to fill whole buffer"), and a hint about the manifest. No record can follow
    a header not yet whole: the segment held none, and is moved aside, never deleted."""
    small = {"SURREAL_SURREALKV_MAX_SEGMENT_SIZE": "65536"}
    path = tmp_path / "store"
    assert in_child("fill", path, **small)
    before = in_child("dump", path, **small)
    last = sorted((path / "clog").iterdir())[-1]
    torn = path / "clog" / f"{int(last.stem) + 1:020d}.clog"
    torn.write_bytes(begun)
    said = subprocess.run(
        [str(Path(sys.executable).with_name("govkernel")), "executions", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=os.environ | small | {"GOVKERNEL_STORE": f"surrealkv://{path}"},
    )
    assert said.returncode == 0, said.stderr
    aside = path / f"{torn.name}.torn-header"
    assert "newest log segment was cut inside its header" in said.stderr
    assert f"moved aside to {aside}" in said.stderr
    assert aside.read_bytes() == begun and not torn.exists()
    assert in_child("dump", path, **small) == before
    assert in_child("commit", path, **small)["positions"]  # and goes on


@pytest.mark.parametrize("damage", ["stray-log-file", "manifest-cut"])
def test_engine_files_it_cannot_read_are_named_with_what_to_try(
    tmp_path: Path, damage: str
) -> None:
    path = tmp_path / "store"
    assert in_child("commit", path)
    before = in_child("dump", path)
    if damage == "stray-log-file":
        (path / "clog" / "junk.tmp").write_bytes(os.urandom(100))
        hint = f"{path / 'clog' / 'junk.tmp'} is not one of the engine's log segments"
    else:
        [manifest] = (path / "manifest").iterdir()
        manifest.write_bytes(manifest.read_bytes()[:-4])
        hint = f"moving {path / 'manifest'} aside lets the engine rebuild it from the log"
    refused = in_child("open", path)
    assert hint in refused["message"], refused
    # What it says to try works, and loses nothing.
    if damage == "stray-log-file":
        (path / "clog" / "junk.tmp").rename(tmp_path / "junk.tmp")
    else:
        (path / "manifest").rename(tmp_path / "manifest.aside")
    assert in_child("dump", path) == before
