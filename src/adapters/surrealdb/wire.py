"""The embedded engine's request and response bytes, through a compiled CBOR codec.

The SDK's embedded connection encodes each query as CBOR with a pure-Python codec, checks the
request with pydantic, hands the bytes to the engine (`execute`) and decodes the answer the
same way. For a commit that is a tenth of its time. This sends the very same bytes (the
SDK's tags: NONE for None, record ids) through cbor2's C codec, and reads the answer with
the SDK's own tag decoder. Values of any other type take the SDK's path, and so does a
connection without an embedded engine. tests/integration/test_wire.py holds the bytes equal.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from datetime import UTC, date, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import cbor2
import websockets
import websockets.sync.client as ws_sync
from surrealdb import RecordID
from surrealdb.connections.blocking_embedded import BlockingEmbeddedSurrealConnection
from surrealdb.connections.blocking_ws import BlockingWsSurrealConnection
from surrealdb.data.cbor import tag_decoder

_NONE = b"\xc6\xf6"  # tag 6 (SurrealDB's NONE) around null: how the SDK sends None
_RECORD_ID_HEAD = bytes([0xC0 | 8])  # CBOR tag 8: SurrealDB's record id


class _Unsupported(Exception):
    """A value only the SDK's codec knows how to send."""


def _none(encoder: Any, _: None) -> None:
    encoder.write(_NONE)


def _record(encoder: Any, record: RecordID) -> None:
    # The tag's head written as is: one byte for tag numbers below 24, so no tag object is
    # built for each of the several ids every commit carries.
    encoder.write(_RECORD_ID_HEAD)
    encoder.encode([record.table_name, record.id])


def _refuse(encoder: Any, value: object) -> None:
    raise _Unsupported(type(value).__name__)


# cbor2 would encode these itself, not necessarily as the SDK does: leave them to the SDK.
_ENCODERS: dict[type, Callable[[Any, Any], None]] = {
    type(None): _none,
    RecordID: _record,
    **dict.fromkeys(
        (date, time, timedelta, Decimal, UUID, set, frozenset, bytearray, complex),
        _refuse,
    ),
}


def _tag(first: Any, second: Any) -> Any:
    # cbor2 6 calls tag hooks with (tag, immutable); 5 called them with (decoder, tag).
    # The SDK's decoder reads only the tag's number and value, which cbor2's tag also has.
    tag: Any = first if isinstance(first, cbor2.CBORTag) else second
    no_decoder: Any = None
    return tag_decoder(no_decoder, tag)


def encode_query(request_id: str, text: str, params: dict[str, Any]) -> bytes | None:
    """The request the SDK would send for `query_raw(text, params)`, or None when a value
    needs the SDK's own codec."""
    request = {"id": request_id, "method": "query", "params": [text, params]}
    try:
        return cbor2.dumps(request, encoders=_ENCODERS, default=_refuse, timezone=UTC)
    except _Unsupported:
        return None


def decode(response: bytes) -> Any:
    return cbor2.loads(response, tag_hook=_tag)


# Signals held while the main thread is inside a request (see `deferring`).
_MAIN_THREAD = threading.main_thread().ident
_in_request = False
_held: list[tuple[Callable[[int, Any], object], int, Any]] = []


def deferring(handler: Callable[[int, Any], object]) -> Callable[[int, Any], object]:
    """`handler`, for `signal.signal`, held while the main thread is inside an engine request
    and run as soon as the request returns.

    Python runs a signal's handler in the main thread at its next bytecode, which may be a
    callback of cbor2's C codec; an exception raised there (Ctrl-C's KeyboardInterrupt) is
    reported as unraisable and the encoding goes on, so the stop is lost or a damaged request
    reaches the engine. The CLI installs its handlers this way; so can a service.
    """

    def deferred(signum: int, frame: Any) -> object:
        if _in_request and threading.get_ident() == _MAIN_THREAD:
            _held.append((handler, signum, frame))
            return None
        return handler(signum, frame)

    return deferred


def _replay() -> None:
    """Run the handlers of signals held meanwhile, in order: each runs even when one before
    it raised (Ctrl-C then SIGTERM ends as terminated), and the last one raised is raised."""
    if not _held:
        return
    handler, signum, frame = _held.pop(0)
    try:
        handler(signum, frame)
    finally:
        _replay()


class Wire:
    """An SDK connection's `query_raw` and `close`: direct to its embedded engine when it has
    one."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        embedded = isinstance(connection, BlockingEmbeddedSurrealConnection)
        # The SDK's handle on the engine, under the SDK's own name for it.
        self._db: Any = getattr(connection, "_db", None) if embedded else None
        self._ids = itertools.count(1)

    def query_raw(self, text: str, params: dict[str, Any]) -> dict[str, Any]:
        global _in_request
        # Only the embedded engine's codec is held to: a server's reply is waited for in
        # Python, where a stop must end the wait (a silent server would hold it for good).
        if self._db is None or _in_request or threading.get_ident() != _MAIN_THREAD:
            return self._request(text, params)
        _in_request = True
        try:
            return self._request(text, params)
        finally:
            _in_request = False
            _replay()

    def _request(self, text: str, params: dict[str, Any]) -> dict[str, Any]:
        request = encode_query(str(next(self._ids)), text, params) if self._db else None
        if request is None:
            response: dict[str, Any] = self.connection.query_raw(text, params)
            return response
        decoded = decode(bytes(self._db.execute(request)))
        return decoded if isinstance(decoded, dict) else {}

    def close(self) -> None:
        self.connection.close()


class _PatientSocket:
    """A WebSocket whose every wait for a reply ends after `timeout` seconds.

    The SDK waits for a server's reply forever: a server that accepts a connection and
    then never answers would hang its caller for good. After a timeout the connection is
    closed, since a reply arriving late would be taken for the next request's.
    """

    def __init__(self, socket: Any, timeout: float) -> None:
        self._socket = socket
        self._timeout = timeout

    def recv(self, timeout: float | None = None) -> Any:
        try:
            return self._socket.recv(timeout=self._timeout if timeout is None else timeout)
        except TimeoutError:
            self._socket.close()
            raise TimeoutError(f"no reply from the server within {self._timeout:g} s") from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._socket, name)


# The WebSocket library logs every frame at DEBUG, hex and all: a service's DEBUG log got the
# password of each sign-in, and every record read or written. This connection logs nothing
# (what fails reaches the caller as an exception).
_UNLOGGED = logging.Logger("govkernel.surrealdb.websocket", logging.CRITICAL + 1)
# How long a close waits for the server's own close: a server that fell silent (the reason
# for most closes here) would hold a failed request 10 s past its timeout.
CLOSE_WAIT = 1.0


def bound_waits(connection: Any, timeout: float) -> None:
    """Make a WebSocket connection give up on a silent server after `timeout` seconds, when
    opening and for each reply. Other connections are left as they are."""
    if not isinstance(connection, BlockingWsSurrealConnection):
        return
    socket = ws_sync.connect(
        connection.raw_url,  # the SDK's own dial, with a deadline
        max_size=None,
        subprotocols=[websockets.Subprotocol("cbor")],
        open_timeout=timeout,
        close_timeout=CLOSE_WAIT,
        logger=_UNLOGGED,
    )
    connection.socket = _PatientSocket(socket, timeout)  # type: ignore[assignment]
