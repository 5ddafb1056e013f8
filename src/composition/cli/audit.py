"""`govkernel audit`: verify trails, anchor their heads outside the store, seal them."""

from __future__ import annotations

import os
import sys
from collections.abc import Container
from pathlib import Path
from typing import Any

import click

from adapters.surrealdb import SurrealConfig
from composition import anchors, queries, render
from composition.cli.options import a_file, an_id, json_option
from composition.cli.outcome import verified, what_is_broken
from composition.cli.session import EXIT_USAGE, EXITS, Failed, Session, session_of
from composition.cli.streams import progress_bar, reserve_stdout, write_out
from composition.container import App
from domain.model.seal import AuditKey
from domain.orchestration import sealing
from ports.errors import CorruptRecord, ExecutionNotFound, RecordNotFound


@click.group(epilog=EXITS)
@json_option  # `govkernel audit --json ...` as well as before or after
def audit() -> None:
    """Verify, anchor and seal audit trails.

    `anchor` records their heads, to keep outside the store; `seal` signs them with the
    audit key (GOVKERNEL_AUDIT_KEY)."""


def verification_json(
    app: App, results: list[dict[str, Any]], *, ok: bool = True
) -> dict[str, Any]:
    """What `audit verify --json` says of `results` (`verify_chains`'), and `demo --json`."""
    return {
        "ok": ok and all(r["ok"] for r in results),
        "executions": len(results),
        "entries": sum(r["entries"] for r in results),
        "seals_checked": _keyed(app),
        "reports": results,
    }


def _keyed(app: App) -> bool:
    return getattr(app.store, "audit_key", None) is not None


@audit.command("verify", epilog=EXITS)
@click.argument("execution_id", metavar="[EXECUTION]", required=False, callback=an_id)
@click.option(
    "--anchors",
    "anchor_file",
    metavar="FILE",
    callback=a_file,
    help="Also check the trails against the heads `audit anchor` recorded in FILE.",
)
@json_option
@click.pass_context
def audit_verify(ctx: click.Context, execution_id: str | None, anchor_file: Path | None) -> None:
    """Recompute the hash chain of one execution (or of all): exit 1 on any tampering.

    With --anchors, a trail rolled back or rewritten since the anchors were taken (which
    its own chain cannot show) is reported too, and so is an anchored execution deleted.
    """
    s = session_of(ctx)
    s.read_only = True
    s.printing()
    s.settings()
    taken = None if anchor_file is None else _read_anchors(s, anchor_file)
    with s.app(existing=True) as (app, _):
        other_store = None if taken is None else _other_store(app, taken)
        anchored = {a.execution_id for a in taken.anchors} if taken is not None else set()
        results = verify_chains(s, app, execution_id, anchored)
        checked: dict[str, Any] | None = None
        if taken is not None:
            chosen = [a for a in taken.anchors if execution_id in (None, a.execution_id)]
            failed = anchors.check(app.uow_factory, app.runtime.tenant, chosen)
            # An anchor's verdict is news only where the chain itself was found intact.
            broken = {r["execution_id"] for r in results if not r["ok"]}
            by_id = {r.execution_id: render.report_json(r) for r in failed}
            results = [by_id.pop(r["execution_id"], r) if r["ok"] else r for r in results]
            results += [r for xid, r in by_id.items() if xid not in broken]
            checked = {
                "file": str(anchor_file),
                "taken_at": render.iso(taken.taken_at),
                "checked": len(chosen),
                "failed": len(failed),
                "store_matches": other_store is None,
            }
        keyed = _keyed(app)
        unchecked = 0 if keyed else _sealed(app, execution_id)
        if unchecked:  # a key forgotten (or its variable misspelt) must not pass unsaid
            s.warn(
                f"note: {unchecked} execution{'s' * (unchecked != 1)} here carr"
                f"{'ies' if unchecked == 1 else 'y'} audit seals, not checked: no audit key"
                " given (GOVKERNEL_AUDIT_KEY)"
            )
        if s.json:
            s.emit(
                verification_json(app, results, ok=other_store is None)
                | ({"anchors": checked} if checked is not None else {})
            )
        else:
            rows = [
                (
                    r["execution_id"],
                    r["entries"],
                    "ok"
                    if r["ok"]
                    else f"SEAL: {r['problem']}"
                    if r["seal"]
                    else f"BROKEN at #{r['first_bad_sequence']}: {r['problem']}",
                )
                for r in results
            ]
            if rows:
                s.echo(render.table(("EXECUTION", "ENTRIES", "CHAIN"), rows))
        if not results and (s.nothing_here() or not s.json):  # (on stderr beside --json)
            s.echo(render.safe(f"no executions in tenant {app.runtime.tenant!r}{s.nothing_here()}"))
        bad = [r for r in results if not r["ok"]]
        if bad:
            first = bad[0]
            entry = None if first["seal"] else first["bad_entry"]
            if entry is not None and not s.json:
                s.echo()
                s.echo(render.safe(f"first bad entry of {first['execution_id']}:"))
                for key in (
                    "sequence",
                    "at",
                    "actor",
                    "from_state",
                    "to_state",
                    "step",
                    "reason",
                    "hash",
                ):
                    value = "-" if entry[key] is None else entry[key]
                    s.echo(f"  {key:<10}  {render.safe(render.cut(str(value)))}")
            what = what_is_broken(first["execution_id"], first["seal"], first["first_bad_sequence"])
            raise Failed(
                (f"{other_store}; " if other_store else "")
                + f"{what}: {first['problem']}"
                # Each one's own problem is in its row above (or in --json): this is the first.
                + (
                    f" (and {len(bad) - 1} other execution{'s' * (len(bad) != 2)} affected,"
                    " each as its row says)"
                    if len(bad) > 1
                    else ""
                )
            )
        if other_store is not None:
            held = checked["checked"] if checked else 0
            raise Failed(
                f"{other_store}; the {held} anchor{'s' * (held != 1)} checked"
                f" {'hold' if held != 1 else 'holds'} here all the same"
            )
        if not s.json:
            total = sum(r["entries"] for r in results)
            plural = "s" * (len(results) != 1)
            held = getattr(app.store, "audit_key", None)
            seals = f", every seal holds (key id {held.key_id})" if keyed and held else ""
            s.echo(
                f"verified {len(results)} execution{plural}, {total} entries: all chains"
                f" intact{seals}"
            )
            if checked is not None and checked["checked"]:
                s.echo(
                    f"and every one of the {checked['checked']} anchored heads (taken"
                    f" {checked['taken_at']}) is still in its trail"
                )
            elif checked is not None:
                none = f"{execution_id} is not anchored" if execution_id else "no anchors are"
                s.echo(render.safe(f"{none} in {anchor_file}: nothing checked against them"))


def _sealed(app: App, execution_id: str | None) -> int:
    """How many of the executions verified carry a seal."""
    try:
        if execution_id is not None:
            return int(app.orchestrator.get(execution_id, with_input=False).seal is not None)
        listed = queries.every_execution(app.uow_factory, app.runtime.tenant, [])
    except (CorruptRecord, RecordNotFound):  # what verify reported already
        return 0
    return sum(x.seal is not None for x in listed)


def _read_anchors(s: Session, path: Path) -> anchors.Anchors:
    try:
        taken = anchors.read(path)
    except anchors.AnchorFileError as exc:
        raise Failed(render.safe(str(exc)), EXIT_USAGE) from None
    tenant = s.settings().tenant
    if taken.tenant != tenant:
        raise Failed(
            render.safe(
                f"anchor file {path} holds the anchors of tenant {taken.tenant!r}, and this is"
                f" tenant {tenant!r} (GOVKERNEL_TENANT)"
            ),
            EXIT_USAGE,
        )
    return taken


def _in_the_store(store_url: str, path: Path) -> bool:
    """Whether `path` is one of an on-disk store's files: inside its directory, or its lock."""
    directory = SurrealConfig(store_url).path if store_url.startswith("surrealkv:") else None
    if directory is None:
        return False
    target = Path(os.path.realpath(path))
    home = Path(os.path.realpath(directory))
    lock = home.with_name(home.name + ".lock")
    if target in (lock, home) or home in target.parents:
        return True
    # The same directories under other paths (a bind mount): told by device and inode, as
    # the store's lock tells them.
    return _same_file(target, lock) or any(_same_file(p, home) for p in (target, *target.parents))


def _same_file(one: Path, other: Path) -> bool:
    try:
        return os.path.samefile(one, other)
    except OSError:  # one of them is not there (yet)
        return False


def _other_store(app: App, taken: anchors.Anchors) -> str | None:
    """What to say when the anchors name another store than this one, or None.

    Not a reason to check nothing: the store's writers, whom anchors guard against, can
    change its id as they can anything in it. The anchors are checked all the same, and the
    mismatch is a failure of its own."""
    if None in (taken.store, app.store.store_id) or taken.store == app.store.store_id:
        return None
    return render.safe(
        f"the anchor file names store {taken.store}, and this is store {app.store.store_id}:"
        " it was taken from another store, or this store's id was changed"
    )


@audit.command("seal", epilog=EXITS)
@click.argument("execution_id", metavar="[EXECUTION]", required=False, callback=an_id)
@click.option(
    "--unsealed",
    is_flag=True,
    help="Also seal executions that have no seal, as they stand (written before the store"
    " had a key; one whose seal was removed reads the same).",
)
@click.option(
    "--all-tenants",
    is_flag=True,
    help="Seal every tenant's executions, not only this tenant's: for whoever holds the"
    " store's key, introducing or changing it (other tenants' executions are listed).",
)
@json_option
@click.pass_context
def audit_seal(
    ctx: click.Context, execution_id: str | None, unsealed: bool, all_tenants: bool
) -> None:
    """Seal this tenant's executions (or EXECUTION; every tenant's with --all-tenants) with
    the audit key, GOVKERNEL_AUDIT_KEY.

    Executions are sealed as they are written once the store has a key. This moves to it
    the seals of the key it replaces (GOVKERNEL_AUDIT_PREVIOUS_KEY), and with --unsealed
    seals those written before the store had a key. Only trails that verify are sealed; a
    seal that does not match is never replaced; an execution a worker holds is left for
    later. Exit 1 when any is left unsealed.
    """
    s = session_of(ctx)
    s.printing()
    s.again = "nothing was sealed"  # until the store is open
    settings = s.settings()
    if settings.audit_key is None:
        raise Failed("no audit key to seal with: set GOVKERNEL_AUDIT_KEY", EXIT_USAGE)
    key_id = AuditKey.from_text(settings.audit_key).key_id
    previous = settings.previous_audit_key
    before = None if previous is None else AuditKey.earlier(previous)
    if all_tenants and execution_id is not None:
        raise Failed("give EXECUTION or --all-tenants, not both", EXIT_USAGE)
    same = "".join(
        (
            f"govkernel{s.hint()} audit seal",
            "" if execution_id is None else f" {render.shell_word(execution_id)}",
            " --all-tenants" if all_tenants else "",
            " --unsealed" if unsealed else "",
        )
    )
    with s.app(existing=True) as (app, _):
        s.again = f"what it sealed stands; the same `{same}` seals the rest"
        # Another tenant's executions are named (and their problems said) only when asked
        # for, as every other command reads them as missing.
        tenant = None if all_tenants else app.runtime.tenant
        if execution_id is not None:
            ids = [execution_id]
        else:
            unreadable: list[str] = []
            with app.uow_factory() as uow:
                listed = uow.executions.every(tenant, with_input=False, unreadable=unreadable)
            ids = [x.id for x in listed] + unreadable
        outcomes = []
        with progress_bar(ids, "sealing") as items:
            for xid in items:
                try:
                    outcome = sealing.seal(
                        app.uow_factory,
                        tenant,
                        xid,
                        now=app.runtime.clock.now(),
                        previous=before,
                        unsealed=unsealed,
                    )
                except ExecutionNotFound:
                    if execution_id is not None:
                        raise
                    # Listed, yet no execution reads by this id: not one of ours.
                    outcome = sealing.SealOutcome(xid, sealing.Sealing.REFUSED, queries.NOT_TEXT)
                outcomes.append(outcome)
        if execution_id is None:  # a trail left of an execution gone: nothing to seal, said
            for xid, (count, _) in queries.orphan_trails(app.uow_factory, tenant).items():
                gone = queries.orphan_report(xid, count).problem
                outcomes.append(sealing.SealOutcome(xid, sealing.Sealing.REFUSED, gone))
    counts = {o: sum(r.outcome is o for r in outcomes) for o in sealing.Sealing}
    done = (sealing.Sealing.SEALED, sealing.Sealing.MOVED, sealing.Sealing.ALREADY)
    left = [r for r in outcomes if r.outcome not in done]
    if s.json:
        s.emit(
            {
                "ok": not left,
                "key_id": key_id,
                **{o.name.lower(): counts[o] for o in sealing.Sealing},
                "results": [
                    {
                        "execution_id": r.execution_id,
                        "outcome": r.outcome.name.lower(),  # as the counts are keyed
                        "problem": r.problem,
                    }
                    for r in outcomes
                ],
            }
        )
    else:
        # "left unsealed" says it: the problem's own "not sealed: " would say it again.
        rows = [
            (r.execution_id, r.outcome.value, (r.problem or "").removeprefix("not sealed: "))
            for r in outcomes
        ]
        s.echo(render.table(("EXECUTION", "SEAL", "WHY NOT"), rows) if rows else "no executions")
        s.echo(", ".join(f"{o.value} {counts[o]}" for o in sealing.Sealing) + f" (key id {key_id})")
    if before is not None:
        # Seals are moved on that key's word alone: kept set, it lets whoever still holds
        # the old key have any trail they rewrite and seal with it moved by a later run.
        s.warn(
            "note: once the seals are moved, remove GOVKERNEL_AUDIT_PREVIOUS_KEY"
            " (previous_audit_key): while it is set, `audit seal` moves any seal made with"
            " that key, forged ones too"
        )
    if left:
        first = left[0]
        hint = {
            sealing.Sealing.UNSEALED: "; if it was written before the store had a key,"
            " `audit seal --unsealed` seals it as it stands",
            sealing.Sealing.BUSY: "",
        }.get(first.outcome, "")
        raise Failed(
            render.safe(
                f"{first.execution_id} was left unsealed: {first.problem}{hint}"
                + (f" ({len(left)} executions not sealed)" if len(left) > 1 else "")
            )
        )


ANCHORS_LOST = "the anchor document could not be written"


@audit.command("anchor", epilog=EXITS)
@click.option(
    "--output",
    "-o",
    metavar="FILE",
    callback=a_file,
    help="Write the anchors to FILE, replacing it whole; anchors it already holds are"
    " checked first [default: stdout].",
)
@json_option
@click.pass_context
def audit_anchor(ctx: click.Context, output: Path | None) -> None:
    """Record the audit head of every execution whose chain verifies, to keep outside the
    store (`audit verify --anchors FILE` checks against it).

    A trail rolled back or rewritten by someone who can write the store still verifies on
    its own; against anchors taken before, it does not. Executions whose chain is broken are
    not anchored: they are reported, and the command exits 1.
    """
    s = session_of(ctx)
    s.read_only = True
    if output is None and sys.stdout is None:  # its only product: refused before any work
        raise Failed(
            f"{ANCHORS_LOST}: standard output is closed (--output FILE writes it to a file)",
            EXIT_USAGE,
        )
    if output is None:  # the anchors are the record: stdout holds them alone
        reserve_stdout()
    if s.json:  # the summary
        s.printing()
    s.settings()
    if output is not None and not output.parent.is_dir():
        raise Failed(
            render.safe(f"cannot write {output}: no directory {output.parent}"), EXIT_USAGE
        )
    if output is not None and _in_the_store(s.settings().store_url, output):
        raise Failed(
            render.safe(f"cannot write {output}: it is the store's own (keep anchors outside it)"),
            EXIT_USAGE,
        )
    # An empty regular file (made ready with `touch`, say), or a link to none yet, holds no
    # anchors to check first; anything else there is read, and refused if it is no anchor
    # file (a FIFO, a device).
    fresh_file = output is not None and output.is_file() and output.stat().st_size == 0
    exists = output is not None and output.exists()
    earlier = _read_anchors(s, output) if output is not None and exists and not fresh_file else None
    with s.app(existing=True) as (app, _):
        if earlier is not None and output is not None:
            other_store = _other_store(app, earlier)
            if other_store is not None:
                raise Failed(f"{output} was left as it is: {other_store}; anchor into another file")
            failed = anchors.check(app.uow_factory, app.runtime.tenant, earlier.anchors)
            if failed:
                first = failed[0]
                raise Failed(
                    render.safe(
                        f"{output} was left as it is: {len(failed)} of its anchors no longer"
                        f" hold, first {first.execution_id}: {first.problem}"
                        " (`govkernel audit verify --anchors` lists them)"
                    )
                )
        taken, broken = anchors.take(
            app.uow_factory,
            app.runtime.tenant,
            app.orchestrator.verify,
            store=app.store.store_id,
            now=app.runtime.clock.now(),
            progress=lambda items: progress_bar(items, "anchoring"),
        )
    if earlier is not None:
        taken = anchors.renewed(taken, earlier)
    if output is not None:
        try:
            anchors.write(taken, output)
        except anchors.AnchorFileError as exc:
            raise Failed(render.safe(str(exc)), EXIT_USAGE) from None
        except OSError as exc:
            # Exit 2, whatever stopped the write (a file it may not write, a full disk): 1
            # says a chain was found broken, and a monitor must tell tampering from a disk.
            raise Failed(
                render.safe(f"cannot write {output}: {exc.strerror or exc}"), EXIT_USAGE
            ) from None
    summary = {
        "anchored": len(taken.anchors),
        "taken_at": render.iso(taken.taken_at),
        "output": None if output is None else str(output.absolute()),  # as `backup` gives
        "broken": [render.report_json(r) for r in broken],
    }
    if s.json and output is not None:
        s.emit(summary)
    elif output is None:  # the anchors are the record: stdout holds them alone
        unwritten = write_out(render.dumps(taken.to_json()), err=False)
        if unwritten is not None:  # a reader gone too: no one has them
            raise Failed(render.safe(f"{ANCHORS_LOST}: {unwritten}"), EXIT_USAGE)
    where = "" if output is None else f" in {output}"
    count = len(taken.anchors)
    s.warn(render.safe(f"anchored {count} execution{'s' * (count != 1)}{where}"))
    if broken:
        first = broken[0]
        raise Failed(
            render.safe(
                f"{len(broken)} execution{'s' * (len(broken) != 1)} not anchored: the audit"
                f" trail of {first.execution_id} is broken at entry #{first.first_bad_sequence}:"
                f" {first.problem}"
            )
        )


def verify_chains(
    s: Session, app: App, execution_id: str | None, anchored: Container[str] = ()
) -> list[dict[str, Any]]:
    """Each execution's chain report; with `execution_id`, that one's: its record gone, its
    trail left is reported as the whole-store check reports it, and none left either is for
    its anchor to report (`anchored`), or not found."""
    # Ids only: a record that cannot be read is verified (and reported broken) like any
    # other, instead of stopping the check of all the rest.
    if execution_id is not None:
        with app.uow_factory() as uow:
            try:
                doc = uow.get("execution", execution_id)
            except CorruptRecord:  # stored, but not to be handed back (a NUL written in it)
                doc = {"tenant": uow.executions.tenant_of(execution_id)}
        moved = doc is not None and not queries.of_tenant(doc, app.runtime.tenant)
        if doc is None or moved:
            left = queries.orphan_trail(
                app.uow_factory, app.runtime.tenant, execution_id, moved=moved
            )
            if left:
                return [render.report_json(queries.orphan_report(execution_id, left))]
            if execution_id in anchored:
                return []
            raise ExecutionNotFound(execution_id)
        ids = [execution_id]
    else:
        unreadable: list[str] = []
        listed = queries.every_execution(app.uow_factory, app.runtime.tenant, unreadable)
        ids = [x.id for x in listed] + unreadable
    results = []
    with progress_bar(ids, "verifying") as items:
        for xid in items:
            report = queries.verify_listed(lambda x: verified(app, x), xid)
            bad_entry = None
            if not report.ok and report.first_bad_sequence:
                try:
                    trail = queries.audit_trail(app.uow_factory, app.runtime.tenant, xid)
                except (CorruptRecord, ExecutionNotFound):  # the record itself is what is
                    trail = []  # broken: no entry to show
                if 0 < report.first_bad_sequence <= len(trail):
                    bad_entry = trail[report.first_bad_sequence - 1]
            results.append(render.report_json(report, bad_entry))
    if execution_id is None:
        for xid, (count, _) in queries.orphan_trails(app.uow_factory, app.runtime.tenant).items():
            results.append(render.report_json(queries.orphan_report(xid, count)))
    return results
