"""`govkernel recover`: resume what a crash or a stop left unfinished."""

from __future__ import annotations

from typing import Any

import click

from composition import queries, render
from composition.cli.options import json_option
from composition.cli.outcome import as_now, definition_of, describing, environment_of, with_hint
from composition.cli.session import EXIT_FAILED, EXITS, Failed, session_of
from composition.cli.streams import progress_bar
from composition.container import App
from domain.model.lifecycle import ChainReport
from domain.orchestration.orchestrator import (
    RECOVERABLE,
    RecoveryIncomplete,
)


@click.command(epilog=EXITS)
@json_option
@click.pass_context
def recover(ctx: click.Context) -> None:
    """Resume interrupted executions (pending, running, retrying, cancelling,
    compensating) to completion.

    On an embedded store (memory://, mem://, surrealkv://) this process holds the store
    alone, so leases of crashed runs are ignored; on ws:// only expired leases are taken.
    """
    s = session_of(ctx)
    with s.app(existing=True) as (app, printer):
        unreadable: list[str] = []
        candidates = queries.executions_in(
            app.uow_factory, app.runtime.tenant, RECOVERABLE, unreadable
        )
        mode = (
            "exclusive store: leases ignored"
            if app.exclusive_store
            else "shared store: only expired leases are taken over"
        )
        s.echo(render.safe(f"recovering on {app.settings.display_store} ({mode})"))
        crashed = app.unclean_shutdown
        broken: list[tuple[str, ChainReport]] = []
        if crashed:
            # A process died holding this store: the whole store is in question, whichever
            # tenant it was working for, so every tenant's chains are checked (and said so
            # first: before any is resumed) and the crash is forgotten only when all are
            # intact. Other tenants' executions are only counted, never named.
            s.echo(
                f"the store was not closed cleanly (pid {crashed}):"
                " verifying the audit chains of every tenant"
            )
            broken = app.check_after_crash(lambda ids: progress_bar(ids, "verifying"))
            if not broken:
                s.echo("every audit chain intact")
        if not candidates and not unreadable:
            s.echo(f"nothing to recover{s.nothing_here()}")
        for xid in unreadable:
            s.echo(render.safe(f"  found {xid}  (its record does not read back)"))
        described = describing(s, app, candidates, unregistered_note=False)  # it says why
        for x in candidates:
            printer.mark(x)
            definition = described(x)
            unknown = (
                ""
                if definition is not None or definition_of(app, x) is not None
                else (f"  ({x.workflow_name} version {x.workflow_version} is not registered here)")
            )
            s.echo(
                render.safe(
                    f"  found {x.id}  {x.state.value}  step {render.progress(x, definition)}"
                    f" {render.step_name(x, definition)}{unknown}"
                )
            )
        ours = [r for tenant, r in broken if tenant == app.runtime.tenant]
        now = app.runtime.clock.now()
        try:
            resumed = app.orchestrator.recover(ignore_leases=app.exclusive_store)
            failures: list[tuple[str, str]] = []
        except RecoveryIncomplete as incomplete:
            resumed, failures = incomplete.resumed, incomplete.failures
        s.did = (
            f"the recovery ran all the same: `govkernel{s.hint()} executions list` shows where"
            " each execution stands"
        )
        here = app.runtime.environment
        other_environments = [x for x in candidates if not x.runs_in(here)]
        handled = {x.id for x in resumed} | {xid for xid, _ in failures}
        handled |= {x.id for x in other_environments}
        # What recovery left for later, as found before recovering: a retry not due yet (one
        # another worker holds a live lease on is that worker's, as recovery has it).
        mine = (None, app.orchestrator.worker_id)
        not_due = [
            x
            for x in candidates
            if x.id not in handled
            and x.retry_not_due(now)
            and (app.exclusive_store or x.lease_owner in mine or x.lease_expired(now))
        ]
        # As they stand now: some were claimed by another worker since they were found.
        leased = [as_now(app, x) for x in candidates if x.id not in handled and x not in not_due]
        if s.json:
            s.emit(
                {
                    "found": len(candidates) + len(unreadable),
                    "resumed": [render.execution_json(x, definition_of(app, x)) for x in resumed],
                    "not_due": [
                        {"execution_id": x.id, "retry_at": render.iso(x.retry_at)} for x in not_due
                    ],
                    "failed": [{"execution_id": xid, "error": error} for xid, error in failures],
                    "left_leased": [
                        {
                            "execution_id": x.id,
                            "lease_owner": x.lease_owner,
                            "lease_expires_at": render.iso(x.lease_expires_at),
                        }
                        for x in leased
                    ],
                    "left_to_other_environments": [
                        {"execution_id": x.id, "environment": environment_of(x)}
                        for x in other_environments
                    ],
                    "torn_transaction": _torn_json(app),
                    "unclean_shutdown": _crash_json(crashed),
                    "upgraded_from": _upgraded(app),
                    "broken_after_crash": [render.report_json(r) for r in ours],
                    "broken_after_crash_in_other_tenants": len(broken) - len(ours),
                }
            )
        for xid, error in failures:
            s.echo(render.safe(f"could not resume {xid}: {with_hint(error)}"))
        for x in not_due:
            s.echo(render.safe(f"not due yet: {x.id} retries at {render.iso(x.retry_at)}"))
        for x in resumed:
            s.echo(
                render.safe(
                    f"resumed {x.id}: {x.state.value}"
                    + (f" ({x.last_error})" if x.last_error else "")
                )
            )
        if leased:
            until = max((x.lease_expires_at for x in leased if x.lease_expires_at), default=None)
            named = ", ".join(x.id for x in leased[:3])
            # Further out than a lease of this worker's: one of a longer lease, or a worker
            # whose clock was ahead (it holds the execution for as long as its clock was wrong).
            ttl = app.orchestrator.lease_ttl
            skewed = until is not None and until > app.runtime.clock.now() + ttl
            s.echo(
                f"{len(leased)} execution{'s' * (len(leased) != 1)} left alone: leased by"
                f" another worker (or one that stopped) until {render.iso(until) or 'it expires'}"
                f" ({named}{', ...' if len(leased) > 3 else ''});"
                " recover takes it on after that"
                + (
                    f" (further out than this worker's lease of {ttl} from now: a worker with a"
                    " longer lease took it, or one whose clock was ahead of this one's)"
                    if skewed
                    else ""
                )
            )
        if other_environments:
            started_in = sorted({environment_of(x) for x in other_environments})
            n = len(other_environments)
            s.echo(
                render.safe(
                    f"{n} execution{'s' * (n != 1)} left alone:"
                    f" started in {' and '.join(started_in)}, and this command runs in"
                    f" {here.value} (GOVKERNEL_ENVIRONMENT="
                    f"{started_in[0] if len(started_in) == 1 else 'THEIRS'} recovers them)"
                )
            )
        ours_found = len(candidates) - len(other_environments) + len(unreadable)
        if ours_found:
            later = f", {len(not_due)} not due yet" if not_due else ""
            s.echo(f"recovered {len(resumed)} of {ours_found}{later}")
        if broken:
            others = len(broken) - len(ours)
            first = f", first {ours[0].execution_id}: {ours[0].problem}" if ours else ""
            elsewhere = f" ({others} in other tenants)" if others else ""
            what = (
                "seal(s) that do not hold" if all(r.seal for _, r in broken) else "chain(s) broken"
            )
            cut_short = ""
            if all((r.problem or "").startswith("not sealed:") for _, r in broken):
                # What a `seal --unsealed` the crash stopped leaves (h174): said, or it reads
                # as forgery, and a backup is restored over nothing.
                every = " --all-tenants" if others else ""
                cut_short = (
                    "; each chain is intact, and only its seal is missing: if the crash stopped"
                    f" an `audit seal --unsealed`, `govkernel{s.hint()} audit seal --unsealed"
                    f"{every}` seals the rest, and `recover` then checks again"
                )
            raise Failed(
                f"{len(broken)} audit {what} after the crash{elsewhere}{first}{cut_short}",
                EXIT_FAILED,
            )
        if failures:
            raise Failed(
                f"{len(failures)} execution(s) could not be resumed, first {failures[0][0]}:"
                f" {failures[0][1]}",
                EXIT_FAILED,
            )


def _crash_json(crashed: str | None) -> dict[str, Any] | None:
    """A crash found, as its neighbour `torn_transaction` is: an object (the pid of the process
    that died, an integer, or null when the lock file no longer said it), or null for none."""
    if crashed is None:
        return None
    return {"pid": int(crashed) if crashed.isascii() and crashed.isdigit() else None}


def _upgraded(app: App) -> int | None:
    """The schema version this open upgraded the store from (older govkernels now refuse
    it), or null."""
    upgraded = getattr(app.store, "upgraded_from", None)
    return upgraded if isinstance(upgraded, int) else None


def _torn_json(app: App) -> dict[str, Any] | None:
    """How opening the store repaired a transaction torn by a crash, if it did."""
    repair = getattr(app.store, "torn_repair", None)
    return None if repair is None else {"action": repair.action, "writes": repair.writes}
