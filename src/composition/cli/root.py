"""The `govkernel` group: global options, and every command added to it."""

from __future__ import annotations

import sys

import click

from composition.cli import approvals, audit, backup, demo, inspecting, recovery, running
from composition.cli.options import not_blank, set_json
from composition.cli.session import ROOT_EPILOG, session_of
from composition.cli.streams import DebugLog


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
@click.version_option(package_name="govkernel", message="%(prog)s %(version)s")
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
