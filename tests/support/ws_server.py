"""Test-only WebSocket server speaking the SurrealDB SDK's CBOR RPC protocol.

Every request frame is forwarded unchanged to one embedded in-memory engine
(``SyncEmbeddedDB("mem://")``), so tests can drive the SDK's real ``ws://`` code path
without a SurrealDB server binary.

Behaviour worth knowing:

* ``signin`` is answered by the engine itself: on start the shim runs
  ``DEFINE USER <username> ON ROOT PASSWORD <password> ROLES OWNER``, so correct
  root credentials yield a real JWT and wrong ones fail.
* ``SyncEmbeddedDB.execute`` raises ``RuntimeError`` instead of returning an RPC
  error; the shim turns it into an ``{"id", "error": {...}}`` response that the SDK
  maps to a ``ServerError`` subclass (bad credentials -> ``NotAllowedError``).
* The engine has a single session. Calls are serialised with a lock and each client's
  last successful ``use`` is replayed whenever the engine's current namespace/database
  differs, so clients don't see each other's ``use``. Auth state and ``let``
  variables are still shared across clients. ``attach``/``begin`` etc. (multi-session,
  client-side transactions) are not supported by the engine and return an error.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from surrealdb._surrealdb_ext import SyncEmbeddedDB
from surrealdb.data.cbor import decode, encode
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve
from websockets.typing import Subprotocol

__all__ = ["SurrealWsShim"]

RPC_PATH = "/rpc"
_DB_PREFIX = "There was a problem with the database: "
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _rpc_error(exc: Exception) -> dict[str, Any]:
    """Translate an engine exception into an RPC error object the SDK understands."""
    message = str(exc).removeprefix(_DB_PREFIX)
    if "problem with authentication" in message:
        details = {"kind": "Auth", "details": {"kind": "InvalidAuth"}}
        return {"code": -32002, "kind": "NotAllowed", "message": message, "details": details}
    if message.startswith("Parse error"):
        return {
            "code": -32700,
            "kind": "Validation",
            "message": message,
            "details": {"kind": "Parse"},
        }
    if message == "Method not found":
        return {"code": -32601, "kind": "NotFound", "message": message}
    return {"code": -32000, "kind": "Internal", "message": message}


class _Client:
    """Per-WebSocket-connection state."""

    def __init__(self) -> None:
        self.use: tuple[str, str] | None = None


class SurrealWsShim:
    """Serve ``ws://127.0.0.1:<ephemeral>/rpc`` backed by an embedded in-memory engine."""

    def __init__(self, *, username: str = "root", password: str = "root") -> None:
        if not _IDENT.fullmatch(username):
            raise ValueError(f"username must be a plain identifier: {username!r}")
        self._username = username
        self._password = password
        self._lock = threading.Lock()
        self._db: SyncEmbeddedDB | None = None
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._engine_use: tuple[str, str] | None = None
        self._silent = threading.Event()

    def pause(self) -> None:
        """Keep every connection open but answer nothing from now on (a hung server)."""
        self._silent.set()

    def resume(self) -> None:
        """Answer again (what came while paused stays unanswered, and undone)."""
        self._silent.clear()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("SurrealWsShim is not running")
        port: int = self._server.socket.getsockname()[1]
        return f"ws://127.0.0.1:{port}{RPC_PATH}"

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("SurrealWsShim already started")
        db = SyncEmbeddedDB("mem://")
        db.connect()
        define = (
            f"DEFINE USER {self._username} ON ROOT"
            f" PASSWORD {json.dumps(self._password)} ROLES OWNER"
        )
        reply = decode(
            db.execute(encode({"id": "init", "method": "query", "params": [define, {}]}))
        )
        if reply["result"][0]["status"] != "OK":
            db.close()
            raise RuntimeError(f"could not define root user: {reply}")
        self._db = db
        self._engine_use = None
        self._server = serve(
            self._handle,
            "127.0.0.1",
            0,
            subprotocols=[Subprotocol("cbor")],
            process_request=self._check_path,
            max_size=None,
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="surreal-ws-shim", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Close all connections, stop listening and close the engine. Idempotent."""
        server, thread, db = self._server, self._thread, self._db
        self._server = self._thread = self._db = None
        if server is not None:
            server.shutdown()
        if thread is not None:
            thread.join(timeout=5)
        if db is not None:
            with self._lock:
                db.close()

    def __enter__(self) -> SurrealWsShim:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @staticmethod
    def _check_path(connection: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path != RPC_PATH:
            return connection.respond(404, "Not Found\n")
        return None

    def _handle(self, connection: ServerConnection) -> None:
        client = _Client()
        try:
            for frame in connection:
                if self._silent.is_set():
                    continue
                raw = frame if isinstance(frame, bytes) else frame.encode()
                connection.send(self._dispatch(raw, client))
        except ConnectionClosed:
            pass

    def _dispatch(self, raw: bytes, client: _Client) -> bytes:
        try:
            request = decode(raw)
        except Exception:
            request = None
        if not isinstance(request, dict):
            error = {"code": -32700, "kind": "Validation", "message": "invalid CBOR request"}
            return encode({"id": None, "error": error})
        req_id = request.get("id")
        with self._lock:
            db = self._db
            if db is None:
                return encode({"id": req_id, "error": _rpc_error(RuntimeError("shim stopped"))})
            try:
                if client.use is not None and client.use != self._engine_use:
                    replay = {"id": str(uuid.uuid4()), "method": "use", "params": list(client.use)}
                    db.execute(encode(replay))
                    self._engine_use = client.use
                raw_reply = db.execute(raw)
            except Exception as exc:
                return encode({"id": req_id, "error": _rpc_error(exc)})
            reply = decode(raw_reply)
            if request.get("method") == "use" and "error" not in reply:
                match request.get("params"):
                    case [str(namespace), str(database)]:
                        client.use = (namespace, database)
                    case _:
                        client.use = None
                self._engine_use = client.use
        if isinstance(reply, dict) and reply.get("id") == req_id:
            return raw_reply
        # The engine echoes the request id today; keep the SDK's id check honest regardless.
        fixed = dict(reply) if isinstance(reply, dict) else {"result": reply}
        fixed["id"] = req_id
        return encode(fixed)
