"""Tests for the WebSocket shim: the SDK's real ws:// path against an embedded engine."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from surrealdb import RecordID, Surreal
from surrealdb.errors import NotAllowedError
from websockets.exceptions import ConnectionClosed

from tests.support.ws_server import SurrealWsShim

# The SDK's blocking ws client calls websockets.sync.client.connect() without a context manager.
pytestmark = pytest.mark.filterwarnings(
    "ignore:connect\\(\\) must be used as a context manager:DeprecationWarning"
)


@pytest.fixture
def shim() -> Iterator[SurrealWsShim]:
    with SurrealWsShim(username="root", password="s3cret") as server:
        yield server


def test_signin_use_transaction_and_read_back(shim: SurrealWsShim) -> None:
    assert shim.url.startswith("ws://127.0.0.1:") and shim.url.endswith("/rpc")
    rid = RecordID("doc", "a1")
    db = Surreal(shim.url)
    other = Surreal(shim.url)
    try:
        assert db.signin({"username": "root", "password": "s3cret"}).access
        db.use("gk", "main")
        other.use("gk", "elsewhere")  # per-connection `use` must not leak into `db`
        written = db.query_raw(
            "BEGIN TRANSACTION; CREATE $r CONTENT $d RETURN NONE; COMMIT TRANSACTION;",
            {"r": rid, "d": {"title": "hello", "n": 3}},
        )
        assert "error" not in written
        assert [stmt["status"] for stmt in written["result"]] == ["OK"]

        read = db.query_raw("SELECT * FROM $r", {"r": rid})
        assert read["result"][0]["result"] == [{"id": rid, "title": "hello", "n": 3}]
        assert other.query_raw("SELECT * FROM doc")["result"][0]["result"] == []
    finally:
        db.close()
        other.close()


def test_wrong_password_is_rejected(shim: SurrealWsShim) -> None:
    db = Surreal(shim.url)
    try:
        with pytest.raises(NotAllowedError, match="authentication") as info:
            db.signin({"username": "root", "password": "wrong"})
        assert info.value.is_invalid_auth
    finally:
        db.close()


def test_stop_closes_connections_and_listener() -> None:
    shim = SurrealWsShim()
    shim.start()
    url = shim.url
    db = Surreal(url)
    assert db.version()
    shim.stop()
    shim.stop()  # idempotent
    with pytest.raises(ConnectionClosed):
        db.version()
    with pytest.raises(OSError):
        Surreal(url).version()
