"""Tampering with a stored audit trail is detected, in memory and in SurrealDB.

A publication runs to success, then its audit records are changed directly in storage,
behind the adapter's back; `Orchestrator.verify` must name the first bad sequence.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from typing import Any

import pytest
from attrs import frozen

from domain.model.execution import approval_reason
from domain.model.lifecycle import GENESIS, AuditEntry, ChainReport, ExecutionState, verify_chain
from domain.model.policy import ImpactTier
from domain.orchestration.definition import RetryableError, RetryPolicy, StepContext
from domain.orchestration.orchestrator import Orchestrator, RecoveryIncomplete
from domain.workflows import knowledge_publication as kp
from ports.clock import FixedClock, SequentialIds
from ports.errors import CommitOutcomeUnknown, CorruptRecord
from ports.records import audit_from
from ports.storage import Batch, CommitReceipt
from ports.unit_of_work import UnitOfWork, WrappingUnitOfWork
from tests.workflow.harness import (
    T0,
    WORKFLOW,
    BackDoor,
    Calls,
    open_store,
    orchestrator,
    request,
    service,
    variant,
)

# A successful knowledge_publication leaves 7 entries: created, started, four step
# checkpoints (ingest, analyse, publish, verify) and succeeded.
ENTRIES = 7


@frozen
class Ran:
    door: BackDoor
    orch: Orchestrator
    execution_id: str


@pytest.fixture(params=["memory", "surreal"])
def ran(request: pytest.FixtureRequest) -> Iterator[Ran]:
    store = open_store(request.param)
    try:
        orch = orchestrator(store.unit_of_work, FixedClock(T0))
        execution = orch.start(WORKFLOW, request_input(), idempotency_key="tamper-1")
        assert execution.state.value == "succeeded"
        report = orch.verify(execution.id)
        assert report.ok and report.entries == ENTRIES, report
        yield Ran(BackDoor(store), orch, execution.id)
    finally:
        store.close()


def request_input() -> dict[str, object]:
    return request("pub-tamper")


def _bad(ran: Ran, first_bad: int) -> ChainReport:
    report = ran.orch.verify(ran.execution_id)
    assert not report.ok, report
    assert report.first_bad_sequence == first_bad, report
    assert report.problem
    return report


def test_editing_a_field_is_detected(ran: Ran) -> None:
    ran.door.edit_audit(ran.execution_id, 4, {"reason": "step analyse skipped"})
    report = _bad(ran, 4)
    assert "hash" in (report.problem or "")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("actor", "mallory"),
        ("to_state", "failed"),
        ("step", "verify"),
        ("at", T0.replace(year=2030)),
    ],
)
def test_editing_any_field_of_any_entry_is_detected(ran: Ran, field: str, value: object) -> None:
    ran.door.edit_audit(ran.execution_id, 2, {field: value})
    _bad(ran, 2)


def test_editing_and_rehashing_an_entry_breaks_the_next_link(ran: Ran) -> None:
    doc = ran.door.audit_doc(ran.execution_id, 4)
    forged = _rehashed(doc, reason="forged but consistent")
    ran.door.replace_audit(ran.execution_id, 4, forged)
    report = _bad(ran, 5)
    assert "previous-hash" in (report.problem or "")


def test_rehashing_the_whole_tail_still_misses_the_head(ran: Ran) -> None:
    """An attacker who rewrites entry 6 and every hash after it is caught by the head the
    execution record pins."""
    prev = ran.door.audit_doc(ran.execution_id, 5)["hash"]
    for sequence in (6, 7):
        doc = ran.door.audit_doc(ran.execution_id, sequence)
        changes = {"reason": "rewritten"} if sequence == 6 else {}
        forged = _rehashed(doc | {"prev_hash": prev}, **changes)
        ran.door.replace_audit(ran.execution_id, sequence, forged)
        prev = forged["hash"]
    _bad(ran, ENTRIES)


def test_deleting_a_middle_entry_is_detected(ran: Ran) -> None:
    ran.door.delete_audit(ran.execution_id, 4)
    report = _bad(ran, 4)
    assert report.entries == ENTRIES - 1


def test_deleting_the_first_entry_is_detected(ran: Ran) -> None:
    ran.door.delete_audit(ran.execution_id, 1)
    _bad(ran, 1)


def test_deleting_the_last_entry_is_detected(ran: Ran) -> None:
    ran.door.delete_audit(ran.execution_id, ENTRIES)
    report = _bad(ran, ENTRIES)
    assert report.entries == ENTRIES - 1


def test_deleting_the_last_two_entries_is_detected(ran: Ran) -> None:
    ran.door.delete_audit(ran.execution_id, ENTRIES)
    ran.door.delete_audit(ran.execution_id, ENTRIES - 1)
    _bad(ran, ENTRIES - 1)


def test_an_entry_added_past_the_head_is_detected(ran: Ran) -> None:
    forged = ran.door.audit_doc(ran.execution_id, ENTRIES) | {"sequence": ENTRIES + 1}
    ran.door.add_audit(forged)
    report = _bad(ran, ENTRIES + 1)
    assert report.entries == ENTRIES + 1


def _appended(ran: Ran, to_state: str, *, from_state: str = "succeeded") -> dict[str, object]:
    """A forged entry chained properly after the last (its hash recomputed)."""
    last = ran.door.audit_doc(ran.execution_id, ENTRIES)
    forged = last | {
        "sequence": ENTRIES + 1,
        "from_state": from_state,
        "to_state": to_state,
        "reason": "forged",
        "prev_hash": last["hash"],
        "pinned": None,
    }
    forged = _rehashed(forged)
    ran.door.add_audit(forged)
    return forged


def test_an_entry_chained_past_the_head_is_the_first_bad_one(ran: Ran) -> None:
    """A trail one legal entry longer than the head the execution records: the one past it
    is named, not the genuine entry at the head."""
    from domain.model.lifecycle import verify_chain

    with ran.door.store.unit_of_work() as uow:  # its 6th entry: a step's checkpoint
        trail = uow.audit.for_execution(ran.execution_id)[:6]
    head = trail[4]
    report = verify_chain(ran.execution_id, trail, head_hash=head.hash, head_sequence=5)
    assert (report.ok, report.first_bad_sequence) == (False, 6), report
    assert "records head 5" in (report.problem or "")


@pytest.mark.parametrize(
    ("from_state", "to_state", "said"),
    [
        ("succeeded", "failed", "succeeded -> failed is not a transition"),  # out of an end
        ("running", "failed", "leads from running, where the trail had reached succeeded"),
    ],
)
def test_a_forged_entry_and_head_the_lifecycle_forbids_are_caught(
    ran: Ran, from_state: str, to_state: str, said: str
) -> None:
    """An attacker who chains an entry and moves the head and state to it (found by a review
    of the specification: the hashes alone held)."""
    forged = _appended(ran, to_state, from_state=from_state)
    head = {"audit_head": forged["hash"], "audit_sequence": ENTRIES + 1, "state": to_state}
    ran.door.edit_execution(ran.execution_id, head)
    report = _bad(ran, ENTRIES + 1)
    assert said in (report.problem or "")


def _rewritten(ran: Ran, execution_id: str, docs: list[dict[str, object]]) -> None:
    """The trail replaced by `docs` (renumbered, every hash and link recomputed) and the
    execution's head and state moved to its end: what someone who can write the store and
    knows the hash function can do."""
    stored = len(_trail(ran, execution_id))
    prev = "0" * 64
    for sequence, doc in enumerate(docs, start=1):
        forged = _rehashed(doc | {"sequence": sequence, "prev_hash": prev})
        if sequence <= stored:
            ran.door.replace_audit(execution_id, sequence, forged)
        else:
            ran.door.add_audit(forged)
        prev = str(forged["hash"])
    for sequence in range(len(docs) + 1, stored + 1):
        ran.door.delete_audit(execution_id, sequence)
    head = {"audit_head": prev, "audit_sequence": len(docs), "state": docs[-1]["to_state"]}
    ran.door.edit_execution(execution_id, head)


def _trail(ran: Ran, execution_id: str) -> list[dict[str, object]]:
    with ran.door.store.unit_of_work() as uow:
        count = len(uow.audit.for_execution(execution_id))
    return [ran.door.audit_doc(execution_id, n) for n in range(1, count + 1)]


def test_steps_completed_out_of_their_order_are_caught_hashes_recomputed(ran: Ran) -> None:
    trail = _trail(ran, ran.execution_id)  # created, started, ingest, analyse, ...
    ingest, analyse = trail[2], trail[3]
    swapped = [*trail[:2], analyse, ingest, *trail[4:]]
    _rewritten(ran, ran.execution_id, swapped)
    report = _bad(ran, 3)
    assert "step analyse completed where step ingest was next" in (report.problem or "")


def test_success_before_every_step_completed_is_caught_hashes_recomputed(ran: Ran) -> None:
    trail = _trail(ran, ran.execution_id)
    succeeded = trail[-1]
    _rewritten(ran, ran.execution_id, [*trail[:3], succeeded])  # only ingest completed
    report = _bad(ran, 4)
    assert "succeeds with 1 of 4 steps completed" in (report.problem or "")


def test_an_approval_by_the_requester_is_caught_hashes_recomputed(ran: Ran) -> None:
    """The requester's own approval, forged into a trail whose hashes are recomputed (found
    by a re-test: the chain and its shape held)."""
    x = ran.orch.start(WORKFLOW, request("pub-3"), risk_tier=ImpactTier.TIER1)
    x = ran.orch.acting_as("alice").approve(x.id, role="reviewer")
    trail = _trail(ran, x.id)
    [at] = [n for n, d in enumerate(trail) if d["reason"] == "approved by alice as reviewer"]
    trail[at] = trail[at] | {"reason": "approved by operator as reviewer", "actor": "operator"}
    _rewritten(ran, x.id, trail)
    (approval,) = x.approvals
    forged = [["operator", "reviewer", approval.granted_at.isoformat()]]
    ran.door.edit_execution(x.id, {"approvals_json": json.dumps(forged)})
    report = ran.orch.verify(x.id)
    assert (report.ok, report.first_bad_sequence) == (False, at + 1), report
    assert "an approval by the requester, 'operator'" in (report.problem or "")


def test_a_cancel_whose_reason_reads_like_the_requesters_approval_is_no_break(ran: Ran) -> None:
    """A cancel's reason is the operator's free text (found by a hunt for false breaks)."""
    x = ran.orch.start(WORKFLOW, request("pub-3"), risk_tier=ImpactTier.TIER1)
    cancelled = ran.orch.cancel(x.id, reason="approved by Operator as reviewer by mistake")
    assert cancelled.state.value == "cancelled"
    assert ran.orch.verify(x.id).ok


def test_a_trail_from_before_definitions_were_pinned_keeps_the_rules_it_was_written_under(
    ran: Ran,
) -> None:
    """Releases before them compared the approver with the requester exactly, and recorded
    'Operator' approving for 'operator': such a trail is not broken by rules made since."""
    x = ran.orch.start(WORKFLOW, request("pub-3"), risk_tier=ImpactTier.TIER1)
    x = ran.orch.acting_as("alice").approve(x.id, role="reviewer")
    trail = _trail(ran, x.id)
    [at] = [n for n, d in enumerate(trail) if d["reason"] == "approved by alice as reviewer"]
    trail[at] = trail[at] | {"reason": "approved by Operator as reviewer"}
    trail = [d | {"pinned": None} for d in trail]  # as written before pins
    _rewritten(ran, x.id, trail)
    (approval,) = x.approvals
    forged = [["Operator", "reviewer", approval.granted_at.isoformat()]]
    ran.door.edit_execution(x.id, {"approvals_json": json.dumps(forged)})
    assert ran.orch.verify(x.id).ok


def test_a_step_committed_between_the_reads_of_verify_is_no_break() -> None:
    """`verify` reads the execution, then its trail: a worker's step committed in between
    leaves the trail past the head it read. That is no tamper: read again, it verifies."""
    store = open_store("memory")
    runner = orchestrator(store.unit_of_work, FixedClock(T0), worker_id="runner")
    pending = runner.start(WORKFLOW, request("pub-moving"), run=False)
    moved: list[str] = []

    class StepsMeanwhile(WrappingUnitOfWork):
        def _query(self, table: str, *args: Any) -> Any:
            if table == "audit" and not moved:  # the execution was read: now a worker moves
                moved.append(runner.run(pending.id).state.value)
            return super()._query(table, *args)

    auditor = orchestrator(
        lambda: StepsMeanwhile(store.unit_of_work()), FixedClock(T0), worker_id="auditor"
    )
    report = auditor.verify(pending.id)
    assert moved == ["succeeded"] and report.ok, report
    assert report.entries == ENTRIES


def test_swapping_two_entries_is_detected(ran: Ran) -> None:
    third = ran.door.audit_doc(ran.execution_id, 3)
    fifth = ran.door.audit_doc(ran.execution_id, 5)
    ran.door.replace_audit(ran.execution_id, 3, fifth)
    ran.door.replace_audit(ran.execution_id, 5, third)
    report = _bad(ran, 3)
    assert "sequence" in (report.problem or "")


def test_swapping_contents_but_keeping_sequences_is_detected(ran: Ran) -> None:
    third = ran.door.audit_doc(ran.execution_id, 3)
    fifth = ran.door.audit_doc(ran.execution_id, 5)
    ran.door.replace_audit(ran.execution_id, 3, fifth | {"sequence": 3})
    ran.door.replace_audit(ran.execution_id, 5, third | {"sequence": 5})
    _bad(ran, 3)


def test_an_entry_moved_from_another_execution_is_detected(ran: Ran) -> None:
    other = ran.orch.start(WORKFLOW, request("pub-other"), idempotency_key="tamper-2")
    assert ran.orch.verify(other.id).ok
    foreign = ran.door.audit_doc(other.id, 6)
    ran.door.replace_audit(ran.execution_id, 6, foreign)
    _bad(ran, 6)
    # The copy claims the other execution, so it also surfaces, out of place, in that trail.
    other_report = ran.orch.verify(other.id)
    assert not other_report.ok and other_report.first_bad_sequence == 1, other_report


def test_editing_the_executions_state_is_detected(ran: Ran) -> None:
    ran.door.edit_execution(ran.execution_id, {"state": "failed"})
    report = _bad(ran, ENTRIES)
    assert "failed" in (report.problem or "") and "succeeded" in (report.problem or "")


def test_a_forged_approval_on_the_execution_is_detected(ran: Ran) -> None:
    forged = '[["mallory", "reviewer", "2026-01-01T00:00:00+00:00"]]'
    ran.door.edit_execution(ran.execution_id, {"approvals_json": forged})
    report = _bad(ran, ENTRIES)
    assert "mallory" in (report.problem or "")


def test_an_edited_requester_is_detected(ran: Ran) -> None:
    ran.door.edit_execution(ran.execution_id, {"requested_by": "mallory"})
    report = _bad(ran, 1)  # the entry that names the requester, not the last one
    assert "requester" in (report.problem or "")


def test_a_blanked_requester_is_detected_and_blocks_approval(ran: Ran) -> None:
    waiting = ran.orch.start(WORKFLOW, request("pub-2"), risk_tier=ImpactTier.TIER1)
    ran.door.edit_execution(waiting.id, {"requested_by": ""})
    assert not ran.orch.verify(waiting.id).ok
    with pytest.raises(CorruptRecord, match=r"not acted on: .* as requester"):
        ran.orch.acting_as("operator").approve(waiting.id, role="reviewer")


@pytest.mark.parametrize("forgery", ["time", "cancel-reason"])
def test_an_approval_is_only_the_entry_that_resumed_the_wait_at_its_time(
    ran: Ran, forgery: str
) -> None:
    x = ran.orch.start(WORKFLOW, request("pub-3"), risk_tier=ImpactTier.TIER2)
    x = ran.orch.acting_as("alice").approve(x.id, role="reviewer")
    assert ran.orch.verify(x.id).ok
    (approval,) = x.approvals
    if forgery == "time":  # an expired approval made to look fresh
        later = approval.granted_at + timedelta(hours=25)
        forged = [["alice", "reviewer", later.isoformat()]]
    else:  # a cancellation whose reason reads like an approval
        ran.orch.cancel(x.id, reason=approval_reason("mallory", "reviewer"))
        forged = [["alice", "reviewer", approval.granted_at.isoformat()]]
        forged.append(["mallory", "reviewer", approval.granted_at.isoformat()])
    ran.door.edit_execution(x.id, {"approvals_json": json.dumps(forged)})
    assert not ran.orch.verify(x.id).ok


@pytest.mark.parametrize("field", ["approvals_json", "outputs_json", "metadata_json"])
def test_an_execution_record_that_no_longer_parses_is_reported_broken(ran: Ran, field: str) -> None:
    ran.door.edit_execution(ran.execution_id, {field: "garbage"})
    report = _bad(ran, 1)
    assert "cannot be read" in (report.problem or "") and ran.execution_id in (report.problem or "")


def test_an_execution_whose_input_record_is_gone_is_reported_naming_it(ran: Ran) -> None:
    ran.door.delete("execution_input", ran.execution_id)
    problem = _bad(ran, 1).problem or ""
    assert f"its input record (execution_input {ran.execution_id!r}) is missing" in problem
    assert "KeyError" not in problem


@pytest.mark.parametrize("attempts", ['{"ingest": "x"}', '{"ingest": -1}', '["ingest"]'])
def test_attempts_that_are_no_counts_are_a_damaged_record_not_an_internal_error(
    ran: Ran, attempts: str
) -> None:
    """Not hashed (operational), but read by every attempt: text there failed the next
    attempt's count with a TypeError, leaving the execution running for good."""
    ran.door.edit_execution(ran.execution_id, {"attempts_json": attempts})
    with pytest.raises(CorruptRecord, match=rf"execution '{ran.execution_id}'.*attempts"):
        ran.orch.get(ran.execution_id)


@pytest.mark.parametrize("field", ["from_state", "to_state"])
def test_an_entry_that_no_longer_reads_is_reported_at_its_place(ran: Ran, field: str) -> None:
    ran.door.edit_audit(ran.execution_id, 4, {field: "bogus"})
    report = _bad(ran, 4)
    assert f"audit entry '{ran.execution_id}:000000004' cannot be read" in (report.problem or "")


def test_pins_nested_past_the_recursion_limit_are_reported_not_raised(ran: Ran) -> None:
    """No key is needed to write them: they must break one chain, not every check."""
    ran.door.edit_audit(ran.execution_id, 1, {"pinned": "[" * 100_000 + "]" * 100_000})
    _bad(ran, 1)
    with ran.door.store.unit_of_work() as uow:
        assert uow.audit.starts() == {ran.execution_id: None}  # whose it is cannot be read


@pytest.mark.parametrize(
    ("table", "field"),
    [("audit", "sequence"), ("execution", "audit_sequence"), ("execution", "current_step")],
)
def test_a_count_stored_as_text_is_reported_not_compared(table: str, field: str) -> None:
    """SurrealDB's schema keeps these integers; storage edited past it (or the memory store's,
    edited in place) must still give a report, not a TypeError far from the read."""
    store = open_store("memory")
    orch = orchestrator(store.unit_of_work, FixedClock(T0))
    xid = orch.start(WORKFLOW, request_input(), idempotency_key="tamper-1").id
    door = BackDoor(store)
    if table == "audit":
        door.edit_audit(xid, 4, {field: "4"})
    else:
        door.edit_execution(xid, {field: str(door.table("execution")[xid][field])})
    report = orch.verify(xid)
    assert not report.ok and "is not a whole number" in (report.problem or ""), report
    assert report.first_bad_sequence == (4 if table == "audit" else 1)


def test_an_instant_stored_as_text_leaves_listings_standing() -> None:
    """The memory store's own storage edited in place (SurrealDB's schema keeps instants):
    the record is reported unreadable, the others listed, nothing compares text with time."""
    store = open_store("memory")
    orch = orchestrator(store.unit_of_work, FixedClock(T0))
    edited, kept = (orch.start(WORKFLOW, request(p)).id for p in ("pub-a", "pub-b"))
    BackDoor(store).edit_execution(edited, {"created_at": "yesterday"})
    with store.unit_of_work() as uow:
        unreadable: list[str] = []
        listed = uow.executions.every(with_input=False, unreadable=unreadable)
        assert ([x.id for x in listed], unreadable) == ([kept], [edited])
        unreadable.clear()
        recent = uow.executions.recent(now=T0, with_input=False, unreadable=unreadable)
        assert [x.id for x in recent] == [kept] and unreadable in ([], [edited])


def test_several_edits_are_reported_by_the_first_found(ran: Ran) -> None:
    ran.door.edit_execution(ran.execution_id, {"requested_by": "mallory", "current_step": 1})
    report = _bad(ran, 1)
    assert "requester" in (report.problem or ""), report


def test_an_untouched_trail_stays_valid_after_reading(ran: Ran) -> None:
    for _ in range(2):
        assert ran.orch.verify(ran.execution_id).ok


# -- the check can fail: a verifier without the hash comparison misses an edit ------------------


def _verify_without_hashes(entries: Sequence[AuditEntry], head_sequence: int) -> bool:
    """What verify_chain would be if it trusted stored hashes: sequence and links only."""
    prev = GENESIS
    for position, entry in enumerate(entries, start=1):
        if entry.sequence != position or entry.prev_hash != prev:
            return False
        prev = entry.hash
    return len(entries) == head_sequence


def _stored_entries(ran: Ran, execution_id: str | None = None) -> list[AuditEntry]:
    prefix = (execution_id or ran.execution_id) + ":"
    table = ran.door.table("audit")
    return [audit_from(table[k]) for k in sorted(table) if k.startswith(prefix)]


def test_a_verifier_without_the_hash_check_would_miss_the_edit(ran: Ran) -> None:
    head = ran.orch.get(ran.execution_id).audit_sequence
    assert _verify_without_hashes(_stored_entries(ran), head)
    ran.door.edit_audit(ran.execution_id, 4, {"reason": "step analyse skipped"})
    entries = _stored_entries(ran)
    assert entries[3].reason == "step analyse skipped"  # the edit really is in storage
    assert _verify_without_hashes(entries, head)  # ...and the weaker check passes it
    _bad(ran, 4)  # while the real one does not


def _rehashed(doc: dict[str, object], **changes: object) -> dict[str, object]:
    """The stored document with `changes` applied and its own hash recomputed."""
    forged = doc | changes
    entry = audit_from(forged)
    return forged | {"hash": entry.recomputed()}


# -- facts outside the trail: the first entry pins the execution, checkpoints pin outputs ----


def _lowered_tier(ran: Ran, execution_id: str) -> str:
    m = ran.orch.get(execution_id).metadata
    return json.dumps(["Tier0", m.consistency_class.value, m.rollback_strategy.value, "none"])


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"metadata_json": None}, "metadata"),
        ({"idempotency_key": "someone-else"}, "idempotency key"),
        ({"workflow_version": "0"}, "workflow version"),
        ({"correlation_id": "trace-forged"}, "correlation id"),
        ({"created_at": T0.replace(year=2020)}, "creation time"),
        ({"environment": "production"}, "environment"),  # to be driven by another's workers
        ({"environment": None}, "environment"),  # or by any
    ],
)
def test_an_edited_execution_identity_is_detected(
    ran: Ran, changes: dict[str, object], named: str
) -> None:
    if "metadata_json" in changes:  # a lower tier and no approval policy: gates bypassed
        changes = {"metadata_json": _lowered_tier(ran, ran.execution_id)}
    ran.door.edit_execution(ran.execution_id, changes)
    report = _bad(ran, 1)
    assert named in (report.problem or ""), report


def test_an_edited_input_is_detected(ran: Ran) -> None:
    """Even by the process that wrote it, which caches records that never change."""
    forged = request("pub-forged")
    ran.door.edit_input(ran.execution_id, {"input_json": json.dumps(forged)})
    report = _bad(ran, 1)
    assert "input" in (report.problem or "")


def test_an_edited_step_output_is_detected(ran: Ran) -> None:
    outputs = dict(ran.orch.get(ran.execution_id).step_outputs)
    outputs["publish"] = outputs["publish"] | {"capsule_id": "cap-forged"}
    ran.door.edit_execution(ran.execution_id, {"outputs_json": json.dumps(outputs)})
    report = _bad(ran, 5)  # the publish checkpoint
    assert "publish" in (report.problem or "")


@pytest.mark.parametrize("change", ["dropped", "added"])
def test_a_dropped_or_added_step_output_is_detected(ran: Ran, change: str) -> None:
    outputs = dict(ran.orch.get(ran.execution_id).step_outputs)
    if change == "dropped":
        del outputs["analyse"]
    else:
        outputs["review"] = {"approved": True}
    ran.door.edit_execution(ran.execution_id, {"outputs_json": json.dumps(outputs)})
    report = _bad(ran, 4 if change == "dropped" else ENTRIES)
    assert ("analyse" if change == "dropped" else "review") in (report.problem or "")


def test_a_chain_check_alone_would_miss_a_lowered_risk_tier(ran: Ran) -> None:
    waiting = ran.orch.start(WORKFLOW, request("pub-4"), risk_tier=ImpactTier.TIER2)
    ran.door.edit_execution(waiting.id, {"metadata_json": _lowered_tier(ran, waiting.id)})
    x = ran.orch.get(waiting.id)
    assert x.metadata.risk_tier is ImpactTier.TIER0  # the edit really is in storage
    entries = _stored_entries(ran, waiting.id)
    plain = verify_chain(
        x.id, entries, head_hash=x.audit_head, head_sequence=x.audit_sequence, state=x.state
    )
    assert plain.ok  # the links and hashes are all intact...
    report = ran.orch.verify(waiting.id)  # ...and the pins are what catch it
    assert not report.ok and "metadata" in (report.problem or ""), report


def test_a_trail_written_before_pins_still_verifies(ran: Ran) -> None:
    """Entries from before pins existed hash without them; such trails stay valid."""
    prev = GENESIS
    for sequence in range(1, ENTRIES + 1):
        doc = dict(ran.door.audit_doc(ran.execution_id, sequence))
        doc.pop("pinned", None)
        legacy = _rehashed(doc | {"prev_hash": prev})
        ran.door.replace_audit(ran.execution_id, sequence, legacy)
        prev = str(legacy["hash"])
    ran.door.edit_execution(ran.execution_id, {"audit_head": prev})
    assert all(e.pinned is None for e in _stored_entries(ran))
    assert ran.orch.verify(ran.execution_id).ok


def test_outputs_pinned_after_an_upgrade_are_held_to_their_pins(ran: Ran) -> None:
    """An execution started before pins and finished by a release that pins: the outputs
    it pinned were never checked, since its first entry pinned nothing (found by an
    upgrade pass: a publish output edited in storage verified)."""
    prev = GENESIS
    for sequence in range(1, ENTRIES + 1):  # created, started, ingest: written before pins
        doc = dict(ran.door.audit_doc(ran.execution_id, sequence))
        if sequence <= 3:
            doc.pop("pinned", None)
        rewritten = _rehashed(doc | {"prev_hash": prev})
        ran.door.replace_audit(ran.execution_id, sequence, rewritten)
        prev = str(rewritten["hash"])
    ran.door.edit_execution(ran.execution_id, {"audit_head": prev})
    assert ran.orch.verify(ran.execution_id).ok
    outputs = json.loads(ran.door.table("execution")[ran.execution_id]["outputs_json"])
    forged = outputs | {"publish": outputs["publish"] | {"capsule_id": "cap-forged"}}
    ran.door.edit_execution(ran.execution_id, {"outputs_json": json.dumps(forged)})
    report = _bad(ran, 5)  # publish's checkpoint
    assert "the output of step publish differs" in (report.problem or "")


def test_a_removed_approval_is_detected(ran: Ran) -> None:
    x = ran.orch.start(WORKFLOW, request("pub-5"), risk_tier=ImpactTier.TIER1)
    x = ran.orch.acting_as("alice").approve(x.id, role="reviewer")
    assert x.state.value == "succeeded" and ran.orch.verify(x.id).ok
    ran.door.edit_execution(x.id, {"approvals_json": "[]"})
    report = ran.orch.verify(x.id)
    assert not report.ok and "approved by alice" in (report.problem or ""), report
    with ran.door.store.unit_of_work() as uow:
        trail = uow.audit.for_execution(x.id)
    [resumed] = [
        e
        for e in trail
        if (e.from_state, e.to_state) == (ExecutionState.AWAITING_APPROVAL, ExecutionState.RUNNING)
    ]
    assert report.first_bad_sequence == resumed.sequence < report.entries, report


@pytest.mark.parametrize("cursor", [0, 3, 5])
def test_a_moved_step_cursor_is_detected(ran: Ran, cursor: int) -> None:
    ran.door.edit_execution(ran.execution_id, {"current_step": cursor})
    report = _bad(ran, ENTRIES)
    assert f"at step {cursor}" in (report.problem or ""), report


# -- an execution edited in storage is not acted on ------------------------------------------


def _fresh_orchestrator(ran: Ran) -> Orchestrator:
    """Another worker (or the same one, restarted): it knows only what storage says."""
    return orchestrator(ran.door.store.unit_of_work, FixedClock(T0 + timedelta(hours=1)))


def test_a_lowered_risk_tier_does_not_skip_the_approval(ran: Ran) -> None:
    waiting = ran.orch.start(WORKFLOW, request("pub-skip"), risk_tier=ImpactTier.TIER1)
    assert waiting.state.value == "awaiting_approval"
    ran.door.edit_execution(
        waiting.id, {"metadata_json": _lowered_tier(ran, waiting.id), "state": "running"}
    )
    capsules = len(ran.door.table("capsule"))
    worker = _fresh_orchestrator(ran)
    with pytest.raises(RecoveryIncomplete) as caught:
        worker.recover(ignore_leases=True)
    [(xid, error)] = caught.value.failures
    assert xid == waiting.id and "not acted on" in error
    with pytest.raises(CorruptRecord, match="not acted on"):
        worker.run(waiting.id)
    assert len(ran.door.table("capsule")) == capsules  # nothing was published


def test_a_lowered_risk_tier_is_not_approved_through(ran: Ran) -> None:
    waiting = ran.orch.start(WORKFLOW, request("pub-tier"), risk_tier=ImpactTier.TIER2)
    ran.door.edit_execution(waiting.id, {"metadata_json": _lowered_tier(ran, waiting.id)})
    with pytest.raises(CorruptRecord, match=r"not acted on: .*metadata"):
        _fresh_orchestrator(ran).acting_as("bob").approve(waiting.id, role="reviewer")
    assert ran.door.table("execution")[waiting.id]["state"] == "awaiting_approval"


def test_a_forged_step_output_is_not_acted_on(ran: Ran) -> None:
    waiting = ran.orch.start(WORKFLOW, request("pub-swap"), risk_tier=ImpactTier.TIER1)
    outputs = dict(ran.orch.get(waiting.id).step_outputs)
    outputs["ingest"] = {"source_ids": ["src-of-someone-else"]}  # a step never run
    ran.door.edit_execution(waiting.id, {"outputs_json": json.dumps(outputs)})
    worker = _fresh_orchestrator(ran)
    commands: list[Callable[[], object]] = [
        lambda: worker.acting_as("bob").approve(waiting.id, role="reviewer"),
        lambda: worker.reject(waiting.id, reason="no"),
        lambda: worker.cancel(waiting.id),
    ]
    for command in commands:
        with pytest.raises(CorruptRecord, match="output of step ingest"):
            command()
    assert ran.door.table("execution")[waiting.id]["state"] == "awaiting_approval"


def _set_back(ran: Ran, execution_id: str, sequence: int, **changes: object) -> None:
    """The execution's record set back to where its trail stood at entry `sequence`."""
    head = ran.door.audit_doc(execution_id, sequence)["hash"] if sequence else GENESIS
    ran.door.edit_execution(
        execution_id, {"audit_sequence": sequence, "audit_head": head, **changes}
    )


def test_a_trail_deleted_whole_is_broken_and_not_acted_on(ran: Ran) -> None:
    """Every execution is stored with the entry that created it: an empty trail is no trail
    that verifies, whatever its execution's head says (with it went the pins of its tier)."""
    waiting = ran.orch.start(WORKFLOW, request("pub-wiped"), risk_tier=ImpactTier.TIER1)
    for sequence in range(1, ran.orch.verify(waiting.id).entries + 1):
        ran.door.delete_audit(waiting.id, sequence)
    _set_back(ran, waiting.id, 0, state="pending", metadata_json=_lowered_tier(ran, waiting.id))
    report = ran.orch.verify(waiting.id)
    assert (report.ok, report.first_bad_sequence, report.entries) == (False, 1, 0), report
    assert "no audit entries" in (report.problem or "")
    capsules = len(ran.door.table("capsule"))
    with pytest.raises(RecoveryIncomplete) as caught:
        _fresh_orchestrator(ran).recover(ignore_leases=True)
    [(xid, error)] = caught.value.failures
    assert xid == waiting.id and "not acted on" in error and "no audit entries" in error
    assert len(ran.door.table("capsule")) == capsules  # nothing was published


@pytest.mark.parametrize("moved", [False, True], ids=["left-in-place", "moved-aside"])
def test_a_rejection_set_back_behind_its_trail_is_not_approved_through(
    ran: Ran, moved: bool
) -> None:
    """The record set back to the wait its rejection ended, the rejection's entry kept (where
    it was, or under another key so an approval's entry would not collide with it): the
    trail runs past the head, read again too, and the execution is not acted on."""
    waiting = ran.orch.start(WORKFLOW, request("pub-undone"), risk_tier=ImpactTier.TIER1)
    waited_at = ran.orch.verify(waiting.id).entries
    ran.orch.reject(waiting.id, reason="no")
    rejection = ran.door.audit_doc(waiting.id, waited_at + 1)
    if moved:
        ran.door.delete_audit(waiting.id, waited_at + 1)
        ran.door.add_audit(rejection, key=f"{waiting.id}:{99:09d}")
    _set_back(ran, waiting.id, waited_at, state="awaiting_approval", last_error=None)
    with pytest.raises(CorruptRecord, match=r"not acted on: .*execution records head"):
        _fresh_orchestrator(ran).acting_as("bob").approve(waiting.id, role="reviewer")
    assert ran.door.table("execution")[waiting.id]["state"] == "awaiting_approval"
    assert not any(c["publication_id"] == "pub-undone" for c in ran.door.table("capsule").values())


def test_an_intact_execution_read_from_storage_is_acted_on(ran: Ran) -> None:
    waiting = ran.orch.start(WORKFLOW, request("pub-fine"), risk_tier=ImpactTier.TIER1)
    done = _fresh_orchestrator(ran).acting_as("bob").approve(waiting.id, role="reviewer")
    assert done.state.value == "succeeded" and ran.orch.verify(done.id).ok


def test_an_execution_edited_while_its_step_fails_is_not_acted_on(ran: Ran) -> None:
    """The failure path re-reads the execution too: an edit made in storage meanwhile (a
    lower tier, say) must not be carried on by the retry."""
    store = ran.door.store

    def tamper_then_fail(n: int, uow: UnitOfWork, ctx: StepContext) -> None:
        if n == 1:
            lowered = _lowered_tier(ran, ctx.execution.id)
            ran.door.edit_execution(ctx.execution.id, {"metadata_json": lowered})
            raise RetryableError("transient, after an edit behind our back")

    flaky = variant(
        kp.definition(service(store.unit_of_work)),
        WORKFLOW,
        {"analyse": Calls().wrap(tamper_then_fail)},
        retry=RetryPolicy(max_attempts=3, backoff=timedelta(0)),
    )
    worker = orchestrator(store.unit_of_work, FixedClock(T0), workflows={WORKFLOW: flaky})
    with pytest.raises(CorruptRecord, match=r"not acted on: .*metadata"):
        worker.start(WORKFLOW, request("pub-window"), risk_tier=ImpactTier.TIER0)
    assert not any(c["publication_id"] == "pub-window" for c in ran.door.table("capsule").values())


@pytest.mark.parametrize("first_step", [True, False], ids=["with-its-first-step", "alone"])
def test_a_start_read_back_after_a_lost_reply_is_judged_before_it_is_driven(
    ran: Ran, first_step: bool
) -> None:
    """A start's commit lands but its reply is lost (a silent server); the execution read
    back by its key is the one stored, perhaps edited meanwhile (an approval forged): it
    is checked against its trail before a step runs, not taken for this worker's own."""
    store, door = ran.door.store, ran.door
    forged = json.dumps([["mallory", "legal", T0.isoformat()]])

    class LostReply(WrappingUnitOfWork):
        commits = 0

        def _apply(self, batch: Batch) -> CommitReceipt:
            receipt = super()._apply(batch)
            LostReply.commits += 1
            if LostReply.commits == 1:
                xid = next(
                    x for x, d in door.table("execution").items() if d["idempotency_key"] == "k1"
                )
                door.edit_execution(xid, {"approvals_json": forged})
                raise CommitOutcomeUnknown("applied, reply lost")
            return receipt

    first = kp.definition(service(store.unit_of_work))
    if not first_step:  # a first step that fails once: the start is stored alone
        first = variant(
            first,
            WORKFLOW,
            {"ingest": Calls().wrap(lambda n, u, c: _transient(n))},
            retry=RetryPolicy(max_attempts=2, backoff=timedelta(0)),
        )
    told: list[tuple[str, ...]] = []
    worker = orchestrator(
        lambda: LostReply(store.unit_of_work()),
        FixedClock(T0),
        workflows={WORKFLOW: first},
        ids=SequentialIds(1000),
        on_transition=lambda x: told.append(tuple(a.approver for a in x.approvals)),
    )
    with pytest.raises(CorruptRecord, match="approval by 'mallory' as 'legal' has no audit entry"):
        worker.start(
            WORKFLOW,
            request("pub-lost"),
            risk_tier=ImpactTier.TIER0,  # its first step runs (and fails) ungated
            idempotency_key="k1",
        )
    assert not any(c["publication_id"] == "pub-lost" for c in door.table("capsule").values())
    assert not any("mallory" in approvers for approvers in told)  # nor told of as its own


def _transient(n: int) -> None:
    if n == 1:
        raise RetryableError("transient")
