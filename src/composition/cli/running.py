"""`govkernel run` and `govkernel workflows`: start a workflow, or list those this command
can run."""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import click

from composition import render, strict_json, wiring
from composition.cli.options import (
    InputFile,
    NonEmptyPath,
    an_idempotency_key,
    enum_choice,
    json_option,
    not_blank,
)
from composition.cli.outcome import conclude
from composition.cli.session import (
    EXITS,
    MAX_INPUT_CHARS,
    PROGRESS_THRESHOLD,
    S,
    Session,
    session_of,
    started_by,
)
from composition.cli.streams import progress_bar
from composition.container import App, Overrides, build_app, would_make
from composition.documents import (
    SourceFile,
    derived_title,
    publication_request,
    read_source,
)
from composition.settings import (
    DEFAULT_POLICY_REF,
)
from domain.model.errors import InvalidInput, shown
from domain.model.execution import WorkflowExecution
from domain.model.knowledge import Classification, SourceFormat, SourceKind
from domain.model.policy import ImpactTier
from domain.orchestration.orchestrator import (
    reused,
)
from domain.workflows import knowledge_publication as kp
from ports.clock import UuidIds
from ports.errors import StorageUnavailable


@click.group(epilog=EXITS)
@json_option  # `govkernel run --json ...` as well as before or after
def run() -> None:
    """Run a workflow."""


@run.command("knowledge-publication", epilog=EXITS)
@click.argument("files", nargs=-1, required=True, type=NonEmptyPath(path_type=Path))
@click.option(
    "--title",
    callback=not_blank,
    help="Publication title [default: derived from the documents].",
)
@click.option(
    "--publication-id",
    metavar="ID",
    callback=not_blank,
    help="Publication id [default: a fresh pub-... id].",
)
@click.option(
    "--tier",
    type=enum_choice([t.value for t in ImpactTier]),
    metavar="[" + "|".join(t.value for t in ImpactTier) + "]",
    default=ImpactTier.TIER0.value,
    show_default=True,
    help="Impact tier: Tier1 needs one approval, Tier2 and Tier3 two.",
)
@click.option(
    "--idempotency-key",
    metavar="KEY",
    callback=an_idempotency_key,
    help="Starting twice with one key returns the first execution.",
)
@click.option(
    "--kind",
    type=enum_choice([k.value for k in SourceKind]),
    help="Source kind of every file [default: each file's front matter].",
)
@click.option(
    "--url",
    metavar="URL",
    callback=not_blank,
    help="Source URL of every file [default: front matter].",
)
@click.option(
    "--classification",
    type=enum_choice([c.value for c in Classification]),
    help="Classification of every file [default: front matter, else internal].",
)
@click.option(
    "--format",
    "fmt",
    type=enum_choice([f.value for f in SourceFormat]),
    help="Format of every file [default: front matter, else from the extension].",
)
@click.option(
    "--policy-ref",
    "policy_refs",
    multiple=True,
    metavar="REF",
    callback=not_blank,
    help=f"Policy reference (repeatable) [default: {DEFAULT_POLICY_REF}].",
)
@click.option(
    "--required-role",
    "required_roles",
    multiple=True,
    metavar="ROLE",
    callback=not_blank,
    help="A role that must approve (repeatable).",
)
@json_option
@click.pass_context
def run_knowledge_publication(
    ctx: click.Context,
    files: tuple[Path, ...],
    title: str | None,
    publication_id: str | None,
    tier: str,
    idempotency_key: str | None,
    kind: str | None,
    url: str | None,
    classification: str | None,
    fmt: str | None,
    policy_refs: tuple[str, ...],
    required_roles: tuple[str, ...],
) -> None:
    """Ingest FILE..., analyse them and publish a capsule, durably and under policy.

    Each file may start with front matter (a '---' block of 'key: value' lines: kind, url
    (or source_url), title, classification, format); options override it. A denied run
    exits 1 with the reasons; a run awaiting approval prints how to approve it and exits 0.
    """
    s = session_of(ctx)
    s.starts = True
    s.settings()  # configuration problems first, before any file is read
    sources = read_sources(s, files)

    def request_of(strict: bool) -> kp.PublicationRequest:
        return publication_request(
            sources,
            title=default_title(sources) if title is None else title,
            publication_id=UuidIds().new_id("pub") if publication_id is None else publication_id,
            policy_refs=policy_refs or (DEFAULT_POLICY_REF,),
            required_roles=required_roles,
            options={"kind": kind, "url": url, "classification": classification, "format": fmt},
            strict=strict,
        )

    # Validated before the store is opened: a typo needs no lock to be reported. Unless it
    # repeats a run whose key is known: that one is shown, as its input was checked then.
    request: kp.PublicationRequest | None
    try:
        request = request_of(strict=True)
    except InvalidInput:
        if not _known_key(s, idempotency_key):
            raise
        try:
            request = request_of(strict=False)
        except InvalidInput:
            request = None  # not even as stored: another request under that key
    with s.app() as (app, printer):
        found = started_by(app, idempotency_key, kp.NAME)
        if found is not None:
            differs = request is None or _differs(
                ctx, found, request.to_input(), tier, publication_id is None
            )
            _show_reused(s, app, found, differs)
            return
        if request is None:  # the key's execution went since it was looked up
            request = request_of(strict=True)
        s.echo(
            f"starting {kp.NAME}: {len(request.documents)} document"
            f"{'s' * (len(request.documents) != 1)}, {tier}, publication {request.publication_id}"
        )
        s.starting = idempotency_key or UuidIds().new_id("idem")
        printer.running(app.orchestrator.current(kp.NAME).steps[0].name)
        execution = app.orchestrator.start(
            kp.NAME,
            request.to_input(),
            idempotency_key=s.starting,
            risk_tier=ImpactTier(tier),
        )
        conclude(s, app, execution, ok={S.SUCCEEDED, S.AWAITING_APPROVAL}, extra={"reused": False})


@run.command("workflow", epilog=EXITS)
@click.argument("name")
@click.option(
    "--input",
    "input_text",
    metavar="JSON",
    help="The input, a JSON object [default: {}].",
)
@click.option(
    "--input-file",
    type=InputFile("r", encoding="utf-8"),
    help="Read the input (a JSON object) from FILE; - for stdin.",
)
@click.option(
    "--tier",
    type=enum_choice([t.value for t in ImpactTier]),
    metavar="[" + "|".join(t.value for t in ImpactTier) + "]",
    help="Impact tier [default: the workflow's own].",
)
@click.option(
    "--idempotency-key",
    metavar="KEY",
    callback=an_idempotency_key,
    help="Starting twice with one key returns the first execution.",
)
@json_option
@click.pass_context
def run_workflow(
    ctx: click.Context,
    name: str,
    input_text: str | None,
    input_file: IO[str] | None,
    tier: str | None,
    idempotency_key: str | None,
) -> None:
    """Run the workflow NAME (see `govkernel workflows`) on a JSON input.

    Your own workflows are those the `workflows` setting names (GOVKERNEL_WORKFLOWS). A run
    awaiting approval prints how to approve it and exits 0; a failed one exits 1.
    """
    s = session_of(ctx)
    s.starts = True
    s.settings()
    if input_text is not None and input_file is not None:
        raise click.UsageError("give '--input' or '--input-file', not both")
    if input_file is not None and _a_device(input_file):
        # /dev/zero would be read to the bound (a quarter of a gigabyte) before it is refused.
        what = "standard input is" if input_file.name == "<stdin>" else "is"
        raise click.BadParameter(
            f"{what} a device (such as /dev/null): give a file, a pipe, or standard input"
            " redirected from a file",
            param_hint="'--input-file'",
        )
    if input_file is not None and _regular_size(input_file) > MAX_INPUT_CHARS:
        # A file is sized before it is read (a stream is read up to the bound).
        raise click.BadParameter(
            f"is over {MAX_INPUT_CHARS:,} bytes (256 MiB)", param_hint="'--input-file'"
        )
    try:
        given = input_file.read(MAX_INPUT_CHARS + 1) if input_file is not None else input_text
    except UnicodeDecodeError:
        raise click.BadParameter("is not UTF-8 text", param_hint="'--input-file'") from None
    except OSError as exc:  # opened, then refused while read (EIO, EISDIR on some systems)
        raise click.BadParameter(
            f"cannot be read: {exc.strerror or exc}", param_hint="'--input-file'"
        ) from None
    if given is not None and not _utf8(given):  # bytes in the argument that are no UTF-8
        raise click.BadParameter("is not UTF-8 text", param_hint="'--input'")
    if given is not None and len(given) > MAX_INPUT_CHARS:
        raise click.BadParameter(
            f"is over {MAX_INPUT_CHARS:,} characters", param_hint="'--input-file' / '--input'"
        )
    where = "'--input-file'" if input_file is not None else "'--input'"  # as click quotes
    if given is not None and given.startswith("\ufeff"):  # a byte-order mark, as editors save
        given = given[1:]
    if given is not None and not given.strip():
        raise click.BadParameter("is empty: give a JSON object, such as {}", param_hint=where)
    workflow_input = {} if given is None else _json_object(where, given)

    def unknown(app: App) -> click.UsageError:
        known = ", ".join(sorted(app.workflows)) or "none"
        retired = sorted(d.version for d in app.orchestrator.definitions() if d.name == name)
        if retired:  # known, to finish what it started: the setting of current ones is next
            return click.UsageError(
                f"workflow {shown(name)} is registered as retired only (version"
                f" {', '.join(retired)}): it starts nothing; name a current version in"
                f" GOVKERNEL_WORKFLOWS (current: {known})"
            )
        hint = (
            ""
            if app.settings.workflows
            else " (your own are known when the `workflows` setting names them:"
            " GOVKERNEL_WORKFLOWS=package.module:attribute)"
        )
        return click.UsageError(f"unknown workflow {shown(name)}; known: {known}{hint}")

    def checked(app: App) -> None:  # a store to be made holds no known key
        if name not in app.workflows:
            raise unknown(app)
        app.orchestrator.check_input(name, workflow_input)

    # A store that may be made holds no known key, but a server's database may be there
    # already (it cannot be told without connecting): a key it knows is shown, unchecked.
    check = None if would_make(s.settings()) and _known_key(s, idempotency_key) else checked
    with s.app(check=check) as (app, printer):
        # A known key shows its execution first: its version may be retired, or gone.
        found = started_by(app, idempotency_key)
        if name not in app.workflows and (found is None or found.workflow_name != name):
            raise unknown(app)
        if found is not None:
            reused(found, name)  # another workflow's key is refused, as `start` refuses it
            differs = dict(found.input) != workflow_input or (
                tier is not None and found.metadata.risk_tier.value != tier
            )
            _show_reused(s, app, found, differs)
            return
        app.orchestrator.check_input(name, workflow_input)  # refused before "starting"
        s.echo(render.safe(f"starting {name}"))
        s.starting = idempotency_key or UuidIds().new_id("idem")
        printer.running(app.orchestrator.current(name).steps[0].name)
        execution = app.orchestrator.start(
            name,
            workflow_input,
            idempotency_key=s.starting,
            risk_tier=None if tier is None else ImpactTier(tier),
        )
        conclude(s, app, execution, ok={S.SUCCEEDED, S.AWAITING_APPROVAL}, extra={"reused": False})


def _known_key(s: Session, idempotency_key: str | None) -> bool:
    """Whether the key started an execution in the configured store, looked up without
    making the store (none there: no key is known)."""
    if idempotency_key is None:
        return False
    try:
        with s.app(existing=True) as (app, _):
            return started_by(app, idempotency_key) is not None
    except StorageUnavailable as exc:
        if str(exc).endswith("nothing has run there yet"):
            return False
        raise


def _show_reused(s: Session, app: App, found: WorkflowExecution, differs: bool) -> None:
    """A run whose idempotency key already started `found`: that one is shown instead."""
    s.echo(render.safe(f"idempotency key {found.idempotency_key!r} already started {found.id}"))
    if differs:
        s.warn(
            "note: it was started for a different request; this one was not started (use"
            " another --idempotency-key to start it)"
        )
    elif found.state in (S.FAILED, S.COMPENSATED, S.CANCELLED):
        # Its error would read as this run's: nothing ran now.
        s.warn(
            f"note: nothing ran now: it had already ended {found.state.value} (a key starts"
            " one execution, ever: another --idempotency-key starts the request again)"
        )
    reused = {"reused": True, "request_differs": differs}
    conclude(s, app, found, ok={S.SUCCEEDED, S.AWAITING_APPROVAL}, extra=reused)


def _regular_size(file: IO[str]) -> int:
    """The size of a regular file behind `file`, or 0 (stdin, a pipe)."""
    try:
        info = os.fstat(file.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        return 0
    return info.st_size if stat.S_ISREG(info.st_mode) else 0


def _a_device(file: IO[str]) -> bool:
    """Whether `file` is a character or block device other than a terminal."""
    try:
        mode = os.fstat(file.fileno()).st_mode
        return (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) and not os.isatty(file.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        return False


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_kind(value: object) -> str:
    """What a JSON value is called in JSON's own words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "a string" if isinstance(value, str) else "an array"


def _json_object(where: str, text: str) -> dict[str, Any]:
    """Strict JSON: NaN, Infinity and a key given twice are refused, as the store would."""
    try:
        value = strict_json.loads(text)
    except ValueError as exc:  # JSONDecodeError included: it names the line and column
        raise click.BadParameter(render.safe(str(exc)), param_hint=where) from None
    if not isinstance(value, dict):
        raise click.BadParameter(
            f"must be a JSON object, got {_json_kind(value)}", param_hint=where
        )
    return value


@click.command("workflows", epilog=EXITS)
@json_option
@click.pass_context
def workflows_command(ctx: click.Context) -> None:
    """The workflows this command can run, recover and approve: the built-in ones and those
    the `workflows` setting names, and the earlier versions `retired_workflows` names (they
    only finish what they started). Opens no store."""
    s = session_of(ctx)
    s.printing()
    settings = s.settings()
    # Definitions are built from a knowledge service; one on a throwaway store will do.
    with build_app(settings, Overrides(store=wiring.throwaway_store(settings))) as app:
        definitions = sorted(app.orchestrator.definitions(), key=lambda d: (d.name, d.version))
        current = {id(d) for d in app.workflows.values()}
    if s.json:
        s.emit(
            {
                "workflows": [
                    render.workflow_json(d) | {"retired": id(d) not in current} for d in definitions
                ]
            }
        )
        return
    rows = [
        (
            d.name,
            d.version + ("" if id(d) in current else " (retired)"),
            " > ".join(d.step_names()),
            d.compensation.name if d.compensation else "-",
            d.metadata.risk_tier.value,
        )
        for d in definitions
    ]
    s.echo(render.table(("NAME", "VERSION", "STEPS", "COMPENSATION", "TIER"), rows))


def _differs(
    ctx: click.Context,
    found: WorkflowExecution,
    wanted: Mapping[str, Any],
    tier: str,
    generated_publication_id: bool,
) -> bool:
    """Whether a repeated run asks for something else than the execution its key started;
    what the user left to defaults (a fresh publication id, the tier) is not compared."""
    stored = dict(found.input)
    wanted = dict(wanted)
    if generated_publication_id:
        stored.pop("publication_id", None)
        wanted.pop("publication_id", None)
    tier_given = ctx.get_parameter_source("tier") is not click.core.ParameterSource.DEFAULT
    return stored != wanted or (tier_given and found.metadata.risk_tier.value != tier)


def read_sources(s: Session, files: Sequence[Path]) -> list[SourceFile]:
    with progress_bar(files, "reading documents", at_least=PROGRESS_THRESHOLD) as each:
        return [read_source(path) for path in each]


def default_title(sources: Sequence[SourceFile]) -> str:
    first = sources[0]
    name = first.meta.get("title") or derived_title(first.path.stem)
    more = len(sources) - 1
    return name if not more else f"{name} and {more} more document{'s' * (more != 1)}"
