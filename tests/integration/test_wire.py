"""The direct wire to the embedded engine says exactly what the SDK would say.

`adapters.surrealdb.wire` encodes queries with cbor2's C codec instead of the SDK's
pure-Python one. That is only an optimisation if the engine cannot tell: every request must
be byte-for-byte the SDK's, every response must decode to what the SDK's decoder gives, and
whatever the fast codec cannot send must still go through the SDK.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from surrealdb import RecordID
from surrealdb.data.cbor import decode as sdk_decode
from surrealdb.data.cbor import encode as sdk_encode

from adapters.contract import samples
from adapters.surrealdb import SurrealConfig, SurrealStore, wire

TABLE = st.sampled_from(["execution", "audit_entry", "t"])
# Array ids are what key records have (schema.KEYED).
ID = st.text(min_size=1, max_size=12) | st.integers(0, 10**9)
record_ids = st.builds(RecordID, TABLE, ID | st.lists(ID, max_size=4))
# Sent, an id may be anything the SDK sends; object ids are never minted by govkernel, nor read.
sent_record_ids = record_ids | st.builds(
    RecordID, TABLE, st.dictionaries(st.text(max_size=6), ID, max_size=3)
)


def values_with(ids: st.SearchStrategy[RecordID]) -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(2**70), 2**70)
        | st.floats()
        | st.text(max_size=40)
        | st.datetimes(timezones=st.just(UTC))
        | ids
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=24,
    )


values = values_with(record_ids)
params = st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True), values_with(sent_record_ids)
)


def sdk_request(text: str, bound: dict[str, Any]) -> bytes:
    return sdk_encode({"id": "7", "method": "query", "params": [text, bound]})


@settings(max_examples=300)
@given(params)
def test_requests_are_byte_for_byte_the_sdks(bound: dict[str, Any]) -> None:
    text = "SELECT * FROM $a"
    assert wire.encode_query("7", text, bound) == sdk_request(text, bound)


@settings(max_examples=300)
@given(values)
def test_responses_decode_as_the_sdk_decodes_them(value: Any) -> None:
    encoded = sdk_encode({"id": "7", "result": [{"result": value, "status": "OK"}]})
    # Compared encoded again: `==` would let True pass for 1, and never NaN for NaN.
    assert sdk_encode(wire.decode(encoded)) == sdk_encode(sdk_decode(encoded))


def test_the_check_can_fail() -> None:
    """A plain CBOR encoder sends None as null, which SurrealDB reads as NULL, not NONE: the
    byte comparison above is what would catch it."""
    assert cbor2.dumps({"a": None}) != sdk_encode({"a": None})
    assert wire.encode_query("7", "x", {"a": None}) == sdk_request("x", {"a": None})


def test_values_only_the_sdk_can_send_go_through_the_sdk() -> None:
    for value in (Decimal("1.5"), UUID(int=7), {1, 2}):
        assert wire.encode_query("7", "RETURN $a", {"a": value}) is None
    with SurrealStore(SurrealConfig("mem://")) as store:
        response = store._db.query_raw("RETURN $a", {"a": Decimal("1.5")})
        assert response["result"][0]["result"] == Decimal("1.5")


class Recorder:
    def __init__(self, native: Any) -> None:
        self.native, self.requests = native, 0

    def execute(self, request: bytes) -> bytes:
        self.requests += 1
        return bytes(self.native.execute(request))


def test_a_store_reads_and_writes_through_the_direct_wire() -> None:
    with SurrealStore(SurrealConfig("mem://")) as store:
        recorder = Recorder(store._db._db)
        store._db._db = recorder
        source = samples.source()
        with store.unit_of_work() as uow:
            uow.sources.add(source)
            uow.commit()
        with store.unit_of_work() as uow:
            store._immutable.clear()  # force a read from the engine
            assert uow.sources.get(source.id) == source
        assert recorder.requests == 2


def test_engine_answers_read_the_same_both_ways() -> None:
    """Record ids, NONE, datetimes and nested values, as the engine itself sends them."""
    doc = {"when": datetime(2026, 11, 25, 1, 2, 3, 456789, tzinfo=UTC), "n": [1, None, "x"]}
    with SurrealStore(SurrealConfig("mem://")) as store:
        sdk = store._db.connection
        sdk.query_raw("CREATE t:1 CONTENT $d; CREATE t:2 SET link = t:1, gone = NONE", {"d": doc})
        text = "SELECT * FROM t ORDER BY id; RETURN [time::now() > $d.when, $d]"
        direct, through_sdk = store._db.query_raw(text, {"d": doc}), sdk.query_raw(text, {"d": doc})
    strip = [[row["result"] for row in r["result"]] for r in (direct, through_sdk)]
    assert strip[0] == strip[1]
    assert strip[0][0][0]["when"] == doc["when"] and strip[0][0][1]["link"] == RecordID("t", 1)


@pytest.fixture
def embedded() -> Iterator[wire.Wire]:
    """The wire of an embedded engine (mem://)."""
    with SurrealStore(SurrealConfig("mem://")) as store:
        engine = store._db
        assert isinstance(engine, wire.Wire)
        yield engine


@contextmanager
def handling(handlers: dict[int, Any]) -> Iterator[None]:
    """`handlers` installed for their signals, and those before them put back after."""
    before = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def test_a_signal_arriving_inside_a_request_is_handled_once_it_returns(
    embedded: wire.Wire,
) -> None:
    """cbor2's C codec swallows an exception raised in one of its callbacks, where Python may
    run a signal's handler: Ctrl-C was lost, or a damaged request sent (found by an operator's
    pass, 3 in 280 trials). Held (`wire.deferring`), the handler runs when the request is done."""
    stops: list[str] = []

    def stop(signum: int, frame: object) -> None:
        stops.append("stopped")
        raise KeyboardInterrupt

    real = embedded._request

    def arriving_midway(text: str, params: dict[str, Any]) -> dict[str, Any]:
        signal.raise_signal(signal.SIGINT)  # its handler runs at the next bytecode
        stops.append("request finished")
        return real(text, params)

    embedded._request = arriving_midway  # type: ignore[method-assign]
    with handling({signal.SIGINT: stop}), pytest.raises(KeyboardInterrupt):
        embedded.query_raw("RETURN 1", {})  # undeferred: inside the request
    assert stops == ["stopped"]
    stops.clear()
    with handling({signal.SIGINT: wire.deferring(stop)}):
        with pytest.raises(KeyboardInterrupt):
            embedded.query_raw("RETURN 1", {})
        assert stops == ["request finished", "stopped"]
        embedded._request = real  # type: ignore[method-assign]
        assert embedded.query_raw("RETURN 2", {})["result"][0]["result"] == 2  # held for none


def test_a_signal_during_a_servers_reply_stops_the_wait_at_once() -> None:
    """Held only around the embedded codec: a silent server's reply is waited for in Python,
    and holding Ctrl-C there kept it waiting until the reply timeout (found by a review)."""
    said: list[str] = []

    def stop(signum: int, frame: object) -> None:
        said.append("stopped")
        raise KeyboardInterrupt

    class Server:  # a remote connection: no embedded engine behind it
        def query_raw(self, text: str, params: dict[str, Any]) -> dict[str, Any]:
            signal.raise_signal(signal.SIGINT)
            said.append("reply waited for")
            return {"result": []}

    remote = wire.Wire(Server())
    with handling({signal.SIGINT: wire.deferring(stop)}), pytest.raises(KeyboardInterrupt):
        remote.query_raw("RETURN 1", {})
    assert said == ["stopped"]


def test_every_signal_held_inside_a_request_is_handled_and_the_last_raised(
    embedded: wire.Wire,
) -> None:
    handled: list[str] = []

    def handler(name: str) -> Any:
        def handle(signum: int, frame: object) -> None:
            handled.append(name)
            raise KeyboardInterrupt(name)

        return handle

    real = embedded._request

    def both_arriving(text: str, params: dict[str, Any]) -> dict[str, Any]:
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)
        return real(text, params)

    embedded._request = both_arriving  # type: ignore[method-assign]
    held: dict[int, Any] = {
        signal.SIGINT: wire.deferring(handler("interrupted")),
        signal.SIGTERM: wire.deferring(handler("terminated")),
    }
    with handling(held), pytest.raises(KeyboardInterrupt, match="terminated"):
        embedded.query_raw("RETURN 1", {})
    assert handled == ["interrupted", "terminated"]  # Ctrl-C then SIGTERM ends as terminated
