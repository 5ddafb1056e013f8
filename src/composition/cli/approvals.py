"""`govkernel approve`, `reject` and `cancel`: decisions on an execution from outside."""

from __future__ import annotations

from collections.abc import Callable

import click

from composition import queries
from composition.cli.options import a_name, an_id, json_option, not_blank
from composition.cli.outcome import conclude, finish
from composition.cli.session import EXIT_FAILED, EXITS, Failed, S, session_of
from composition.container import App
from domain.model.execution import WorkflowExecution
from domain.model.policy import Approval
from domain.model.validation import same_person


@click.command(epilog=EXITS)
@click.argument("execution_id", metavar="EXECUTION", callback=an_id)
@click.option(
    "--role",
    required=True,
    callback=a_name,
    help="The role you approve in (e.g. reviewer).",
)
@click.option(
    "--approver",
    metavar="NAME",
    callback=a_name,
    help="Who approves [default: the acting identity, GOVKERNEL_ACTOR]. The policy refuses"
    " self-approval: the actor who started the execution can neither approve it nor record"
    " anyone's approval of it.",
)
@json_option
@click.pass_context
def approve(ctx: click.Context, execution_id: str, role: str, approver: str | None) -> None:
    """Approve an execution awaiting approval, then let it continue.

    The execution continues on behalf of the actor who started it; Tier2 and Tier3 need
    two distinct approvers, so a second approval may be required.
    """
    s = session_of(ctx)
    s.commanding("approval", execution_id)
    with s.app(existing=True) as (app, printer):
        execution = app.orchestrator.get(execution_id)
        actor, approver = app.settings.actor, approver or app.settings.actor
        if same_person(approver, execution.requested_by):
            spelled = "" if approver == execution.requested_by else f"; {approver!r} is them"
            raise Failed(
                f"{execution.requested_by!r} started execution {execution_id} and cannot"
                f" approve it (separation of duties){spelled}",
                EXIT_FAILED,  # a refusal by policy, as a denial is
            )
        if same_person(actor, execution.requested_by):
            raise Failed(
                f"{execution.requested_by!r} started execution {execution_id} and cannot"
                f" record an approval of it, by {approver!r} or anyone (separation of duties):"
                " the approver runs the command (GOVKERNEL_ACTOR)",
                EXIT_FAILED,
            )
        printer.mark(execution)
        mine = sum(_is(a, approver, role) for a in execution.approvals)  # 0: refused otherwise
        s.acting_on(lambda _, now: sum(_is(a, approver, role) for a in now.approvals) > mine)
        s.landed(result := app.orchestrator.approve(execution_id, approver=approver, role=role))
        s.landed(result := finish(app, result))
        conclude(s, app, result, ok={S.SUCCEEDED, S.AWAITING_APPROVAL})


@click.command(epilog=EXITS)
@click.argument("execution_id", metavar="EXECUTION", callback=an_id)
@click.option(
    "--reason",
    required=True,
    callback=not_blank,
    help="Why it is rejected (recorded in the audit trail).",
)
@json_option
@click.pass_context
def reject(ctx: click.Context, execution_id: str, reason: str) -> None:
    """Reject an execution awaiting approval: it fails (compensating if it published)."""
    s = session_of(ctx)
    s.commanding("rejection", execution_id)
    with s.app(existing=True) as (app, printer):
        printer.mark(found := app.orchestrator.get(execution_id))
        s.acting_on(_entry_after(found, "rejected: "))
        s.landed(result := app.orchestrator.reject(execution_id, reason=reason))
        s.landed(result := finish(app, result))
        conclude(s, app, result, ok={S.FAILED, S.COMPENSATED})


@click.command(epilog=EXITS)
@click.argument("execution_id", metavar="EXECUTION", callback=an_id)
@click.option(
    "--reason",
    default="cancel requested",
    show_default=True,
    callback=not_blank,
    help="Why it is cancelled (recorded in the audit trail).",
)
@json_option
@click.pass_context
def cancel(ctx: click.Context, execution_id: str, reason: str) -> None:
    """Cancel an unfinished execution; what it published is retracted by compensation.

    An execution that has ended (succeeded, failed, ...) cannot be cancelled: its
    publication stands."""
    s = session_of(ctx)
    s.commanding("cancellation", execution_id)
    with s.app(existing=True) as (app, printer):
        printer.mark(app.orchestrator.get(execution_id))
        s.acting_on(lambda _, now: now.cancel_requested)
        s.landed(result := app.orchestrator.cancel(execution_id, reason=reason))
        s.landed(result := finish(app, result))
        conclude(s, app, result, ok={S.CANCELLED, S.COMPENSATED})


def _is(approval: Approval, approver: str, role: str) -> bool:
    return same_person(approval.approver, approver) and approval.role == role


def _entry_after(
    before: WorkflowExecution, reason: str
) -> Callable[[App, WorkflowExecution], bool]:
    """Whether the trail gained an entry of that reason since `before`."""

    def recorded(app: App, now: WorkflowExecution) -> bool:
        trail = queries.audit_trail(app.uow_factory, app.runtime.tenant, now.id)
        new = (e for e in trail if e.sequence > before.audit_sequence)
        return any(e.reason.startswith(reason) for e in new)

    return recorded
