"""The CLI in process: bounded inputs, honest follow-up hints and terminal-safe output.

`run_cli` runs in this process (no interpreter start-up per call); a surrealkv store is used
where a value must outlive one command.
"""

from __future__ import annotations

import errno
import importlib.metadata
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from attrs import evolve
from surrealdb import RecordID

from adapters.faults import FaultInjector, FaultPlan
from adapters.surrealdb import SurrealConfig, SurrealStore
from adapters.surrealdb import schema as surreal_schema
from composition import queries, render
from composition.cli import run_cli, streams
from composition.cli.command import describe
from composition.cli.outcome import failure_message
from composition.cli.session import Failed
from composition.container import Overrides, build_app
from composition.documents import publication_request, read_source
from composition.settings import ConfigurationError, Problem, load_settings
from domain.model.execution import WorkflowExecution
from domain.model.lifecycle import ExecutionState
from domain.model.policy import ImpactTier
from domain.orchestration.orchestrator import Orchestrator
from domain.workflows import knowledge_publication as kp
from ports.clock import FixedClock
from ports.errors import InjectedFault, RecordNotFound, StorageUnavailable
from ports.records import audit_key
from tests.support.ws_server import SurrealWsShim

ROOT = Path(__file__).resolve().parents[2]
IMF = ROOT / "examples" / "imf-global-financial-stability-note.md"
FRED = ROOT / "examples" / "fred-federal-funds-rate-note.md"
MEMORY = ("--store", "memory://")
# A reason that, printed raw, would end its row, forge another and turn the terminal red.
HOSTILE = "ok\n#9   succeeded         forged\x1b[31m red\u2028sep"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [n for n in os.environ if n.startswith("GOVKERNEL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("GOVKERNEL_ACTOR", "operator")
    monkeypatch.chdir(tmp_path)


def gk(capsys: pytest.CaptureFixture[str], *args: str, code: int = 0) -> tuple[str, str]:
    status = run_cli(list(args))
    out, err = capsys.readouterr()
    assert status == code, (args, status, out, err)
    return out, err


def _interrupted(*_: object, **__: object) -> None:
    raise KeyboardInterrupt


# -- bounded inputs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("events", "--after", str(2**64)), "--after"),
        (("events", "--after", str(2**63)), "--after"),
        (("events", "--limit", str(2**63)), "--limit"),
        (("executions", "list", "--limit", str(2**63)), "--limit"),
        (("executions", "list", "--limit", "10001"), "--limit"),
    ],
)
def test_integer_options_out_of_range_are_usage_errors(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], option: str
) -> None:
    _, err = gk(capsys, *MEMORY, *args, code=2)
    assert f"Invalid value for '{option}'" in err and "is not in the range" in err


@pytest.mark.parametrize("written", [" 5", "5 ", "1_000", "\u0665", "+5", "-1", "0x5", "\x1b[2J"])
@pytest.mark.parametrize("option", ["--after", "--limit"])
def test_integer_options_take_the_digits_0_to_9_alone(
    capsys: pytest.CaptureFixture[str], option: str, written: str
) -> None:
    # click's int() takes all but the last three as 5, 1000, 5 and 5.
    _, err = gk(capsys, *MEMORY, "events", option, written, code=2)
    assert f"Invalid value for '{option}'" in err and "in the digits 0-9" in err
    assert "\x1b" not in err  # the value is quoted escaped
    out, _ = gk(capsys, *MEMORY, "events", option, "5")
    assert out.startswith("no events")


@pytest.mark.parametrize(
    "args",
    [
        ("events", "x\x1b[2J\x1b]0;pwned\x07\u202e"),  # an extra argument
        ("run", "workflow", "x", "--input-file", "v\x1b[2J\nError: forged"),  # no such file
        ("executions", "show", "a", "b\x1b[31m"),
    ],
)
def test_arguments_click_repeats_in_its_errors_are_shown_inert(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    _, err = gk(capsys, *MEMORY, *args, code=2)
    assert "\x1b" not in err and "\u202e" not in err and "\\x1b" in err
    assert not any(line.startswith("Error: forged") for line in err.splitlines())


@pytest.mark.parametrize("args", [(), ("run",), ("audit",), ("executions",)])
def test_a_group_run_without_a_command_shows_its_help_line_by_line(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    """`govkernel` alone, the first thing a newcomer types, printed its help as one line with
    every line break shown as `\\n` (click's help reached the escaping of arguments)."""
    out, err = gk(capsys, *args, code=2)  # help: nothing is opened
    assert out == ""
    lines = err.splitlines()
    assert lines[0].startswith("Usage: govkernel") and "Commands:" in lines
    assert "\\n" not in err


@pytest.mark.parametrize(
    ("args", "where"),
    [
        (("demo", "--examples", ""), "'--examples'"),
        (("run", "knowledge-publication", ""), "'FILES...'"),
    ],
)
def test_an_empty_path_is_refused_not_taken_for_the_current_directory(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], where: str
) -> None:
    _, err = gk(capsys, *MEMORY, *args, code=2)
    assert f"Invalid value for {where}: must not be empty" in err


@pytest.mark.parametrize(
    "command", ["executions list", "executions count", "events", "audit verify", "recover"]
)
def test_nothing_found_in_memory_says_the_store_starts_empty_with_each_command(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    command: str,
) -> None:
    """A newcomer's listing on memory://, after a `run` there, found nothing and was not
    told why; a durable store's empty tenant is not said to be new."""
    note = "(the in-memory store starts empty with each command)"
    durable = f"surrealkv://{tmp_path / 'store'}"
    gk(capsys, "--store", durable, "demo")  # a store something ran on
    monkeypatch.setenv("GOVKERNEL_TENANT", "quiet")
    for store, said in (("memory://", True), ("mem://", True), (durable, False)):
        out, _ = gk(capsys, "--store", store, *command.split())
        assert (note in out) is said, (store, out)
        # Under --json too, on stderr beside what stdout holds (a script's empty list).
        out, err = gk(capsys, "--store", store, "--json", *command.split())
        json.loads(out)
        assert note not in out and (note in err) is said, (store, err)


@pytest.mark.parametrize("command", ["executions list", "executions count"])
def test_a_workflow_not_registered_is_said_beside_an_empty_json_answer(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """A script's misspelt --workflow got `[]` (or zero counts) and exit 0, and nothing else."""
    out, err = gk(capsys, *MEMORY, "--json", *command.split(), "--workflow", "knowlege_publication")
    assert json.loads(out) == [] or json.loads(out)["total"] == 0
    assert "no workflow of that name is registered here" in err


def test_an_execution_not_found_in_memory_says_the_store_starts_empty(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    note = "(the in-memory store starts empty with each command)"
    durable = f"surrealkv://{tmp_path / 'store'}"
    gk(capsys, "--store", durable, "demo")
    for store, said in (("memory://", True), (durable, False)):
        for command in ("executions show", "audit verify", "cancel"):
            _, err = gk(capsys, "--store", store, *command.split(), "wfx-none", code=2)
            assert "error: no execution 'wfx-none' in tenant 'default'" in err
            assert (note in err) is said, (store, command, err)


def test_the_largest_position_is_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = gk(capsys, *MEMORY, "events", "--after", str(2**63 - 1), "--limit", "10000")
    assert out == (
        f"no events after position {2**63 - 1} in tenant 'default'"
        " (the in-memory store starts empty with each command)\n"  # (nothing from before)
    )


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("run", "knowledge-publication", str(IMF), "--idempotency-key", ""), "--idempotency-key"),
        (("run", "knowledge-publication", str(IMF), "--publication-id", ""), "--publication-id"),
        (("run", "knowledge-publication", str(IMF), "--title", ""), "--title"),
        (("run", "knowledge-publication", str(IMF), "--title", "  "), "--title"),
        (("run", "knowledge-publication", str(IMF), "--url", ""), "--url"),
        (("run", "knowledge-publication", str(IMF), "--policy-ref", ""), "--policy-ref"),
        (("run", "knowledge-publication", str(IMF), "--required-role", ""), "--required-role"),
        (("approve", "wfx-1", "--role", "reviewer", "--approver", ""), "--approver"),
        (("approve", "wfx-1", "--role", ""), "--role"),
        (("reject", "wfx-1", "--reason", ""), "--reason"),
        (("cancel", "wfx-1", "--reason", ""), "--reason"),
    ],
)
def test_an_empty_value_is_refused_not_replaced_by_the_default(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], option: str
) -> None:
    out, err = gk(capsys, *MEMORY, *args, code=2)
    assert f"Invalid value for '{option}': must not be empty" in err
    assert out == ""  # nothing ran


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("--role", "a b"), "--role"),
        (("--role", "reviewer", "--approver", "bob\n"), "--approver"),
    ],
)
def test_a_role_or_approver_no_approval_could_name_is_refused_whatever_the_execution(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], option: str
) -> None:
    # Said as a usage error, not "no execution" first (on a store that has none).
    _, err = gk(capsys, *MEMORY, "approve", "wfx-none", *args, code=2)
    assert f"Invalid value for '{option}': must be 1-128 ASCII letters" in err
    assert "no execution" not in err


def test_an_empty_store_is_refused_rather_than_the_default_store(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _, err = gk(capsys, "--store", "", "executions", "list", code=2)
    assert "Invalid value for '--store': must not be empty" in err
    assert not (tmp_path / ".govkernel").exists()  # the default store was not opened


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_an_endless_input_file_is_refused(capsys: pytest.CaptureFixture[str], device: str) -> None:
    args = ("--kind", "imf", "--url", "https://www.imf.org/z")
    _, err = gk(capsys, *MEMORY, "run", "knowledge-publication", device, *args, code=2)
    assert err == f"error: {device}: a device, not a document\n"


@pytest.mark.parametrize(
    "command", ["approve", "reject", "cancel", "executions show", "audit verify"]
)
def test_an_execution_id_too_long_to_be_one_is_refused_not_echoed(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    _, err = gk(capsys, *MEMORY, *command.split(), "x" * 100_000, code=2)
    assert "no execution id is over 1,024" in err and len(err) < 2000


def _waiting(execution_id: str, *, version: int) -> WorkflowExecution:
    x = WorkflowExecution.start(
        execution_id=execution_id,
        tenant="default",
        workflow_name=kp.NAME,
        workflow_version=kp.VERSION,
        metadata=kp.METADATA,
        idempotency_key=f"key-{execution_id}",
        correlation_id="c",
        input={},
        at=datetime(2026, 1, 1, tzinfo=UTC),
        actor="operator",
    )
    x.state, x.version = ExecutionState.RETRY_SCHEDULED, version
    return x


class _HungUp(io.StringIO):
    """A terminal that went away: it still says it is one, and every write fails."""

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise OSError(errno.EIO, "Input/output error")


def test_a_progress_bar_that_cannot_be_drawn_stops_nothing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for n in range(5):
        (tmp_path / f"n{n}.md").write_text(f"---\nkind: fsb\nurl: https://fsb.org/{n}\n---\n{n}")
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setattr(sys, "stderr", _HungUp())
    out, _ = gk(capsys, *MEMORY, "run", "knowledge-publication", *(f"n{n}.md" for n in range(5)))
    assert "succeeded" in out


def test_json_times_keep_their_microseconds_on_a_whole_second() -> None:
    whole = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
    assert render.iso(whole) == "2026-11-26T12:00:00.000000+00:00"  # one shape for every time
    assert render.iso(whole.replace(microsecond=5)) == "2026-11-26T12:00:00.000005+00:00"


def test_a_cancelled_and_compensated_execution_is_said_to_be_so() -> None:
    x = _waiting("x", version=9)
    x.state, x.cancel_requested = ExecutionState.COMPENSATED, True
    assert failure_message(x) == "execution x was cancelled, and what it had done was undone"


def test_a_steps_output_is_cut_by_characters_not_by_escapes() -> None:
    assert render.step_output(False, "step", {"name": "日本語" * 40}) == json.dumps(
        {"name": "日本語" * 40}, ensure_ascii=False
    )
    cut = render.step_output(False, "step", {"name": "語" * 1000})
    assert cut.endswith("... (1,012 characters; --json shows all)") and "\\u" not in cut


def test_version_is_the_installed_packages(capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = gk(capsys, "--version")
    version, schema = importlib.metadata.version("govkernel"), surreal_schema.SCHEMA_VERSION
    # With the schema it writes: every build of one release says the same version (h156).
    assert out == f"govkernel {version} (store schema {schema})\n"
    for args in (("--json", "--version"), ("--version", "--json")):  # plain text, before
        out, _ = gk(capsys, *args)
        assert json.loads(out) == {"version": version, "store_schema": schema}


# -- errors ----------------------------------------------------------------------------------


def test_debug_shows_the_traceback_without_suggesting_debug(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(queries, "events_read", broken)
    _, err = gk(capsys, *MEMORY, "events", code=1)
    assert err == "error: internal error: RuntimeError: boom (--debug shows the traceback)\n"
    _, err = gk(capsys, "--debug", *MEMORY, "events", code=1)
    assert "Traceback" in err and "--debug" not in err
    assert err.endswith("error: internal error: RuntimeError: boom\n")


def test_an_error_of_your_code_passed_on_as_it_is_is_not_called_internal() -> None:
    error = RuntimeError("validator bug")
    error.add_note("raised by payout's validate_input")
    assert describe(error) == (
        1,
        "RuntimeError: validator bug (raised by payout's validate_input)"
        " (--debug shows the traceback)",
    )
    assert describe(RuntimeError("boom"))[1].startswith("internal error: RuntimeError: boom")


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("events",), "interrupted; nothing was changed"),
        (("executions", "list"), "interrupted; nothing was changed"),
        (("recover",), "resumes with `govkernel recover`"),
    ],
)
def test_an_interrupt_says_what_is_left_to_do(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    args: tuple[str, ...],
    said: str,
) -> None:
    store = ("--store", f"surrealkv://{tmp_path / 'store'}")
    gk(capsys, *store, "run", "knowledge-publication", str(IMF))
    for name in ("events_read", "recent_executions", "executions_in"):
        monkeypatch.setattr(queries, name, _interrupted)
    _, err = gk(capsys, *store, *args, code=130)
    assert said in err


def test_an_upgrade_is_said_as_it_starts_and_a_stop_after_it_does_not_deny_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A long upgrade was said only once done; and a SIGTERM held while the engine upgraded,
    raised as it answered, said "nothing was changed" of a store an older govkernel no
    longer opened (an upgrade pass, h156)."""
    url = f"surrealkv://{tmp_path / 'store'}"
    gk(capsys, "--store", url, "run", "knowledge-publication", str(IMF))
    older = surreal_schema.SCHEMA_VERSION - 1
    meta = RecordID(surreal_schema.META_TABLE, "schema")
    with SurrealStore(SurrealConfig(url)) as store:
        store.select_rows("UPSERT $m SET version = $v", {"m": meta, "v": older})
    query = SurrealStore._query

    def stopped_as_the_engine_answers(self: SurrealStore, text: str, params: Any) -> Any:
        rows = query(self, text, params)
        if "upgrade_from" in text:  # the upgrade's transaction: done, then the stop
            raise KeyboardInterrupt
        return rows

    monkeypatch.setattr(SurrealStore, "_query", stopped_as_the_engine_answers)
    _, err = gk(capsys, "--store", url, "executions", "list", code=130)
    assert err.startswith(
        f"note: upgrading the store from schema version {older} to"
        f" {surreal_schema.SCHEMA_VERSION} (a govkernel older than this one will no longer"
        " open it)\n"
    )
    assert err.endswith(
        f"interrupted as the store opened, once it had been upgraded from schema version"
        f" {older}; nothing else was changed\n"
    ), err
    monkeypatch.undo()
    with SurrealStore(SurrealConfig(url)) as store:  # it stands, and is not done again
        assert store.upgraded_from is None
        assert store.select_rows("SELECT VALUE version FROM ONLY $m", {"m": meta}) == [
            surreal_schema.SCHEMA_VERSION
        ]
        store.select_rows("UPSERT $m SET version = $v", {"m": meta, "v": older})
    # Stopped once the upgrade was done and said: not "nothing was changed" either (h157).
    monkeypatch.setattr(queries, "recent_executions", _interrupted)
    _, err = gk(capsys, "--store", url, "executions", "list", code=130)
    assert f"note: the store was upgraded from schema version {older};" in err
    assert err.endswith("interrupted; nothing else was changed\n"), err


def test_an_interrupted_audit_seal_says_the_same_command_seals_the_rest(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """It sent the operator to `recover`, which has nothing to do for seals (found by a
    crash pass: a key rotation stopped midway, then `recover`, left every seal the old
    key's)."""
    from domain.orchestration import sealing

    store = ("--store", f"surrealkv://{tmp_path / 'store'}")
    gk(capsys, *store, "run", "knowledge-publication", str(IMF))
    monkeypatch.setenv("GOVKERNEL_AUDIT_KEY", "0f1e2d3c4b5a69788796a5b4c3d2e1f0" * 2)
    monkeypatch.setattr(sealing, "seal", _interrupted)
    _, err = gk(capsys, *store, "audit", "seal", "--unsealed", code=130)
    # As given (h174: `--unsealed` was left out, and the command said sealed nothing).
    said = f"the same `govkernel --store {store[1]} audit seal --unsealed` seals the rest"
    assert said in err and "recover" not in err
    # A store it could not open, it sealed nothing of (found by a review).
    nowhere = ("--store", f"surrealkv://{tmp_path / 'nowhere'}")
    _, err = gk(capsys, *nowhere, "audit", "seal", code=2)
    assert err.rstrip().endswith("; nothing was sealed"), err


def test_a_backup_stopped_once_whole_says_it_is_whole(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Stopped while the store closed, after the copy was whole, it said "nothing was
    changed", and the same command then failed on the backup existing (h147)."""
    from composition.container import App

    store = ("--store", f"surrealkv://{tmp_path / 'store'}")
    gk(capsys, *store, "run", "knowledge-publication", str(IMF))
    closed = App.close

    def stopped_while_closing(app: App) -> None:
        closed(app)
        raise KeyboardInterrupt

    monkeypatch.setattr(App, "close", stopped_while_closing)
    _, err = gk(capsys, *store, "backup", str(tmp_path / "copy"), code=130)
    assert f"the backup in {tmp_path / 'copy'} was whole before the stop" in err, err
    assert "nothing was changed" not in err
    monkeypatch.undo()
    copy = ("--store", f"surrealkv://{tmp_path / 'copy'}")
    assert json.loads(gk(capsys, *copy, "--json", "audit", "verify")[0])["ok"]


def test_a_backup_that_cannot_be_written_is_a_usage_error_naming_why(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Where DEST cannot be written (a full disk, /proc), the fault is where it was pointed:
    exit 2, as for a DEST that exists, with what the system said."""
    from composition.container import App

    store = ("--store", f"surrealkv://{tmp_path / 'store'}")
    gk(capsys, *store, "run", "knowledge-publication", str(IMF))

    def full(app: App, destination: Path, progress: object = None) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(destination))

    monkeypatch.setattr(App, "backup", full)
    _, err = gk(capsys, *store, "backup", str(tmp_path / "copy"), code=2)
    assert f"cannot write the backup to {tmp_path / 'copy'}: No space left on device" in err


@pytest.mark.parametrize(
    ("tier", "said"),
    [
        ("Tier0", "had ended succeeded: nothing is left to do"),
        ("Tier1", "awaits approval: `govkernel approve` resumes it"),
    ],
)
def test_an_interrupt_after_the_run_stopped_says_nothing_is_left_for_recover(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tier: str,
    said: str,
) -> None:
    """Ctrl-C as the result is printed (found by an operator's pass: it sent the operator to
    `recover` for an execution that had succeeded)."""
    from composition.cli import running

    monkeypatch.setattr(running, "conclude", _interrupted)
    store = ("--store", f"surrealkv://{tmp_path / 'store'}")
    _, err = gk(capsys, *store, "run", "knowledge-publication", str(IMF), "--tier", tier, code=130)
    assert said in err and "recover" not in err


@pytest.mark.parametrize(
    ("tier", "ending", "said"),
    [
        ("Tier0", ExecutionState.SUCCEEDED, "had ended succeeded: nothing is left to do"),
        ("Tier1", ExecutionState.AWAITING_APPROVAL, "awaits approval: `govkernel approve`"),
    ],
)
def test_an_interrupt_as_the_last_commit_lands_says_where_the_execution_stands(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tier: str,
    ending: ExecutionState,
    said: str,
) -> None:
    """A signal held while the engine commits is raised as the commit returns, before the
    transition is seen (found by a pass of 400 interrupts: `recover` was offered for an
    execution that had succeeded)."""
    from composition.cli.session import Printer

    seen = Printer.__call__

    def interrupted_as_it_lands(printer: Any, execution: WorkflowExecution) -> None:
        if execution.state is ending:
            raise KeyboardInterrupt
        seen(printer, execution)

    monkeypatch.setattr(Printer, "__call__", interrupted_as_it_lands)
    store = ("--store", f"surrealkv://{tmp_path / 'store'}")
    _, err = gk(capsys, *store, "run", "knowledge-publication", str(IMF), "--tier", tier, code=130)
    assert said in err and "recover" not in err
    # In the command's words, not the library's (found by a crash and limits pass).
    assert "while it printed the progress of execution" in err and "on_transition" not in err


# What each command records, and what it takes besides the execution.
_COMMANDS = {
    "approve": ("approval", ("--role", "reviewer")),
    "reject": ("rejection", ("--reason", "no")),
    "cancel": ("cancellation", ()),
}


def _awaiting_approval(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str
) -> tuple[tuple[str, str], str, tuple[str, ...], str]:
    """A surrealkv store holding an execution awaiting approval: the store's options, the
    execution, the command's arguments and what the command records."""
    store = ("--store", f"surrealkv://{tmp_path / 'store'}")
    run = ("--json", "run", "knowledge-publication", str(IMF), "--tier", "Tier1")
    xid = json.loads(gk(capsys, *store, *run)[0])["execution_id"]
    noun, extra = _COMMANDS[command]
    return store, xid, (command, xid, *extra), noun


@pytest.mark.parametrize("command", ["approve", "reject", "cancel"])
def test_an_interrupted_command_says_whether_it_was_recorded(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    command: str,
) -> None:
    """Before its commit: nothing was recorded, and `recover` would not do it (it was said
    to); after it: the execution stands where the command left it."""
    from composition.cli import approvals

    store, xid, args, noun = _awaiting_approval(capsys, tmp_path, command)
    monkeypatch.setenv("GOVKERNEL_ACTOR", "bob")
    with monkeypatch.context() as before_its_commit:
        before_its_commit.setattr(Orchestrator, command, _interrupted)
        _, err = gk(capsys, *store, *args, code=130)
    assert f"the {noun} of {xid} was not recorded: the same command records it" in err
    monkeypatch.setattr(approvals, "finish", _interrupted)  # after it
    _, err = gk(capsys, *store, *args, code=130)
    out, _ = gk(capsys, *store, "--json", "executions", "show", xid)
    state = json.loads(out)["state"]
    assert state != "awaiting_approval" and "was not recorded" not in err
    if state in ("succeeded", "failed", "compensated", "cancelled"):
        assert f"execution {xid} had ended {state}: nothing is left to do" in err
    else:
        assert f"execution {xid} was left {state}: `govkernel recover` finishes it" in err


@pytest.mark.parametrize("command", ["approve", "reject", "cancel"])
def test_a_store_lost_mid_command_says_how_to_tell_whether_it_was_recorded(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    command: str,
) -> None:
    """A server gone as the command commits: the command cannot read it back, and said
    only that the store was unavailable (found by a server-mode pass)."""
    store, xid, args, noun = _awaiting_approval(capsys, tmp_path, command)
    monkeypatch.setenv("GOVKERNEL_ACTOR", "bob")

    def lost(*_: object, **__: object) -> None:
        raise StorageUnavailable("the connection to db:8000 was lost")

    monkeypatch.setattr(Orchestrator, command, lost)
    _, err = gk(capsys, *store, *args, code=2)
    assert f"whether the {noun} of {xid} was recorded is not known" in err
    assert f"`govkernel executions show {xid}` tells" in err


@pytest.mark.parametrize("command", ["approve", "reject", "cancel"])
def test_an_interrupt_before_the_command_read_or_after_it_ended_says_so(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    command: str,
) -> None:
    """Stopped as it read the execution (before it could write), or as the store closed
    after it was done (found by a re-test: 'recover' was offered, then 'not known')."""
    from adapters.surrealdb import store as surreal

    store, xid, args, noun = _awaiting_approval(capsys, tmp_path, command)
    monkeypatch.setenv("GOVKERNEL_ACTOR", "bob")
    with monkeypatch.context() as reading:
        reading.setattr(Orchestrator, "get", _interrupted)
        _, err = gk(capsys, *store, *args, code=130)
    assert f"the {noun} of {xid} was not recorded: the same command records it" in err
    close = surreal.SurrealStore.close

    def interrupted_as_it_closes(self: Any) -> None:
        close(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(surreal.SurrealStore, "close", interrupted_as_it_closes)
    _, err = gk(capsys, *store, *args, code=130)
    monkeypatch.undo()
    state = json.loads(gk(capsys, *store, "--json", "executions", "show", xid)[0])["state"]
    assert f"execution {xid} had ended {state}: nothing is left to do" in err


def test_an_interrupted_approval_is_judged_by_what_it_records_not_by_any_change(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Carol's approval landing as bob's was interrupted is not bob's (found by a review:
    any change of version counted as the command)."""
    store = ("--store", f"surrealkv://{tmp_path / 'store'}")
    run = ("--json", "run", "knowledge-publication", str(IMF), "--tier", "Tier2")
    xid = json.loads(gk(capsys, *store, *run, "--required-role", "legal")[0])["execution_id"]
    approve = Orchestrator.approve

    def carol_first(self: Orchestrator, execution_id: str, **_: Any) -> None:
        approve(self.acting_as("carol"), execution_id, role="legal")
        raise KeyboardInterrupt

    monkeypatch.setattr(Orchestrator, "approve", carol_first)
    monkeypatch.setenv("GOVKERNEL_ACTOR", "bob")
    _, err = gk(capsys, *store, "approve", xid, "--role", "reviewer", code=130)
    assert f"the approval of {xid} was not recorded: the same command records it" in err


@pytest.mark.parametrize(
    ("stop", "code", "said"),
    [
        (KeyboardInterrupt, 130, "interrupted; whether the approval of {xid} was recorded is not"),
        (lambda: SystemExit(3), 1, "stopped by sys.exit(3); whether the approval of {xid} was"),
    ],
)
@pytest.mark.parametrize("reread", [StorageUnavailable("gone"), KeyboardInterrupt()], ids=repr)
def test_an_interrupt_whose_outcome_cannot_be_read_says_so_and_is_what_is_said(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    stop: Callable[[], BaseException],
    code: int,
    said: str,
    reread: BaseException,
) -> None:
    """A store that cannot be read again, or a second Ctrl-C as it is: the first stop is
    what is reported, and it does not send the operator to `recover` (which would not do
    the command)."""
    store = ("--store", f"surrealkv://{tmp_path / 'store'}")
    run = ("--json", "run", "knowledge-publication", str(IMF), "--tier", "Tier1")
    xid = json.loads(gk(capsys, *store, *run)[0])["execution_id"]
    get = Orchestrator.get
    reads: list[str] = []

    def once(self: Orchestrator, execution_id: str, **kwargs: Any) -> WorkflowExecution:
        reads.append(execution_id)
        if len(reads) > 1:
            raise reread
        return get(self, execution_id, **kwargs)

    def stopped(*_: object, **__: object) -> None:
        raise stop()

    monkeypatch.setattr(Orchestrator, "get", once)
    monkeypatch.setattr(Orchestrator, "approve", stopped)
    monkeypatch.setenv("GOVKERNEL_ACTOR", "bob")
    _, err = gk(capsys, *store, "approve", xid, "--role", "reviewer", code=code)
    assert said.format(xid=xid) in err and "recover" not in err
    assert len(reads) == 2  # the command's own read, and the one after the stop


@pytest.mark.parametrize(
    "hidden", ["\u200e", "\u200f", "\u061c", "\ufeff", "\u2060", "\u202e", "\ud800", "\udfff"]
)
def test_marks_that_reorder_or_hide_text_are_shown_escaped(hidden: str) -> None:
    """A stored name or reason holding them would look like another on the terminal (and a
    lone surrogate, from a file's JSON escape, cannot be printed at all)."""
    shown = render.safe(f"alice{hidden}bob")
    assert shown == f"alice\\u{ord(hidden):04x}bob" and shown.isascii()


@pytest.mark.parametrize("control", ["\x7f", "\x80", "\x85", "\x9b", "\x9f"])
def test_delete_and_the_c1_controls_are_shown_escaped(control: str) -> None:
    """\x9b opens an escape sequence on terminals that take 8-bit controls, as \x1b[ does;
    \x85 breaks the line."""
    assert render.safe(f"ok{control}31mRED") == f"ok\\x{ord(control):02x}31mRED"


@pytest.mark.parametrize(
    "text", ["\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", "\U0001f468\u200d\U0001f469"]
)
def test_joiners_that_text_and_emoji_need_are_shown_as_they_are(text: str) -> None:
    assert render.safe(text) == text


def test_error_messages_are_terminal_safe_one_line_each() -> None:
    assert describe(Failed("a\nb\x1b[31m\u2028")) == (1, "a\\nb\\x1b[31m\\u2028")
    code, message = describe(RecordNotFound("execution", "wfx-" + "9" * 1000))
    assert code == 2 and len(message) < 200 and "..." in message  # not echoed whole
    problems = [Problem("tenant", "GOVKERNEL_TENANT", "bad\nname", None)]
    code, message = describe(ConfigurationError(problems * 2))
    assert code == 2 and message.count("\n") == 1 and "bad\\nname" in message


@pytest.mark.parametrize("denied", ["store parent", "store log", "anchor directory"])
def test_a_path_this_user_may_not_use_is_a_usage_error_not_an_internal_one(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    denied: str,
) -> None:
    """Root passes every permission check, so the refusals are planted where the operating
    system would raise them."""
    store = tmp_path / "private" / "store"
    gk(capsys, "--store", f"surrealkv://{store}", "demo")
    (tmp_path / "anchors").mkdir()
    where = {
        "store parent": tmp_path / "private",
        "store log": store / "clog",
        "anchor directory": tmp_path / "anchors",
    }[denied]
    real_stat, real_iterdir = Path.stat, Path.iterdir

    def stat(path: Path, **kwargs: Any) -> Any:
        if denied != "store log" and where in (path, *path.parents) and path != where:
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, **kwargs)

    def iterdir(path: Path) -> Any:
        if path == where:
            raise PermissionError(13, "Permission denied", str(path))
        return real_iterdir(path)

    monkeypatch.setattr(Path, "stat", stat)
    monkeypatch.setattr(Path, "iterdir", iterdir)
    args = ["--store", f"surrealkv://{store}", "executions", "list"]
    if denied == "anchor directory":
        args = ["--store", f"surrealkv://{store}", "audit", "anchor", "-o", str(where / "a.json")]
    _, err = gk(capsys, *args, code=2)
    assert "Permission denied" in err and "internal error" not in err


# -- follow-up hints -------------------------------------------------------------------------


def test_a_memory_store_suggests_no_command_that_cannot_work(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out, _ = gk(capsys, *MEMORY, "run", "knowledge-publication", str(IMF))
    assert "succeeded: capsule" in out
    assert "govkernel --store" not in out and "executions show" not in out
    assert "note           the in-memory store does not outlive this command" in out

    out, _ = gk(capsys, *MEMORY, "run", "knowledge-publication", str(IMF), "--tier", "Tier1")
    assert "awaiting approval" in out and "govkernel" not in out.split("awaiting approval")[1]
    assert "  note     the in-memory store does not outlive this command" in out
    assert "--approver names someone else" not in out


# -- terminal safety -------------------------------------------------------------------------


@pytest.fixture
def hostile_store(tmp_path: Path) -> tuple[str, str]:
    """A surrealkv store holding an execution whose stored texts carry control characters,
    written behind the domain's back (as an older version or a tampering hand could have)."""
    url = f"surrealkv://{tmp_path / 'store'}"
    settings = load_settings({"GOVKERNEL_STORE": url, "GOVKERNEL_ACTOR": "operator"}, cwd=tmp_path)
    with build_app(settings) as app:
        request = publication_request(
            [read_source(FRED)], title="T", publication_id="hostile-1", policy_refs=["P"]
        )
        x = app.orchestrator.start(kp.NAME, request.to_input(), risk_tier=ImpactTier.TIER1)
    assert x.state is ExecutionState.AWAITING_APPROVAL
    approvals = [[f"mallory{HOSTILE}", "role\x1b[2K", "2024-01-01T00:00:00+00:00"]]
    with SurrealStore(SurrealConfig(url)) as store:
        assert store.select_rows(
            "UPDATE $r SET reason = $reason",
            {"r": RecordID("audit", audit_key(x.id, 2)), "reason": HOSTILE},
        )
        assert store.select_rows(
            "UPDATE $r SET last_error = $error, approvals_json = $approvals",
            {
                "r": RecordID("execution", x.id),
                "error": HOSTILE,
                "approvals": json.dumps(approvals),
            },
        )
    return url, x.id


def test_stored_control_characters_are_escaped_in_text_output(
    capsys: pytest.CaptureFixture[str], hostile_store: tuple[str, str]
) -> None:
    url, xid = hostile_store
    out, err = gk(capsys, "--store", url, "executions", "show", xid, code=1)  # chain broken
    escaped = "ok\\n#9   succeeded         forged\\x1b[31m red\\u2028sep"
    assert f"{'last error':<12}  {escaped}" in out  # keys padded to "requested by"
    assert f"{'approvals':<12}  mallory{escaped} as role\\x1b[2K" in out
    assert escaped in next(line for line in out.splitlines() if line.startswith("2 "))
    for text in (out, err):
        assert "\x1b" not in text and "\u2028" not in text
        assert not any(line.startswith("#9") for line in text.splitlines())  # nothing forged
    assert f"audit trail of {xid} is broken at entry #2" in err and err.count("\n") == 1

    out, _ = gk(capsys, "--store", url, "audit", "verify", code=1)
    assert f"  reason      {escaped}" in out  # the first bad entry, shown field by field

    assert run_cli(["--store", url, "--json", "executions", "show", xid]) == 1  # as above
    record = json.loads(capsys.readouterr().out)  # JSON stays exact: it escapes by itself
    assert record["last_error"] == HOSTILE and record["audit"][1]["reason"] == HOSTILE
    assert record["approvals"][0]["approver"] == f"mallory{HOSTILE}"


def test_a_durable_store_still_suggests_follow_up_commands(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = f"surrealkv://{tmp_path / 'store'}"
    out, _ = gk(capsys, "--store", url, "run", "knowledge-publication", str(IMF))
    assert f"  details        govkernel --store {url} executions show wfx-" in out
    out, _ = gk(capsys, "--store", url, "run", "knowledge-publication", str(IMF), "--tier", "Tier1")
    assert f"  approve  govkernel --store {url} approve wfx-" in out
    assert "run by the approver, GOVKERNEL_ACTOR=NAME" in out and "does not outlive" not in out


def _stopped_after_its_first_step(shim: SurrealWsShim, given: Overrides, tag: str) -> Any:
    """A run on the shared store stopped after its first step, its lease held: its request."""
    settings = load_settings({"GOVKERNEL_STORE": shim.url})
    crash = evolve(given, wrap_uow_factory=lambda f: FaultInjector(f, FaultPlan(fail_at_commit=2)))
    with build_app(settings, crash) as app:
        request = publication_request(
            [read_source(IMF)], title="T", publication_id=f"p-{tag}", policy_refs=["P"]
        )
        with pytest.raises(InjectedFault):
            app.orchestrator.start(kp.NAME, request.to_input(), idempotency_key=f"k-{tag}")
    return request


@pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager")
def test_recover_on_a_shared_store_says_until_when_it_leaves_a_leased_execution_alone(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with SurrealWsShim() as shim:
        settings = load_settings({"GOVKERNEL_STORE": shim.url})
        request = _stopped_after_its_first_step(shim, Overrides(), "ws")
        out, _ = gk(capsys, "--store", shim.url, "recover")
        assert "1 execution left alone: leased by another worker (or one that stopped)" in out
        assert "recover takes it on after that" in out and "until 20" in out
        assert "further out than" not in out  # a lease as this worker's would take
        with build_app(settings) as app:
            running = (ExecutionState.RUNNING,)
            [held] = queries.executions_in(app.uow_factory, app.runtime.tenant, running)
        out, _ = gk(capsys, "--store", shim.url, "--json", "recover")
        assert json.loads(out)["left_leased"] == [  # as its neighbours, by execution_id
            {
                "execution_id": held.id,
                "lease_owner": held.lease_owner,
                "lease_expires_at": render.iso(held.lease_expires_at),
            }
        ]
        given = json.dumps(request.to_input())
        again = ("run", "workflow", kp.NAME, "--input", given, "--idempotency-key", "k-ws")
        out, _ = gk(capsys, "--store", shim.url, *again)
        assert "takes it on at its next step; if that worker died" in out
        assert "recover` resumes it once that time has passed" in out and " UTC " in out


@pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager")
def test_recover_says_a_lease_further_out_than_its_own_may_be_a_clock_ahead(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A worker whose clock was a day ahead, killed in a step, holds its execution a day on
    a shared store: said as what it may be, not as a lease to wait out (h166)."""
    with SurrealWsShim() as shim:
        ahead = Overrides(clock=FixedClock(datetime.now(UTC) + timedelta(days=1)))
        _stopped_after_its_first_step(shim, ahead, "ahead")
        out, _ = gk(capsys, "--store", shim.url, "recover")
        assert "1 execution left alone" in out
        assert (
            "(further out than this worker's lease of 0:00:30 from now: a worker with a longer"
            " lease took it, or one whose clock was ahead of this one's)"
        ) in out


def test_a_store_lost_mid_run_says_what_became_of_the_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def lost(*args: Any, **kwargs: Any) -> Any:
        raise StorageUnavailable("the connection to h:8000 was lost")

    monkeypatch.setattr(Orchestrator, "start", lost)
    store = ("--store", f"surrealkv://{tmp_path / 'store'}")
    _, err = gk(capsys, *store, "run", "knowledge-publication", str(IMF), code=2)
    assert "store unavailable: the connection to h:8000 was lost; if its start was stored," in err
    assert "`govkernel recover` finishes it; the same command with --idempotency-key idem-" in err


@pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager")
def test_an_input_refused_makes_no_store_on_a_server(capsys: pytest.CaptureFixture[str]) -> None:
    with SurrealWsShim() as shim:
        _, err = gk(
            capsys, "--store", shim.url, "run", "workflow", kp.NAME, "--input", "{}", code=2
        )
        assert "documents: must be a list of documents" in err
        _, err = gk(capsys, "--store", shim.url, "executions", "list", code=2)
        assert "nothing has run there yet" in err  # the refused run made no database


@pytest.fixture
def restored_signals() -> Iterator[None]:
    """Put back what a stop while loading leaves for the process that is exiting (here, the
    test's): inert handlers, and the stops held back, undelivered."""
    import signal

    kept = {s: signal.getsignal(s) for s in _STOPS}
    try:
        yield
    finally:
        _let_through()
        for signum, handler in kept.items():
            signal.signal(signum, handler)


_STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _let_through() -> None:
    """Stops held back as a stopped load exits: dropped, not delivered, and let through again."""
    while signal.sigtimedwait(_STOPS, 0) is not None:
        pass
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPS)


@pytest.mark.parametrize(
    ("signum", "code", "said"),
    [(2, 130, "interrupted"), (15, 143, "terminated"), (1, 129, "hung up")],
)
@pytest.mark.parametrize("lost", [False, True], ids=["raised", "its-exception-lost"])
def test_a_stop_while_the_command_loads_is_one_line(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    restored_signals: None,
    signum: int,
    code: int,
    said: str,
    lost: bool,
) -> None:
    """Its modules take about half a second to load: an operator's pass saw tracebacks of
    15-40 lines in 29 of 280 early interrupts, and a re-test silent deaths by SIGTERM. And
    one arriving while Python compiles a module (no cached bytecode) has its exception lost
    on the way: the command ran on to the end, exit 0 (5 of 80 SIGTERMs in a scan)."""
    import builtins
    import signal

    from composition import entry

    loading = builtins.__import__

    def stopped_midway(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "composition.cli":
            try:
                signal.raise_signal(signum)
            except BaseException:
                if not lost:
                    raise
        return loading(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", stopped_midway)
    monkeypatch.setattr(entry, "_arrived", [])
    with pytest.raises(SystemExit) as stopped:
        entry.main()
    assert stopped.value.code == code
    assert capsys.readouterr().err == f"error: {said} while starting; nothing was changed\n"
    signal.raise_signal(signal.SIGTERM)  # as it exits: held back, not a death by it
    assert signal.SIGTERM in signal.sigpending() and capsys.readouterr() == ("", "")
    _let_through()
    # A `--json run`'s reader gets its record on stdout, as from one stopped later.
    monkeypatch.setattr(sys, "argv", ["govkernel", "--json", "run", "workflow", "payout"])
    monkeypatch.setattr(entry, "_arrived", [])
    with pytest.raises(SystemExit):
        entry.main()
    document = json.loads(capsys.readouterr().out)
    assert document == {
        "interrupted": said,
        "execution_id": None,
        "state": None,
        "idempotency_key": None,
        "left": "nothing was started",
    }


def test_a_ctrl_c_ignored_when_the_command_started_stays_ignored_while_it_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A background job (`cmd &` in a script) starts with SIGINT ignored: the entry point
    turned it back on while modules loaded, and a Ctrl-C meant for the shell stopped it."""
    import builtins
    import signal

    from composition import entry

    loading = builtins.__import__
    seen: list[object] = []

    def watching(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "composition.cli":
            seen.append(signal.getsignal(signal.SIGINT))
        return loading(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", watching)
    monkeypatch.setattr(entry, "_arrived", [])
    monkeypatch.setattr(sys, "argv", ["govkernel", "--version"])
    # All three put back after: the command ignores them as it exits, and a test process
    # left ignoring SIGTERM hands that to every process it starts.
    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    before = {signum: signal.getsignal(signum) for signum in stops}
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with pytest.raises(SystemExit) as ended:
            entry.main()
        assert ended.value.code == 0
        assert seen == [signal.SIG_IGN]  # left ignored while loading
    finally:
        for signum, handler in before.items():
            if handler is not None:  # (None: not set from Python, so nothing to put back)
                signal.signal(signum, handler)


def test_a_run_interrupted_before_it_came_to_start_says_nothing_was_started(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """It sent the operator to `recover` (found by a re-test: 14 of 26 early interrupts)."""
    from composition.cli import running

    monkeypatch.setattr(running, "publication_request", _interrupted)
    store = ("--store", f"surrealkv://{tmp_path / 'store'}")
    _, err = gk(capsys, *store, "run", "knowledge-publication", str(IMF), code=130)
    assert err.strip() == "error: interrupted; nothing was started"


def test_a_listing_by_states_lists_an_execution_read_in_two_of_them_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As `recover` lists what it found: on a server, an execution that moved between two
    states' reads is read in both."""
    from adapters.memory import MemoryStore
    from ports.repositories import Executions

    settings = load_settings({"GOVKERNEL_STORE": "memory://"})
    request = publication_request(
        [read_source(IMF)], title="T", publication_id="p", policy_refs=["P"]
    )
    with build_app(settings, Overrides(store=MemoryStore())) as app:
        pending = app.orchestrator.start(kp.NAME, request.to_input(), run=False)
        read = Executions.in_state

        def read_twice(repo: Executions, state: ExecutionState, *a: Any, **k: Any) -> Any:
            return read(repo, ExecutionState.PENDING, *a, **k) + read(repo, state, *a, **k)

        monkeypatch.setattr(Executions, "in_state", read_twice)
        states = (ExecutionState.PENDING, ExecutionState.RUNNING)
        found = queries.executions_in(app.uow_factory, app.runtime.tenant, states)
    assert [x.id for x in found] == [pending.id]


@pytest.mark.parametrize(
    "args",
    [
        ("executions", "--json", "list"),
        ("audit", "--json", "verify"),
        ("run", "--json", "knowledge-publication", str(IMF)),
    ],
    ids=["executions", "audit", "run"],
)
def test_json_may_follow_a_command_group(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    out, _ = gk(capsys, *MEMORY, *args)
    assert isinstance(json.loads(out), list | dict)


@pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager")
def test_a_run_repeated_under_its_key_is_shown_though_checks_tightened_since(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Repeating a run with its --idempotency-key shows its execution: one started by an
    earlier release under looser checks too (a file given twice was, before this one)."""
    twice = ("knowledge-publication", str(IMF), str(IMF), "--idempotency-key", "k1")
    with SurrealWsShim() as shim:
        for store in (f"surrealkv://{tmp_path / 'store'}", shim.url):
            with monkeypatch.context() as earlier_release:
                earlier_release.setattr(kp, "_no_repeats", lambda drafts: None)
                out, _ = gk(capsys, "--store", store, "--json", "run", *twice)
            xid = json.loads(out)["execution_id"]
            _, err = gk(
                capsys, "--store", store, "run", *twice[:3], "--idempotency-key", "k2", code=2
            )
            assert f"{IMF}: repeats {IMF} (the same source_url and content)" in err  # new keys
            out, _ = gk(capsys, "--store", store, "run", *twice)
            assert f"idempotency key 'k1' already started {xid}" in out
            request = publication_request(
                [read_source(IMF)] * 2,
                title="T",
                publication_id="p",
                policy_refs=["P"],
                strict=False,
            )
            given = json.dumps(request.to_input())
            again = ("run", "workflow", kp.NAME, "--input", given, "--idempotency-key", "k1")
            out, _ = gk(capsys, "--store", store, *again)
            assert f"idempotency key 'k1' already started {xid}" in out
            _, err = gk(capsys, "--store", store, *again[:-1], "k3", code=2)
            assert "repeats documents[0]" in err


def test_ctrl_c_in_a_step_says_which_step_it_stopped(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """click hands Ctrl-C on as an Abort: the step's note is on what it was raised from."""
    from domain.services.knowledge import KnowledgeService

    monkeypatch.setattr(KnowledgeService, "generate_analysis", _interrupted)
    store = ("--store", f"surrealkv://{tmp_path / 'store'}")
    _, err = gk(capsys, *store, "run", "knowledge-publication", str(IMF), code=130)
    assert "error: interrupted while step analyse of execution wfx-" in err
    assert "was left running: `govkernel recover` finishes it" in err


def test_ctrl_c_in_a_first_step_names_no_execution_id_and_says_how_to_start_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The first step commits with the start: stopped in it, the execution's id is no
    stored execution's (a re-test looked it up, and found none)."""
    from domain.services.knowledge import KnowledgeService

    monkeypatch.setattr(KnowledgeService, "ingest", _interrupted)
    store = ("--store", f"surrealkv://{tmp_path / 'store'}")
    run = ("run", "knowledge-publication", str(IMF), "--idempotency-key", "k1")
    out, err = gk(capsys, *store, "--json", *run, code=130)
    assert "error: interrupted while step ingest ran, the first step of an execution not" in err
    assert "wfx-" not in err and "recover" not in err
    assert "the same command with --idempotency-key k1 starts it, never twice" in err
    record = json.loads(out)
    assert record["execution_id"] is None and record["idempotency_key"] == "k1"
    monkeypatch.undo()
    assert json.loads(gk(capsys, *store, "--json", "executions", "list")[0]) == []
    assert json.loads(gk(capsys, *store, "--json", *run)[0])["state"] == "succeeded"


def test_a_signal_after_the_command_finished_leaves_its_exit_status() -> None:
    """Found by a re-test: 21 of 80 runs signalled as they ended died by the signal, their
    exit status lost, though the work was done and the store closed."""
    import subprocess
    import sys

    script = (
        "import os, signal, sys\n"
        "from composition.cli import command as cli\n"
        "exit = sys.exit\n"
        "def exiting(code):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    exit(code)\n"
        "cli.run_cli = lambda argv=None: 3\n"
        "sys.exit = exiting\n"
        "cli.main()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode == 3, done.stderr


@pytest.mark.parametrize("group", ["run", "executions", "audit"])
def test_a_command_groups_help_gives_the_exit_statuses_as_its_commands_do(
    capsys: pytest.CaptureFixture[str], group: str
) -> None:
    out, _ = gk(capsys, group, "--help")
    assert "Exit statuses: 0 ok; 1 denied, failed or verification failure; 2 usage" in out


def test_a_log_seal_that_cannot_be_written_is_said(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A store directory that refuses new files (`chattr +i`, a read-only mount of it) works
    on, but its seal stays behind: the next open checks the log against less."""
    store = ("--store", f"surrealkv://{tmp_path / 'store'}")
    gk(capsys, *store, "run", "knowledge-publication", str(FRED))
    real_replace = os.replace

    def refused(source: Any, target: Any) -> None:
        if str(target).endswith("govkernel.seal"):
            raise PermissionError(1, "Operation not permitted")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", refused)
    _, err = gk(capsys, *store, "run", "knowledge-publication", str(IMF))
    assert "note: the store's log seal (govkernel.seal) could not be written" in err
    assert "(Operation not permitted)" in err
    monkeypatch.setattr(os, "replace", real_replace)
    _, err = gk(capsys, *store, "executions", "list")
    assert "log seal" not in err


def test_times_are_shown_with_their_years_in_four_digits() -> None:
    """strftime's %Y wrote the year 1 as `1` (`--json` said 0001)."""
    assert render.when(datetime(1, 1, 1, tzinfo=UTC)) == "0001-01-01 00:00:00"
    assert render.when(datetime(2026, 11, 27, 9, 5, 7, 999_999, tzinfo=UTC)) == (
        "2026-11-27 09:05:07"
    )


def test_a_config_path_the_file_system_encoding_cannot_spell_is_said_so(tmp_path: Path) -> None:
    """In the C locale without UTF-8 mode, a non-ASCII name read as holding a NUL."""
    import subprocess

    env = os.environ | {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "composition.cli", "--config", "/tmp/\u00fc.toml", "workflows"],
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "cannot be named in this system's file name encoding" in done.stderr


@pytest.mark.parametrize("seeded", [True, False], ids=["known-whole", "made-by-it"])
@pytest.mark.parametrize("removed", ["clog", ""])
def test_a_command_whose_store_was_removed_under_it_does_not_say_it_succeeded(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    removed: str,
    seeded: bool,
) -> None:
    """The store's log (or its whole directory) deleted while a run held it: the run said
    `succeeded`, exit 0, and the next command found its work gone (found by a crash and
    limits pass); also for a store the run itself made, whose size was never known whole
    (found by a review)."""
    from adapters.surrealdb.store import SurrealStore

    path = tmp_path / "store"
    store = ("--store", f"surrealkv://{path}")
    if seeded:
        gk(capsys, *store, "run", "knowledge-publication", str(FRED))  # a log known whole
    closing = SurrealStore.close

    def removed_first(self: SurrealStore) -> None:
        shutil.rmtree(path / removed, ignore_errors=True)
        closing(self)

    monkeypatch.setattr(SurrealStore, "close", removed_first)
    _, err = gk(capsys, *store, "run", "knowledge-publication", str(IMF), code=2)
    said = "was removed or moved while" if removed == "" else "was cut while this process held it"
    assert said in err and "what was written since may be lost" in err
    assert "the next command refuses the store" in err


def test_a_store_removed_after_the_last_commit_is_not_reported_as_kept(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Removed between the run's last commit and its report: `succeeded` (and JSON saying
    so) was printed, then the error (found by a re-test)."""
    from domain.orchestration.orchestrator import Orchestrator

    path = tmp_path / "store"
    store = ("--store", f"surrealkv://{path}")
    gk(capsys, *store, "run", "knowledge-publication", str(FRED))
    starting = Orchestrator.start

    def removed_after(self: Orchestrator, *args: Any, **kwargs: Any) -> Any:
        done = starting(self, *args, **kwargs)
        shutil.rmtree(path / "clog")
        return done

    monkeypatch.setattr(Orchestrator, "start", removed_after)
    out, err = gk(capsys, *store, "--json", "run", "knowledge-publication", str(IMF), code=2)
    assert out == "" and "was cut while this process held it" in err


def test_a_run_whose_store_goes_mid_run_stops_and_sends_nobody_to_recover(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Its next commit refused, it said `recover` would finish what a store that is gone
    holds (found by a review)."""
    from adapters.surrealdb.store import LogSeal
    from domain.services.knowledge import KnowledgeService

    monkeypatch.setattr(LogSeal, "EVERY", 0.0)  # the log's size looked at after each commit
    path = tmp_path / "store"
    analyse = KnowledgeService.generate_analysis

    def store_removed_first(*args: Any, **kwargs: Any) -> Any:
        shutil.rmtree(path)
        return analyse(*args, **kwargs)

    monkeypatch.setattr(KnowledgeService, "generate_analysis", store_removed_first)
    store = ("--store", f"surrealkv://{path}")
    _, err = gk(capsys, *store, "run", "knowledge-publication", str(FRED), code=2)
    assert "was removed or moved while this process held it" in err
    assert "restored from a backup, or the work done again in a new one" in err
    assert "recover" not in err
    monkeypatch.setattr(KnowledgeService, "generate_analysis", analyse)
    _, err = gk(capsys, *store, "run", "knowledge-publication", str(FRED), code=2)
    assert "was removed or moved while a process" in err and "remove store.lock beside it" in err
    assert "if it was moved, move it back" in err
    assert not path.exists()  # the next run made no empty store in its place


def test_a_second_signal_while_the_command_loads_is_not_a_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, restored_signals: None
) -> None:
    """SIGINT then SIGTERM a moment apart, both while loading: the second raised inside the
    handling of the first, a traceback and no record (found by a re-test)."""
    import builtins
    import signal

    from composition import entry

    loading = builtins.__import__

    def stopped_twice(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "composition.cli":
            try:
                signal.raise_signal(signal.SIGINT)
            finally:
                signal.raise_signal(signal.SIGTERM)  # as the first is being handled
        return loading(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", stopped_twice)
    monkeypatch.setattr(entry, "_arrived", [])
    monkeypatch.setattr(sys, "argv", ["govkernel", "--json", "run", "workflow", "payout"])
    with pytest.raises(SystemExit) as stopped:
        entry.main()
    assert stopped.value.code == 130  # the first one's
    out, err = capsys.readouterr()
    assert err == "error: interrupted while starting; nothing was changed\n"
    assert json.loads(out)["interrupted"] == "interrupted"
    # The second was seen by the handler as the first was being said: recorded only.
    assert entry._arrived == [signal.SIGINT, signal.SIGTERM]


def test_a_run_interrupted_after_its_store_went_sends_nobody_to_recover(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Stopped in a step after the directory was removed, before any commit looked at the
    log: it said `recover` would finish a run in a store that is gone (found by a re-test)."""
    from domain.services.knowledge import KnowledgeService

    path = tmp_path / "store"

    def removed_then_stopped(*args: Any, **kwargs: Any) -> Any:
        shutil.rmtree(path)
        raise KeyboardInterrupt

    monkeypatch.setattr(KnowledgeService, "generate_analysis", removed_then_stopped)
    store = ("--store", f"surrealkv://{path}")
    out, err = gk(capsys, *store, "--json", "run", "knowledge-publication", str(FRED), code=130)
    assert "restored from a backup, or the work done again in a new one" in err
    assert "recover" not in err and "recover" not in json.loads(out)["left"]


def test_a_demo_that_fails_gives_the_demos_json_document_all_the_same(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """It gave a bare execution record, where a script reads `execution` (found by a JSON
    consumer's pass)."""
    examples = tmp_path / "examples"
    examples.mkdir()
    (examples / "social.md").write_text(
        "---\nkind: imf\nurl: https://twitter.com/x\n---\n# T\n\nHello world.\n"
    )
    out, _ = gk(capsys, *MEMORY, "demo", "--examples", str(examples), "--json", code=1)
    document = json.loads(out)
    assert set(document) == {"execution", "executions", "verification", "events"}
    assert document["execution"]["state"] == "failed"
    assert document["executions"] is document["verification"] is document["events"] is None


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "a b",
        "it's",
        "nl\nstore",
        "\t\x1b]0;t\x07",
        "rtl\u202eend",
        "x\x85",
        "a\\nb\x01",  # a backslash where the $'...' form is needed: taken as written
        "\udcff\udc80",
    ],
)
def test_a_suggested_command_gives_a_path_back_whole_when_pasted(value: str) -> None:
    """`--store 'surrealkv:///tmp/nl\\nstore'` was suggested for a path with a line break:
    inside single quotes `\\n` stays two characters, and the store was not found."""
    word = render.shell_word(value)
    assert render.safe(word) == word  # inert on the terminal it is printed to
    for locale in ("C.UTF-8", "C"):  # bash's \u form gave other bytes in the C locale
        echoed = subprocess.run(
            ["bash", "-c", f"printf %s {word}"],
            capture_output=True,
            check=True,
            env={**os.environ, "LC_ALL": locale},
        )
        assert echoed.stdout == os.fsencode(value), locale


def test_a_progress_bar_is_drawn_a_few_hundred_times_not_once_an_item(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`audit seal` over 18,740 executions drew its bar 18,741 times (h147)."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setattr(sys, "stderr", terminal)
    for count in (399, 20_000):
        terminal.seek(0)
        terminal.truncate()
        with streams.progress_bar(range(count), "sealing") as items:
            assert sum(1 for _ in items) == count
        drawn = terminal.getvalue().count("sealing")
        assert 50 < drawn <= streams.REDRAWS + 10, (count, drawn)
        assert f"{count}/{count}" in terminal.getvalue()


def test_a_store_every_user_may_write_to_is_said_to_be_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Made so by an older govkernel under umask 000 (or by hand), it was used without a
    word (h149)."""
    store = ("--store", f"surrealkv://{tmp_path / 'store'}")
    gk(capsys, *store, "run", "knowledge-publication", str(IMF))
    _, err = gk(capsys, *store, "executions", "list")
    assert "writable by every user" not in err
    (tmp_path / "store").chmod(0o777)
    _, err = gk(capsys, *store, "executions", "list")
    assert f"note: the store's directory {tmp_path / 'store'} is writable by every user" in err
