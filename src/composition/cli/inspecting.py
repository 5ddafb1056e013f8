"""`govkernel executions` and `govkernel events`: read-only views of the store."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from composition import queries, render
from composition.cli.options import (
    WholeNumber,
    a_workflow_name,
    an_id,
    enum_choice,
    json_option,
    limit_option,
)
from composition.cli.outcome import (
    after_a_crash,
    as_waiting,
    describing,
    verified,
    what_is_broken,
)
from composition.cli.session import (
    DEFAULT_LIST_LIMIT,
    EXIT_FAILED,
    EXITS,
    MAX_LIMIT,
    MAX_POSITION,
    Failed,
    S,
    session_of,
)
from composition.container import App
from domain.model.execution import started_step_names, started_steps
from domain.model.lifecycle import ExecutionState
from ports.errors import CorruptRecord

F = TypeVar("F", bound=Callable[..., Any])


@click.group(epilog=EXITS)
@json_option  # `govkernel executions --json ...` as well as before or after
def executions() -> None:
    """List and inspect workflow executions."""


def _state_option(more: str = "") -> Callable[[F], F]:
    return click.option(
        "--state",
        type=enum_choice([st.value for st in ExecutionState]),
        help=f"Only the executions in this state{more}.",
    )


_workflow_option = click.option(
    "--workflow",
    metavar="NAME",
    callback=a_workflow_name,
    help="Only the executions of this workflow (any of its versions).",
)


@executions.command("list", epilog=EXITS)
@_state_option()
@limit_option(DEFAULT_LIST_LIMIT)
@_workflow_option
@click.option(
    "--before",
    metavar="EXECUTION",
    callback=an_id,
    help="The next page: executions listed after this one (older, or as old).",
)
@json_option
@click.pass_context
def executions_list(
    ctx: click.Context, state: str | None, workflow: str | None, limit: int, before: str | None
) -> None:
    """Executions, newest first."""
    s = session_of(ctx)
    s.read_only = True
    s.printing()
    with s.app(existing=True) as (app, _):
        unreadable: list[str] = []
        found = queries.recent_executions(
            app.uow_factory,
            app.runtime.tenant,
            now=app.runtime.clock.now(),
            state=ExecutionState(state) if state else None,
            workflow=workflow,
            limit=limit + 1,  # one past the page: whether a next page has anything
            before=None if before is None else app.orchestrator.get(before, with_input=False),
            unreadable=unreadable,
        )
        more = len(found) + len(unreadable) > limit
        found = found[:limit]
        described = describing(s, app, found)
        after_a_crash(s, app, found)
        why = _unregistered(app, workflow) + s.nothing_here()  # what may explain none
        if s.json:
            s.emit([render.execution_json(x, described(x)) for x in found])
        if not found and (why or not s.json):  # (on stderr beside --json)
            s.echo(
                render.safe(
                    "no executions"
                    + (f" of workflow {workflow}" if workflow else "")
                    + (f" in state {state}" if state else "")
                    + (f" listed after {before}" if before else "")
                    + f" in tenant {app.runtime.tenant!r}"
                    + why
                )
            )
        elif not s.json:
            s.echo(render.executions_table(found, described))
        if found and more:  # on stderr beside --json
            also = (
                (f" --state {state}" if state else "")
                + (f" --workflow {workflow}" if workflow else "")
                + (f" --limit {limit}" if limit != DEFAULT_LIST_LIMIT else "")
            )
            s.echo(
                render.safe(
                    f"(--before {found[-1].id}{also} shows the next {limit};"
                    f" --limit N shows up to {MAX_LIMIT} at once)"
                )
            )
        if unreadable:
            raise Failed(
                f"{len(unreadable)} stored execution{'s' * (len(unreadable) != 1)} cannot be"
                f" read and {'is' if len(unreadable) == 1 else 'are'} not listed, first"
                f" {unreadable[0]}: `govkernel audit verify` reports on each",
                EXIT_FAILED,
            )


@executions.command("count", epilog=EXITS)
@_state_option(" (default: each state, and the total)")
@_workflow_option
@json_option
@click.pass_context
def executions_count(ctx: click.Context, state: str | None, workflow: str | None) -> None:
    """How many executions there are, by state: counted by the store, none read out."""
    s = session_of(ctx)
    s.read_only = True
    s.printing()
    with s.app(existing=True) as (app, _):
        states = [ExecutionState(state)] if state else list(ExecutionState)
        counts = queries.execution_counts(app.uow_factory, app.runtime.tenant, states, workflow)
        total = sum(counts.values())
        of = (f" of workflow {workflow}" if workflow else "") + f" in tenant {app.runtime.tenant!r}"
        why = _unregistered(app, workflow) + s.nothing_here() if not total else ""
        of += why
        if s.json:
            s.emit(
                {
                    "tenant": app.runtime.tenant,
                    "workflow": workflow,
                    "counts": {st.value: n for st, n in counts.items()},
                    "total": total,
                }
            )
            if why:  # (on stderr)
                s.echo(render.safe(f"no executions{f' in state {state}' if state else ''}{of}"))
            return
        if state:
            s.echo(render.safe(f"{total} execution{'s' * (total != 1)} in state {state}{of}"))
            return
        rows = [[st.value, n] for st, n in counts.items()] + [["total", total]]
        s.echo(render.safe(f"executions{of}"))
        s.echo(render.table(["state", "count"], rows))


def _unregistered(app: App, workflow: str | None) -> str:
    """A note for a listing of a workflow that found nothing, if none of that name is
    registered: a name mistyped, more likely than a workflow that never ran."""
    names = {d.name for d in app.orchestrator.definitions()}
    if workflow is None or workflow in names:
        return ""
    if (underscored := workflow.replace("-", "_")) in names:  # `run knowledge-publication`
        return f" (the workflow `run {workflow}` runs is named {underscored})"
    return " (no workflow of that name is registered here: `govkernel workflows` lists those)"


@executions.command("show", epilog=EXITS)
@click.argument("execution_id", metavar="EXECUTION", callback=an_id)
@json_option
@click.pass_context
def executions_show(ctx: click.Context, execution_id: str) -> None:
    """An execution's details and its audit trail."""
    s = session_of(ctx)
    s.read_only = True
    s.printing()
    with s.app(existing=True) as (app, _):
        x = app.orchestrator.get(execution_id)
        try:
            trail = queries.audit_trail(app.uow_factory, app.runtime.tenant, execution_id)
        except CorruptRecord as exc:  # an entry that does not read: the verification names
            trail = queries.entries_before(app.uow_factory, execution_id, exc.entry or 1)  # it
        report = verified(app, execution_id)
        pinned = started_step_names(trail)
        definition = describing(
            s, app, [x], {x.id: started_steps(trail)}, as_pinned=bool(pinned and pinned[0])
        )(x)
        after_a_crash(s, app, [x])
        # Steps in the order they run (as pinned when it started), its compensation last.
        names, compensation = pinned or (
            (
                list(definition.step_names()),
                definition.compensation and definition.compensation.name,
            )
            if definition
            else ([], None)
        )
        step, steps = render.step_name(x, definition), render.progress(x, definition)
        if definition is None and names:  # not registered here, or changed: as pinned
            step = names[x.current_step] if x.current_step < len(names) else "done"
            steps = f"{x.current_step}/{len(names)}"
        if s.json:
            record = render.execution_json(x, definition, detail=True)
            if definition is None and names:
                record["step"], record["steps"] = step, len(names)
            if x.state is S.AWAITING_APPROVAL:  # as `run` and `approve` give it
                record["why"] = as_waiting(trail)
            record["audit"] = [render.audit_json(e) for e in trail]
            record["verification"] = render.report_json(report)
            s.emit(record)
            if not report.ok:  # the same exit status as the text form
                raise Failed(
                    f"{what_is_broken(x.id, report.seal, report.first_bad_sequence)}:"
                    f" {report.problem}"
                )
            return
        m = x.metadata
        order = [*names, compensation]

        def in_order(by_step: Mapping[str, object]) -> list[str]:
            return sorted(by_step, key=lambda n: order.index(n) if n in order else len(order))

        rows: list[tuple[str, object]] = [
            ("execution", x.id),
            ("workflow", f"{x.workflow_name} v{x.workflow_version}"),
            ("state", x.state.value),
            (
                "tier",
                f"{m.risk_tier.value} (consistency {m.consistency_class.value},"
                f" rollback {m.rollback_strategy.value})",
            ),
            ("step", f"{steps} {step}"),
            ("tenant", x.tenant),
            *([] if x.environment is None else [("environment", x.environment.value)]),
            (
                "requested by",
                x.requested_by
                + (" (who may not approve it)" if x.state is S.AWAITING_APPROVAL else ""),
            ),
            ("idempotency", x.idempotency_key),
            ("correlation", x.correlation_id),
            ("created", render.when(x.created_at)),
            ("updated", render.when(x.updated_at)),
            ("attempts", ", ".join(f"{k} {x.attempts[k]}" for k in in_order(x.attempts)) or "-"),
            (
                "approvals",
                ", ".join(f"{a.approver} as {a.role}" for a in x.approvals) or "-",
            ),
            (
                "lease",
                f"{x.lease_owner} until {render.when(x.lease_expires_at)}"
                if x.lease_owner
                else "-",
            ),
            ("last error", x.last_error or "-"),
            *([] if x.retry_at is None else [("retries at", render.when(x.retry_at))]),
        ]
        summary = render.input_summary(x) if render.built_in(x) else {}
        if not render.built_in(x):  # the built-in's is told in words below
            rows.append(("input", render.step_output(False, None, dict(x.input)) or "-"))
        if "publication_id" in summary:
            rows.append(
                ("publication", f"{summary['publication_id']}  {summary.get('title', '-')!r}")
            )
        documents = summary.get("documents")
        for doc in documents if isinstance(documents, list) else []:
            rows.append(
                ("document", f"{doc.get('kind')}  {doc.get('source_url')}  {doc.get('title')!r}")
            )
        for step in in_order(x.step_outputs):
            rows.append(
                (
                    f"output {step}",
                    render.step_output(render.built_in(x), step, x.step_outputs[step]),
                )
            )
        width = max(len(k) for k, _ in rows)
        for key, value in rows:
            s.echo(render.safe(f"{key:<{width}}  {value}"))
        verdict = (
            "chain intact"
            if report.ok
            else f"chain intact, SEAL: {report.problem}"  # the head is what is wrong
            if report.seal
            else f"CHAIN BROKEN at #{report.first_bad_sequence}: {report.problem}"
        )
        s.echo()
        stored = max(len(trail), report.entries)  # (the trail shown stops at one unread)
        s.echo(render.safe(f"audit trail ({stored} entries, {verdict})"))
        s.echo(render.audit_table(trail))
        if not report.ok:
            raise Failed(
                f"{what_is_broken(x.id, report.seal, report.first_bad_sequence)}: {report.problem}"
            )


EVENTS_PAGE = 50


@click.command(epilog=EXITS)
@click.option(
    "--after",
    type=WholeNumber(min=0, max=MAX_POSITION),
    default=0,
    show_default=True,
    metavar="POSITION",
    help="Only the events after this position (a page's last, or the `next` hint's).",
)
@limit_option(EVENTS_PAGE)
@json_option
@click.pass_context
def events(ctx: click.Context, after: int, limit: int) -> None:
    """The event log, in position order."""
    s = session_of(ctx)
    s.read_only = True
    s.printing()
    with s.app(existing=True) as (app, _):
        gap: queries.EventGap | None = None
        try:
            # One past the page: whether a next page has anything.
            found, read_to = queries.events_read(
                app.uow_factory, app.runtime.tenant, after, limit + 1
            )
        except queries.EventGap as exc:  # what comes before the gap is still shown
            gap, found, read_to = exc, exc.found, after
        more, found = len(found) > limit, found[:limit]
        if s.json:
            s.emit([render.event_json(e) for e in found])
        elif found:
            s.echo(render.events_table(found))
        if not found and gap is None and (s.nothing_here() or not s.json):
            # (With a gap, the error says what is missing. Beside --json, on stderr, only
            # what explains none: a consumer's every empty poll is no news.)
            s.echo(
                render.safe(
                    f"no events after position {after} in tenant {app.runtime.tenant!r}"
                    + s.nothing_here()
                )
            )
        page = f" --limit {limit}" if limit != EVENTS_PAGE else ""  # kept for the next page
        if found and more:  # on stderr beside --json
            s.suggest(4, ("more", f"events --after {found[-1].position}{page}"))
        elif read_to > (found[-1].position or after if found else after):
            # Other tenants' events were read past to the end of the log: a consumer goes on
            # from there, not from its last event (read past again at every poll).
            s.suggest(4, ("next", f"events --after {read_to}{page}"))
        if gap is not None:
            raise Failed(str(gap), EXIT_FAILED)
        broken = [e for e in found if not e.intact]
        if broken:
            raise Failed(
                f"{len(broken)} event(s) do not match their integrity hash, first at position"
                f" {broken[0].position}",
                EXIT_FAILED,
            )
