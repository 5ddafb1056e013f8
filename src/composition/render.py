"""How records look on a terminal and as JSON (the CLI's only output formats).

Terminal text never carries a stored or user-given value raw: `safe` escapes control
characters, so a reason holding a newline or an ANSI sequence cannot fake an audit row or
recolour the terminal. JSON is exact (it escapes them itself).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from domain.model.evidence import EventEnvelope
from domain.model.execution import WorkflowExecution
from domain.model.lifecycle import AuditEntry, ChainReport
from domain.orchestration.definition import WorkflowDefinition
from domain.workflows import knowledge_publication as kp

JSON = dict[str, Any]

# C0, DEL, C1, the Unicode line and paragraph separators (terminals and editors break lines
# at them), the bidirectional overrides, isolates and marks (they reorder what is shown), and
# the word joiners, invisible operators and BOM, which no text needs inside it. (The
# zero-width joiners and spaces are left: Persian, Indic and Thai text and emoji use them.)
_UNSAFE = [
    *range(0x00, 0x20),
    *range(0x7F, 0xA0),
    0x061C,
    0x200E,
    0x200F,
    0x2028,
    0x2029,
    *range(0x202A, 0x202F),
    *range(0x2060, 0x2065),
    *range(0x2066, 0x206A),
    0xFEFF,
    *range(0xD800, 0xE000),  # lone surrogates: no terminal shows them, and UTF-8 cannot hold them
]
# repr-style: "\n", "\t", "\x1b", "\x85", "\u2028".
_ESCAPES = {code: repr(chr(code))[1:-1] for code in _UNSAFE}


def safe(value: object) -> str:
    """`value` as one line of inert terminal text: control characters escaped, repr-style."""
    return str(value).translate(_ESCAPES)


def shell_word(value: str) -> str:
    """`value` quoted for a shell, to paste back as it was: one holding what `safe` would
    escape (a line break in a path) in bash's `$'...'` form, which gives it back whole."""
    if safe(value) == value:
        return shlex.quote(value)
    return "$'" + "".join(map(_shell_escape, value)) + "'"


def _shell_escape(c: str) -> str:
    if c in "\\'":
        return "\\" + c
    if safe(c) == c:
        return c
    # Each byte of its UTF-8 (a name that is not UTF-8 as Python read it, its own bytes):
    # bash's \u form gives other bytes in a locale that is not UTF-8.
    raw = c.encode("utf-8", "surrogateescape") if not 0xD800 <= ord(c) < 0xDC80 else b"?"
    return "".join(f"\\x{b:02x}" for b in raw)


def dumps(value: object, *, ascii_only: bool = False) -> str:
    """JSON as people read it; `ascii_only` for a stream that cannot carry more (a non-UTF-8
    locale): the same document, its other characters as \\u escapes."""
    return json.dumps(value, indent=2, sort_keys=False, ensure_ascii=ascii_only, default=str)


def when(value: datetime | None) -> str:
    # Not strftime, whose %Y writes the year 1 as `1`.
    return "-" if value is None else value.replace(tzinfo=None).isoformat(" ", "seconds")


def iso(value: datetime | None) -> str | None:
    """Always with microseconds: isoformat() drops them on a whole second, and a reader
    expecting one shape would fail once in a million."""
    return None if value is None else value.isoformat(timespec="microseconds")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if c is None else safe(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


# -- executions ----------------------------------------------------------------------------


def step_name(execution: WorkflowExecution, definition: WorkflowDefinition | None) -> str:
    if definition is None:  # a workflow this process does not know: its steps have no names
        return "?"
    names = definition.step_names()
    if execution.current_step >= len(names):
        return "done"
    return names[execution.current_step]


def progress(execution: WorkflowExecution, definition: WorkflowDefinition | None) -> str:
    total = len(definition.steps) if definition else "?"
    return f"{execution.current_step}/{total}"


def workflow_json(definition: WorkflowDefinition) -> JSON:
    d = definition
    return {
        "name": d.name,
        "version": d.version,
        "steps": [{"name": step.name, "side_effecting": step.side_effecting} for step in d.steps],
        "compensation": d.compensation.name if d.compensation else None,
        "metadata": {
            "risk_tier": d.metadata.risk_tier.value,
            "consistency_class": d.metadata.consistency_class.value,
            "rollback_strategy": d.metadata.rollback_strategy.value,
            "approval_policy": d.metadata.approval_policy,
        },
    }


def built_in(execution: WorkflowExecution) -> bool:
    """Whether it runs the built-in knowledge_publication, whose input and outputs are
    described in words (a service's own version of it is shown as any workflow is)."""
    return (execution.workflow_name, execution.workflow_version) == (kp.NAME, kp.VERSION)


def input_summary(execution: WorkflowExecution) -> JSON:
    """The built-in workflow's input without the documents' full text (which can be large);
    any other workflow's as it is."""
    raw = dict(execution.input)
    documents = raw.get("documents")
    if built_in(execution) and isinstance(documents, list):
        raw["documents"] = [
            {k: v for k, v in d.items() if k != "content_text"}
            | {"content_chars": len(str(d.get("content_text", "")))}
            for d in documents
            if isinstance(d, Mapping)
        ]
    return raw


def execution_json(
    execution: WorkflowExecution,
    definition: WorkflowDefinition | None = None,
    *,
    detail: bool = False,
) -> JSON:
    x = execution
    record: JSON = {
        "execution_id": x.id,
        "workflow": x.workflow_name,
        "workflow_version": x.workflow_version,
        "state": x.state.value,
        "risk_tier": x.metadata.risk_tier.value,
        "current_step": x.current_step,
        # None where this process has no definition (the text form's `?`).
        "step": None if definition is None else step_name(x, definition),
        "steps": None if definition is None else len(definition.steps),
        "tenant": x.tenant,
        "environment": None if x.environment is None else x.environment.value,
        "requested_by": x.requested_by,
        "idempotency_key": x.idempotency_key,
        "created_at": iso(x.created_at),
        "updated_at": iso(x.updated_at),
        "last_error": x.last_error,
    }
    if detail:
        record |= {
            "correlation_id": x.correlation_id,
            "metadata": {
                "risk_tier": x.metadata.risk_tier.value,
                "consistency_class": x.metadata.consistency_class.value,
                "rollback_strategy": x.metadata.rollback_strategy.value,
                "approval_policy": x.metadata.approval_policy,
            },
            "attempts": dict(x.attempts),
            "step_outputs": dict(x.step_outputs),
            "approvals": [
                {"approver": a.approver, "role": a.role, "granted_at": iso(a.granted_at)}
                for a in x.approvals
            ],
            "lease_owner": x.lease_owner,
            "lease_expires_at": iso(x.lease_expires_at),
            "retry_at": iso(x.retry_at),
            "cancel_requested": x.cancel_requested,
            "audit_sequence": x.audit_sequence,
            "audit_head": x.audit_head,
            "version": x.version,
            "input": input_summary(x),
        }
    return record


def audit_json(entry: AuditEntry) -> JSON:
    return {
        "sequence": entry.sequence,
        "from_state": entry.from_state.value if entry.from_state else None,
        "to_state": entry.to_state.value,
        "at": iso(entry.at),
        "actor": entry.actor,
        "reason": entry.reason,
        "step": entry.step,
        "correlation_id": entry.correlation_id,
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }


def audit_table(entries: Sequence[AuditEntry]) -> str:
    rows = [
        (
            e.sequence,
            when(e.at),
            cut(e.actor),
            f"{e.from_state.value if e.from_state else '-'} -> {e.to_state.value}",
            cut(e.step or "-"),
            # No reason written here runs longer; one edited in storage may run to megabytes,
            # which every line of the table would be padded to.
            cut(e.reason),
            e.hash[:12],
        )
        for e in entries
    ]
    return table(("SEQ", "AT", "ACTOR", "TRANSITION", "STEP", "REASON", "HASH"), rows)


def executions_table(
    executions: Sequence[WorkflowExecution],
    definition_of: Callable[[WorkflowExecution], WorkflowDefinition | None],
) -> str:
    rows = []
    for x in executions:
        definition = definition_of(x)  # the version that started it, or None
        rows.append(
            (
                x.id,
                f"{x.workflow_name} v{x.workflow_version}",
                x.state.value,
                x.metadata.risk_tier.value,
                f"{progress(x, definition)} {step_name(x, definition)}",
                # Only a worker of this environment runs, approves or recovers it.
                "-" if x.environment is None else x.environment.value,
                when(x.created_at),
                when(x.updated_at),
            )
        )
    header = ("EXECUTION", "WORKFLOW", "STATE", "TIER", "STEP", "ENVIRONMENT", "CREATED", "UPDATED")
    return table(header, rows)


def report_json(report: ChainReport, bad_entry: AuditEntry | None = None) -> JSON:
    return {
        "execution_id": report.execution_id,
        "ok": report.ok,
        "entries": report.entries,
        "first_bad_sequence": report.first_bad_sequence,
        "problem": report.problem,
        "seal": report.seal,  # the chain holds, its seal does not
        "bad_entry": audit_json(bad_entry) if bad_entry is not None else None,
    }


# -- events --------------------------------------------------------------------------------


def event_json(event: EventEnvelope) -> JSON:
    return {
        "position": event.position,
        "event_id": event.id,
        "type": event.type.value,
        "schema_version": event.schema_version,
        "tenant": event.tenant,
        "actor": event.actor,
        "occurred_at": iso(event.occurred_at),
        "correlation_id": event.correlation_id,
        "causation_id": event.causation_id,
        "decision_ref": event.decision_ref,
        "classification": event.classification.value,
        "integrity_hash": event.integrity_hash,
        "intact": event.intact,
        "payload": dict(event.payload),
    }


def event_subject(event: EventEnvelope) -> str:
    p = event.payload
    for key in ("capsule_id", "analysis_id", "source_id"):
        if key in p:
            extra = p.get("publication_id") or p.get("kind") or p.get("claims")
            return f"{p[key]}" + (f" ({extra})" if extra is not None else "")
    return "-"


def events_table(events: Sequence[EventEnvelope]) -> str:
    rows = [
        (
            e.position,
            e.type.value,
            when(e.occurred_at),
            e.actor,
            event_subject(e),
            "yes" if e.intact else "NO",
        )
        for e in events
    ]
    return table(("POS", "TYPE", "OCCURRED", "ACTOR", "SUBJECT", "INTACT"), rows)


# -- step outputs --------------------------------------------------------------------------


def _count(n: object, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


# Your steps' outputs are shown as JSON cut to this many characters: one can run to megabytes.
OUTPUT_CHARS = 300


def step_output(built_in: bool, step: str | None, output: object) -> str:
    """A short human summary of a step's checkpointed output: the built-in workflow's steps
    in words, any other workflow's (whatever its steps are called) as JSON."""
    if built_in and isinstance(output, Mapping):
        try:
            summary = _publication_step(step, output)
        except (TypeError, KeyError, AttributeError):  # not as this release writes it
            summary = None
        if summary is not None:
            return summary
    if output is None:
        return ""
    return cut(json.dumps(output, default=str, sort_keys=True, ensure_ascii=False), OUTPUT_CHARS)


def _publication_step(step: str | None, output: Mapping[str, Any]) -> str | None:
    if step == "ingest" and "source_ids" in output:
        total, new = len(output["source_ids"]), len(output.get("created", []))
        return f"{total} source{'s' * (total != 1)} ({new} new, {total - new} already known)"
    if step == "analyse" and "analysis_id" in output:
        return f"analysis {output['analysis_id']} ({_count(output.get('claims', 0), 'claim')})"
    if step == "publish" and "capsule_id" in output:
        return f"capsule {output['capsule_id']} (artifact {str(output.get('artifact_hash'))[:16]})"
    if step == "verify" and "verified" in output:
        return f"capsule verified ({_count(output.get('chunks', 0), 'chunk')})"
    if step == "retract" and "retracted" in output:
        return f"capsule {output['retracted']} retracted" if output["retracted"] else "nothing"
    return None


CELL_CHARS = 1000


def cut(text: str, most: int = CELL_CHARS) -> str:
    if len(text) <= most:
        return text
    return f"{text[:most]}... ({len(text):,} characters; --json shows all)"
