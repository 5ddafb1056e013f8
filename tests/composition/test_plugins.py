"""Your own workflows for the CLI: the `workflows` setting, what it may name, and the
commands that run, list and recover them."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import subprocess
import sys
import traceback
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import domain
from composition import plugins
from composition.cli import run_cli
from composition.container import Overrides, build_app
from composition.settings import ConfigurationError, Settings, load_settings
from composition.wiring import workflow_registry
from domain.model.errors import InvalidInput
from domain.model.execution import WorkflowExecution
from domain.model.lifecycle import ExecutionState
from domain.orchestration.definition import Step, WorkflowDefinition
from domain.orchestration.orchestrator import Orchestrator
from domain.workflows import knowledge_publication as kp
from tests.composition.test_cli import FRED, Cli, clean_env
from tests.workflow.harness import request

# A module of a service's own, as a project would keep it beside its configuration.
FLOWS = """
from datetime import timedelta
from domain.orchestration.definition import RetryableError, RetryPolicy, Step, WorkflowDefinition
from domain.workflows import knowledge_publication as kp

def reserve(uow, ctx):
    return {"reserved": ctx.input["amount"]}

payout = WorkflowDefinition(
    name="payout", version="1", metadata=kp.METADATA,
    steps=(Step("reserve", reserve, side_effecting=True), Step("settle", lambda u, c: {})),
    compensation=Step("release", lambda u, c: {"released": True}),
)
refund = WorkflowDefinition(
    name="refund", version="2", metadata=kp.METADATA, steps=(Step("pay", lambda u, c: {}),)
)
as_list = [payout, refund]
as_mapping = {"payout": payout}
misnamed = {"payouts": payout}
not_a_workflow = [payout, 3]
number = 42

def registry(service):
    assert service is not None
    return {"refund": refund}

def no_arguments():
    return payout

def same_version_other_steps():
    return WorkflowDefinition(
        name=kp.NAME, version="1", metadata=kp.METADATA, steps=(Step("noop", lambda u, c: {}),)
    )

def with_the_built_ins(service):
    from composition.wiring import workflow_registry
    return {**workflow_registry(service), "refund": refund}

def replaces_the_built_in():
    return WorkflowDefinition(
        name=kp.NAME, version="9", metadata=kp.METADATA, steps=(Step("noop", lambda u, c: {}),)
    )

def raises(service):
    raise LookupError("no such\\nregistry")

def exits():
    raise SystemExit(0)

def two_arguments(service, registry):
    return []

def typeerror_of_its_own(service):
    return len(5)

empty_list = []
empty_mapping = {}

def gives_nothing():
    return []

def later(uow, ctx):
    raise RetryableError("the ledger is down")

flaky = WorkflowDefinition(
    name="flaky", version="1", metadata=kp.METADATA,
    steps=(Step("pay", later, retry=RetryPolicy(max_attempts=3, backoff=timedelta(hours=1))),),
)

backwards = WorkflowDefinition(  # steps named against the alphabet
    name="backwards", version="1", metadata=kp.METADATA,
    steps=(Step("zulu", lambda u, c: {"z": 1}), Step("alpha", lambda u, c: {"a": 1})),
)

def quits(uow, ctx):
    import sys
    sys.exit(3)  # a helper's argparse, say

quitter = WorkflowDefinition(
    name="quitter", version="1", metadata=kp.METADATA,
    steps=(Step("check", lambda u, c: {}), Step("quit", quits)),
)

def fails(uow, ctx):
    raise ValueError("declined")

first_quits = WorkflowDefinition(
    name="first_quits", version="1", metadata=kp.METADATA, steps=(Step("quit", quits),)
)

declines = WorkflowDefinition(
    name="declines", version="1", metadata=kp.METADATA, steps=(Step("pay", fails),)
)

def shouts(uow, ctx):
    raise ValueError("\x1b[31mdeclined\x1b[0m")

shouting = WorkflowDefinition(
    name="shouting", version="1", metadata=kp.METADATA, steps=(Step("pay", shouts),)
)

undo_quits = WorkflowDefinition(
    name="undo_quits", version="1", metadata=kp.METADATA,
    steps=(Step("reserve", lambda u, c: {}, side_effecting=True), Step("pay", fails)),
    compensation=Step("release", quits),
)

def release_later(uow, ctx):
    raise RetryableError("the ledger is down")

def approved(uow, ctx):
    from domain.services.governance import ApprovalRequired
    if not ctx.execution.approvals:
        raise ApprovalRequired("pay", ["needs an approval"])

def undoing_later(name, *gate):
    return WorkflowDefinition(
        name=name, version="1", metadata=kp.METADATA,
        steps=(Step("reserve", lambda u, c: {}, side_effecting=True), *gate, Step("pay", fails)),
        compensation=Step(
            "release", release_later, retry=RetryPolicy(max_attempts=3, backoff=timedelta(hours=1))
        ),
    )

undo_later = undoing_later("undo_later")
approved_undo_later = undoing_later("approved_undo_later", Step("gate", approved))
both_undo_later = [undo_later, approved_undo_later]

def where_streams_go(uow, ctx):
    import os
    return {str(fd): os.readlink(f"/proc/self/fd/{fd}") for fd in (0, 1, 2)}

streams = WorkflowDefinition(
    name="streams", version="1", metadata=kp.METADATA, steps=(Step("look", where_streams_go),)
)

class Holder:
    inner = payout

class Killed(BaseException):  # as gevent's GreenletExit is
    pass

def killed(uow, ctx):
    raise Killed("by the event loop")

greenlet = WorkflowDefinition(
    name="greenlet", version="1", metadata=kp.METADATA,
    steps=(Step("first", lambda u, c: {}), Step("check", killed)),
)

def own_publication():  # a service's own version of the built-in workflow
    return WorkflowDefinition(
        name=kp.NAME, version="2", metadata=kp.METADATA,
        steps=(
            Step("ingest", lambda u, c: {"rows": 5}),
            Step("verify", lambda u, c: {"verified": False, "chunks": "many"}),
            Step("publish", lambda u, c: {"capsule_id": 7}),
        ),
    )

# Steps that share names with knowledge_publication's, saying other things.
lookalike = WorkflowDefinition(
    name="lookalike", version="1", metadata=kp.METADATA,
    steps=(
        Step("ingest", lambda u, c: {"source_ids": 3}),
        Step("verify", lambda u, c: {"verified": False, "problem": "checksum mismatch"}),
        Step("publish", lambda u, c: "capsule_id=abc"),
    ),
)

print = print  # a builtin, named by mistake: never called
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project directory holding `flows_<n>.py`, importable as `flows`... once on sys.path."""
    name = f"flows_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(FLOWS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # whatever the import adds, undone
    yield tmp_path
    sys.modules.pop(name, None)


def module(project: Path) -> str:
    return next(project.glob("flows_*.py")).stem


def names_of(spec: str | list[str], project: Path) -> dict[str, str]:
    specs = [spec] if isinstance(spec, str) else spec
    settings = Settings(store_url="memory://", workflows=tuple(specs))
    with build_app(settings) as app:
        return {name: d.version for name, d in app.workflows.items()}


def test_the_setting_from_the_environment_and_from_a_file(tmp_path: Path) -> None:
    env = {"GOVKERNEL_WORKFLOWS": " pay.flows:registry , pay.more:FLOWS.v2 "}
    s = load_settings(env, cwd=tmp_path)
    assert s.workflows == ("pay.flows:registry", "pay.more:FLOWS.v2")
    assert s.sources["workflows"] == "GOVKERNEL_WORKFLOWS"
    assert load_settings({"GOVKERNEL_WORKFLOWS": ""}, cwd=tmp_path).workflows == ()
    assert load_settings({}, cwd=tmp_path).workflows == ()
    for text, expected in (
        ('workflows = ["a:b", "c.d:e"]', ("a:b", "c.d:e")),
        ('workflows = "a:b"', ("a:b",)),
        ("workflows = []", ()),
    ):
        path = tmp_path / "c.toml"
        path.write_text(text)
        assert load_settings({}, config_file=path, cwd=tmp_path).workflows == expected


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("flows", "'flows' is not a module:attribute reference"),
        ("flows:", "'flows:' is not a module:attribute reference"),
        ("a:b,", "'' is not a module:attribute reference"),
        ("a b:c", "'a b:c' is not a module:attribute reference"),
        ("import os; os:x", "is not a module:attribute reference"),
        ("a:b,c:d,a:b", "names 'a:b' twice"),
    ],
)
def test_a_reference_that_is_no_reference_is_refused(tmp_path: Path, value: str, said: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings({"GOVKERNEL_WORKFLOWS": value}, cwd=tmp_path)
    assert said in str(caught.value) and "GOVKERNEL_WORKFLOWS" in str(caught.value)


def test_a_file_value_of_another_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("workflows = [1, 2]")
    with pytest.raises(ConfigurationError, match="must be a list of strings, and holds a int"):
        load_settings({}, config_file=path, cwd=tmp_path)
    path.write_text("workflows = 3")
    with pytest.raises(ConfigurationError, match="must be a string or a list of strings, got int"):
        load_settings({}, config_file=path, cwd=tmp_path)


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [
        ("with_the_built_ins", {"refund": "2"}),
        ("payout", {"payout": "1"}),
        ("as_list", {"payout": "1", "refund": "2"}),
        ("as_mapping", {"payout": "1"}),
        ("registry", {"refund": "2"}),
        ("no_arguments", {"payout": "1"}),
        ("Holder.inner", {"payout": "1"}),
    ],
)
def test_what_a_reference_may_name_is_added_to_the_built_in_workflows(
    project: Path, attribute: str, expected: dict[str, str]
) -> None:
    assert names_of(f"{module(project)}:{attribute}", project) == {kp.NAME: "1"} | expected


def test_a_workflow_of_a_built_in_name_replaces_it(project: Path) -> None:
    assert names_of(f"{module(project)}:replaces_the_built_in", project) == {kp.NAME: "9"}


@pytest.mark.parametrize(
    ("attribute", "said"),
    [
        ("nope", "has no attribute 'nope'"),
        ("misnamed", "'payouts' maps to the workflow named 'payout'"),
        ("not_a_workflow", "holds a int, not a workflow"),
        ("number", "is a int; give a WorkflowDefinition"),
        ("raises", r"calling it raised LookupError: no such registry"),
        ("same_version_other_steps", "version '1' is built in: give yours another name"),
        ("print", "is a builtin_function_or_method, not a function of yours"),
        ("exits", "calling it raised SystemExit: 0"),
        # A reference that cannot be called so is said as such, not as its own TypeError.
        (
            "two_arguments",
            "takes (service, registry): give a function of no argument, or of one (the knowledge",
        ),
        ("typeerror_of_its_own", "calling it raised TypeError: object of type 'int' has no len"),
        ("empty_list", "gives no workflows"),
        ("empty_mapping", "gives no workflows"),
        ("gives_nothing", "gives no workflows"),
    ],
)
def test_a_reference_that_gives_no_workflows_is_a_configuration_error(
    project: Path, attribute: str, said: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        names_of(f"{module(project)}:{attribute}", project)
    assert said in str(caught.value) and "\n  - workflows:" in str(caught.value)


def test_a_module_that_cannot_be_imported_is_named(project: Path) -> None:
    (project / "broken_mod.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ConfigurationError) as caught:
        names_of(["nowhere.at_all:x", "broken_mod:x"], project)
    said = str(caught.value)
    assert "nowhere.at_all:x: cannot import nowhere.at_all: no module named 'nowhere'" in said
    # Where it was looked for, and what puts it there (found by a README walk: run from
    # another directory, it said no more).
    assert f"(looked for in the working directory {Path.cwd()}, " in said
    assert "PYTHONPATH: run from the directory holding nowhere, or add that directory to" in said
    assert "broken_mod:x: importing broken_mod raised RuntimeError: boom" in said
    # Raised from the module's own error: its traceback (what --debug prints) has its line.
    assert isinstance(caught.value.__cause__, RuntimeError)
    shown = "".join(traceback.format_exception(caught.value))
    assert f'File "{project / "broken_mod.py"}", line 1' in shown
    sys.modules.pop("broken_mod", None)


def test_a_package_of_yours_hidden_by_one_of_govkernels_is_said_to_be(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "adapters").mkdir()
    (project / "adapters" / "payments.py").write_text("x = 1\n")
    with pytest.raises(ConfigurationError) as caught:
        names_of("adapters.payments:x", project)
    assert "(adapters is govkernel's own package, which hides one of yours" in str(caught.value)
    with pytest.raises(ConfigurationError) as named:  # an attribute of "yours", likewise
        names_of("adapters:payout", project)
    assert "adapters has no attribute 'payout' (adapters is govkernel's own" in str(named.value)
    (project / "ports" / "flows").mkdir(parents=True)  # a namespace package, no __init__.py
    (project / "ports" / "flows" / "payout.py").write_text("payout = 1\n")
    with pytest.raises(ConfigurationError) as nested:
        names_of("ports.flows.payout:payout", project)
    assert "(ports is govkernel's own package, which hides one" in str(nested.value)
    # A typo of govkernel's own module beside a data directory of that name, or run from
    # govkernel's own source: no hint.
    (project / "domain").mkdir()
    (project / "domain" / "example.org.zone").write_text("zone data\n")
    with pytest.raises(ConfigurationError) as beside_data:
        names_of("domain.workflows.knowledge_publication:definitoin", project)
    assert "has no attribute 'definitoin'" in str(beside_data.value)
    assert "hides" not in str(beside_data.value)
    monkeypatch.chdir(Path(domain.__file__).parents[1])
    with pytest.raises(ConfigurationError) as mistyped:
        names_of("domain.workflows.knowledge_publicaton:definition", project)
    assert "no module named 'domain.workflows.knowledge_publicaton'" in str(mistyped.value)
    assert "hides" not in str(mistyped.value)


def test_a_module_that_exits_as_it_is_imported_is_a_configuration_error(project: Path) -> None:
    # Not the end of the command, with a status a cron job would read as success.
    (project / "exits_mod.py").write_text("import sys\nsys.exit(0)\n")
    with pytest.raises(ConfigurationError, match="importing exits_mod raised SystemExit: 0"):
        names_of("exits_mod:x", project)
    sys.modules.pop("exits_mod", None)


def test_two_references_giving_one_name_are_refused(project: Path) -> None:
    with pytest.raises(ConfigurationError, match="gives workflow 'payout' also by"):
        names_of([f"{module(project)}:payout", f"{module(project)}:as_mapping"], project)


def test_one_reference_giving_a_name_twice_says_so(project: Path) -> None:
    (project / "twice.py").write_text(
        f"from {module(project)} import payout\nfrom attrs import evolve\n"
        "both = [payout, evolve(payout, version='2')]\n"
    )
    with pytest.raises(ConfigurationError) as caught:
        names_of("twice:both", project)
    assert "twice:both: gives workflow 'payout' more than once" in str(caught.value)
    assert "name earlier versions in retired_workflows" in str(caught.value)
    sys.modules.pop("twice", None)


def test_the_current_directory_is_searched_as_python_m_would(project: Path) -> None:
    here = str(project)
    sys.path[:] = [p for p in sys.path if p not in ("", ".", here)]
    assert names_of(f"{module(project)}:payout", project)["payout"] == "1"
    assert sys.path[-1] == here  # kept for the module's later imports, behind the rest


def test_workflows_given_in_code_win_over_the_setting(project: Path) -> None:
    settings = Settings(store_url="memory://", workflows=(f"{module(project)}:as_list",))
    with build_app(settings, Overrides(workflows=workflow_registry)) as app:
        assert set(app.workflows) == {kp.NAME}
    with build_app(Settings(store_url="memory://")) as app:
        assert plugins.registry(app.settings, workflow_registry) is None


def test_an_orchestrator_refuses_a_workflow_under_another_name() -> None:
    definition = WorkflowDefinition(
        name="payout", version="1", metadata=kp.METADATA, steps=(Step("s", lambda u, c: {}),)
    )
    with build_app(Settings(store_url="memory://")) as app:
        with pytest.raises(ValueError, match="'pay' maps to 'payout'"):
            Orchestrator(app.uow_factory, app.runtime, {"pay": definition})
        with pytest.raises(ValueError, match="'x' maps to 'int'"):
            Orchestrator(app.uow_factory, app.runtime, {"x": 3})  # type: ignore[dict-item]


@pytest.mark.parametrize("worker_id", ["", "vm/28984", "worker 1", "wörker", "{8f1c}", "_w"])
def test_worker_ids_of_any_one_line_are_taken(worker_id: str) -> None:
    """(The first version of the check refused these, which services build from host names,
    process ids and environment variables.)"""
    with build_app(Settings(store_url="memory://")) as app:
        orchestrator = Orchestrator(
            app.uow_factory, app.runtime, {kp.NAME: app.workflows[kp.NAME]}, worker_id=worker_id
        )
        assert orchestrator.worker_id == (worker_id or orchestrator.worker_id)
        assert orchestrator.worker_id


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"workflows": "as-a-list"}, "workflows must be a mapping of name to WorkflowDef"),
        ({"lease_ttl": timedelta(0)}, "lease_ttl must be a positive timedelta"),
        ({"lease_ttl": -timedelta(seconds=1)}, "lease_ttl must be a positive timedelta"),
        ({"lease_ttl": 30}, "lease_ttl must be a positive timedelta, got 30"),
        ({"worker_id": "a b\n"}, "worker_id"),
        ({"retired": "payout"}, "retired must be a list of WorkflowDefinition"),
        ({"max_inline_wait": 5}, "max_inline_wait must be a timedelta of 0 or more, got 5"),
        ({"max_inline_wait": -timedelta(seconds=1)}, "max_inline_wait must be a timedelta"),
        ({"sleep": None}, "sleep must be a function of seconds, got None"),
        ({"on_transition": "log"}, "on_transition must be a function of the execution"),
    ],
    ids=[
        "list",
        "zero-lease",
        "negative-lease",
        "int-lease",
        "worker-id",
        "retired-text",
        "int-wait",
        "negative-wait",
        "no-sleep",
        "text-hook",
    ],
)
def test_an_orchestrator_refuses_arguments_it_cannot_work_with_by_name(
    arguments: dict[str, Any], problem: str
) -> None:
    """Before, each was accepted: a lease of zero left the execution running for good, a
    number for a lease was a TypeError at the first step, a list of workflows a TypeError; a
    number of seconds for the inline wait, or no sleep, a TypeError at the first retry, with
    the execution left under the lease."""
    definition = WorkflowDefinition(
        name="payout", version="1", metadata=kp.METADATA, steps=(Step("s", lambda u, c: {}),)
    )
    with build_app(Settings(store_url="memory://")) as app:
        given: dict[str, Any] = {"workflows": {"payout": definition}} | arguments
        if given["workflows"] == "as-a-list":
            given["workflows"] = [definition]
        with pytest.raises((ValueError, InvalidInput), match=problem):
            Orchestrator(app.uow_factory, app.runtime, **given)


# -- through the command line ---------------------------------------------------------------


@pytest.fixture
def cli(project: Path) -> tuple[Cli, dict[str, str]]:
    return Cli(project / "store", project), {"GOVKERNEL_WORKFLOWS": f"{module(project)}:as_list"}


def test_the_cli_lists_runs_and_reuses_your_workflows(cli: tuple[Cli, dict[str, str]]) -> None:
    gk, env = cli
    listed = gk.json("workflows", env=env)["workflows"]
    assert [(w["name"], w["version"]) for w in listed] == [
        (kp.NAME, "1"),
        ("payout", "1"),
        ("refund", "2"),
    ]
    assert listed[1]["compensation"] == "release" and listed[1]["steps"][0] == {
        "name": "reserve",
        "side_effecting": True,
    }
    assert not gk.store.exists()  # listing opens no store
    table = gk("workflows", env=env).stdout
    assert "payout" in table and "reserve > settle" in table and "\\n" not in table

    ran = gk.json("run", "workflow", "payout", "--input", '{"amount": 120}', env=env)
    assert ran["state"] == "succeeded" and ran["step_outputs"]["reserve"] == {"reserved": 120}
    assert ran["reused"] is False
    keyed = ("--idempotency-key", "order-42")
    first = gk.json("run", "workflow", "payout", "--input", '{"amount": 5}', *keyed, env=env)
    again = gk.json("run", "workflow", "payout", "--input", '{"amount": 6}', *keyed, env=env)
    assert again["execution_id"] == first["execution_id"] and again["reused"] is True
    assert again["request_differs"] is True and "was not started" in gk.stderr

    # The key is payout's: another workflow's run with it is refused, never shown as that one.
    said = "already used by execution " + first["execution_id"] + " of workflow 'payout'"
    refused = gk("run", "knowledge-publication", str(FRED), *keyed, code=2, env=env)
    assert said in refused.stderr and "succeeded" not in refused.stdout
    gk("run", "workflow", "refund", "--input", "{}", *keyed, code=2, env=env)
    assert said in gk.stderr

    failed = gk.json("run", "workflow", "payout", code=1, env=env)  # no amount: KeyError
    assert failed["state"] == "failed" and "KeyError" in failed["last_error"]
    assert "failed" in gk.stderr
    listed_runs = gk.json("executions", "list", env=env)
    assert len(listed_runs) == 3
    verified = gk.json("audit", "verify", env=env)
    assert verified and all(r["ok"] for r in verified["reports"])


@pytest.mark.parametrize(
    ("name", "given", "said"),
    [
        ("payout", '{"amount": "\\ud800"}', "lone surrogate"),
        ("payout", '{"a": ' * 101 + "1" + "}" * 101, "nested"),
        (kp.NAME, "{}", "documents: must be a list of documents"),
    ],
    ids=["surrogate", "deep", "validate-input"],
)
def test_an_input_a_run_refuses_leaves_no_store_behind(
    cli: tuple[Cli, dict[str, str]], name: str, given: str, said: str
) -> None:
    gk, env = cli
    refused = gk("run", "workflow", name, "--input", given, code=2, env=env)
    assert said in refused.stderr and "starting" not in refused.stdout
    assert not gk.store.exists()  # refused before the store was opened, or made


@pytest.mark.parametrize(
    ("key", "said"),
    [
        ("k\x1b[31m", "must be one line without control characters"),
        ("k" * 201, "must be at most 200 characters, got 201"),
        ("\u200b", "must not be empty"),
    ],
    ids=["escape", "long", "invisible"],
)
@pytest.mark.parametrize(
    "workflow", [("workflow", "refund", "--input", "{}"), ("knowledge-publication", "x.md")]
)
def test_an_idempotency_key_a_run_refuses_leaves_no_store_behind(
    cli: tuple[Cli, dict[str, str]], workflow: tuple[str, ...], key: str, said: str
) -> None:
    gk, env = cli
    refused = gk("run", *workflow, "--idempotency-key", key, code=2, env=env)
    assert f"Invalid value for '--idempotency-key': {said}" in refused.stderr
    assert "starting" not in refused.stdout
    assert not gk.store.exists()  # refused before the store was opened, or made


def test_your_workflows_are_built_once_a_command_on_a_store_that_exists(
    cli: tuple[Cli, dict[str, str]],
) -> None:
    gk, _ = cli
    (gk.cwd / "counted.py").write_text(
        "from pathlib import Path\n"
        f"from {module(gk.cwd)} import payout\n"
        "def registry(service):\n"
        "    with Path(__file__).with_name('built.log').open('a') as log:\n"
        "        log.write('built\\n')\n"
        "    return [payout]\n"
    )
    counted = {"GOVKERNEL_WORKFLOWS": "counted:registry"}
    gk("run", "workflow", "payout", "--input", '{"amount": 1}', env=counted)  # makes the store
    built = gk.cwd / "built.log"
    built.write_text("")
    gk("executions", "list", env=counted)
    gk("run", "workflow", "payout", "--input", '{"amount": 2}', env=counted)
    assert built.read_text() == "built\n" * 2  # once a command: not again over a throwaway


def test_a_known_key_is_shown_before_the_input_is_checked_and_a_typo_is_unknown(
    cli: tuple[Cli, dict[str, str]],
) -> None:
    gk, env = cli
    keyed = ("--idempotency-key", "K")
    given = json.dumps(request("pub-known"))
    first = gk.json("run", "workflow", kp.NAME, "--input", given, *keyed, env=env)
    # An input the workflow would refuse: the key's execution is shown all the same.
    shown = gk.json("run", "workflow", kp.NAME, "--input", '{"documents": []}', *keyed, env=env)
    assert shown["execution_id"] == first["execution_id"] and shown["request_differs"] is True
    gk("run", "workflow", "paout", "--input", "{}", *keyed, code=2, env=env)
    assert "unknown workflow 'paout'" in gk.stderr


@pytest.mark.parametrize("key", ["GOVKERNEL_WORKFLOWS", "GOVKERNEL_RETIRED_WORKFLOWS"])
def test_a_workflow_that_fails_to_build_leaves_no_store_behind(project: Path, key: str) -> None:
    gk = Cli(project / "store", project)
    gk("run", "workflow", "payout", "--input", "{}", code=2, env={key: f"{module(project)}:raises"})
    assert "calling it raised LookupError: no such registry" in gk.stderr
    # With --debug, the registry's own line that raised is shown.
    gk("--debug", "workflows", code=2, env={key: f"{module(project)}:raises"})
    assert ', in raises\n    raise LookupError("no such' in gk.stderr
    assert not gk.store.exists()  # refused before the store was opened, or made


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--input", '{"amount": NaN}'), "NaN is not JSON"),
        # The option quoted as click quotes it in its own messages.
        (("--input", '{"amount": 1e999}'), "for '--input': 1e999 is too large for a JSON number"),
        (("--input", '{"amount": 1e-400}'), "1e-400 is too small for a JSON number"),
        (("--input", '{"amount": ' + "9" * 5000 + "}"), "5,000 digits is too long"),
        (("--input", '{"a": "caf\udce9"}'), "for '--input': is not UTF-8 text"),
        (("--input", '{"a": 1, "a": 2}'), "key 'a' is given twice"),
        (("--input", "[1]"), "must be a JSON object, got an array"),
        (("--input", "null"), "must be a JSON object, got null"),  # JSON's words, not Python's
        (("--input", "{"), "Expecting property name"),
        (("--input", "[" * 100_000), "nested too deeply"),
        (("--input", "{}", "--input-file", "-"), "give '--input' or '--input-file', not both"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(
    cli: tuple[Cli, dict[str, str]], args: tuple[str, ...], said: str
) -> None:
    gk, env = cli
    gk("run", "workflow", "payout", *args, code=2, env=env)
    assert said in gk.stderr
    assert not gk.store.exists()


def test_an_input_file_that_is_not_utf8_is_a_usage_error(cli: tuple[Cli, dict[str, str]]) -> None:
    gk, env = cli
    path = gk.cwd / "input.json"
    path.write_bytes(b'\xff{"amount": 1}')
    gk("run", "workflow", "payout", "--input-file", str(path), code=2, env=env)
    assert "--input-file" in gk.stderr and "is not UTF-8 text" in gk.stderr
    assert not gk.store.exists()


def test_an_input_file_too_large_is_refused_before_it_is_read(
    cli: tuple[Cli, dict[str, str]],
) -> None:
    gk, env = cli
    path = gk.cwd / "huge.json"
    with open(path, "wb") as file:
        file.truncate(256 * 1024 * 1024 + 1)  # sparse: nothing written, and nothing read
    gk("run", "workflow", "payout", "--input-file", str(path), code=2, env=env)
    assert "is over 268,435,456 bytes (256 MiB)" in gk.stderr
    assert not gk.store.exists()


def test_an_input_file_that_is_a_device_is_refused_unread(
    cli: tuple[Cli, dict[str, str]],
) -> None:
    gk, env = cli
    gk("run", "workflow", "payout", "--input-file", "/dev/zero", code=2, env=env)
    assert "is a device (such as /dev/null): give a file, a pipe, or standard" in gk.stderr
    assert not gk.store.exists()
    with open(os.devnull, "rb") as nothing:  # standard input that is a device is said to be
        done = subprocess.run(
            [
                *(sys.executable, "-m", "composition.cli", "--store", gk.url, "run"),
                "workflow",
                "payout",
                "--input-file",
                "-",
            ],
            stdin=nothing,
            env=clean_env(**env),
            cwd=gk.cwd,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2 and "standard input is a device" in done.stderr


def test_an_input_file_with_a_byte_order_mark_is_read_as_without(
    cli: tuple[Cli, dict[str, str]], project: Path
) -> None:
    gk, env = cli
    (project / "bom.json").write_bytes(b'\xef\xbb\xbf{"amount": 3}')
    ran = gk.json("run", "workflow", "payout", "--input-file", "bom.json", env=env)
    assert ran["step_outputs"]["reserve"] == {"reserved": 3}


def test_an_input_file_that_is_a_named_pipe_nobody_writes_to_is_refused_not_waited_on(
    cli: tuple[Cli, dict[str, str]],
) -> None:
    gk, env = cli
    fifo = gk.cwd / "input.fifo"
    os.mkfifo(fifo)
    gk("run", "workflow", "payout", "--input-file", str(fifo), code=2, env=env)
    assert "is empty: give a JSON object" in gk.stderr
    assert not gk.store.exists()


def test_a_long_step_output_is_cut_on_the_terminal_not_in_json(
    cli: tuple[Cli, dict[str, str]],
) -> None:
    gk, env = cli
    given = json.dumps({"amount": "y" * 100_000})
    shown = gk("run", "workflow", "payout", "--input", given, "--idempotency-key", "k", env=env)
    assert "(100,016 characters; --json shows all)" in shown.stdout
    assert max(len(line) for line in shown.stdout.splitlines()) < 500
    xid = gk.json("run", "workflow", "payout", "--input", given, "--idempotency-key", "k", env=env)
    assert xid["step_outputs"]["reserve"] == {"reserved": "y" * 100_000}
    detail = gk("executions", "show", xid["execution_id"], env=env).stdout
    assert max(len(line) for line in detail.splitlines()) < 500


def test_your_steps_named_as_the_built_in_workflows_are_shown_as_what_they_returned(
    project: Path,
) -> None:
    gk, env = (
        Cli(project / "store", project),
        {"GOVKERNEL_WORKFLOWS": f"{module(project)}:lookalike"},
    )
    shown = gk("run", "workflow", "lookalike", env=env).stdout  # exit 0: it succeeded
    assert 'step ingest completed: {"source_ids": 3}' in shown
    assert '"problem": "checksum mismatch", "verified": false' in shown
    assert "capsule verified" not in shown and "capsule abc" not in shown
    xid = gk.json("executions", "list", env=env)[0]["execution_id"]
    detail = gk("executions", "show", xid, env=env).stdout
    assert re.search(r'output publish +"capsule_id=abc"', detail)
    assert re.search(
        r'output verify +\{"problem": "checksum mismatch", "verified": false\}', detail
    )


@pytest.mark.parametrize("documents", [["a.pdf"], {"x": 1}], ids=["strings", "mapping"])
def test_your_input_named_as_the_built_in_workflows_is_shown_as_given(
    cli: tuple[Cli, dict[str, str]], documents: object
) -> None:
    """`documents` is knowledge_publication's list of documents only in its own input."""
    gk, env = cli
    given = json.dumps({"documents": documents})
    xid = gk.json("run", "workflow", "refund", "--input", given, env=env)["execution_id"]
    assert gk.json("executions", "show", xid, env=env)["input"] == {"documents": documents}
    text = gk("executions", "show", xid, env=env).stdout
    assert "document " not in text
    assert re.search(r"^input +" + re.escape(given) + "$", text, re.M)  # as given, in one line


def test_a_step_stopped_by_another_base_exception_is_said_in_one_line(project: Path) -> None:
    gk, env = (
        Cli(project / "store", project),
        {"GOVKERNEL_WORKFLOWS": f"{module(project)}:greenlet"},
    )
    stopped = gk("run", "workflow", "greenlet", code=1, env=env).stderr
    assert "Traceback" not in stopped and stopped.count("\n") == 1
    assert "error: stopped by Killed while step check of execution wfx-" in stopped
    assert "a step that raises Killed stops every run of it" in stopped  # not "recover it"
    assert "`govkernel cancel` ends its execution" in stopped
    again = gk("recover", code=1, env=env).stderr
    assert "Traceback" not in again and "error: stopped by Killed" in again


def test_your_own_version_of_the_built_in_workflow_is_shown_as_what_it_returned(
    project: Path,
) -> None:
    env = {"GOVKERNEL_WORKFLOWS": f"{module(project)}:own_publication"}
    gk = Cli(project / "store", project)
    shown = gk("run", "workflow", kp.NAME, env=env).stdout
    assert 'step verify completed: {"chunks": "many", "verified": false}' in shown
    assert "capsule verified" not in shown and "capsule 7" not in shown
    xid = gk.json("executions", "list", env=env)[0]["execution_id"]
    assert "capsule verified" not in gk("executions", "show", xid, env=env).stdout
    demo = gk("--store", "memory://", "demo", env=env).stdout
    assert 'capsule      {"capsule_id": 7}' in demo and "capsule 7" not in demo


def test_a_key_that_already_failed_says_nothing_ran_now(project: Path) -> None:
    gk = Cli(project / "store", project)
    env = {"GOVKERNEL_WORKFLOWS": f"{module(project)}:declines"}
    keyed = ("run", "workflow", "declines", "--idempotency-key", "c-1")
    first = gk(*keyed, code=1, env=env).stderr
    assert "nothing ran now" not in first and "ValueError: declined" in first
    again = gk(*keyed, code=1, env=env).stderr  # the same failure, said as the old one
    assert "note: nothing ran now: it had already ended failed (a key starts one" in again
    assert "ValueError: declined" in again
    [only] = gk.json("executions", "list", env=env)
    assert gk.json("executions", "show", only["execution_id"], env=env)["attempts"] == {"pay": 1}


def test_an_unknown_workflow_names_the_known_ones(cli: tuple[Cli, dict[str, str]]) -> None:
    gk, env = cli
    gk("run", "workflow", "nope", code=2, env=env)  # the setting given: a name mistyped
    assert "unknown workflow 'nope'; known: knowledge_publication, payout, refund\n" in gk.stderr
    gk("run", "workflow", "payout", code=2)  # without the setting, the CLI has no payout
    assert "known: knowledge_publication (your own are known when the `workflows`" in gk.stderr
    assert "GOVKERNEL_WORKFLOWS=package.module:attribute" in gk.stderr  # how to give yours
    retired = {
        "GOVKERNEL_RETIRED_WORKFLOWS": env["GOVKERNEL_WORKFLOWS"].replace("as_list", "payout")
    }
    gk("run", "workflow", "payout", code=2, env=retired)  # known, as retired only
    assert "workflow 'payout' is registered as retired only (version 1): it starts" in gk.stderr


def test_input_from_a_file_or_stdin(cli: tuple[Cli, dict[str, str]], project: Path) -> None:
    gk, env = cli
    (project / "in.json").write_text(json.dumps({"amount": 7}))
    ran = gk.json("run", "workflow", "payout", "--input-file", "in.json", env=env)
    assert ran["step_outputs"]["reserve"] == {"reserved": 7}


def _stored_not_run(
    gk: Cli, env: dict[str, str], project: Path, workflow: str, given: dict[str, Any]
) -> WorkflowExecution:
    """An execution of your workflow, started through the Python API and left to the CLI."""
    settings = load_settings({"GOVKERNEL_STORE": gk.url} | env, cwd=project)
    with build_app(settings) as app:
        return app.orchestrator.start(workflow, given, run=False)


def test_listing_a_workflow_not_registered_here_says_why_its_steps_are_not_shown(
    cli: tuple[Cli, dict[str, str]], project: Path
) -> None:
    gk, env = cli
    started = _stored_not_run(gk, env, project, "payout", {"amount": 3})
    for command in (("executions", "list"), ("executions", "show", started.id)):
        note = gk(*command).stderr  # without the setting that names it
        assert "runs a workflow not registered here (payout version 1 first)" in note
        assert "GOVKERNEL_WORKFLOWS" in note
        assert "not registered" not in gk(*command, env=env).stderr


def test_show_gives_attempts_and_outputs_in_the_order_the_steps_run(
    cli: tuple[Cli, dict[str, str]], project: Path
) -> None:
    gk, _ = cli
    env = {"GOVKERNEL_WORKFLOWS": f"{module(project)}:backwards"}
    done = gk.json("run", "workflow", "backwards", "--input", "{}", env=env)
    for registered in (env, {}):  # unregistered: in the order pinned when it started
        shown = gk("executions", "show", done["execution_id"], env=registered).stdout
        assert re.search(r"^attempts +zulu 1, alpha 1$", shown, re.M), shown
        outputs = re.findall(r"^output (\w+)", shown, re.M)
        assert outputs == ["zulu", "alpha"], shown
        assert re.search(r"^step +2/2 done$", shown, re.M), shown  # not "2/? ?"


def test_recover_resumes_your_workflow_only_when_the_setting_names_it(
    cli: tuple[Cli, dict[str, str]], project: Path
) -> None:
    gk, env = cli
    started = _stored_not_run(gk, env, project, "payout", {"amount": 3})
    assert started.state is ExecutionState.PENDING

    without = gk.json("recover", code=1)
    assert [f["execution_id"] for f in without["failed"]] == [started.id]
    assert "does not have" in without["failed"][0]["error"]
    human = gk("recover", code=1).stdout
    assert "GOVKERNEL_WORKFLOWS" in human  # what the CLI needs
    # Said where it is found, not only lines later ("step 0/? ?" told nothing).
    assert f"found {started.id}  pending  step 0/? ?  (payout version 1 is not registered" in human
    resumed = gk.json("recover", env=env)
    assert [(r["execution_id"], r["state"]) for r in resumed["resumed"]] == [
        (started.id, "succeeded")
    ]


def test_a_step_calling_sys_exit_stops_the_command_saying_where_and_what_ends_it(
    project: Path,
) -> None:
    """sys.exit in a step cannot be told from a signal handler's: the execution is left
    running for recover, not failed, and every run of the step stops there again."""
    gk = Cli(project / "store", project)
    env = {"GOVKERNEL_WORKFLOWS": f"{module(project)}:quitter"}
    stopped = gk("run", "workflow", "quitter", "--input", "{}", code=1, env=env).stderr
    [xid] = re.findall(r"execution (wfx-\w+) ran", stopped)
    assert "stopped by sys.exit(3) while step quit of execution" in stopped
    assert "`govkernel cancel` ends its execution" in stopped
    assert "recover" not in stopped.replace("`recover`'s too", "")  # it would stop again
    again = gk("recover", code=1, env=env).stderr
    assert f"while step quit of execution {xid} ran" in again
    assert "resumes with `govkernel recover`" not in again  # found sending users in a loop
    assert gk.json("cancel", xid, env=env)["state"] == "cancelled"
    assert gk.json("recover", env=env)["resumed"] == []

    env = {"GOVKERNEL_WORKFLOWS": f"{module(project)}:first_quits"}
    stopped = gk("run", "workflow", "first_quits", "--input", "{}", code=1, env=env).stderr
    said = "while step quit ran, the first step of an execution not stored; nothing of it was"
    assert said in stopped and "wfx-" not in stopped
    assert "fix the step" in stopped and "cancel" not in stopped and "recover" not in stopped
    listed = gk.json("executions", "list", "--workflow", "first_quits", env=env)
    assert listed == []  # nothing of it was stored

    env = {"GOVKERNEL_WORKFLOWS": f"{module(project)}:undo_quits"}
    stopped = gk("run", "workflow", "undo_quits", "--input", "{}", code=1, env=env).stderr
    assert "while compensation release of execution" in stopped
    assert (
        "cannot be cancelled: fix the compensation" in stopped
        and "`govkernel cancel`" not in stopped
    )
    assert "its execution was left compensating (a compensation that calls sys.exit" in stopped
    assert "`govkernel recover` finishes it" not in stopped  # it would stop again
    again = gk("recover", code=1, env=env).stderr
    assert "resumes with `govkernel recover`" not in again and "fix the compensation" in again


def test_a_run_stopped_by_sys_exit_still_prints_its_record_under_json(project: Path) -> None:
    """A script reading --json got nothing on stdout, where Ctrl-C gives the record of what
    to follow up (found by a re-test)."""
    gk = Cli(project / "store", project)
    for workflow, stored in (("quitter", True), ("first_quits", False)):
        env = {"GOVKERNEL_WORKFLOWS": f"{module(project)}:{workflow}"}
        run = ("run", "workflow", workflow, "--input", "{}", "--idempotency-key", workflow)
        record = json.loads(gk("--json", *run, code=1, env=env).stdout)
        assert record["interrupted"] == "stopped by sys.exit(3)"
        assert record["idempotency_key"] == workflow
        assert (record["execution_id"] is not None) is stored, record
        assert record["state"] == ("running" if stored else None)
        assert record["left"] in gk.stderr
    # In memory, nothing is left to cancel or recover once the command ends: not advised.
    env = {"GOVKERNEL_WORKFLOWS": f"{module(project)}:quitter"}
    gone = gk(
        "--store",
        "memory://",
        "--json",
        "run",
        "workflow",
        "quitter",
        "--input",
        "{}",
        code=1,
        env=env,
        store=False,
    )
    left = json.loads(gone.stdout)["left"]
    assert "an unfinished execution is lost" in left and "fix the step" in left, left
    assert "cancel" not in gone.stderr and "recover" not in gone.stderr


def test_with_debug_a_failed_step_shows_where_it_raised(project: Path) -> None:
    """The trail keeps a step's error as one line; `--debug` shows its traceback too, the
    line of the team's step that raised (it was shown nowhere)."""
    gk = Cli(project / "store", project)
    env = {"GOVKERNEL_WORKFLOWS": f"{module(project)}:both_undo_later"}
    gk("--debug", "run", "workflow", "undo_later", code=1, env=env)
    assert ', in fails\n    raise ValueError("declined")\nValueError: declined' in gk.stderr
    gk("run", "workflow", "undo_later", code=1, env=env)  # without it, the one line alone
    assert "Traceback" not in gk.stderr and "ValueError: declined" in gk.stderr


def test_debug_shows_govkernels_log_for_its_own_command_only(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run in one process (as a service's tests would), each command's --debug shows the
    log on the stderr it has, and a command without it shows none."""
    monkeypatch.setenv("GOVKERNEL_WORKFLOWS", f"{module(project)}:shouting")
    monkeypatch.setenv("GOVKERNEL_STORE", "memory://")
    for debug in (True, True, False):
        assert run_cli([*(["--debug"] * debug), "run", "workflow", "shouting"]) == 1
        err = capsys.readouterr().err
        assert ("INFO govkernel.orchestrator: execution" in err) is debug
        # The step's words are shown inert, in the log and in the traceback alike.
        assert "\x1b" not in err and "ValueError: \\x1b[31mdeclined" in err
    assert logging.getLogger("govkernel").handlers == []


def test_an_execution_left_compensating_has_failed(project: Path) -> None:
    """A step failed and its undo is retried later: the run failed (exit 1), as it has when
    the undo is done at once; `recover` resumes it."""
    gk = Cli(project / "store", project)
    env = {"GOVKERNEL_WORKFLOWS": f"{module(project)}:both_undo_later"}
    left = gk.json("run", "workflow", "undo_later", code=1, env=env)
    assert left["state"] == "compensating"
    xid = left["execution_id"]
    assert gk.stderr.splitlines()[-1] == (  # after the transitions
        f"error: execution {xid} is compensating; it resumes with `govkernel --store {gk.url}"
        " recover` (last error: step pay failed: ValueError: declined)"
    )
    # An approval that lets it go on to fail, likewise.
    waiting = gk.json("run", "workflow", "approved_undo_later", env=env)
    assert waiting["state"] == "awaiting_approval"
    al = env | {"GOVKERNEL_ACTOR": "al"}
    approved = gk.json("approve", waiting["execution_id"], "--role", "r", code=1, env=al)
    assert approved["state"] == "compensating"
    assert "is compensating; it resumes with" in gk.stderr
    # recover exits 0 once it resumed each, whatever each ended as (neither is due yet).
    assert len(gk.json("recover", env=env)["not_due"]) == 2


def test_closed_standard_streams_are_no_files_a_step_writes_into(project: Path) -> None:
    """With stdout closed, the next file opened (the store's lock file) took its number: a
    step's subprocess printing, or the engine's messages on stderr, would write into it."""
    gk = Cli(project / "store", project)
    env = {"GOVKERNEL_WORKFLOWS": f"{module(project)}:streams"}
    gk("run", "workflow", "streams", env=env, redirect="<&- >&- 2>&-")
    [ran] = gk.json("executions", "list", env=env)
    looked = gk.json("executions", "show", ran["execution_id"], env=env)["step_outputs"]["look"]
    assert looked == {"0": "/dev/null", "1": "/dev/null", "2": "/dev/null"}


def test_a_custom_workflow_awaiting_nothing_can_be_cancelled(
    cli: tuple[Cli, dict[str, str]], project: Path
) -> None:
    gk, env = cli
    started = _stored_not_run(gk, env, project, "refund", {})
    cancelled: dict[str, Any] = gk.json("cancel", started.id, "--reason", "not needed", env=env)
    assert cancelled["state"] == "cancelled"


def test_the_readme_payout_runs_from_the_command_line(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "payout =" in b)
    package = tmp_path / "payments"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "flows.py").write_text(block.split("with build_app(")[0])
    commands = next(b for b in re.findall(r"```sh\n(.*?)```", readme, re.S) if "payout" in b)
    export = re.search(r"export GOVKERNEL_WORKFLOWS=(\S+)", commands)
    run = re.search(r"govkernel (run workflow payout .*)", commands)
    assert export is not None and run is not None
    gk = Cli(tmp_path / "store", tmp_path)
    env = {"GOVKERNEL_WORKFLOWS": export.group(1)}
    done = gk.json(*shlex.split(run.group(1)), env=env)
    assert done["state"] == "succeeded" and done["step_outputs"]["reserve"] == {"reserved": 120}
    assert gk.json("recover", env=env)["failed"] == []


def test_the_modules_beside_a_settings_file_win_over_the_working_directorys(
    project: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = project / "govkernel.toml"
    config.write_text(f'workflows = ["{module(project)}:as_list"]\nstore = "memory://"\n')
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / f"{module(project)}.py").write_text("raise RuntimeError('the wrong one')\n")
    monkeypatch.chdir(elsewhere)
    sys.path[:] = [p for p in sys.path if p not in ("", ".", str(project))]
    sys.path.insert(0, str(elsewhere))  # as `python -m` puts the working directory first
    with build_app(load_settings({}, config_file=config)) as app:
        assert {"payout", "refund"} <= set(app.workflows)


def test_a_settings_file_finds_the_modules_beside_it(
    project: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job run from `/` (cron, a service manager) with `--config` finds the project's
    modules beside the file, as it finds its relative store path there."""
    config = project / "govkernel.toml"
    config.write_text(f'workflows = ["{module(project)}:as_list"]\nstore = "memory://"\n')
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    monkeypatch.chdir(elsewhere)
    sys.path[:] = [p for p in sys.path if p not in ("", ".", str(project))]
    settings = load_settings({}, config_file=config)
    assert settings.workflows_dir == project
    with build_app(settings) as app:
        assert {"payout", "refund"} <= set(app.workflows)


def test_a_rerun_of_another_versions_execution_says_what_finishes_it(
    cli: tuple[Cli, dict[str, str]],
) -> None:
    gk, _ = cli
    v1 = {"GOVKERNEL_WORKFLOWS": f"{module(gk.cwd)}:flaky"}
    (gk.cwd / "flaky_v2.py").write_text(
        f"from attrs import evolve\nfrom {module(gk.cwd)} import flaky\n"
        "flaky = evolve(flaky, version='2')\n"
    )
    keyed = ("run", "workflow", "flaky", "--idempotency-key", "k-1")
    assert gk.json(*keyed, env=v1)["state"] == "retry_scheduled"
    rerun = gk(*keyed, env={"GOVKERNEL_WORKFLOWS": "flaky_v2:flaky"})
    assert "it runs flaky version 1, which this command does not have" in rerun.stdout
    assert "recover` finishes it" in rerun.stdout


def test_recover_says_a_retry_not_due_yet_is_not_done(cli: tuple[Cli, dict[str, str]]) -> None:
    gk, _ = cli
    env = {"GOVKERNEL_WORKFLOWS": f"{module(gk.cwd)}:flaky"}
    waiting = gk.json("run", "workflow", "flaky", env=env)
    assert waiting["state"] == "retry_scheduled"
    done = gk("recover", env=env)
    assert f"not due yet: {waiting['execution_id']} retries at" in done.stdout
    assert f"resumed {waiting['execution_id']}" not in done.stdout
    assert "recovered 0 of 1, 1 not due yet" in done.stdout
    report = gk.json("recover", env=env)
    assert report["resumed"] == [] and [x["execution_id"] for x in report["not_due"]] == [
        waiting["execution_id"]
    ]
    # `executions show` says when, as its JSON does.
    shown = gk("executions", "show", waiting["execution_id"], env=env).stdout
    due = datetime.fromisoformat(waiting["retry_at"]).replace(tzinfo=None)
    assert re.search(f"^retries at +{due.isoformat(' ', 'seconds')}$", shown, re.MULTILINE)


GATED = """
from domain.orchestration.definition import Step, WorkflowDefinition
from domain.services.governance import ApprovalRequired
from domain.workflows import knowledge_publication as kp

def ask(uow, ctx):
    if not ctx.execution.approvals:
        raise ApprovalRequired("payment", ["needs one approval"])
    return {{}}

gated = WorkflowDefinition(
    name="gated", version="{version}", metadata=kp.METADATA,
    steps=tuple(Step(name, ask if name == "ask" else lambda u, c: {{}}) for name in {steps}),
)
"""


def test_no_command_describes_an_execution_by_steps_it_did_not_start_with(
    cli: tuple[Cli, dict[str, str]],
) -> None:
    gk, _ = cli
    (gk.cwd / "gated_a.py").write_text(GATED.format(version="1", steps=["ask", "pay"]))
    (gk.cwd / "gated_b.py").write_text(GATED.format(version="1", steps=["pay", "ask"]))
    before, after = (
        {"GOVKERNEL_WORKFLOWS": "gated_a:gated"},
        {"GOVKERNEL_WORKFLOWS": "gated_b:gated"},
    )
    waiting = gk.json("run", "workflow", "gated", "--input", "{}", env=before)
    assert gk.json("executions", "show", waiting["execution_id"], env=before)["step"] == "ask"
    xid = waiting["execution_id"]
    shown = gk.json("executions", "show", xid, env=after)
    # Not "pay", the changed definition's first step: the steps it started with, read from
    # its trail, as the text form and its note give them. It awaits approval, and says why,
    # as `run` does.
    assert (shown["step"], shown["steps"]) == ("ask", 2) and shown["why"] == waiting["why"] != ""
    note = f"note: 1 execution ({xid} first) started with other steps than gated version 1"
    assert f"{note} registered here: shown by the steps they started with" in gk.stderr
    text = gk("executions", "show", xid, env=after).stdout
    assert re.search(r"^step +0/2 ask$", text, re.M), text
    listed_before = gk.json("executions", "list", env=before)[0]
    assert (listed_before["step"], listed_before["steps"]) == ("ask", 2)  # the text's "0/2"
    assert "note:" not in gk.stderr
    (listed,) = gk.json("executions", "list", env=after)
    assert (listed["step"], listed["steps"]) == (None, None) and note in gk.stderr
    table = gk("executions", "list", env=after).stdout
    assert "pay" not in table and note in gk.stderr
    # Its key brings it back: with what it takes to approve it, not an `approve` refused.
    key = ("run", "workflow", "gated", "--idempotency-key", waiting["idempotency_key"])
    again = gk(*key, env=after)
    assert "other steps than gated version 1 registered here: it can be approved once" in (
        again.stdout
    )
    assert f"approve {xid}" not in again.stdout
    assert f"approve {xid} --role" in gk(*key, env=before).stdout


def test_an_old_versions_executions_are_finished_beside_the_new_one(
    cli: tuple[Cli, dict[str, str]],
) -> None:
    """The README's way through a change of steps: a new version, and the old one named as
    retired until what it started is done."""
    gk, _ = cli
    for name, version, steps in (
        ("gated_v1", "1", ["ask", "pay"]),
        ("gated_v2", "2", ["ask", "check", "pay"]),
    ):
        (gk.cwd / f"{name}.py").write_text(GATED.format(version=version, steps=steps))
    v1, v2 = {"GOVKERNEL_WORKFLOWS": "gated_v1:gated"}, {"GOVKERNEL_WORKFLOWS": "gated_v2:gated"}
    waiting = gk.json("run", "workflow", "gated", "--input", "{}", env=v1)
    assert waiting["state"] == "awaiting_approval"
    bob = {"GOVKERNEL_ACTOR": "bob"}
    gk("approve", waiting["execution_id"], "--role", "r", code=1, env=v2 | bob)
    assert "started by gated version 1" in gk.stderr and "runs version 2" in gk.stderr
    assert "GOVKERNEL_RETIRED_WORKFLOWS" in gk.stderr  # what to do about it
    # Retired alone (no current version), a known key still shows its execution.
    retired_only = {"GOVKERNEL_RETIRED_WORKFLOWS": "gated_v1:gated"}
    key = ("run", "workflow", "gated", "--idempotency-key", waiting["idempotency_key"])
    assert gk.json(*key, env=retired_only)["reused"] is True
    again = gk(*key, env=v2).stdout
    assert "awaiting approval" in again and f"approve {waiting['execution_id']}" not in again
    assert "runs gated version 1, which this command does not have: it can be approved" in again
    # No step done: nothing to undo, so it may still be rejected here.
    assert f"reject {waiting['execution_id']} --reason TEXT" in again
    assert "GOVKERNEL_RETIRED_WORKFLOWS" in again
    assert gk.json("run", "workflow", "gated", "--input", "{}", env=v2)["workflow_version"] == "2"
    # Shown beside version 2, it is described by its own steps, not version 2's.
    shown = gk.json("executions", "show", waiting["execution_id"], env=v2)
    assert (shown["step"], shown["steps"]) == ("ask", 2)
    listed = gk("executions", "list", env=v2).stdout  # which version each one runs, and where
    assert "gated v1" in listed and "0/? ?" in listed and "gated v2" in listed
    both = v2 | {"GOVKERNEL_RETIRED_WORKFLOWS": "gated_v1:gated"}
    listed_workflows = gk.json("workflows", env=both)["workflows"]
    assert [(w["version"], w["retired"]) for w in listed_workflows if w["name"] == "gated"] == [
        ("1", True),
        ("2", False),
    ]
    assert "1 (retired)" in gk("workflows", env=both).stdout
    assert gk.json("executions", "show", waiting["execution_id"], env=both)["step"] == "ask"
    done = gk.json("approve", waiting["execution_id"], "--role", "r", env=both | bob)
    assert done["state"] == "succeeded" and list(done["step_outputs"]) == ["ask", "pay"]
    assert gk.json("recover", env=both)["failed"] == []
    # One version has one definition: not another as retired.
    (gk.cwd / "gated_v2b.py").write_text(GATED.format(version="2", steps=["ask", "pay"]))
    clash = v2 | {"GOVKERNEL_RETIRED_WORKFLOWS": "gated_v2b:gated"}
    gk("executions", "list", code=2, env=clash)
    assert "retired_workflows" in gk.stderr and "gated version 2 is current" in gk.stderr
    gk("executions", "list", code=2, env=v2 | {"GOVKERNEL_RETIRED_WORKFLOWS": "gated_v2:gated"})
    assert "gated version 2 is current" in gk.stderr  # the very same one, as a slip


CHATTY = """
import subprocess
print("said as it was imported")
from domain.orchestration.definition import Step, WorkflowDefinition
from domain.workflows import knowledge_publication as kp

def talk(uow, ctx):
    print("said by the step", flush=True)
    subprocess.run(["echo", "said by its subprocess"], check=True)
    return {"ok": True}

chatty = WorkflowDefinition(
    name="chatty", version="1", metadata=kp.METADATA, steps=(Step("talk", talk),)
)
"""


def test_what_your_code_prints_goes_to_stderr_under_json(project: Path) -> None:
    (project / "chatty.py").write_text(CHATTY)
    gk = Cli(project / "store", project)
    env = {"GOVKERNEL_WORKFLOWS": "chatty:chatty"}
    for args in (("--json", "run", "workflow", "chatty"), ("run", "workflow", "chatty", "--json")):
        ran = gk(*args, env=env)
        assert json.loads(ran.stdout)["state"] == "succeeded"  # stdout holds the JSON alone
        for said in ("as it was imported", "by the step", "by its subprocess"):
            assert f"said {said}\n" in ran.stderr
    listed = gk("executions", "--json", "list", env=env)
    assert len(json.loads(listed.stdout)) == 2 and "said as it was imported" in listed.stderr
    # A closed stderr is held open on /dev/null: your code's writes go there.
    ran = gk("--json", "run", "workflow", "chatty", env=env, redirect="2>&-")
    assert json.loads(ran.stdout)["state"] == "succeeded"
    # The anchors, printed without --json, are stdout's alone too.
    anchored = json.loads(gk("audit", "anchor", env=env).stdout)
    assert len(anchored["anchors"]) == 3
    # Help, asked for after --json, is still printed on stdout.
    assert "Usage: " in gk("--json", "executions", "list", "--help", env=env).stdout
    # Without --json, stdout is the command's and your code's, as it always was.
    assert "said by the step" in gk("run", "workflow", "chatty", env=env).stdout


def test_stdout_is_given_back_after_a_json_command_run_in_process(
    capfd: pytest.CaptureFixture[str],
) -> None:
    assert run_cli(["--store", "memory://", "--json", "events"]) == 0
    print("printed after it", flush=True)
    out, _ = capfd.readouterr()
    assert json.loads(out.removesuffix("printed after it\n")) == []
