"""Audit seals, in memory and in SurrealDB: a trail rewritten with fresh hashes by someone who
can write the store verifies as a chain, and is caught by the seal of its head.

The attack (`rewrite`) edits an entry, re-hashes it and every entry after it, and sets the
execution's head to match, as test_anchors does on the command line.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from attrs import evolve, frozen

from adapters.faults import FaultInjector, FaultPlan
from adapters.memory import MemoryStore
from adapters.surrealdb import SurrealConfig, SurrealStore
from domain.model.errors import InvalidInput, InvalidState
from domain.model.lifecycle import GENESIS, AuditEntry
from domain.model.seal import AuditKey
from domain.orchestration import sealing
from domain.orchestration.orchestrator import Orchestrator
from domain.orchestration.sealing import Sealing
from ports.clock import FixedClock
from ports.errors import CorruptRecord, RecordNotFound
from ports.records import audit_from
from ports.unit_of_work import UnitOfWork, UnitOfWorkFactory
from tests.workflow.harness import T0, TENANT, WORKFLOW, BackDoor, Store, orchestrator, request

KEY = AuditKey(b"k" * 16 + b"0123456789abcdef")
OTHER = AuditKey(b"o" * 16 + b"0123456789abcdef")


class HeadBlind(AuditKey):
    """A broken seal: it covers the execution's id but not its head."""

    def seal(self, execution_id: str, sequence: int, head: str) -> str:
        return super().seal(execution_id, 0, GENESIS)


def open_store(kind: str, key: AuditKey | None) -> Store:
    if kind == "memory":
        return MemoryStore(audit_key=key)
    return SurrealStore(SurrealConfig("mem://", audit_key=key))


@frozen
class Sealed:
    store: Store
    door: BackDoor
    orch: Orchestrator
    execution_id: str


def _published(kind: str, key: AuditKey | None) -> Iterator[Sealed]:
    store = open_store(kind, key)
    try:
        orch = orchestrator(store.unit_of_work, FixedClock(T0))
        execution = orch.start(WORKFLOW, request("pub-1"), idempotency_key="seal-1")
        assert execution.state.value == "succeeded"
        yield Sealed(store, BackDoor(store), orch, execution.id)
    finally:
        store.close()


@pytest.fixture(params=["memory", "surreal"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def sealed(kind: str) -> Iterator[Sealed]:
    yield from _published(kind, KEY)


@pytest.fixture
def unsealed(kind: str) -> Iterator[Sealed]:
    yield from _published(kind, None)


def rewrite(door: BackDoor, execution_id: str, sequence: int, reason: str) -> None:
    """Change one entry's reason, re-hash it and every later entry, and move the head."""
    table = door.table("audit")
    trail = sorted(
        (audit_from(d) for d in table.values() if d["execution_id"] == execution_id),
        key=lambda e: e.sequence,
    )
    prev = GENESIS
    last: AuditEntry | None = None
    for entry in trail:
        changed = evolve(entry, prev_hash=prev)
        if entry.sequence == sequence:
            changed = evolve(changed, reason=reason)
        last = evolve(changed, hash=changed.recomputed())
        door.edit_audit(
            execution_id,
            entry.sequence,
            {"reason": last.reason, "prev_hash": last.prev_hash, "hash": last.hash},
        )
        prev = last.hash
    assert last is not None
    door.edit_execution(execution_id, {"audit_head": last.hash})


def with_key(store: Store, key: AuditKey | None) -> Orchestrator:
    """An orchestrator on the same stored data through units holding `key`."""
    return orchestrator(keyed(store, key), FixedClock(T0))


# -- sealing as executions are written --------------------------------------------------------


def test_every_execution_written_through_a_keyed_store_is_sealed(sealed: Sealed) -> None:
    stored = sealed.door.table("execution")[sealed.execution_id]
    assert stored["seal"] == KEY.seal(
        sealed.execution_id, stored["audit_sequence"], stored["audit_head"]
    )
    assert sealed.orch.verify(sealed.execution_id).ok


def test_a_rewritten_trail_verifies_as_a_chain_and_fails_its_seal(sealed: Sealed) -> None:
    rewrite(sealed.door, sealed.execution_id, 3, "nothing to see")
    # The chain alone (a unit without the key) cannot tell.
    assert with_key(sealed.store, None).verify(sealed.execution_id).ok
    report = sealed.orch.verify(sealed.execution_id)
    assert not report.ok and report.problem is not None
    assert "does not match its audit head" in report.problem
    # ...and no worker acts on it.
    assert report.seal  # the chain holds: its seal is what does not
    with pytest.raises(CorruptRecord, match="its audit seal does not hold: its seal does not"):
        sealed.orch.cancel(sealed.execution_id)


def test_a_seal_blind_to_the_head_misses_the_rewrite(kind: str) -> None:
    """The check above can fail: with a seal that does not cover the head, it would."""
    for published in _published(kind, HeadBlind(KEY.secret)):
        rewrite(published.door, published.execution_id, 3, "nothing to see")
        assert published.orch.verify(published.execution_id).ok


def test_a_seal_edited_or_removed_is_caught(sealed: Sealed) -> None:
    xid = sealed.execution_id
    stored = sealed.door.table("execution")[xid]["seal"]
    sealed.door.edit_execution(xid, {"seal": stored[:-1] + ("0" if stored[-1] != "0" else "1")})
    assert "does not match" in str(sealed.orch.verify(xid).problem)
    for unlike in ("not a seal", stored[:16] + "0" + stored[17:]):  # its `:` overwritten too
        sealed.door.edit_execution(xid, {"seal": unlike})
        assert "not one this kernel makes" in str(sealed.orch.verify(xid).problem), unlike
    sealed.door.edit_execution(xid, {"seal": None})
    assert "not sealed" in str(sealed.orch.verify(xid).problem)


def test_a_seal_copied_from_another_execution_does_not_hold(kind: str) -> None:
    store = open_store(kind, KEY)
    try:
        orch = orchestrator(store.unit_of_work, FixedClock(T0))
        one = orch.start(WORKFLOW, request("pub-1"), idempotency_key="one")
        two = orch.start(WORKFLOW, request("pub-2"), idempotency_key="two")
        door = BackDoor(store)
        first = door.table("execution")[one.id]
        door.edit_execution(two.id, {k: first[k] for k in ("seal", "audit_head", "audit_sequence")})
        assert not orch.verify(two.id).ok
    finally:
        store.close()


def test_a_writer_without_the_key_leaves_a_moved_head_unsealed(kind: str) -> None:
    store = open_store(kind, KEY)
    try:
        orch = orchestrator(store.unit_of_work, FixedClock(T0))
        x = orch.start(WORKFLOW, request("pub-1", required_roles=["legal"]))
        assert x.state.value == "awaiting_approval"
        keyless = with_key(store, None)
        keyless.acting_as("bob").approve(x.id, role="legal")
        stored = BackDoor(store).table("execution")[x.id]
        assert stored.get("seal") is None  # not a stale seal, which would read as forged
        assert "not sealed" in str(orch.verify(x.id).problem)
    finally:
        store.close()


def test_another_keys_seal_is_named_as_such(sealed: Sealed) -> None:
    report = with_key(sealed.store, OTHER).verify(sealed.execution_id)
    assert not report.ok
    assert f"key id {KEY.key_id}" in str(report.problem)
    assert OTHER.key_id in str(report.problem)


# -- sealing what was written before ----------------------------------------------------------


def keyed(store: Store, key: AuditKey | None) -> UnitOfWorkFactory:
    """Units of work on `store`'s data holding `key` (or none)."""
    original = store.unit_of_work

    def factory() -> UnitOfWork:
        uow = original()
        uow.audit_key = key
        return uow

    return factory


def seal(
    store: Store,
    key: AuditKey | None,
    xid: str,
    *,
    tenant: str = TENANT,
    previous: AuditKey | None = None,
    unsealed: bool = False,
) -> sealing.SealOutcome:
    return sealing.seal(
        keyed(store, key), tenant, xid, now=T0, previous=previous, unsealed=unsealed
    )


def test_executions_written_before_the_key_are_sealed_once_asked_to(unsealed: Sealed) -> None:
    xid = unsealed.execution_id
    assert "not sealed" in str(with_key(unsealed.store, KEY).verify(xid).problem)
    left = seal(unsealed.store, KEY, xid)  # not asked: it may be a seal removed
    assert left.outcome is Sealing.UNSEALED and "not sealed" in str(left.problem)
    assert unsealed.door.table("execution")[xid].get("seal") is None
    assert seal(unsealed.store, KEY, xid, unsealed=True).outcome is Sealing.SEALED
    assert with_key(unsealed.store, KEY).verify(xid).ok
    assert seal(unsealed.store, KEY, xid).outcome is Sealing.ALREADY
    audit = [d for d in unsealed.door.table("audit").values() if d["execution_id"] == xid]
    assert len(audit) == 7  # sealing is no transition: the trail is as it was


def test_a_seal_whose_reply_was_lost_is_said_sealed_once_read_again(unsealed: Sealed) -> None:
    """Not "already sealed": that it was this command's seal is what the re-read tells, and
    a seal moved from another key would be hidden as one found in place (h169)."""
    xid = unsealed.execution_id
    lossy = FaultInjector(keyed(unsealed.store, KEY))
    lossy.arm(FaultPlan(ambiguous_commit=1))
    outcome = sealing.seal(lossy, TENANT, xid, now=T0, unsealed=True)
    assert lossy.fired == ["ambiguous commit 1"]
    assert outcome.outcome is Sealing.SEALED
    assert with_key(unsealed.store, KEY).verify(xid).ok


def test_a_broken_trail_is_not_sealed(unsealed: Sealed) -> None:
    xid = unsealed.execution_id
    unsealed.door.edit_audit(xid, 2, {"reason": "edited"})
    outcome = seal(unsealed.store, KEY, xid, unsealed=True)
    assert outcome.outcome is Sealing.REFUSED and "broken at entry #2" in str(outcome.problem)
    assert unsealed.door.table("execution")[xid].get("seal") is None


def test_a_seal_that_does_not_match_is_never_replaced(sealed: Sealed) -> None:
    xid = sealed.execution_id
    rewrite(sealed.door, xid, 3, "nothing to see")
    before = sealed.door.table("execution")[xid]["seal"]
    for previous in (None, KEY, OTHER):
        outcome = seal(sealed.store, KEY, xid, previous=previous, unsealed=True)
        assert outcome.outcome is Sealing.REFUSED and "does not match" in str(outcome.problem)
    assert sealed.door.table("execution")[xid]["seal"] == before


def test_moving_seals_to_a_new_key_leaves_a_removed_one_unsealed(sealed: Sealed) -> None:
    """A rewrite whose seal was removed reads as written before the key: a key change
    (which runs over every execution) does not seal it without being asked to."""
    xid = sealed.execution_id
    rewrite(sealed.door, xid, 3, "nothing to see")
    sealed.door.edit_execution(xid, {"seal": None})
    outcome = seal(sealed.store, OTHER, xid, previous=KEY)
    assert outcome.outcome is Sealing.UNSEALED
    assert sealed.door.table("execution")[xid].get("seal") is None


def test_a_new_key_takes_over_seals_its_predecessor_vouches_for(sealed: Sealed) -> None:
    xid = sealed.execution_id
    refused = seal(sealed.store, OTHER, xid)  # without the old key's word: no
    assert refused.outcome is Sealing.REFUSED and "another audit key" in str(refused.problem)
    assert seal(sealed.store, OTHER, xid, previous=KEY).outcome is Sealing.MOVED
    assert with_key(sealed.store, OTHER).verify(xid).ok
    assert not with_key(sealed.store, KEY).verify(xid).ok


def test_a_forged_seal_of_another_key_is_not_taken_over(sealed: Sealed) -> None:
    xid = sealed.execution_id
    rewrite(sealed.door, xid, 3, "nothing to see")
    # Someone without either key writes a seal in another key's form over the rewrite.
    forged = "f" * 16 + ":" + "0" * 64
    sealed.door.edit_execution(xid, {"seal": forged})
    outcome = seal(sealed.store, OTHER, xid, previous=KEY)
    assert outcome.outcome is Sealing.REFUSED
    assert f"the previous key given is key id {KEY.key_id}" in str(outcome.problem)
    # Forged in the previous key's own form: that key's word is checked, and refuses it.
    sealed.door.edit_execution(xid, {"seal": KEY.key_id + ":" + "0" * 64})
    outcome = seal(sealed.store, OTHER, xid, previous=KEY)
    assert outcome.outcome is Sealing.REFUSED
    assert "does not match its audit head" in str(outcome.problem)
    assert str(outcome.problem).endswith("(under the previous key)")
    assert sealed.door.table("execution")[xid]["seal"] == KEY.key_id + ":" + "0" * 64


def test_an_execution_a_worker_holds_is_left_for_later(sealed: Sealed) -> None:
    xid = sealed.execution_id
    until = T0 + timedelta(seconds=30)
    sealed.door.edit_execution(xid, {"lease_owner": "worker-9", "lease_expires_at": until})
    outcome = seal(sealed.store, OTHER, xid, previous=KEY)
    assert outcome.outcome is Sealing.BUSY and "worker-9 holds it until" in str(outcome.problem)
    assert sealed.door.table("execution")[xid]["seal"].startswith(KEY.key_id)


def test_a_worker_moving_a_rewritten_head_on_does_not_seal_it(sealed: Sealed) -> None:
    """A lease renewal, or a worker letting go, reads the execution without judging it and
    saves it: a head rewritten in storage meanwhile must not come out sealed."""
    xid = sealed.execution_id
    rewrite(sealed.door, xid, 3, "nothing to see")
    for stored_seal in (sealed.door.table("execution")[xid]["seal"], None):
        sealed.door.edit_execution(xid, {"seal": stored_seal})
        with sealed.store.unit_of_work() as uow:
            x = uow.executions.require(xid)
            x.claim("worker-2", now=T0, ttl=timedelta(seconds=30))
            uow.executions.save(x)
            uow.commit()
        assert sealed.door.table("execution")[xid].get("seal") == stored_seal
        assert not sealed.orch.verify(xid).ok
    # What was read sealed is sealed anew as it moves on.
    sealed.door.edit_execution(xid, {"seal": KEY.seal(xid, 7, x.audit_head)})
    with sealed.store.unit_of_work() as uow:
        x = uow.executions.require(xid)
        x.release_lease()
        uow.executions.save(x)
        uow.commit()
    assert sealed.orch.verify(xid).ok


def test_sealing_needs_a_key_and_an_execution_of_the_tenant(unsealed: Sealed) -> None:
    with pytest.raises(InvalidState, match="no audit key"):
        seal(unsealed.store, None, unsealed.execution_id)
    with pytest.raises(RecordNotFound):
        seal(unsealed.store, KEY, "wfx-nobody")
    with pytest.raises(RecordNotFound):
        seal(unsealed.store, KEY, unsealed.execution_id, tenant="tenant-b")


# -- the key ----------------------------------------------------------------------------------


def test_a_key_never_shows_its_secret() -> None:
    key = AuditKey.from_text("s3cret-" + "x" * 40)
    assert "s3cret" not in repr(key) and key.key_id in repr(key)
    assert "s3cret" not in repr(SurrealConfig("mem://", audit_key=key))
    assert len(key.key_id) == 16 and key.key_id != OTHER.key_id
    assert AuditKey.from_text("s3cret-" + "x" * 40).key_id == key.key_id


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("x" * 31, "at least 32 bytes"),
        ("x" * 64, "at least 8 different values"),
        (" " * 64, "at least 8 different values"),
        ("abcdefgh" * 5 + " ", "begins or ends with white space"),
        ("x" * 40 + "\n", "control character"),
        ("x" * 40 + "\ud800", "not valid Unicode"),
        # Pasted with a key, each made another key that every other worker refused.
        *(
            (text, "an invisible character")
            for c in ("\u00a0", "\u2028", "\x85", "\u200b", "\ufeff", "\u3164", "\u2800")
            for text in ("abcdefgh" * 5 + c, c + "abcdefgh" * 5)
        ),
    ],
)
def test_a_key_that_cannot_be_one_is_refused_without_quoting_it(text: str, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem) as raised:
        AuditKey.from_text(text)
    assert "xxxx" not in str(raised.value) and "abcdefgh" not in str(raised.value)


def test_a_key_given_as_anything_but_bytes_is_refused() -> None:
    with pytest.raises(InvalidInput, match="must be bytes"):
        AuditKey("x" * 40)  # type: ignore[arg-type]
