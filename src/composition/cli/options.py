"""The options and argument checks the commands share."""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from composition import anchors, files, render
from composition.cli.session import MAX_LIMIT, Session
from composition.cli.streams import reserve_stdout
from composition.settings import (
    NO_DIRECTORY,
    working_directory,
)
from domain.model.errors import InvalidInput
from domain.model.validation import IDENTIFIER, IDENTIFIER_RULE, actor_name
from domain.orchestration.orchestrator import (
    idempotency_key_of,
)


def set_json(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(Session).json = True
        reserve_stdout()  # before any of your code is imported or run


F = TypeVar("F", bound=Callable[..., Any])


def json_option(fn: F) -> F:
    return click.option(
        "--json",
        "json_output",
        is_flag=True,
        expose_value=False,
        callback=set_json,
        help="Print the records as JSON on stdout (and nothing else there).",
    )(fn)


class WholeNumber(click.IntRange):
    """A bounded integer written in the digits 0-9 alone: click's own `int()` also takes
    ' 5', '1_000' and the digits of other scripts, which no operator means."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not (value.isascii() and value.isdigit()):
            self.fail(
                f"{render.safe(repr(value[:40]))} is not a non-negative integer in the digits 0-9",
                param,
                ctx,
            )
        if isinstance(value, str) and len(value) > 40:  # click would repeat all of it
            self.fail(f"{value[:20]}... ({len(value)} digits) is out of range", param, ctx)
        return super().convert(value, param, ctx)


def limit_option(default: int) -> Callable[[F], F]:
    return click.option(
        "--limit",
        type=WholeNumber(min=1, max=MAX_LIMIT),
        default=default,
        show_default=True,
        metavar="N",
        help=f"At most N records (1 to {MAX_LIMIT}).",
    )


class NonEmptyPath(click.Path):
    """A path, never empty or blank: click would take '' for the current directory, and a
    name of spaces alone is a slip, not a name."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail("must not be empty", param, ctx)
        return super().convert(value, param, ctx)


def not_blank(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Refuse an empty option value: it would otherwise fall back to the default unnoticed."""
    values = value if isinstance(value, tuple) else (value,)
    if any(isinstance(v, str) and not v.strip() for v in values):
        raise click.BadParameter("must not be empty", ctx=ctx, param=param)
    return value


class InputFile(click.File):
    """A file to read, as `click.File` opens it; but a pipe is opened without waiting for a
    writer: a named pipe nobody writes to then gives nothing (refused as empty input)
    instead of holding the command for good."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value == "-" and sys.stdin is None:  # closed (`<&-`): Python gave it no stream
            self.fail(
                "standard input is closed: give a file, a pipe, or standard input redirected"
                " from a file",
                param,
                ctx,
            )
        if isinstance(value, str) and value != "-":
            with contextlib.suppress(OSError):
                if stat.S_ISFIFO(os.stat(value).st_mode):
                    return os.fdopen(files.open_unwaiting(value), "r", encoding="utf-8")
        return super().convert(value, param, ctx)


def a_file(ctx: click.Context, param: click.Parameter, value: str | None) -> Path | None:
    """A file's path as typed: not empty (`Path("")` is the current directory), and not
    ending in a slash, which names a directory (`Path` would drop it, and write a file)."""
    if value is None:
        return None
    not_blank(ctx, param, value)
    if value.endswith(os.sep):
        raise click.BadParameter(
            "ends in a slash, which names a directory: give a file", ctx=ctx, param=param
        )
    if not os.path.isabs(value) and working_directory() is None:
        raise click.BadParameter(f"is relative to {NO_DIRECTORY}", ctx=ctx, param=param)
    return Path(value)


def an_id(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """An execution id as typed: bounded, so that a mistake is not echoed back whole."""
    if isinstance(value, str) and len(value) > anchors.MAX_ID_CHARS:
        raise click.BadParameter(
            f"is {len(value):,} characters long: no execution id is over {anchors.MAX_ID_CHARS:,}",
            ctx=ctx,
            param=param,
        )
    return not_blank(ctx, param, value)


def a_name(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A role or person as approvals name them, checked before the store is opened: an
    invalid one is wrong whatever the execution."""
    value = not_blank(ctx, param, value)
    if value is None:
        return None
    try:
        return actor_name(param.name or "name", value)
    except InvalidInput as exc:
        raise click.BadParameter(exc.problem, ctx=ctx, param=param) from None


def an_idempotency_key(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A key as `start` takes it, checked before the store is opened (or made)."""
    if value is None:
        return None
    try:
        return idempotency_key_of(value)
    except InvalidInput as exc:
        raise click.BadParameter(exc.problem, ctx=ctx, param=param) from None


def a_workflow_name(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A workflow's name as definitions spell them: anything else names none."""
    if value is not None and not IDENTIFIER.match(value):
        raise click.BadParameter(
            f"is not a workflow name: {IDENTIFIER_RULE}",
            ctx=ctx,
            param=param,
        )
    return value


def enum_choice(values: Sequence[str]) -> click.Choice[str]:
    return click.Choice(list(values), case_sensitive=False)
