"""`govkernel demo`: publish the sample documents end to end, then verify every trail."""

from __future__ import annotations

from pathlib import Path

import click

import composition
from composition import queries, render
from composition.cli.audit import verification_json, verify_chains
from composition.cli.options import NonEmptyPath, json_option
from composition.cli.outcome import conclude, definition_of
from composition.cli.session import EXIT_USAGE, EXITS, Failed, S, session_of
from composition.cli.streams import indent
from composition.documents import (
    publication_request,
    read_source,
)
from composition.settings import (
    DEFAULT_POLICY_REF,
)
from domain.model.policy import ImpactTier
from domain.workflows import knowledge_publication as kp


def default_examples() -> Path:
    """Installed with the package; in a checkout (an editable install), beside `src`."""
    package = Path(composition.__file__).resolve().parent
    installed = package / "examples"
    return installed if installed.is_dir() else package.parents[1] / "examples"


@click.command(epilog=EXITS)
@click.option(
    "--examples",
    type=NonEmptyPath(path_type=Path, file_okay=False),
    help="Directory of sample documents [default: the repository's examples/].",
)
@json_option
@click.pass_context
def demo(ctx: click.Context, examples: Path | None) -> None:
    """Publish the sample documents, list executions and verify every audit trail."""
    s = session_of(ctx)
    settings = s.settings()
    folder = examples or default_examples()
    paths = (
        sorted(p for p in folder.glob("*") if p.suffix in (".md", ".txt"))
        if folder.is_dir()
        else []
    )
    if not folder.is_dir():
        what = "is not a directory" if folder.exists() else "does not exist"
        raise Failed(f"--examples {folder} {what}", EXIT_USAGE)
    if not paths:
        raise Failed(
            f"no sample documents (*.md, *.txt) in {folder}; pass --examples DIR", EXIT_USAGE
        )
    sources = [read_source(p) for p in paths]
    s.echo("govkernel demo")
    s.echo(render.safe(f"  store        {settings.display_store}"))
    s.echo(
        render.safe(
            f"  runtime      {settings.environment.value}, tenant {settings.tenant},"
            f" actor {settings.actor}"
        )
    )
    with s.app() as (app, _):
        rt = app.runtime
        publication_id = f"demo-{rt.clock.now():%Y%m%dT%H%M%SZ}-{rt.ids.new_id('x')[-6:]}"
        request = publication_request(
            sources,
            title="Macro-financial briefing (govkernel demo)",
            publication_id=publication_id,
            policy_refs=(DEFAULT_POLICY_REF,),
        )
        s.echo()
        s.echo(render.safe(f"[1/3] {kp.NAME} on {len(sources)} sample documents from {folder}"))
        for doc in request.documents:
            s.echo(render.safe(f"  {doc.kind.value:<5} {doc.source_url}"))
        x = app.orchestrator.start(kp.NAME, request.to_input(), risk_tier=ImpactTier.TIER0)
        s.started, s.started_state = x.id, x.state  # what a lost output does not undo
        if x.state is not S.SUCCEEDED:
            # Under --json, the same document as a demo that succeeded, with nothing after
            # the execution (a bare record, where a script reads `execution`).
            nothing = {"executions": None, "verification": None, "events": None}
            conclude(s, app, x, ok={S.SUCCEEDED}, within=lambda r: {"execution": r} | nothing)
            raise Failed(f"demo execution {x.id} ended {x.state.value}")

        s.echo()
        newest = queries.recent_executions(
            app.uow_factory, app.runtime.tenant, now=app.runtime.clock.now(), limit=5
        )
        s.echo("[2/3] executions (newest first)")
        s.echo(indent(render.executions_table(newest, lambda x: definition_of(app, x))))

        s.echo()
        s.echo("[3/3] audit trail verification")
        results = verify_chains(s, app, None)
        broken = [r for r in results if not r["ok"]]
        entries = sum(r["entries"] for r in results)
        if broken:
            for r in broken:
                s.echo(
                    render.safe(
                        f"  BROKEN {r['execution_id']} at #{r['first_bad_sequence']}:"
                        f" {r['problem']}"
                    )
                )
        else:
            plural = "s" * (len(results) != 1)
            s.echo(
                f"  {len(results)} execution{plural}, {entries} audit entries: every chain intact"
            )

        after = list(queries.all_events(app.uow_factory, app.runtime.tenant))
        mine = [e for e in after if e.correlation_id == x.correlation_id]
        outputs = x.step_outputs
        s.echo()
        s.echo("summary")
        summary_rows = [
            ("outcome", f"{x.id} {x.state.value}"),
            ("publication", f"{publication_id}: {request.title}"),
            ("sources", render.step_output(render.built_in(x), "ingest", outputs.get("ingest"))),
            ("analysis", render.step_output(render.built_in(x), "analyse", outputs.get("analyse"))),
            ("capsule", render.step_output(render.built_in(x), "publish", outputs.get("publish"))),
            ("events", f"{len(mine)} appended by this run, {len(after)} in the log"),
            ("audit", "all chains intact" if not broken else f"{len(broken)} chains BROKEN"),
        ]
        for key, value in summary_rows:
            s.echo(render.safe(f"  {key:<12} {value}"))
        if s.json:
            s.emit(
                {
                    "execution": render.execution_json(x, definition_of(app, x), detail=True),
                    "executions": len(results),
                    "verification": verification_json(app, results),
                    "events": {"appended": len(mine), "total": len(after)},
                }
            )
        if broken:
            raise Failed(f"{len(broken)} audit chains are broken")
