"""`govkernel backup`: a copy of the store that opens as it stood."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from adapters.surrealdb.store import NOT_UPGRADED
from composition import render
from composition.cli.options import NonEmptyPath, json_option
from composition.cli.session import EXIT_USAGE, EXITS, Failed, session_of
from composition.cli.streams import progress_bar
from ports.errors import StorageUnavailable, StoreInUse


@click.command(epilog=EXITS)
@click.argument("destination", metavar="DEST", type=NonEmptyPath(path_type=Path))
@json_option
@click.pass_context
def backup(ctx: click.Context, destination: Path) -> None:
    """Copy the surrealkv:// store into DEST, a new directory.

    The copy is the store as it stood at one moment, and opens as a store closed cleanly
    (point --store at it to restore); a store not known whole (a crash not yet checked)
    gives a copy its first open checks, as the store's own would be. A service holding the
    store backs it up itself, with `app.backup(DEST)`: its requests wait while it copies.
    """
    s = session_of(ctx)
    s.read_only = True
    # Never upgraded first: a backup is what goes back to before an upgrade.
    with _said_how_to_back_up(), s.app(existing=True, upgrade=False) as (app, _):
        try:
            copied = app.backup(destination, lambda chunks: progress_bar(chunks, "copying"))
        except OSError as exc:
            raise Failed(
                f"cannot write the backup to {destination}: {exc.strerror or exc}", EXIT_USAGE
            ) from None
        # A stop from here on (the store closing takes seconds) finds the copy whole: it
        # said "nothing was changed", and the same command then failed on DEST existing.
        s.again = f"the backup in {destination} was whole before the stop: nothing is left to do"
        if app.unclean_shutdown:
            s.warn(
                f"note: the last process on this store (pid {app.unclean_shutdown}) died"
                " holding it, and it was not checked since: the copy carries that crash, for"
                " its first `govkernel recover` to check"
            )
        if s.json:
            s.emit({"backup": str(destination.absolute()), "bytes": copied})
            return
        s.echo(
            render.safe(
                f"backed up {app.settings.display_store} to {destination} ({copied:,} bytes)"
            )
        )


@contextmanager
def _said_how_to_back_up() -> Iterator[None]:
    try:
        yield
    except StorageUnavailable as exc:
        if NOT_UPGRADED in str(exc):
            raise StorageUnavailable(
                f"{exc}; back it up with the govkernel that wrote it (`govkernel backup`), or"
                " copy its directory while no process holds it (cp -a); then any command of"
                " this govkernel upgrades it"
            ) from None
        if not isinstance(exc, StoreInUse):
            raise
        raise StoreInUse(
            f"{exc}; a service holding it backs it up itself, with app.backup(DEST)"
        ) from None
