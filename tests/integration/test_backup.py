"""Backups of an open `surrealkv://` store: the store as of one moment, opening cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from adapters.contract import samples
from adapters.surrealdb import SurrealConfig, SurrealStore
from adapters.surrealdb.store import LogSeal, _log_bytes
from composition.container import build_app
from composition.settings import Settings
from domain.model.errors import InvalidInput
from ports.errors import StorageUnavailable
from tests.composition.test_container import request


def _open(path: Path) -> SurrealStore:
    return SurrealStore(SurrealConfig(f"surrealkv://{path}"))


def _commit_one(store: SurrealStore) -> None:
    source = samples.source()
    with store.unit_of_work() as uow:
        uow.sources.add(source)
        uow.evidence.add(samples.evidence(source.id))
        uow.events.append(samples.event())
        uow.commit()


def _events(store: SurrealStore) -> tuple[int, list[int]]:
    """The log's head and the positions stored: gapless when they agree."""
    with store.unit_of_work() as uow:
        head = uow.events_head()
        positions = [e["position"] for e in uow.events_after(0, 10_000)]
    return head, positions


def test_a_backup_taken_while_commits_run_opens_cleanly_as_one_moment(tmp_path: Path) -> None:
    path = tmp_path / "store"
    stop = threading.Event()
    committed: list[int] = []
    with _open(path) as store:
        _commit_one(store)

        def writing() -> None:
            while not stop.is_set():
                _commit_one(store)
                committed.append(1)

        writer = threading.Thread(target=writing)
        writer.start()
        try:
            copies = []
            for n in range(3):
                for _ in range(1000):  # some commits before each copy, and one racing it
                    if len(committed) >= 5 * (n + 1):
                        break
                    time.sleep(0.01)
                copied = store.backup(tmp_path / f"copy-{n}")
                assert copied > 0
                copies.append(tmp_path / f"copy-{n}")
        finally:
            stop.set()
            writer.join()
        _commit_one(store)  # the store goes on after
        head, _ = _events(store)
    assert len(committed) >= 15  # commits ran between and during the copies
    heads = []
    for copy in copies:
        # Whole as sealed: no log past its seal to settle, no crash, nothing torn.
        assert LogSeal(copy).closed == _log_bytes(copy)
        with _open(copy) as restored:
            assert restored.unclean_shutdown is None and restored.torn_repair is None
            copy_head, positions = _events(restored)
            assert positions == list(range(1, copy_head + 1))  # gapless: one moment
            heads.append(copy_head)
    assert heads == sorted(heads) and heads[-1] < head  # each later, none with what came after


def test_a_backup_goes_into_a_new_directory_outside_its_store(tmp_path: Path) -> None:
    path = tmp_path / "store"
    (tmp_path / "taken").mkdir()
    with _open(path) as store:
        _commit_one(store)
        for where, problem in (
            (tmp_path / "taken", "exists"),
            (path / "in", "inside"),
            (tmp_path / "no-such" / "copy", "no directory"),  # it made them, where a typo said
        ):
            with pytest.raises(InvalidInput, match=problem) as refused:
                store.backup(where)
            assert refused.value.field == "destination"
        assert not (path / "in").exists() and list((tmp_path / "taken").iterdir()) == []
        assert not (tmp_path / "no-such").exists()
        # Not a path at all (a library user, h155): refused as the destination, not as
        # pathlib's TypeError or ValueError from inside.
        for given, problem in (
            (None, "not NoneType"),
            (5, "not int"),
            (b"/tmp/copy", "not bytes"),
            (str(tmp_path / "b\x00"), "NUL"),
            ("", "must not be empty"),  # the current directory, said to exist (h157)
            (" ", "must not be empty"),  # a directory named " " made (h157)
            (str(tmp_path / "copy "), "ends with white space"),  # no store URL names it (h159)
        ):
            with pytest.raises(InvalidInput, match=problem) as refused:
                store.backup(given)  # type: ignore[arg-type]
            assert refused.value.field == "destination"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["store", "store.lock", "taken"]


@pytest.mark.parametrize("url", ["memory://", "mem://"])
def test_a_store_held_in_memory_has_no_directory_to_copy(tmp_path: Path, url: str) -> None:
    with (
        build_app(Settings(store_url=url)) as app,
        pytest.raises(StorageUnavailable, match="held in memory"),
    ):
        app.backup(tmp_path / "copy")
    assert not (tmp_path / "copy").exists()


def test_an_apps_backup_restores_its_executions(tmp_path: Path) -> None:
    url = f"surrealkv://{tmp_path / 'store'}"
    with build_app(Settings(store_url=url)) as app:
        done = app.orchestrator.start("knowledge_publication", request("pub-1"))
        app.backup(tmp_path / "copy")
        app.orchestrator.start("knowledge_publication", request("pub-2"))
    with build_app(Settings(store_url=f"surrealkv://{tmp_path / 'copy'}")) as restored:
        assert restored.unclean_shutdown is None
        with restored.uow_factory() as uow:
            assert [x.id for x in uow.executions.every()] == [done.id]
        assert restored.orchestrator.verify(done.id).ok


def test_a_backup_never_removes_what_it_did_not_make(tmp_path: Path) -> None:
    """Its copy grows in a directory of its own: one named as an earlier version's partial
    copy was (the very store, even) is left alone."""
    beside = tmp_path / ".copy.partial"
    with _open(beside) as store:
        _commit_one(store)
        store.backup(tmp_path / "copy")
    assert (beside / "clog").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".copy.partial",
        ".copy.partial.lock",
        "copy",
        "copy.lock",
    ]
    assert (tmp_path / "copy.lock").read_text() == ""  # closed cleanly, as far as it knows


def test_a_lock_file_already_where_the_copys_goes_refuses_the_backup(tmp_path: Path) -> None:
    """It would be taken for the copy's: a crash, a damaged log, or a link elsewhere."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "stale.lock").write_text("damaged 100 5000")
    (tmp_path / "linked.lock").symlink_to(victim)
    with _open(tmp_path / "store") as store:
        _commit_one(store)
        for name in ("stale", "linked"):
            with pytest.raises(InvalidInput, match=rf"{name}.lock exists") as refused:
                store.backup(tmp_path / name)
            assert refused.value.field == "destination"
            # Most likely a backup stopped midway: what to remove is named.
            assert f"partial copy .{name}.* beside it" in str(refused.value)
            # Or a backup made there and removed since, its lock file left behind.
            assert "a backup made there was removed since" in str(refused.value)
    assert victim.read_text() == "precious"
    assert not (tmp_path / "stale").exists() and not (tmp_path / "linked").exists()


KILLED_MIDWAY = """
import os, sys
from contextlib import contextmanager
from adapters.surrealdb import SurrealConfig, SurrealStore

@contextmanager
def dying(chunks):
    def going():
        for n, chunk in enumerate(chunks):
            if n == len(chunks) // 2:
                os._exit(9)  # as a SIGKILL would: nothing cleaned up
            yield chunk
    yield going()

store = SurrealStore(SurrealConfig("surrealkv://" + sys.argv[1]))
store.backup(sys.argv[2], progress=dying)
"""


def test_what_a_backup_killed_midway_leaves_is_never_opened_as_a_store(tmp_path: Path) -> None:
    """It opened as an older state (its torn log cut), and verified."""
    path = tmp_path / "store"
    with _open(path) as store:
        for _ in range(20):
            _commit_one(store)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_MIDWAY, str(path), str(tmp_path / "copy")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert killed.returncode == 9, killed.stderr
    assert not (tmp_path / "copy").exists()
    (partial,) = tmp_path.glob(".copy.*")
    with pytest.raises(StorageUnavailable, match="partial copy of a backup that did not"):
        _open(partial)
    with pytest.raises(StorageUnavailable, match="partial copy of a backup that did not"):
        _open(partial.rename(tmp_path / "taken-for-the-copy"))
    assert (path / "clog").is_dir()  # the store itself: untouched, and whole
    with _open(path) as store:
        assert _events(store) == (20, list(range(1, 21)))


def test_two_backups_racing_for_one_destination_leave_one_whole_copy(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with _open(path) as store:
        _commit_one(store)
    (tmp_path / "store.lock").write_text("unclean 4242")  # the copy must carry that crash
    outcomes: list[object] = []
    with _open(path) as store:

        def backing_up() -> None:
            try:
                outcomes.append(store.backup(tmp_path / "copy"))
            except InvalidInput as refused:
                outcomes.append(refused)

        racers = [threading.Thread(target=backing_up) for _ in range(2)]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join()
    assert sorted(type(o).__name__ for o in outcomes) == ["InvalidInput", "int"]
    assert (tmp_path / "copy.lock").read_text() == "unclean 4242"  # the dead holder's pid
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".copy")] == []


def test_a_backup_of_a_store_not_known_whole_carries_its_crash(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with _open(path) as store:
        _commit_one(store)
    (tmp_path / "store.lock").write_text("unclean 999999")  # died holding it: not checked yet
    with _open(path) as store:
        assert store.unclean_shutdown == "999999"
        store.backup(tmp_path / "copy")
    with _open(tmp_path / "copy") as copy:
        assert copy.unclean_shutdown is not None  # its next open checks it, as the store's does


def test_a_backup_is_as_private_as_its_store(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with _open(path) as store:
        _commit_one(store)
        for p in [path, *path.rglob("*")]:
            p.chmod(0o700 if p.is_dir() else 0o600)
        store.backup(tmp_path / "copy")

    def modes(root: Path) -> dict[Path, int]:
        return {p.relative_to(root): p.stat().st_mode & 0o777 for p in [root, *root.rglob("*")]}

    copied = modes(tmp_path / "copy")
    assert copied == modes(path)  # mode for mode
    assert copied[Path(".")] == copied[Path("clog")] == 0o700
    assert copied[Path(LogSeal.NAME)] == 0o600  # the seal the backup wrote, private too


def test_under_a_permissive_umask_nothing_of_a_store_is_writable_by_others(
    tmp_path: Path,
) -> None:
    """Under umask 000 the store's directory, its parents and its seal were world-writable
    (the seal took the directory's mode), and backups copied that: another user could
    rewrite the seal to lock the owner out, or swap the log and its seal together (h148)."""

    def writable_by_others(root: Path) -> list[str]:
        return [
            f"{p} {p.stat().st_mode & 0o777:o}"
            for p in [root, *root.rglob("*")]
            if p.stat().st_mode & 0o022
        ]

    old = os.umask(0)
    try:
        path = tmp_path / "data" / "deeper" / "store"
        with _open(path) as store:
            _commit_one(store)
            store.backup(tmp_path / "copy")
        assert writable_by_others(tmp_path / "data") == []
        assert writable_by_others(tmp_path / "copy") == []
        assert (path / LogSeal.NAME).stat().st_mode & 0o777 == 0o640
        # A store an older govkernel made world-writable: its seal, rewritten, and its
        # backup are not.
        older = tmp_path / "older"
        with _open(older) as store:
            _commit_one(store)
        for p in [older, *older.rglob("*")]:
            p.chmod(0o777 if p.is_dir() else 0o666)
        with _open(older) as store:
            _commit_one(store)
            store.backup(tmp_path / "older-copy")
        assert (older / LogSeal.NAME).stat().st_mode & 0o777 == 0o644
        assert writable_by_others(tmp_path / "older-copy") == []
    finally:
        os.umask(old)


def test_a_seal_that_cannot_be_written_names_the_file_in_the_way(tmp_path: Path) -> None:
    """A directory left where the seal's temporary goes turned the seal off with a note
    naming the seal itself, a regular file, not what to remove (h149)."""
    path = tmp_path / "store"
    with _open(path) as store:
        _commit_one(store)
    (path / f"{LogSeal.NAME}.tmp").mkdir()
    store = _open(path)
    _commit_one(store)
    store.close()
    assert store.seal_unwritten is not None
    assert store.seal_unwritten.startswith(f"{LogSeal.NAME}.tmp: "), store.seal_unwritten
