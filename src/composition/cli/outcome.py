"""What a command says of an execution: the definition that describes it, why it waits,
how it ended, and what to do next."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from attrs import evolve

from composition import queries, render
from composition.cli.session import TRANSIENT_NOTE, Failed, S, Session
from composition.container import App
from domain.model.errors import DomainError
from domain.model.execution import WorkflowExecution, started_steps
from domain.model.lifecycle import AuditEntry, ChainReport, ExecutionState
from domain.model.seal import AuditKey
from domain.orchestration.definition import WorkflowDefinition
from domain.orchestration.orchestrator import (
    RECOVERABLE,
)
from ports.errors import PortError


def definition_of(app: App, x: WorkflowExecution) -> WorkflowDefinition | None:
    """The definition that started `x`, current or retired, if this command has it: another
    version's steps would describe it wrongly (a step count of theirs, a step name)."""
    return app.orchestrator.registered(x.workflow_name, x.workflow_version)


def describing(
    s: Session,
    app: App,
    found: Sequence[WorkflowExecution],
    shapes: Mapping[str, Any] | None = None,
    *,
    unregistered_note: bool = True,
    as_pinned: bool = False,
) -> Callable[[WorkflowExecution], WorkflowDefinition | None]:
    """The definition each of `found` is described by (its step count, its step's name):
    the one that started it, unless that version's steps changed since, which a note on
    stderr then says. `shapes`: the steps each started with, if already read; `as_pinned`:
    the caller shows those steps (read from the trail) where there is no definition."""
    if shapes is None:  # (only those with a definition to compare them with)
        compared = [x.id for x in found if definition_of(app, x) is not None]
        shapes = queries.started_shapes(app.uow_factory, compared) if compared else {}
    changed = {
        x.id
        for x in found
        if (d := definition_of(app, x)) is not None and shapes.get(x.id) not in (None, d.shape())
    }
    pinned = "shown by the steps they started with"
    if changed:
        first = next(x for x in found if x.id in changed)
        s.warn(
            render.safe(
                f"note: {len(changed)} execution{'s' * (len(changed) != 1)} ({first.id} first)"
                f" started with other steps than {first.workflow_name} version"
                f" {first.workflow_version} registered here:"
                f" {pinned if as_pinned else 'shown without their current step'};"
                " commands refuse to drive them until the steps they started with are"
                " registered as that version (and the changed ones under a new version)"
            )
        )
    unknown = [x for x in found if definition_of(app, x) is None] if unregistered_note else []
    if unknown:
        first = unknown[0]
        s.warn(
            render.safe(
                f"note: {len(unknown)} execution{'s' * (len(unknown) != 1)} ({first.id} first)"
                f" run{'s' * (len(unknown) == 1)} a workflow not registered here"
                f" ({first.workflow_name} version {first.workflow_version} first):"
                f" {pinned if as_pinned else 'shown without their steps'};"
                " name the module that has it in GOVKERNEL_WORKFLOWS"
                " (an earlier version in GOVKERNEL_RETIRED_WORKFLOWS)"
            )
        )
    return lambda x: None if x.id in changed else definition_of(app, x)


def after_a_crash(s: Session, app: App, found: Sequence[WorkflowExecution]) -> None:
    """A note when what is shown as unfinished may be a dead process's, not in progress."""
    if app.unclean_shutdown and any(x.state in RECOVERABLE for x in found):
        s.warn(
            f"note: the last process on this store (pid {app.unclean_shutdown}) died holding"
            f" it: what it left unfinished resumes with `govkernel{s.hint()} recover`"
        )


def _role_wanted(x: WorkflowExecution, now: datetime) -> str:
    """The role an approval of `x` is still wanted in, when its request names one (the
    built-in workflow's `required_roles`); else a placeholder. An expired approval is none."""
    roles = x.input.get("required_roles") if render.built_in(x) else None
    approved = {a.role.casefold() for a in x.approvals if a.valid_at(now)}
    wanted = [r for r in roles or () if isinstance(r, str) and r.casefold() not in approved]
    return wanted[0] if len(wanted) == 1 else "ROLE"


def finish(app: App, execution: WorkflowExecution) -> WorkflowExecution:
    """On a store this process holds alone, no one else can be running the execution: drive
    it on even if a crashed run's lease has not expired yet."""
    state = execution.state
    if app.exclusive_store and not state.terminal and state is not S.AWAITING_APPROVAL:
        return app.orchestrator.run(execution.id, ignore_leases=True)
    return execution


def conclude(
    s: Session,
    app: App,
    x: WorkflowExecution,
    *,
    ok: set[ExecutionState],
    extra: Mapping[str, Any] | None = None,
    within: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> None:
    """Report where an execution stands; raise Failed for an unexpected end. `within`: the
    document of the command's own that the execution's record goes into, under --json."""
    # Said kept only if the store still holds it: its log removed under the command since
    # the last look (commits look at most once a second) fails it instead.
    getattr(app.store, "check_log", lambda: None)()
    definition = definition_of(app, x)
    # What it waits for, and the steps it started with, read from one read of its trail.
    trail = (
        queries.audit_trail(app.uow_factory, app.runtime.tenant, x.id)
        if x.state is S.AWAITING_APPROVAL
        else None
    )
    waiting = None if trail is None else as_waiting(trail)
    if s.json:
        record = render.execution_json(x, definition, detail=True) | dict(extra or {})
        record |= {} if waiting is None else {"why": waiting}
        s.emit(record if within is None else within(record))
    if x.state is S.SUCCEEDED:
        published = x.step_outputs.get("publish") if render.built_in(x) else None
        if not isinstance(published, Mapping):
            published = {}
        capsule = f": capsule {published['capsule_id']}" if "capsule_id" in published else ""
        s.echo(render.safe(f"succeeded{capsule}"))
        if "artifact_hash" in published:
            s.echo(render.safe(f"  artifact hash  {published['artifact_hash']}"))
        if published.get("published") is False:
            # The same content under a publication id used before: nothing new (a title
            # given now is not the capsule's).
            s.echo(
                render.safe(
                    f"  note           publication {x.input.get('publication_id')} was"
                    " published already with this content: the capsule stands as it was"
                )
            )
        s.suggest(13, ("details", f"executions show {x.id}"))
        return
    if trail is not None and waiting is not None:
        s.echo(render.safe(f"awaiting approval: execution {x.id}"))
        s.echo(f"  why      {render.safe(waiting)}")
        unable = _not_driven_here(x, definition, started_steps(trail))
        if unable is not None:  # `approve` would refuse it: say what it takes instead
            s.echo(render.safe(f"  note     {unable}"))
            if x.current_step == 0:  # with nothing to undo, it may still be rejected here
                s.suggest(7, ("reject", f"reject {x.id} --reason TEXT"))
            return
        s.suggest(
            7,
            ("approve", f"approve {x.id} --role {_role_wanted(x, app.runtime.clock.now())}"),
            ("reject", f"reject {x.id} --reason TEXT"),
        )
        if not s.transient():
            s.echo(
                render.safe(
                    f"  (run by the approver, GOVKERNEL_ACTOR=NAME: {x.requested_by} started"
                    " it, and can neither approve it nor record an approval of it)"
                )
            )
        return
    if x.state in ok:
        s.echo(
            render.safe(
                f"{x.state.value}: execution {x.id}"
                + (f" ({x.last_error})" if x.last_error else "")
            )
        )
        return
    if not x.state.terminal:
        # An embedded store is this process's alone: a live lease on it is a dead run's.
        leased = x.lease_owner not in (None, app.orchestrator.worker_id)
        live = not x.lease_expired(app.runtime.clock.now())
        running_elsewhere = not app.exclusive_store and leased and live
        if s.transient():
            resume = f"{TRANSIENT_NOTE}, so it cannot be resumed"
        elif running_elsewhere:
            # A cancellation, say, of a run in progress: that worker acts on it.
            resume = (
                f"worker {x.lease_owner} holds it until {render.when(x.lease_expires_at)} UTC and"
                " takes it on at its next step; if that worker died, `govkernel"
                f"{s.hint()} recover` resumes it once that time has passed"
            )
        elif definition is None:
            resume = (
                f"{_unregistered(x)}: `govkernel recover` finishes it once the module that has"
                f" that version is named in {_RETIRED}"
            )
        else:
            resume = f"it resumes with `govkernel{s.hint()} recover`"
        said = render.safe(
            f"execution {x.id} is {x.state.value}; {resume}"
            + (f" (last error: {x.last_error})" if x.last_error else "")
        )
        if x.state is S.COMPENSATING and S.COMPENSATED not in ok:
            # Only its undo is left (retried later): it has failed, as a compensated end has.
            raise Failed(said)
        s.echo(said)
        return
    raise Failed(failure_message(x))


_DENIED = re.compile(r"(?:PolicyDenied|ApprovalRequired): (\w+) denied: (.*)$", re.DOTALL)


_RETIRED = "GOVKERNEL_RETIRED_WORKFLOWS (retired_workflows)"


def _unregistered(x: WorkflowExecution) -> str:
    return (
        f"it runs {x.workflow_name} version {x.workflow_version}, which this command does not have"
    )


def _not_driven_here(
    x: WorkflowExecution, definition: WorkflowDefinition | None, started: object
) -> str | None:
    """Why no command here can approve `x` (an execution an idempotency key brought back,
    started by a version deployed before; `started`: the steps it started with), or None."""
    if definition is None:
        return (
            f"{_unregistered(x)}: it can be approved once the module that has it is named in"
            f" {_RETIRED}"
        )
    if started not in (None, definition.shape()):
        return (
            f"it started with other steps than {x.workflow_name} version"
            f" {x.workflow_version} registered here: it can be approved once the steps it"
            " started with are registered as that version (and the changed ones under a new"
            " version)"
        )
    return None


def failure_message(x: WorkflowExecution) -> str:
    if x.state is S.CANCELLED:
        return f"execution {x.id} was cancelled"
    if x.state is S.COMPENSATED and x.cancel_requested and not x.last_error:
        return f"execution {x.id} was cancelled, and what it had done was undone"
    error = x.last_error or "no error recorded"
    denied = _DENIED.search(error)
    if denied:
        return (
            f"policy denied {denied.group(1)}: {denied.group(2)} (execution {x.id} {x.state.value})"
        )
    return f"execution {x.id} {x.state.value}: {error}"


def as_now(app: App, x: WorkflowExecution) -> WorkflowExecution:
    """`x` read again, or as it was if it no longer reads."""
    try:
        return app.orchestrator.get(x.id)
    except (PortError, DomainError):
        return x


def verified(app: App, execution_id: str) -> ChainReport:
    """The execution's chain report; mid-rotation, a seal of the previous key said as one,
    with what puts it right."""
    report = app.orchestrator.verify(execution_id)
    previous = app.settings.previous_audit_key
    if previous is None or not report.seal:
        return report
    if f"key id {AuditKey.earlier(previous).key_id};" not in (report.problem or ""):
        return report
    said = f"{report.problem}: the previous key's, which `audit seal` moves to this one"
    return evolve(report, problem=said)


def what_is_broken(execution_id: str, seal: bool, first_bad: int | None) -> str:
    """A broken report's subject: a seal that does not hold is no broken chain."""
    if seal:
        return f"audit seal of {execution_id} does not hold"
    return f"audit trail of {execution_id} is broken at entry #{first_bad}"


def as_waiting(trail: Sequence[AuditEntry]) -> str:
    return trail[-1].reason.removeprefix("ApprovalRequired: ") if trail else ""


def environment_of(x: WorkflowExecution) -> str:
    return "" if x.environment is None else x.environment.value


def with_hint(message: str) -> str:
    """What the command line can add to an orchestrator's words."""
    if "this orchestrator does not have" in message:
        return (
            f"{message} (the govkernel command knows your workflows when the `workflows`"
            " setting names them: GOVKERNEL_WORKFLOWS)"
        )
    if "act on it from a worker of " in message:
        started_in = message.rsplit(" ", 1)[-1]
        return f"{message} (GOVKERNEL_ENVIRONMENT={started_in} for this command)"
    if "not sealed: written without the audit key" in message:
        return (
            f"{message}; if it was written before the store had a key, verify it, then"
            " `govkernel audit seal EXECUTION --unsealed` seals it as it stands"
        )
    if "(as current or retired)" in message:
        return (
            f"{message}: name the module that has it in the `retired_workflows` setting"
            " (GOVKERNEL_RETIRED_WORKFLOWS)"
        )
    return message
