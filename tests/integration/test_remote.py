"""A remote store that misbehaves fails fast and says why, naming the host, never a secret."""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator

import pytest
from websockets.sync.server import ServerConnection, serve

from adapters.contract import samples
from adapters.surrealdb import SurrealConfig, SurrealStore
from ports.errors import CommitOutcomeUnknown, StorageUnavailable
from tests.support.ws_server import SurrealWsShim

pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager")


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts WebSocket connections, then never answers anything."""
    stop = threading.Event()

    def handler(connection: ServerConnection) -> None:
        stop.wait(30)

    with serve(handler, "127.0.0.1", 0) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        host, port = server.socket.getsockname()[:2]
        try:
            yield f"ws://{host}:{port}"
        finally:
            stop.set()
            server.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_server_that_never_answers_fails_within_the_timeout(silent_server: str) -> None:
    began = time.monotonic()
    with pytest.raises(StorageUnavailable, match=r"did not answer within 0\.5 s"):
        SurrealStore(SurrealConfig(silent_server, reply_timeout=0.5))
    assert time.monotonic() - began < 10


def test_wrong_credentials_are_named_as_such_without_the_password() -> None:
    with (
        SurrealWsShim(username="root", password="right") as shim,
        pytest.raises(StorageUnavailable) as refused,
    ):
        SurrealStore(SurrealConfig(shim.url, username="root", password="pw-Wrong-42"))
    message = str(refused.value)
    assert "refused the credentials" in message and "127.0.0.1" in message
    assert "pw-Wrong-42" not in message


def test_nothing_listening_is_a_refused_connection() -> None:
    url = f"ws://127.0.0.1:{_free_port()}"
    with pytest.raises(StorageUnavailable, match="refused the connection"):
        SurrealStore(SurrealConfig(url))


def test_a_server_going_silent_mid_run_fails_the_call_not_the_process() -> None:
    with SurrealWsShim() as shim, SurrealStore(SurrealConfig(shim.url, reply_timeout=0.5)) as store:
        assert store.select_rows("RETURN 1", {}) == [1]
        shim.pause()  # answers nothing from now on
        began = time.monotonic()
        with pytest.raises(
            StorageUnavailable, match=r"127\.0\.0\.1:\d+ did not answer within 0\.5 s"
        ):
            store.select_rows("RETURN 2", {})
        assert time.monotonic() - began < 10


def test_a_server_gone_mid_run_is_named_with_the_lost_connection() -> None:
    with SurrealWsShim() as shim, SurrealStore(SurrealConfig(shim.url, reply_timeout=2)) as store:
        assert store.select_rows("RETURN 1", {}) == [1]
        shim.stop()
        with pytest.raises(StorageUnavailable, match=r"connection to 127\.0\.0\.1:\d+ was lost"):
            store.select_rows("RETURN 2", {})


def test_a_store_id_a_read_only_server_user_cannot_mint_is_left_unknown() -> None:
    with SurrealWsShim() as shim:
        with SurrealStore(SurrealConfig(shim.url, username="root", password="root")) as store:
            minted = store.store_id
            store.select_rows("DEFINE USER reader ON ROOT PASSWORD 'pw' ROLES VIEWER", {})
        viewer = SurrealConfig(shim.url, username="reader", password="pw", create=False)
        with SurrealStore(viewer) as reading:
            assert reading.store_id == minted  # read, not minted again
        with SurrealStore(SurrealConfig(shim.url, username="root", password="root")) as store:
            store.select_rows("DELETE govkernel_meta:store", {})  # a store from before ids
        with SurrealStore(viewer) as reading:
            assert reading.store_id is None  # opened all the same, to read


def test_a_store_dials_the_server_again_after_a_request_failed() -> None:
    """It kept the connection a timeout had closed: every later request failed, so a
    service never outlived one blip, and an unknown outcome could never be read back
    (found by a server-mode pass)."""
    with SurrealWsShim() as shim, SurrealStore(SurrealConfig(shim.url, reply_timeout=0.5)) as store:
        kept, lost = samples.source(), samples.source()
        with store.unit_of_work() as uow:
            uow.sources.add(kept)
            uow.commit()
        shim.pause()
        unanswered = pytest.raises(CommitOutcomeUnknown, match=r"did not answer within 0\.5 s")
        with unanswered, store.unit_of_work() as uow:
            uow.sources.add(lost)
            uow.commit()
        with pytest.raises(StorageUnavailable, match="did not answer"):
            store.select_rows("RETURN 2", {})  # dialled again: still paused
        shim.resume()
        with store.unit_of_work() as uow:  # the outcome, read back
            assert uow.sources.get(kept.id) == kept and uow.sources.get(lost.id) is None


@pytest.fixture
def babbling_server() -> Iterator[str]:
    """A WebSocket server that answers every request with bytes no SurrealDB would send."""

    def handler(connection: ServerConnection) -> None:
        for _ in connection:
            connection.send(b"\xff\x00 not cbor")

    with serve(handler, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        host, port = server.socket.getsockname()[:2]
        try:
            yield f"{host}:{port}"
        finally:
            server.shutdown()


def test_a_server_speaking_another_protocol_or_no_tls_is_said_to(babbling_server: str) -> None:
    """Named by the SDK's exception alone: `127.0.0.1:1234: AttributeError`, `SSLEOFError`
    (found by a server-mode pass)."""
    with pytest.raises(StorageUnavailable, match="answered with what is not SurrealDB's"):
        SurrealStore(SurrealConfig(f"ws://{babbling_server}", reply_timeout=2))
    with pytest.raises(StorageUnavailable, match="the TLS handshake failed"):
        SurrealStore(SurrealConfig(f"wss://{babbling_server}", reply_timeout=2))


def test_a_debug_log_carries_neither_the_password_nor_the_records(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The WebSocket library logged each frame at DEBUG: a service's log got the sign-in's
    password (its last bytes in hex) and every record sent (found by a secrets pass)."""
    secret = "S3cret-Pw-XYZ"
    source = samples.source()
    with (
        caplog.at_level(logging.DEBUG),
        SurrealWsShim(username="root", password=secret) as shim,
        SurrealStore(SurrealConfig(shim.url, username="root", password=secret)) as store,
        store.unit_of_work() as uow,
    ):
        uow.sources.add(source)
        uow.commit()
    logged = "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith("websockets.server")
    )
    for word in (secret, source.id):
        tail = word.encode()[-8:]
        assert word not in logged and " ".join(f"{b:02x}" for b in tail) not in logged


@pytest.fixture
def freezable() -> Iterator[tuple[str, threading.Event]]:
    """A TCP relay in front of a shim, and the switch that makes it drop everything from then
    on: a server (or a network) gone silent with the connection still open."""
    frozen = threading.Event()
    with SurrealWsShim() as shim, socket.socket() as listener:
        host, port = shim.url.removeprefix("ws://").split("/")[0].split(":")
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def pump(src: socket.socket, dst: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := src.recv(65536):
                    if not frozen.is_set():
                        dst.sendall(data)

        def relay() -> None:
            with contextlib.suppress(OSError):
                while True:
                    client, _ = listener.accept()
                    server = socket.create_connection((host, int(port)))
                    for a, b in ((client, server), (server, client)):
                        threading.Thread(target=pump, args=(a, b), daemon=True).start()

        threading.Thread(target=relay, daemon=True).start()
        yield f"ws://127.0.0.1:{listener.getsockname()[1]}/rpc", frozen


def test_a_request_to_a_silent_connection_fails_at_its_timeout(
    freezable: tuple[str, threading.Event],
) -> None:
    """Closing the connection after the timeout waited 10 s more for a close reply that
    could never come (found by a remote-store pass: 11 s for a 1 s timeout)."""
    url, frozen = freezable
    with SurrealStore(SurrealConfig(url, reply_timeout=1)) as store:
        assert store.select_rows("RETURN 1", {}) == [1]
        frozen.set()
        began = time.monotonic()
        with pytest.raises(StorageUnavailable, match=r"did not answer within 1 s"):
            store.select_rows("RETURN 2", {})
        assert time.monotonic() - began < 4


@pytest.mark.parametrize("level", ["DATABASE", "NAMESPACE"])
def test_a_user_of_the_stores_database_or_namespace_signs_in(level: str) -> None:
    """Only root users could: a service's own user, defined on its database, was refused
    as if its password were wrong (found by a remote-store pass)."""
    with SurrealWsShim() as shim:
        root = SurrealConfig(shim.url, username="root", password="root", namespace="gk")
        with SurrealStore(root) as store:
            store.select_rows(f"DEFINE USER svc ON {level} PASSWORD 'svc-Pw-1' ROLES OWNER", {})
        own = SurrealConfig(shim.url, username="svc", password="svc-Pw-1", namespace="gk")
        with SurrealStore(own) as store:
            assert store.select_rows("RETURN 1", {}) == [1]
        wrong = SurrealConfig(shim.url, username="svc", password="svc-Pw-2", namespace="gk")
        with pytest.raises(StorageUnavailable, match="as a root user, and as a user of"):
            SurrealStore(wrong)


def test_a_server_url_ending_in_a_slash_is_dialled_as_without_it() -> None:
    """The SDK put `/rpc` after it: `ws://host:port/` went to `//rpc` and read as no
    SurrealDB endpoint at all (found by a remote-store pass)."""
    with SurrealWsShim() as shim:
        for url in (shim.url.removesuffix("/rpc") + "/", shim.url + "/"):
            with SurrealStore(SurrealConfig(url)) as store:
                assert store.select_rows("RETURN 1", {}) == [1]


def test_a_server_is_named_as_dialled() -> None:
    assert SurrealConfig("ws://[::1]:8000").server == "[::1]:8000"
    assert SurrealConfig("wss://db.example").server == "db.example:443"
    assert SurrealConfig("ws://db.example/rpc").server == "db.example:80"
    with pytest.raises(ValueError, match="from 1 to 65535"):  # it was dialled as port 80
        SurrealConfig("ws://127.0.0.1:0")


@pytest.mark.parametrize(
    ("code", "message", "said"),
    [
        (
            18,
            "self-signed certificate",
            "its TLS certificate is not trusted here (self-signed certificate): name the"
            " authority that signed it in SSL_CERT_FILE",
        ),
        # An authority trusted already does not help here (found by a review).
        (
            64,
            "IP address mismatch",
            "its TLS certificate is for another name (IP address mismatch): connect by a"
            " name the certificate was issued for",
        ),
        (10, "certificate has expired", "its TLS certificate has expired"),
    ],
)
def test_a_certificate_refused_is_named_as_what_is_wrong_with_it(
    code: int, message: str, said: str
) -> None:
    """It was said as a TLS handshake failing, with a hint to try ws:// (found by a
    remote-store pass)."""
    from adapters.surrealdb.store import _remote_cause

    refused = ssl.SSLCertVerificationError(1, "certificate verify failed")
    refused.verify_code, refused.verify_message = code, message
    assert _remote_cause(refused, SurrealConfig("wss://db.example:8000")).startswith(
        f"db.example:8000: {said}"
    )


def test_requests_queued_behind_one_a_silent_server_failed_fail_with_it() -> None:
    """Each waited its own timeout in turn, and a reconnect its own again: a service's
    threads held its shutdown for minutes (found by a long-running service pass)."""
    with SurrealWsShim() as shim, SurrealStore(SurrealConfig(shim.url, reply_timeout=1)) as store:
        assert store.select_rows("RETURN 1", {}) == [1]
        shim.pause()
        said: list[str] = []

        def ask() -> None:
            try:
                store.select_rows("RETURN 2", {})
            except StorageUnavailable as exc:
                said.append(str(exc))

        threads = [threading.Thread(target=ask) for _ in range(4)]
        began = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(said) == 4 and time.monotonic() - began < 3.5  # one timeout, not four
        assert all("did not answer within 1 s" in s for s in said)
        shim.resume()
        time.sleep(0.01)  # made after the failure: dialled again
        assert store.select_rows("RETURN 3", {}) == [3]


def test_a_request_this_client_could_not_send_fails_alone() -> None:
    """A value the client could not encode failed every request queued behind it as if the
    server were unreachable (found by a review)."""
    with SurrealWsShim() as shim, SurrealStore(SurrealConfig(shim.url)) as store:
        said: list[str] = []
        answered: list[object] = []

        def bad() -> None:
            try:
                store.select_rows("RETURN $x", {"x": object()})
            except StorageUnavailable as exc:
                said.append(str(exc))

        def good() -> None:
            answered.append(store.select_rows("RETURN 1", {}))

        with store._lock:  # all queued behind the bad one
            threads = [threading.Thread(target=bad)]
            threads[0].start()
            time.sleep(0.2)
            threads += [threading.Thread(target=good) for _ in range(3)]
            for t in threads[1:]:
                t.start()
            time.sleep(0.2)
        for t in threads:
            t.join(30)
        assert len(said) == 1 and answered == [[1], [1], [1]]


def test_a_request_stopped_while_waiting_leaves_its_connection_to_be_dialled_anew() -> None:
    """Ctrl-C as a reply was awaited left the connection in use: the next request read the
    late reply for its own (found by a review)."""
    with SurrealWsShim() as shim, SurrealStore(SurrealConfig(shim.url)) as store:
        assert store.select_rows("RETURN 1", {}) == [1]
        real = store._db.query_raw

        def interrupted(*args: object) -> object:
            raise KeyboardInterrupt

        store._db.query_raw = interrupted
        with pytest.raises(KeyboardInterrupt):
            store.select_rows("RETURN 2", {})
        store._db.query_raw = real
        assert store._broken  # the next request dials anew
        assert store.select_rows("RETURN 3", {}) == [3]
