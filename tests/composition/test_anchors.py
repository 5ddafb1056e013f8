"""Audit anchors: what the hash chain alone cannot show (a trail rolled back, rewritten with
fresh hashes, or deleted whole) is caught against heads recorded earlier outside the store."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from attrs import evolve
from surrealdb import RecordID

from adapters.surrealdb import SurrealConfig, SurrealStore
from composition.cli.audit import _in_the_store
from domain.model.evidence import canonical_json
from domain.model.lifecycle import GENESIS, AuditAnchor, AuditEntry, check_anchor
from ports import records
from ports.records import audit_key
from tests.composition.test_cli import FRED, IMF, Cli
from tests.composition.test_cli import fresh as fresh  # a fixture


def trail_of(store: SurrealStore, xid: str) -> list[AuditEntry]:
    rows = store.select_rows(
        "SELECT * FROM audit WHERE execution_id = $x ORDER BY sequence", {"x": xid}
    )
    return [records.audit_from({k: v for k, v in row.items() if k != "id"}) for row in rows]


def set_head(store: SurrealStore, xid: str, last: AuditEntry) -> None:
    store.select_rows(
        "UPDATE $r SET audit_head = $h, audit_sequence = $n, state = $s",
        {
            "r": RecordID("execution", xid),
            "h": last.hash,
            "n": last.sequence,
            "s": last.to_state.value,
        },
    )


def roll_back(url: str, xid: str, keep: int) -> None:
    """Drop every entry after the first `keep` and set the execution back to match (head,
    state, step cursor, outputs): a consistent shorter trail, which the chain alone cannot
    tell from the real one."""
    with SurrealStore(SurrealConfig(url)) as store:
        trail = trail_of(store, xid)
        for entry in trail[keep:]:
            store.select_rows("DELETE $r", {"r": RecordID("audit", audit_key(xid, entry.sequence))})
        kept = [e for e in trail[:keep] if e.step and e.from_state is e.to_state]
        [outputs] = store.select_rows(
            "SELECT VALUE outputs_json FROM ONLY $r", {"r": RecordID("execution", xid)}
        )
        store.select_rows(
            "UPDATE $r SET current_step = $n, outputs_json = $o",
            {
                "r": RecordID("execution", xid),
                "n": len(kept),
                "o": canonical_json(
                    {k: v for k, v in json.loads(outputs).items() if k in {e.step for e in kept}}
                ),
            },
        )
        set_head(store, xid, trail[keep - 1])


def rewrite(url: str, xid: str, sequence: int, reason: str) -> None:
    """Change one entry's reason and re-hash it and every entry after it, head included."""
    with SurrealStore(SurrealConfig(url)) as store:
        prev = GENESIS
        new: list[AuditEntry] = []
        for entry in trail_of(store, xid):
            changed = evolve(entry, prev_hash=prev)
            if entry.sequence == sequence:
                changed = evolve(changed, reason=reason)
            changed = evolve(changed, hash=changed.recomputed())
            store.select_rows(
                "UPDATE $r SET reason = $reason, prev_hash = $p, hash = $h",
                {
                    "r": RecordID("audit", audit_key(xid, entry.sequence)),
                    "reason": changed.reason,
                    "p": changed.prev_hash,
                    "h": changed.hash,
                },
            )
            new.append(changed)
            prev = changed.hash
        set_head(store, xid, new[-1])


def delete_whole(url: str, xid: str) -> None:
    with SurrealStore(SurrealConfig(url)) as store:
        store.select_rows("DELETE audit WHERE execution_id = $x", {"x": xid})
        store.select_rows("DELETE $r", {"r": RecordID("execution", xid)})
        store.select_rows("DELETE $r", {"r": RecordID("execution_input", xid)})


@pytest.fixture
def published(fresh: Cli, tmp_path: Path) -> tuple[Cli, str, str, Path]:
    """Two publications, anchored in a file."""
    first = fresh.json("run", "knowledge-publication", str(FRED))["execution_id"]
    second = fresh.json("run", "knowledge-publication", str(IMF))["execution_id"]
    path = tmp_path / "anchors.json"
    summary = fresh.json("audit", "anchor", "--output", str(path))
    assert summary["anchored"] == 2 and summary["broken"] == []
    return fresh, first, second, path


@pytest.mark.parametrize(
    "attack",
    [
        pytest.param(lambda url, xid: roll_back(url, xid, keep=4), id="rolled-back"),
        pytest.param(lambda url, xid: rewrite(url, xid, 3, "nothing to see"), id="rewritten"),
        pytest.param(delete_whole, id="deleted-whole"),
    ],
)
def test_what_the_chain_alone_misses_the_anchors_catch(
    published: tuple[Cli, str, str, Path], attack: Any
) -> None:
    gk, first, second, path = published
    attack(gk.url, first)

    alone = gk.json("audit", "verify")
    assert alone["ok"] is True  # the attack leaves a chain that verifies on its own

    caught = gk.json("audit", "verify", "--anchors", str(path), code=1)
    verdicts = {r["execution_id"]: r for r in caught["reports"]}
    assert verdicts[second]["ok"] and not verdicts[first]["ok"]
    assert caught["anchors"]["checked"] == 2 and caught["anchors"]["failed"] == 1
    problem = verdicts[first]["problem"]
    assert any(word in problem for word in ("rolled back", "rewritten", "deleted"))
    gk("audit", "verify", "--anchors", str(path), code=1)
    assert f"audit trail of {first} is broken" in gk.stderr
    # One execution named: only its anchor is checked.
    assert gk.json("audit", "verify", second, "--anchors", str(path))["ok"]
    # That one execution checked alone is as broken (a deleted one was "not found", exit 2).
    [one] = gk.json("audit", "verify", first, "--anchors", str(path), code=1)["reports"]
    assert (one["execution_id"], one["problem"]) == (first, problem)


def test_an_execution_whose_record_is_gone_is_reported_checked_alone_too(
    published: tuple[Cli, str, str, Path],
) -> None:
    gk, first, _, path = published
    with SurrealStore(SurrealConfig(gk.url)) as store:
        store.select_rows("DELETE $r", {"r": RecordID("execution", first)})
    whole = {r["execution_id"]: r for r in gk.json("audit", "verify", code=1)["reports"]}
    [alone] = gk.json("audit", "verify", first, code=1)["reports"]
    assert alone == whole[first] and "the execution record is gone" in alone["problem"]
    with SurrealStore(SurrealConfig(gk.url)) as store:  # the entry pinning its tenant too
        store.select_rows("DELETE $r", {"r": RecordID("audit", audit_key(first, 1))})
    gk("audit", "verify", first, code=2)  # whose it was cannot be told: only an anchor can
    assert f"no execution '{first}'" in gk.stderr
    gk("audit", "verify", first, "--anchors", str(path), code=1)
    assert f"audit trail of {first} is broken" in gk.stderr


def test_an_anchored_execution_that_no_longer_reads_fails_its_anchor(
    published: tuple[Cli, str, str, Path],
) -> None:
    """Damaged so that it cannot be read, it holds its anchor no more than one deleted does
    (a pass that skipped it counted every anchor held: h172's batch)."""
    gk, first, second, path = published
    with SurrealStore(SurrealConfig(gk.url)) as store:
        store.select_rows(  # a NUL: the engine cannot hand the record back
            "UPDATE $r SET last_error = $v RETURN NONE",
            {"r": RecordID("execution", first), "v": "x\x00"},
        )
    caught = gk.json("audit", "verify", "--anchors", str(path), code=1)
    assert caught["anchors"]["checked"] == 2 and caught["anchors"]["failed"] == 1
    reports = {r["execution_id"]: r for r in caught["reports"]}
    assert not reports[first]["ok"] and "cannot be read back" in reports[first]["problem"]
    assert reports[second]["ok"]


def test_a_trail_whose_execution_record_is_gone_is_not_anchored_and_fails_the_anchoring(
    published: tuple[Cli, str, str, Path], tmp_path: Path
) -> None:
    """An anchoring that passed over it in silence would exit 0 with nothing anchored to
    catch the deletion by later (h172)."""
    gk, first, _, _ = published
    with SurrealStore(SurrealConfig(gk.url)) as store:
        store.select_rows("DELETE $r", {"r": RecordID("execution", first)})
    summary = gk.json("audit", "anchor", "--output", str(tmp_path / "again.json"), code=1)
    [broken] = summary["broken"]
    assert broken["execution_id"] == first and "record is gone" in broken["problem"]
    assert summary["anchored"] == 1  # the other one still is


def test_anchors_of_another_store_are_said_to_be_so_and_checked_all_the_same(
    published: tuple[Cli, str, str, Path], tmp_path: Path
) -> None:
    gk, _, _, path = published
    taken = json.loads(path.read_text())
    other = Cli(tmp_path / "other-store", tmp_path)
    other("run", "knowledge-publication", str(FRED))
    report = other.json("audit", "verify", "--anchors", str(path), code=1)
    assert report["ok"] is False and report["anchors"]["store_matches"] is False
    assert report["anchors"]["failed"] == 2  # checked: neither execution is here
    assert f"the anchor file names store {taken['store']}" in other.stderr
    other("audit", "anchor", "--output", str(path), code=1)
    assert "was left as it is" in other.stderr and "anchor into another file" in other.stderr
    assert json.loads(path.read_text()) == taken
    # A copy of the store is the same store: a backup is checked against its anchors.
    copy = tmp_path / "copy"
    shutil.copytree(gk.store, copy)
    assert Cli(copy, tmp_path).json("audit", "verify", "--anchors", str(path))["ok"]


def test_a_changed_store_id_fails_even_where_every_anchor_holds(
    published: tuple[Cli, str, str, Path],
) -> None:
    gk, first, _, path = published
    with SurrealStore(SurrealConfig(gk.url)) as store:
        store.select_rows("UPDATE govkernel_meta:store SET store_id = 'another-id'", {})
    report = gk.json("audit", "verify", "--anchors", str(path), code=1)
    assert report["ok"] is False and report["anchors"]["store_matches"] is False
    assert all(r["ok"] for r in report["reports"]) and report["anchors"]["failed"] == 0
    gk("audit", "verify", first, "--anchors", str(path), code=1)
    assert "this store's id was changed" in gk.stderr
    assert "the 1 anchor checked holds here all the same" in gk.stderr


def test_a_store_id_changed_by_its_writers_does_not_turn_the_anchors_off(
    published: tuple[Cli, str, str, Path],
) -> None:
    gk, first, _, path = published
    with SurrealStore(SurrealConfig(gk.url)) as store:
        store.select_rows("DELETE govkernel_meta:store", {})  # the next open mints another
    roll_back(gk.url, first, keep=4)
    report = gk.json("audit", "verify", "--anchors", str(path), code=1)
    verdicts = {r["execution_id"]: r for r in report["reports"]}
    assert not verdicts[first]["ok"] and "rolled back" in verdicts[first]["problem"]
    assert "this store's id was changed" in gk.stderr
    gk("audit", "verify", "--anchors", str(path), code=1)
    assert "audit trail of" in gk.stderr and "names store" in gk.stderr


def test_an_anchor_file_from_before_store_ids_is_checked_against_any_store(
    published: tuple[Cli, str, str, Path], tmp_path: Path
) -> None:
    gk, _, _, path = published
    document = json.loads(path.read_text())
    del document["store"]
    path.write_text(json.dumps(document))
    assert gk.json("audit", "verify", "--anchors", str(path))["ok"]
    other = Cli(tmp_path / "other-store", tmp_path)
    other("run", "knowledge-publication", str(FRED))
    other("audit", "verify", "--anchors", str(path), code=1)  # it cannot tell: checked
    assert "deleted since it was anchored" in other.stderr


def test_a_trail_that_grew_since_still_holds_its_anchor(
    published: tuple[Cli, str, str, Path],
) -> None:
    gk, _, _, path = published
    third = gk.json("run", "knowledge-publication", "--tier", "Tier1", str(FRED))
    assert third["state"] == "awaiting_approval"
    earlier = json.loads(path.read_text())
    assert gk.json("audit", "verify", "--anchors", str(path))["ok"]
    gk("reject", third["execution_id"], "--reason", "not now")
    done = gk("audit", "verify", "--anchors", str(path))
    assert "every one of the 2 anchored heads" in done.stdout
    # Taken again, into the same file: the earlier anchors are checked first, then replaced.
    assert gk.json("audit", "anchor", "--output", str(path))["anchored"] == 3
    # Named as a path relative to the working directory, it is said whole, as a backup's is.
    relative = os.path.relpath(path, gk.cwd)
    assert gk.json("audit", "anchor", "--output", relative)["output"] == str(path)
    assert json.loads(path.read_text())["taken_at"] >= earlier["taken_at"]


def test_anchoring_again_over_a_file_whose_anchors_fail_leaves_it_alone(
    published: tuple[Cli, str, str, Path],
) -> None:
    gk, first, _, path = published
    before = path.read_text()
    roll_back(gk.url, first, keep=3)
    gk("audit", "anchor", "--output", str(path), code=1)
    assert "was left as it is: 1 of its anchors no longer hold" in gk.stderr
    assert path.read_text() == before  # the rollback is not blessed by fresh anchors


def test_anchoring_again_keeps_watching_an_execution_whose_chain_broke_since(
    published: tuple[Cli, str, str, Path],
) -> None:
    """Its chain broken, it is not anchored afresh; its earlier anchor stays in the file, so
    a rewrite that mends the chain afterwards is still caught."""
    gk, first, _, path = published
    with SurrealStore(SurrealConfig(gk.url)) as store:
        store.select_rows(
            "UPDATE $r SET reason = 'edited'", {"r": RecordID("audit", audit_key(first, 3))}
        )
    gk("audit", "anchor", "--output", str(path), code=1)
    assert first in {a["execution_id"] for a in json.loads(path.read_text())["anchors"]}
    rewrite(gk.url, first, 3, "edited")  # the chain mended with fresh hashes
    assert gk.json("audit", "verify")["ok"]
    caught = gk.json("audit", "verify", "--anchors", str(path), code=1)
    assert [r["execution_id"] for r in caught["reports"] if not r["ok"]] == [first]


def test_verifying_an_execution_the_file_does_not_anchor_says_so(
    published: tuple[Cli, str, str, Path],
) -> None:
    gk, _, _, path = published
    later = gk.json("run", "knowledge-publication", str(FRED))["execution_id"]
    done = gk("audit", "verify", later, "--anchors", str(path))
    assert f"{later} is not anchored in {path}" in done.stdout


def test_an_anchor_file_that_is_a_fifo_is_refused_not_waited_on(fresh: Cli, tmp_path: Path) -> None:
    fifo = tmp_path / "anchors.fifo"
    os.mkfifo(fifo)
    fresh("audit", "verify", "--anchors", str(fifo), code=2)
    assert "is not a regular file" in fresh.stderr
    # Nor is one replaced by the anchors: a FIFO (or /dev/null) named as the output stays.
    fresh("audit", "anchor", "--output", str(fifo), code=2)
    assert "is not a regular file" in fresh.stderr and stat.S_ISFIFO(fifo.lstat().st_mode)
    assert not fresh.store.exists()


def test_a_broken_chain_is_not_anchored(fresh: Cli, tmp_path: Path) -> None:
    bad = fresh.json("run", "knowledge-publication", str(FRED))["execution_id"]
    good = fresh.json("run", "knowledge-publication", str(IMF))["execution_id"]
    with SurrealStore(SurrealConfig(fresh.url)) as store:
        store.select_rows(
            "UPDATE $r SET reason = 'edited'", {"r": RecordID("audit", audit_key(bad, 2))}
        )
    path = tmp_path / "a.json"
    summary = fresh.json("audit", "anchor", "-o", str(path), code=1)
    assert [r["execution_id"] for r in summary["broken"]] == [bad]
    assert "1 execution not anchored" in fresh.stderr
    anchored = json.loads(path.read_text())["anchors"]
    assert [a["execution_id"] for a in anchored] == [good]


def test_an_output_in_no_directory_is_refused_before_the_store_is_opened(
    fresh: Cli, tmp_path: Path
) -> None:
    fresh("audit", "anchor", "-o", str(tmp_path / "no" / "such" / "a.json"), code=2)
    assert "cannot write" in fresh.stderr and "no directory" in fresh.stderr
    assert not fresh.store.exists()


@pytest.mark.parametrize("option", ["anchor -o", "verify --anchors"])
def test_an_anchor_path_that_is_empty_or_names_a_directory_is_refused(
    fresh: Cli, tmp_path: Path, option: str
) -> None:
    """`Path("")` is the current directory and `Path("new/")` a file called `new`: neither
    is what was typed."""
    command, flag = option.split()
    fresh("audit", command, flag, "", code=2)
    assert "must not be empty" in fresh.stderr
    fresh("audit", command, flag, f"{tmp_path / 'new'}/", code=2)
    assert "ends in a slash, which names a directory" in fresh.stderr
    assert not (tmp_path / "new").exists() and not fresh.store.exists()


def test_an_output_link_that_names_no_file_is_refused_as_a_usage_error(
    fresh: Cli, tmp_path: Path
) -> None:
    """A loop of links names no file (followed loosely, the link itself was replaced), and
    a link into no directory is a path to choose again, as one in no directory is."""
    fresh("run", "knowledge-publication", str(FRED))
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    fresh("audit", "anchor", "-o", str(tmp_path / "a"), code=2)
    assert "is a loop of symbolic links" in fresh.stderr
    assert (tmp_path / "a").is_symlink()
    (tmp_path / "into").symlink_to(tmp_path / "no" / "such" / "a.json")
    fresh("audit", "anchor", "-o", str(tmp_path / "into"), code=2)
    assert "cannot write" in fresh.stderr


def test_an_empty_output_file_is_written_as_a_new_one(fresh: Cli, tmp_path: Path) -> None:
    fresh("run", "knowledge-publication", str(FRED))
    path = tmp_path / "anchors.json"
    path.touch()
    assert fresh.json("audit", "anchor", "--output", str(path))["anchored"] == 1
    assert len(json.loads(path.read_text())["anchors"]) == 1
    (tmp_path / "empty.json").touch()  # to check against, though, an empty file is no file
    fresh("audit", "verify", "--anchors", str(tmp_path / "empty.json"), code=2)
    assert "is not strict JSON" in fresh.stderr


def test_the_stores_own_files_are_never_an_anchors_output(fresh: Cli, tmp_path: Path) -> None:
    fresh("run", "knowledge-publication", str(FRED))
    lock = fresh.store.with_name(fresh.store.name + ".lock")
    before = lock.read_bytes()
    for inside in (lock, fresh.store / "anchors.json", fresh.store / "govkernel.seal"):
        fresh("audit", "anchor", "--output", str(inside), code=2)
        assert "it is the store's own" in fresh.stderr
    assert lock.read_bytes() == before and not (fresh.store / "anchors.json").exists()
    assert "not closed cleanly" not in fresh("recover").stdout


def test_the_stores_directory_reached_by_another_path_is_still_the_store(
    fresh: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bind mount shows a directory under another path, which no resolving of links
    undoes (an anchor file written into the store's log directory through one broke the
    store): told by device and inode. A link stands in for the mount here, its resolving
    turned off."""
    fresh.store.mkdir()
    (fresh.store / "clog").mkdir()
    (tmp_path / "mounted").symlink_to(fresh.store)
    monkeypatch.setattr(os.path, "realpath", lambda path: os.fspath(path))
    assert _in_the_store(fresh.url, tmp_path / "mounted" / "clog" / "anchors.json")
    assert _in_the_store(fresh.url, tmp_path / "mounted")
    assert not _in_the_store(fresh.url, tmp_path / "anchors.json")


def test_an_output_that_cannot_be_written_for_want_of_room_is_exit_2_not_1(
    fresh: Cli, tmp_path: Path
) -> None:
    """Exit 1 says a chain was found broken: a full disk must not read as tampering."""
    fresh("run", "knowledge-publication", str(FRED))
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(
        "import errno\n"
        "from composition import anchors\n"
        "def full(*args, **kwargs):\n"
        "    raise OSError(errno.ENOSPC, 'No space left on device')\n"
        "anchors.write = full\n"
    )
    path = tmp_path / "anchors.json"
    fresh("audit", "anchor", "-o", str(path), code=2, env={"PYTHONPATH": str(tmp_path / "inject")})
    assert "cannot write" in fresh.stderr and "No space left on device" in fresh.stderr
    assert not path.exists()


def test_a_link_to_no_file_yet_is_written_through(fresh: Cli, tmp_path: Path) -> None:
    fresh("run", "knowledge-publication", str(FRED))
    link = tmp_path / "anchors.json"
    link.symlink_to(tmp_path / "kept" / "anchors.json")
    (tmp_path / "kept").mkdir()
    assert fresh.json("audit", "anchor", "--output", str(link))["anchored"] == 1
    assert link.is_symlink() and (tmp_path / "kept" / "anchors.json").is_file()


def test_an_output_through_a_link_replaces_the_file_it_names(
    published: tuple[Cli, str, str, Path], tmp_path: Path
) -> None:
    gk, _, _, path = published
    link = tmp_path / "link.json"
    link.symlink_to(path)
    gk.json("run", "knowledge-publication", str(IMF))
    assert gk.json("audit", "anchor", "--output", str(link))["anchored"] == 3
    assert link.is_symlink() and len(json.loads(path.read_text())["anchors"]) == 3
    assert path.stat().st_mode & 0o777 == 0o644


def test_an_anchor_file_is_replaced_keeping_its_mode_and_never_when_read_only(
    published: tuple[Cli, str, str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from composition import anchors

    _, _, _, path = published
    taken = anchors.read(path)
    path.chmod(0o600)  # made private by its owner: kept so
    anchors.write(taken, path)
    assert path.stat().st_mode & 0o777 == 0o600
    before = path.read_bytes()
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)  # as non-root
    with pytest.raises(anchors.AnchorFileError, match="is read-only"):
        anchors.write(taken, path)
    assert path.read_bytes() == before


def test_anchors_go_to_stdout_alone_without_an_output_file(fresh: Cli) -> None:
    xid = fresh.json("run", "knowledge-publication", str(FRED))["execution_id"]
    done = fresh("audit", "anchor")
    document = json.loads(done.stdout)
    assert document["format"] == "govkernel-audit-anchors" and document["tenant"] == "default"
    [anchor] = document["anchors"]
    assert anchor["execution_id"] == xid and anchor["sequence"] > 1
    assert "anchored 1 execution" in done.stderr


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ("not json", "is not strict JSON"),
        ('{"format": "govkernel-audit-anchors", "version": NaN}', "NaN is not JSON"),
        ('{"format": "govkernel-audit-anchors", "format": "x"}', "key 'format' is given twice"),
        ('{"format": "govkernel-audit-anchors", "extra": 1}', "holds keys an anchor file does not"),
        (
            '{"format": "govkernel-audit-anchors", "version": 1, "tenant": "default",'
            ' "taken_at": "2026-01-01T00:00:00", "anchors": []}',
            "taken_at time without a zone",
        ),
        ("[]", "is not an audit anchor file"),
        (
            '{"format": "govkernel-audit-anchors", "version": 1, "tenant": "default",'
            ' "store": "../x", "taken_at": "2026-01-01T00:00:00+00:00", "anchors": []}',
            "names no valid store",
        ),
        ('{"format": "govkernel-audit-anchors", "version": 2}', "has version 2"),
        ('{"format": "govkernel-audit-anchors", "version": true}', "has version True"),
        ('{"format": "govkernel-audit-anchors", "version": 1.0}', "has version 1.0"),
        (
            '{"format": "govkernel-audit-anchors", "version": 1, "tenant": "beta",'
            ' "taken_at": "2026-01-01T00:00:00+00:00", "anchors": []}',
            "holds the anchors of tenant 'beta', and this is tenant 'default'",
        ),
        (
            '{"format": "govkernel-audit-anchors", "version": 1, "tenant": "default",'
            ' "taken_at": "2026-01-01T00:00:00+00:00",'
            ' "anchors": [{"execution_id": "x", "sequence": 1, "hash": "abc"}]}',
            "anchors[0].hash is not a SHA-256 hex digest",
        ),
        (  # as the kernel writes none: else every anchor read as a trail rewritten since
            '{"format": "govkernel-audit-anchors", "version": 1, "tenant": "default",'
            ' "taken_at": "2026-01-01T00:00:00+00:00",'
            ' "anchors": [{"execution_id": "x", "sequence": 1, "hash": "' + "A" * 64 + '"}]}',
            "anchors[0].hash is not a SHA-256 hex digest",
        ),
        (
            '{"format": "govkernel-audit-anchors", "version": 1, "tenant": "default",'
            ' "taken_at": "2026-01-01T00:00:00+00:00", "anchors": ['
            + ", ".join(
                '{"execution_id": "x", "sequence": ' + n + ', "hash": "' + "0" * 64 + '"}'
                for n in ("1", "2")
            )
            + "]}",
            "anchors execution 'x' twice",
        ),
        (
            '{"format": "govkernel-audit-anchors", "version": 1, "tenant": "default",'
            ' "taken_at": "2026-01-01T00:00:00+00:00",'
            ' "anchors": [{"execution_id": "x", "sequence": true, "hash": "' + "0" * 64 + '"}]}',
            "anchors[0].sequence is not a whole number from 1 to 2^63 - 1",
        ),
        (  # one past the largest: no store counts that far
            '{"format": "govkernel-audit-anchors", "version": 1, "tenant": "default",'
            ' "taken_at": "2026-01-01T00:00:00+00:00",'
            ' "anchors": [{"execution_id": "x", "sequence": '
            + str(2**63)
            + ', "hash": "'
            + "0" * 64
            + '"}]}',
            "anchors[0].sequence is not a whole number from 1 to 2^63 - 1",
        ),
        (
            '{"format": "govkernel-audit-anchors", "version": 1, "tenant": "default",'
            ' "taken_at": "2026-01-01T00:00:00+00:00",'
            ' "anchors": [{"execution_id": "'
            + "x" * 100_000
            + '", "sequence": 1, "hash": "'
            + "0" * 64
            + '"}]}',
            "anchors[0].execution_id is not an execution id",
        ),
        (
            '{"format": "govkernel-audit-anchors", "version": 1, "tenant": "default",'
            ' "taken_at": "2026-01-01T00:00:00+00:00",'
            ' "anchors": [{"execution_id": "\\ud800x", "sequence": 1, "hash": "'
            + "0" * 64
            + '"}]}',
            "anchors[0].execution_id is not an execution id",
        ),
        (  # read as the id of an execution deleted since (exit 1) before
            '{"format": "govkernel-audit-anchors", "version": 1, "tenant": "default",'
            ' "taken_at": "2026-01-01T00:00:00+00:00",'
            ' "anchors": [{"execution_id": "wfx-\\u0000", "sequence": 1, "hash": "'
            + "0" * 64
            + '"}]}',
            "anchors[0].execution_id is not an execution id",
        ),
        (
            '{"format": "govkernel-audit-anchors", "version": 1, "tenant": "default",'
            ' "taken_at": "2026-01-01T00:00:00+00:00",'
            ' "anchors": [{"execution_id": "x", "sequence": 1'
            + "0" * 4000
            + ', "hash": "'
            + "0" * 64
            + '"}]}',
            "anchors[0].sequence is not a whole number from 1 to 2^63 - 1",
        ),
        (
            '{"format": "govkernel-audit-anchors", "version": "' + "v" * 100_000 + '",'
            ' "tenant": "default", "taken_at": "2026-01-01T00:00:00+00:00", "anchors": []}',
            "has version 'vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv...; this govkernel reads 1",
        ),
    ],
)
def test_an_anchor_file_that_cannot_be_used_is_refused_before_the_store_is_opened(
    fresh: Cli, tmp_path: Path, content: str, said: str
) -> None:
    path = tmp_path / "a.json"
    path.write_text(content)
    fresh("audit", "verify", "--anchors", str(path), code=2)
    assert said in fresh.stderr and len(fresh.stderr) < 1000
    fresh("audit", "verify", "--anchors", str(tmp_path / "missing.json"), code=2)
    assert "not found" in fresh.stderr
    assert not fresh.store.exists()


def entry(sequence: int, prev: str) -> AuditEntry:
    from datetime import UTC, datetime

    from domain.model.lifecycle import ExecutionState

    partial = AuditEntry(
        "x", sequence, None, ExecutionState.PENDING, datetime(2026, 1, 1, tzinfo=UTC),
        "alice", "created", None, "c", prev, "",
    )  # fmt: skip
    return evolve(partial, hash=partial.recomputed())


def test_check_anchor_on_its_own() -> None:
    one = entry(1, GENESIS)
    two = entry(2, one.hash)
    trail = [one, two]
    assert check_anchor(AuditAnchor("x", 2, two.hash), trail).ok
    assert check_anchor(AuditAnchor("x", 1, one.hash), trail).ok  # grown since: fine
    assert check_anchor(AuditAnchor("x", 0, GENESIS), trail).ok
    short = check_anchor(AuditAnchor("x", 3, "f" * 64), trail)
    assert not short.ok and short.first_bad_sequence == 3 and "rolled back" in str(short.problem)
    other = check_anchor(AuditAnchor("x", 2, one.hash), trail)
    assert not other.ok and other.first_bad_sequence == 2 and "rewritten" in str(other.problem)


def test_an_anchor_file_gives_its_time_to_the_microsecond_and_reads_back(tmp_path: Path) -> None:
    """`isoformat()` drops the fraction on a whole second: one format, whatever the time."""
    from datetime import UTC, datetime

    from composition import anchors

    taken = anchors.Anchors("acme", datetime(2026, 11, 26, 12, tzinfo=UTC), ())
    document = taken.to_json()
    assert document["taken_at"] == "2026-11-26T12:00:00.000000+00:00"
    assert anchors.parse(tmp_path / "a.json", document) == taken


def test_an_anchor_file_is_named_as_open_names_a_file(tmp_path: Path) -> None:
    """`write(taken, "anchors.json")` failed on text (a library user, h155), where `read`
    and the rest of the API take it; what names no file is refused as an anchor file error."""
    from datetime import UTC, datetime

    from composition import anchors

    taken = anchors.Anchors("acme", datetime(2026, 11, 28, tzinfo=UTC), ())
    anchors.write(taken, str(tmp_path / "a.json"))
    assert anchors.read(str(tmp_path / "a.json")) == anchors.read(tmp_path / "a.json") == taken
    for given, problem in (
        (None, "as text or a Path"),
        (5, "as text or a Path"),
        (b"/tmp/a.json", "as text or a Path"),
        (str(tmp_path / "b\x00.json"), "NUL"),
    ):
        with pytest.raises(anchors.AnchorFileError, match=problem):
            anchors.write(taken, given)  # type: ignore[arg-type]
        with pytest.raises(anchors.AnchorFileError, match=problem):
            anchors.read(given)  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_what_an_anchoring_killed_before_its_rename_left_is_swept_once_stale(
    tmp_path: Path,
) -> None:
    from datetime import UTC, datetime

    from composition import anchors

    stale = tmp_path / ".a.json.anchoring-killed1"
    recent = tmp_path / ".a.json.anchoring-underway"
    other = tmp_path / ".a.json.someone-elses"
    for left in (stale, recent, other):
        left.write_text("{}")
    old = time.time() - anchors.STALE_SECONDS - 60
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    anchors.write(
        anchors.Anchors("acme", datetime(2026, 11, 27, tzinfo=UTC), ()), tmp_path / "a.json"
    )
    assert not stale.exists() and recent.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".a.json.anchoring-underway",
        ".a.json.someone-elses",
        "a.json",
    ]


def test_the_python_api_refuses_anchors_it_could_not_read_back_or_that_hold_vacuously(
    tmp_path: Path,
) -> None:
    """Found by an attack on the API: `write` replaced a good file with one `read` refused
    (a naive time, entry 0, an id no store holds), `check` held an anchor of entry 0 or -1
    with no hash whatever the trail, and a tenant of None read every other tenant's
    executions as deleted."""
    from datetime import datetime

    from composition import anchors
    from composition.anchors import AnchorFileError
    from composition.container import build_app
    from composition.settings import Settings

    with build_app(Settings(store_url="memory://", tenant="acme")) as app:
        app.orchestrator.start("knowledge_publication", _publication())
        now = app.runtime.clock.now()
        good, broken = anchors.take(app.uow_factory, "acme", app.orchestrator.verify, now=now)
        assert good.anchors and not broken
        path = tmp_path / "anchors.json"
        anchors.write(good, path)
        written = path.read_text()
        (one,) = good.anchors
        for bad, said in [
            (evolve(good, taken_at=datetime(2026, 1, 1)), "taken_at time without a zone"),
            (evolve(good, anchors=(evolve(one, sequence=0),)), "anchors[0].sequence"),
            (evolve(good, anchors=(evolve(one, execution_id="\udcff"),)), "execution_id"),
            (evolve(good, tenant="two words"), "names no valid tenant"),
        ]:
            with pytest.raises(AnchorFileError, match=f"not written: .*{re.escape(said)}"):
                anchors.write(bad, path)
        with pytest.raises(AnchorFileError, match="not written: give Anchors"):
            anchors.write(None, path)  # type: ignore[arg-type]
        assert path.read_text() == written and anchors.read(path) == good
        gone = tmp_path / "gone"
        gone.mkdir()
        here = os.getcwd()
        try:  # a relative path, the working directory deleted: not a FileNotFoundError
            os.chdir(gone)
            gone.rmdir()
            with pytest.raises(AnchorFileError, match="working directory that no longer"):
                anchors.write(good, Path("anchors.json"))
        finally:
            os.chdir(here)
        for anchor, said in [
            (AuditAnchor(one.execution_id, 0, "not-a-hash"), "sequence is not a whole number"),
            (AuditAnchor(one.execution_id, -1, one.hash), "sequence is not a whole number"),
            (AuditAnchor(one.execution_id, 1, "not-a-hash"), "hash is not a SHA-256"),
            ("abc", "is not an AuditAnchor"),
        ]:
            with pytest.raises(ValueError, match=said):
                anchors.check(app.uow_factory, "acme", [anchor])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="anchors must be AuditAnchors, got str"):
            anchors.check(app.uow_factory, "acme", "abc")  # type: ignore[arg-type]
        for call in (
            lambda: anchors.check(app.uow_factory, None, good.anchors),  # type: ignore[arg-type]
            lambda: anchors.take(app.uow_factory, None, app.orchestrator.verify, now=now),  # type: ignore[arg-type]
        ):
            with pytest.raises(ValueError, match="tenant must be a tenant's name, got None"):
                call()
        assert anchors.check(app.uow_factory, "acme", good.anchors) == []


def _publication() -> dict[str, Any]:
    from domain.workflows import knowledge_publication as kp

    return kp.PublicationRequest.parse(
        {
            "documents": [
                {
                    "kind": "imf",
                    "title": "Outlook",
                    "source_url": "https://www.imf.org/en/Publications/x",
                    "format": "text",
                    "classification": "internal",
                    "content_text": "Core prices eased while wages kept rising.",
                }
            ],
            "title": "Capsule",
            "publication_id": "pub-1",
            "policy_refs": ["POL-KNOWLEDGE-1"],
        }
    ).to_input()


def test_a_link_another_user_planted_in_a_shared_directory_is_not_followed(
    published: tuple[Cli, str, str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link made by someone else in a sticky directory (/tmp) was followed to write the
    anchors into any file its target names, that user's choice (h148): where the kernel's
    fs.protected_symlinks is off, refused all the same. One's own link there is followed."""
    from composition import anchors

    _, _, _, path = published
    taken = anchors.read(path)
    victim = tmp_path / "private" / "nologin"
    victim.parent.mkdir(mode=0o700)
    if os.geteuid() == 0:  # a link owned by nobody, in a shared directory of this user's
        shared = tmp_path / "shared"
        shared.mkdir()
        shared.chmod(0o1777)
        planted = shared / "anchors.json"
        planted.symlink_to(victim)
        os.lchown(planted, 65534, 65534)
    else:  # the system's shared directory (root's), and this user seen as another one
        shared = Path(tempfile.gettempdir())
        assert shared.stat().st_mode & stat.S_ISVTX and shared.stat().st_uid != os.getuid()
        planted = shared / f"gk-planted-{os.getpid()}.json"
        planted.symlink_to(victim)
        monkeypatch.setattr(os, "geteuid", lambda: os.getuid() + 1)
    ways = [planted]
    if os.geteuid() == 0:  # met on the way: through `..`, and through a link of one's own
        through = shared / "d2"
        through.symlink_to(victim.parent)
        os.lchown(through, 65534, 65534)
        mine = tmp_path / "mine.json"
        mine.symlink_to(planted)
        ways += [through / ".." / "precious.json", mine]
    try:
        for way in ways:
            with pytest.raises(anchors.AnchorFileError, match="another user made in a shared"):
                anchors.write(taken, way)
        assert not victim.exists() and planted.is_symlink()
        assert not (tmp_path / "precious.json").exists()
        monkeypatch.undo()
        if os.geteuid() == 0:
            os.lchown(planted, 0, 0)  # this user's own link: followed
            anchors.write(taken, planted)
            assert anchors.read(victim).anchors == taken.anchors
    finally:
        planted.unlink()
