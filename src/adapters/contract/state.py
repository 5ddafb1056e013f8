"""The suite's model of stored state: plain dicts shaped like a back-door snapshot."""

from __future__ import annotations

from adapters.contract.backdoor import Snapshot, copy_document, copy_snapshot
from domain.model.capsule import Capsule
from domain.model.evidence import EventEnvelope, EvidenceManifest
from domain.model.execution import WorkflowExecution
from domain.model.knowledge import KnowledgeSource
from ports import records
from ports.storage import EVENT_TABLE, Document


def copied(snapshot: Snapshot) -> Snapshot:
    return copy_snapshot(snapshot)


def last_position(snapshot: Snapshot) -> int:
    return max((doc["position"] for doc in snapshot[EVENT_TABLE].values()), default=0)


def put(model: Snapshot, table: str, key: str, document: Document) -> None:
    model[table][key] = copy_document(document)


def put_event(model: Snapshot, event: EventEnvelope) -> int:
    """Record an appended event at the next position, as a commit must; return the position."""
    position = last_position(model) + 1
    model[EVENT_TABLE][event.id] = records.event_doc(event) | {"position": position}
    return position


def put_source(model: Snapshot, source: KnowledgeSource) -> None:
    put(model, "knowledge_source", source.id, records.source_doc(source))


def put_evidence(model: Snapshot, manifest: EvidenceManifest) -> None:
    put(model, "evidence", manifest.id, records.evidence_doc(manifest))


def put_capsule(model: Snapshot, capsule: Capsule) -> None:
    """`capsule` as a commit must store it: at the version it carries."""
    put(model, "capsule", capsule.id, records.capsule_doc(capsule))


def put_execution(model: Snapshot, execution: WorkflowExecution) -> None:
    """What saving `execution` (not yet saved) stores: the next version and its new entries."""
    put(model, "execution", execution.id, records.execution_doc(execution, execution.version + 1))
    if execution.version == 0:
        put(model, "execution_input", execution.id, records.execution_input_doc(execution))
    for entry in execution.new_audit:
        key = records.audit_key(entry.execution_id, entry.sequence)
        put(model, "audit", key, records.audit_doc(entry))


def diff(expected: Snapshot, actual: Snapshot, *, limit: int = 20) -> list[str]:
    """Human-readable differences, so a failure says which record went wrong and how."""
    problems: list[str] = []
    for table in sorted(set(expected) | set(actual)):
        want, got = expected.get(table, {}), actual.get(table, {})
        for key in sorted(set(want) | set(got)):
            if key not in got:
                problems.append(f"{table} {_short(key)}: missing")
            elif key not in want:
                problems.append(f"{table} {_short(key)}: unexpected record {_short(got[key])}")
            elif want[key] != got[key]:
                fields = sorted(
                    f for f in set(want[key]) | set(got[key]) if want[key].get(f) != got[key].get(f)
                )
                detail = ", ".join(
                    f"{f}: expected {_short(want[key].get(f))}, stored {_short(got[key].get(f))}"
                    for f in fields
                )
                problems.append(f"{table} {_short(key)}: {detail}")
    if len(problems) > limit:
        problems = [*problems[:limit], f"... and {len(problems) - limit} more"]
    return problems


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
