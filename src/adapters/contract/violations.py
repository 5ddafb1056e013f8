"""Records that break the field spec (ports.fields), each with the field its refusal names.

Every adapter must refuse each at commit with `InvalidRecord`, writing nothing of its batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import evolve

from adapters.contract import samples
from ports import records
from ports.storage import EVENT_TABLE, Op, Write
from ports.unit_of_work import UnitOfWork


def _stage(op: Op, table: str, key: str, document: dict[str, Any]) -> Callable[[UnitOfWork], None]:
    return lambda uow: uow.stage(Write(op, table, key, document))


def _capsule(**changes: Any) -> Callable[[UnitOfWork], None]:
    doc = records.capsule_doc(samples.capsule()) | changes
    return _stage(Op.CREATE, "capsule", "bad-capsule", doc)


def _evidence(**changes: Any) -> Callable[[UnitOfWork], None]:
    doc = records.evidence_doc(samples.evidence("s")) | changes
    return _stage(Op.CREATE, "evidence", "bad-evidence", doc)


def _event(**changes: Any) -> Callable[[UnitOfWork], None]:
    event = samples.event()
    return _stage(Op.APPEND, EVENT_TABLE, event.id, records.event_doc(event) | changes)


def _without(field: str) -> Callable[[UnitOfWork], None]:
    doc = records.capsule_doc(samples.capsule())
    del doc[field]
    return _stage(Op.CREATE, "capsule", "bad-capsule", doc)


# name -> (field the refusal names, staging function)
FIELD_VIOLATIONS: dict[str, tuple[str, Callable[[UnitOfWork], object]]] = {
    "digest-length": (
        "content_digest",
        lambda uow: uow.sources.add(evolve(samples.source(), content_digest="abc")),
    ),
    "empty-title": ("title", lambda uow: uow.capsules.add(evolve(samples.capsule(), title=""))),
    "status-outside-set": ("status", _capsule(status="bogus")),
    "missing-field": ("tenant", _without("tenant")),
    "text-for-int": ("version", _evidence(version="one")),
    "bool-for-int": ("version", _evidence(version=True)),
    "int-for-text": ("producer", _evidence(producer=7)),
    "text-for-datetime": ("recorded_at", _evidence(recorded_at="2026-01-01")),
    "text-for-list": ("decision_ids", _evidence(decision_ids="d-1")),
    "below-minimum": ("version", _evidence(version=0)),
    "empty-list": ("source_ids", _capsule(source_ids=[])),
    "event-type": ("type", _event(type="other.thing")),
}
