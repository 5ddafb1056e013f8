"""The `govkernel` group: global options, and every command added to it."""

from __future__ import annotations

import importlib.metadata
import sys

import click

from adapters.surrealdb.schema import SCHEMA_VERSION
from composition import render
from composition.cli import approvals, audit, backup, demo, inspecting, recovery, running
from composition.cli.options import not_blank, set_json
from composition.cli.session import ROOT_EPILOG, session_of
from composition.cli.streams import DebugLog


def _version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    version = importlib.metadata.version("govkernel")
    # With the store schema it writes: what "upgrade govkernel" and "an older govkernel"
    # mean when a store is refused or upgraded (every build of a release says one version).
    # As every command under --json: a record on stdout, wherever the flag was given.
    as_json = "--json" in session_of(ctx).args
    click.echo(
        render.dumps({"version": version, "store_schema": SCHEMA_VERSION})
        if as_json
        else f"govkernel {version} (store schema {SCHEMA_VERSION})"
    )
    ctx.exit()


@click.group(epilog=ROOT_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--store",
    metavar="URL",
    callback=not_blank,
    help="Store URL: memory://, mem://, surrealkv://PATH, ws://HOST:PORT or wss://HOST:PORT"
    " [env: GOVKERNEL_STORE; default: surrealkv://<data dir>/store].",
)
@click.option(
    "--config",
    metavar="FILE",
    callback=not_blank,
    help="TOML settings file [env: GOVKERNEL_CONFIG].",
)
@click.option(
    "--json",
    "json_output",
    is_flag=True,
    expose_value=False,
    callback=set_json,
    help="Print records as JSON on stdout (every command).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.option(
    "--version",
    is_flag=True,
    is_eager=True,
    expose_value=False,
    callback=_version,
    help="Show the version and exit.",
)
@click.pass_context
def cli(ctx: click.Context, store: str | None, config: str | None, debug: bool) -> None:
    """govkernel: governed, durable and auditable knowledge workflows."""
    session = session_of(ctx)
    session.store = store
    session.config = config
    session.debug = session.debug or debug
    if session.debug and sys.stderr is not None and session.log is None:
        session.log = DebugLog()


for command in (
    running.run,
    running.workflows_command,
    approvals.approve,
    approvals.reject,
    approvals.cancel,
    inspecting.executions,
    inspecting.events,
    audit.audit,
    recovery.recover,
    backup.backup,
    demo.demo,
):
    cli.add_command(command)
