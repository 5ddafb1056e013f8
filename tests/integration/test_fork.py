"""A process forked from one that started the embedded engine is refused it, at once.

The engine's threads do not survive fork(): a child of a process that had used an embedded
store waited for good at its first call to the engine, on its parent's store or on one of
its own (found by a library adopter's pass: multiprocessing on Linux forks by default).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapters.contract import samples
from adapters.surrealdb import SurrealConfig, SurrealStore
from ports.errors import StorageUnavailable


def _in_a_fork(store: SurrealStore, own_url: str) -> list[str]:
    """What a forked child meets: its parent's store, then a store of its own. Each outcome
    is 'refused' (StorageUnavailable naming fork) or what happened instead."""
    readable, writable = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never back into pytest
        outcomes = []
        try:
            for attempt in (
                lambda: store.select_rows("RETURN 1", {}),
                lambda: SurrealStore(SurrealConfig(own_url)).close(),
            ):
                try:
                    attempt()
                    outcomes.append("ran")
                except StorageUnavailable as exc:
                    said = str(exc)
                    outcomes.append(
                        "refused-connection"
                        if "a connection does not survive fork()" in said
                        else "refused"
                        if "does not survive fork()" in said
                        else "?"
                    )
            store.close()  # the parent's lock and seal are left as they are
            os.write(writable, json.dumps(outcomes).encode())
        finally:
            os._exit(0)
    os.close(writable)
    try:
        ready, _, _ = select.select([readable], [], [], 60)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            pytest.fail("the forked child hung on the embedded engine")
        return list(json.loads(os.read(readable, 4096)))
    finally:
        os.close(readable)
        os.waitpid(pid, 0)


@pytest.mark.parametrize("kind", ["mem", "surrealkv"])
def test_a_forked_child_is_refused_the_engine_and_leaves_the_parents_store_alone(
    tmp_path: Path, kind: str
) -> None:
    url = "mem://" if kind == "mem" else f"surrealkv://{tmp_path / 'parent'}"
    own = "mem://" if kind == "mem" else f"surrealkv://{tmp_path / 'child'}"
    with SurrealStore(SurrealConfig(url)) as store:
        assert _in_a_fork(store, own) == ["refused", "refused"]
        source = samples.source()
        with store.unit_of_work() as uow:  # the parent's store works on
            uow.sources.add(source)
            uow.commit()
        if kind == "surrealkv":  # and still holds its lock
            with pytest.raises(StorageUnavailable, match="already open in this process"):
                SurrealStore(SurrealConfig(url))
    assert not (tmp_path / "child").exists()
    if kind == "surrealkv":
        with SurrealStore(SurrealConfig(url)) as again, again.unit_of_work() as uow:
            assert uow.sources.get(source.id) == source


def test_a_forked_child_that_ends_normally_exits(tmp_path: Path) -> None:
    """Its interpreter, freeing the parent's engine handle as it finished, waited for good
    for the engine's threads, which a fork does not copy."""
    script = (
        "import os, sys\n"
        "from adapters.surrealdb import SurrealConfig, SurrealStore\n"
        "store = SurrealStore(SurrealConfig('mem://'))\n"
        "store.select_rows('RETURN 1', {})\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    sys.exit(7)\n"  # a normal end: the interpreter finalizes
        "sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert done.returncode == 7, done.stderr


def test_a_forked_child_is_refused_its_parents_server_connection_at_once() -> None:
    """It waited the whole reply timeout on the socket it shares with its parent, then
    closed that socket under the parent (found by a re-test)."""
    from tests.support.ws_server import SurrealWsShim

    with SurrealWsShim() as shim, SurrealStore(SurrealConfig(shim.url, reply_timeout=30)) as store:
        assert store.select_rows("RETURN 1", {}) == [1]
        began = time.monotonic()
        [outcome, _] = _in_a_fork(store, shim.url)  # (a store of its own it may open)
        assert outcome == "refused-connection" and time.monotonic() - began < 10
        assert store.select_rows("RETURN 2", {}) == [2]  # the parent's connection is whole
