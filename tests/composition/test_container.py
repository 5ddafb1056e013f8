"""The container and its typed facade: wiring by URL, resources, overrides, no import work."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

import pytest
from attrs import evolve

from adapters.faults import FaultInjector, FaultPlan
from adapters.memory import MemoryStore
from adapters.surrealdb import SurrealConfig, SurrealStore
from composition.container import App, Overrides, build_app, open_app
from composition.settings import ConfigurationError, Settings, load_settings
from domain.model.lifecycle import ExecutionState
from domain.workflows import knowledge_publication as kp
from ports.clock import FixedClock, SequentialIds
from ports.errors import InjectedFault, StorageUnavailable
from ports.unit_of_work import UnitOfWorkFactory
from tests.support.ws_server import SurrealWsShim

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"


def request(publication_id: str, url: str = "https://www.imf.org/en/x") -> dict[str, object]:
    return kp.PublicationRequest.parse(
        {
            "documents": [
                {
                    "kind": "imf",
                    "title": "Note",
                    "source_url": url,
                    "format": "text",
                    "classification": "public",
                    "content_text": f"Inflation eased in {publication_id}. Growth held up.",
                }
            ],
            "title": "Briefing",
            "publication_id": publication_id,
            "policy_refs": ["POL-KNOWLEDGE-1"],
        }
    ).to_input()


def publish(app: App, publication_id: str) -> ExecutionState:
    return app.orchestrator.start(kp.NAME, request(publication_id)).state


def test_memory_app_runs_the_workflow_with_a_runtime_from_settings() -> None:
    settings = Settings(tenant="acme", actor="carol", store_url="memory://")
    with build_app(settings) as app:
        assert isinstance(app.store, MemoryStore)
        rt = app.runtime
        assert (rt.tenant, rt.actor, rt.service) == ("acme", "carol", "govkernel")
        assert rt.trace_id.startswith("trace-")
        assert set(app.workflows) == {kp.NAME}
        assert publish(app, "p-1") is ExecutionState.SUCCEEDED
        with app.uow_factory() as uow:
            assert uow.capsules.by_publication("acme", "p-1") is not None
        assert app.orchestrator_for(actor="dave") is not app.orchestrator


def test_each_app_gets_its_own_store_and_runtime() -> None:
    settings = Settings(store_url="memory://")
    with build_app(settings) as one, build_app(settings) as two:
        assert one.store is not two.store
        assert one.runtime.trace_id != two.runtime.trace_id
        assert one.exclusive_store and two.exclusive_store


def test_a_store_given_to_share_is_not_held_alone() -> None:
    """Two apps given one store both said they held it alone, and `recover(ignore_leases=
    app.exclusive_store)` would have taken each other's executions (found by a library
    adopter's pass)."""
    shared, settings = MemoryStore(), Settings(store_url="memory://")
    given = Overrides(store=shared)
    with build_app(settings, given) as one, build_app(settings, given) as two:
        assert one.store is two.store
        assert not one.exclusive_store and not two.exclusive_store


def test_store_chosen_by_scheme_and_closed_on_exit(tmp_path: Path) -> None:
    url = f"surrealkv://{tmp_path / 'store'}"
    with build_app(Settings(store_url=url)) as app:
        assert isinstance(app.store, SurrealStore)
        with pytest.raises(StorageUnavailable, match="already open in this process"):
            SurrealStore(SurrealConfig(url))  # the app holds the directory's lock
        assert publish(app, "kv-1") is ExecutionState.SUCCEEDED
    with SurrealStore(SurrealConfig(url)) as again:  # released on exit, data kept
        assert len(again.dump("capsule")) == 1
    with build_app(Settings(store_url="mem://")) as app:
        assert isinstance(app.store, SurrealStore) and app.store.config.url == "mem://"


def test_a_held_store_fails_clearly(tmp_path: Path) -> None:
    url = f"surrealkv://{tmp_path / 'store'}"
    with (
        SurrealStore(SurrealConfig(url)),
        pytest.raises(StorageUnavailable, match="already open in this process"),
        build_app(Settings(store_url=url)),
    ):
        pass  # pragma: no cover


def test_unknown_scheme_is_an_error_not_a_fallback() -> None:
    with (
        pytest.raises(ConfigurationError, match="unknown store scheme in '\\*\\*\\*'"),
        build_app(Settings(store_url="redis://localhost")),
    ):
        pass  # pragma: no cover


def test_override_wraps_every_unit_of_work_with_a_fault_injector() -> None:
    store = MemoryStore()
    injectors: list[FaultInjector] = []

    def wrap(factory: UnitOfWorkFactory) -> UnitOfWorkFactory:
        injectors.append(FaultInjector(factory))
        return injectors[0]

    overrides = Overrides(store=store, wrap_uow_factory=wrap)
    with build_app(Settings(store_url="memory://"), overrides) as app:
        [injector] = injectors
        assert app.uow_factory is injector
        # A denial is recorded by the gate in a unit of its own: it must go through the
        # injector too, so every commit the store saw was counted by the injector.
        denied = app.orchestrator.start(kp.NAME, request("deny-1", "https://twitter.com/x"))
        assert denied.state is ExecutionState.FAILED
        assert publish(app, "ok-1") is ExecutionState.SUCCEEDED
        assert injector.commits == store.commits > 0
        assert len(store.tables["decision"]) >= 2

        injector.arm(FaultPlan(fail_at_write=1))
        with pytest.raises(InjectedFault):
            publish(app, "never")
        with app.uow_factory() as uow:
            assert uow.capsules.by_publication(app.runtime.tenant, "never") is None
    store.tables["capsule"]  # the caller's store is still usable: the app did not own it


def test_override_clock_ids_and_transition_callback() -> None:
    seen: list[ExecutionState] = []
    clock = FixedClock(datetime(2025, 1, 6, 9, 0, tzinfo=UTC))
    overrides = Overrides(
        clock=clock,
        ids=SequentialIds(),
        trace_id="trace-fixed",
        on_transition=lambda x: seen.append(x.state),
    )
    with build_app(Settings(store_url="memory://"), overrides) as app:
        assert app.runtime.trace_id == "trace-fixed" and app.runtime.clock is clock
        execution = app.orchestrator.start(kp.NAME, request("seq-1"))
        assert execution.id == "wfx-000003"  # after the worker id and the idempotency key
        assert execution.created_at == clock.now()
        assert seen[0] is ExecutionState.RUNNING and seen[-1] is ExecutionState.SUCCEEDED


@pytest.fixture
def shim() -> Iterator[SurrealWsShim]:
    with SurrealWsShim(username="root", password="s3cret-Pw") as server:
        yield server


@pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager")
class _Broken:
    def now(self) -> datetime:
        raise RuntimeError("no time")


class _NoOffset(tzinfo):
    """A zone that gives no offset: naive, as Python reads it."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str | None:
        return None


@pytest.mark.parametrize(
    ("key", "value", "said"),
    [
        ("store", "memory://", "is a str: give a store"),
        ("wrap_uow_factory", 3, "is an int: give a function"),
        ("clock", "now", "is a str: give a clock (with now())"),
        ("ids", 7, "is an int: give an id generator (new_id)"),
        ("trace_id", 42, "is an int: give text"),
        ("policies", 5, "is an int: give policy functions (any iterable)"),
        ("policies", ["not a function"], "holds a str: give functions"),
        ("policies", [FixedClock], "holds a type: give functions"),
        ("policies", "change_freeze", "is a str: give policy functions"),
        ("on_transition", "print", "is a str: give a function"),
        ("existing_store", "yes", "is a str: give a bool"),
        ("upgrade_store", "no", "is a str: give a bool"),
        ("existing_store", 2, "is an int: give a bool"),
        ("upgrade_store", -1, "is an int: give a bool"),
        ("clock", FixedClock, "is the class FixedClock: give a clock (with now()), an instance"),
        ("ids", SequentialIds, "is the class SequentialIds: give an id generator (new_id), an"),
        ("store", MemoryStore, "is the class MemoryStore: give a store, an instance of it"),
        ("clock", datetime.now(UTC), "its now() gave a datetime without a zone: give a clock"),
        ("trace_id", "a\nb", "must be one line without control characters"),
        ("clock", _Broken(), "its now() raised RuntimeError: no time"),
        ("clock", FixedClock(datetime(2026, 1, 1, tzinfo=_NoOffset())), "without a zone"),
    ],
)
def test_an_override_of_the_wrong_kind_is_a_configuration_error_naming_it(
    tmp_path: Path, key: str, value: Any, said: str
) -> None:
    settings = Settings(store_url=f"surrealkv://{tmp_path / 'store'}")
    with pytest.raises(ConfigurationError) as refused:
        open_app(settings, Overrides(**{key: value}))  # as an untyped caller may
    [problem] = refused.value.problems
    assert (problem.key, problem.source) == (key, f"Overrides({key}=...)")
    assert said in str(problem)
    assert not (tmp_path / "store").exists()  # refused before anything was opened


def test_policies_may_be_given_as_any_iterable_and_are_read_once() -> None:
    """`filter` over `default_policies()` is how one is left out: a one-shot iterator."""
    from domain.model.policy import change_freeze, default_policies

    kept = filter(lambda p: p is not change_freeze, default_policies())
    with build_app(Settings(store_url="memory://"), Overrides(policies=kept)) as app:
        policies = app.gate._policies
        assert change_freeze not in policies and len(policies) == len(default_policies()) - 1
    once = Overrides(policies=(p for p in default_policies()))  # a generator, used up once read
    for _ in range(2):
        with build_app(Settings(store_url="memory://"), once) as app:
            assert len(app.gate._policies) == len(default_policies())
    with build_app(Settings(store_url="memory://"), Overrides(existing_store=cast(Any, 0))) as app:
        assert app.orchestrator is not None


def test_remote_store_with_credentials_from_settings(shim: SurrealWsShim) -> None:
    env = {
        "GOVKERNEL_STORE": shim.url,
        "GOVKERNEL_SURREAL_USERNAME": "root",
        "GOVKERNEL_SURREAL_PASSWORD": "s3cret-Pw",
        "GOVKERNEL_SURREAL_NAMESPACE": "gk",
        "GOVKERNEL_SURREAL_DATABASE": "remote",
    }
    settings = load_settings(env)
    assert not settings.exclusive_store
    with build_app(settings) as app:
        assert publish(app, "ws-1") is ExecutionState.SUCCEEDED
    wrong = load_settings(env | {"GOVKERNEL_SURREAL_PASSWORD": "wrong-Pw-123"})
    with pytest.raises(StorageUnavailable) as info, build_app(wrong):
        pass  # pragma: no cover
    assert "wrong-Pw-123" not in str(info.value)


def test_an_app_never_closed_ends_with_its_process_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Left as a crash leaves it (documented), which the next open checks: not closed half
    way through the interpreter's shutdown, which printed a traceback on every exit."""
    url = f"surrealkv://{tmp_path / 'store'}"
    code = (
        "import sys\n"
        "from composition.container import open_app\n"
        "from composition.settings import Settings\n"
        "app = open_app(Settings(store_url=sys.argv[1]))\n"
        "print(app.orchestrator.recover())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOVKERNEL_")}
    done = subprocess.run(
        [sys.executable, "-c", code, url], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout == "[]\n", done.stderr
    assert done.stderr == ""
    with (
        caplog.at_level(logging.WARNING, logger="govkernel.store"),
        build_app(Settings(store_url=url)) as app,  # the next open: taken for a crash
    ):
        assert app.unclean_shutdown is not None
        assert f"(pid {app.unclean_shutdown}) died with it open" in caplog.text  # a log's too
        assert app.check_after_crash() == [] and app.unclean_shutdown is None


SERVICE = """
import faulthandler, signal, sys
faulthandler.register(signal.SIGUSR1)  # where it is, should it not stop
from composition.container import build_app
from composition.settings import Settings
from composition.stopping import stopping_on_signals
from tests.composition.test_container import request

with stopping_on_signals(), build_app(Settings(store_url=sys.argv[1])) as app:
    n = 0
    while True:
        n += 1
        app.orchestrator.start("knowledge_publication", request(f"pub-{n}"))
        if n == 3:
            print("serving", flush=True)
"""


def _default_stops() -> None:
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_service_stopped_by_a_signal_closes_its_store_and_is_no_crash(
    tmp_path: Path, stop: signal.Signals
) -> None:
    url = f"surrealkv://{tmp_path / 'store'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOVKERNEL_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(SRC)])
    service = subprocess.Popen(
        [sys.executable, "-c", SERVICE, url],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As a supervisor starts it: a signal this process was left ignoring by an earlier
        # test (the CLI's main() ignores them as it exits) would be inherited, and kept.
        preexec_fn=_default_stops,
    )
    assert service.stdout is not None and service.stdout.readline() == "serving\n"
    service.send_signal(stop)
    try:
        _, stderr = service.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        service.send_signal(signal.SIGUSR1)
        time.sleep(2)
        service.kill()
        _, stderr = service.communicate()
        pytest.fail(f"still running 60 s after {stop.name}:\n{stderr}")
    assert service.returncode == 128 + stop, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    with build_app(Settings(store_url=url)) as app:
        assert app.unclean_shutdown is None  # closed: nothing to check after
        with app.uow_factory() as uow:  # what the signal stopped gave up its lease
            stopped = uow.executions.in_state(ExecutionState.RUNNING)
            assert [x.lease_owner for x in stopped] == [None] * len(stopped)
        recovered = app.orchestrator.recover()  # so recover finishes it now
        assert all(x.state is ExecutionState.SUCCEEDED for x in recovered)
        with app.uow_factory() as uow:
            assert uow.executions.in_state(ExecutionState.RUNNING) == []


def test_nothing_happens_at_import_time(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOVKERNEL_")}
    env |= {"GOVKERNEL_ENVIRONMENT": "bogus", "GOVKERNEL_DATA_DIR": str(tmp_path / "data")}
    code = (
        "import composition, composition.cli, composition.container, composition.wiring,"
        " composition.settings, composition.documents"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert list(tmp_path.iterdir()) == []  # no data dir, no store, no lock file


def test_only_the_container_imports_dependency_injector() -> None:
    importers = sorted(
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if "dependency_injector" in path.read_text(encoding="utf-8")
    )
    assert importers == ["composition/wiring.py"]


def test_a_service_runs_its_own_workflows_beside_the_built_in_ones() -> None:
    from composition.wiring import workflow_registry
    from domain.orchestration.definition import Step, WorkflowDefinition
    from domain.services.knowledge import KnowledgeService

    def mine(service: KnowledgeService) -> dict[str, WorkflowDefinition]:
        echo = WorkflowDefinition("echo", "1", kp.METADATA, (Step("echo", lambda u, c: "ok"),))
        return {**workflow_registry(service), "echo": echo}

    with build_app(Settings(store_url="memory://"), Overrides(workflows=mine)) as app:
        done = app.orchestrator.start("echo", {})
        assert done.state is ExecutionState.SUCCEEDED and done.step_outputs == {"echo": "ok"}
        assert set(app.workflows) == {kp.NAME, "echo"}
        assert app.orchestrator_for(actor="someone").start("echo", {}).state.terminal


def _echo(name: str = "echo") -> Any:
    from domain.orchestration.definition import Step, WorkflowDefinition

    return WorkflowDefinition(name, "1", kp.METADATA, (Step("echo", lambda u, c: "ok"),))


@pytest.mark.parametrize(
    "given",
    [
        lambda service: [_echo()],
        lambda service: MappingProxyType({"echo": _echo()}),
        lambda _: _echo(),
        lambda: [_echo()],  # no argument: called without the service, as a setting's is
        lambda service=None: [_echo()] if service is not None else [],  # given it if it may
    ],
    ids=["list", "mapping proxy", "one", "no argument", "optional argument"],
)
def test_a_service_may_give_its_workflows_as_a_list_a_mapping_or_one(given: Any) -> None:
    with build_app(Settings(store_url="memory://"), Overrides(workflows=given)) as app:
        assert app.orchestrator.start("echo", {}).state is ExecutionState.SUCCEEDED
        assert set(app.workflows) == {"echo"}


@pytest.mark.parametrize(
    ("given", "said"),
    [
        (lambda service: 1 / 0, "division by zero"),  # the function's own error, as raised
        (lambda service: {"echo": "not a workflow"}, "'echo' maps to a str, not a workflow"),
        (lambda service: [_echo(), _echo()], "'?echo'? (version 1 is retired )?twice"),
        (lambda service: [], "gives no workflows"),
        (lambda service: _echo, "return the workflows themselves"),
        ([_echo()], "is a list: give a function of the knowledge service"),
        (
            lambda service, registry: [_echo()],
            r"\): takes \(service, registry\): give a function of no argument, or of one",
        ),
    ],
    ids=["raises", "not a workflow", "twice", "none", "a function", "not called", "two arguments"],
)
def test_workflows_given_in_code_that_cannot_be_used_make_no_store(
    tmp_path: Path, given: Any, said: str
) -> None:
    settings = Settings(store_url=f"surrealkv://{tmp_path}/store")
    with pytest.raises((ConfigurationError, ZeroDivisionError), match=said) as refused:
        open_app(settings, Overrides(workflows=given))
    if refused.type is ConfigurationError:
        assert "Overrides(workflows=...)" in str(refused.value)
    assert not (tmp_path / "store").exists()  # refused before the store was made
    # ...and the retired ones alike.
    with pytest.raises((ConfigurationError, ZeroDivisionError), match=said):
        open_app(settings, Overrides(retired=given))
    assert not (tmp_path / "store").exists()
    assert not (tmp_path / "store").exists()


def test_building_your_workflows_first_spends_none_of_your_other_overrides(
    tmp_path: Path,
) -> None:
    """On a store it may make, the app builds your workflows over a throwaway store first;
    your id generator and wrappers are not spent on that."""
    from ports.clock import SequentialIds

    wrapped: list[object] = []

    def wrap(factory: UnitOfWorkFactory) -> UnitOfWorkFactory:
        wrapped.append(factory)
        return factory

    def first_id(store_url: str) -> str:
        overrides = Overrides(
            ids=SequentialIds(), wrap_uow_factory=wrap, workflows=lambda service: [_echo()]
        )
        with build_app(Settings(store_url=store_url), overrides) as app:
            return app.orchestrator.start("echo", {}).id

    assert first_id(f"surrealkv://{tmp_path}/store") == first_id("memory://")
    assert len(wrapped) == 2  # once for each app


def test_settings_in_code_take_a_list_of_workflow_references() -> None:
    settings = Settings(store_url="memory://", workflows=["acme.flows:registry"])
    assert settings.workflows == ("acme.flows:registry",)
    with pytest.raises(ConfigurationError, match="must be a list or tuple"):
        Settings(store_url="memory://", workflows="acme.flows:registry")


def test_a_service_finishes_an_earlier_versions_executions_beside_the_current_one() -> None:
    from domain.model.errors import InvalidState
    from domain.orchestration.definition import Step, WorkflowDefinition
    from domain.services.governance import ApprovalRequired
    from ports.unit_of_work import UnitOfWork

    def ask(uow: UnitOfWork, ctx: Any) -> str:
        if not ctx.execution.approvals:
            raise ApprovalRequired("payment", ["one approval"])
        return "asked"

    def version(number: str, *steps: str) -> WorkflowDefinition:
        def done(uow: UnitOfWork, ctx: Any) -> str:
            return "done"

        made = (Step(n, ask if n == "ask" else done) for n in steps)
        return WorkflowDefinition("pay", number, kp.METADATA, tuple(made))

    store = MemoryStore()
    v1 = Overrides(store=store, workflows=lambda service: {"pay": version("1", "ask", "pay")})
    with build_app(Settings(store_url="memory://"), v1) as app:
        waiting = app.orchestrator.start("pay", {})
    v2 = Overrides(
        store=store, workflows=lambda service: {"pay": version("2", "ask", "check", "pay")}
    )
    with (
        build_app(Settings(store_url="memory://"), v2) as app,
        pytest.raises(InvalidState, match="runs version 2"),
    ):
        app.orchestrator.approve(waiting.id, approver="bob", role="r")
    with_v1 = evolve(v2, retired=lambda service: [version("1", "ask", "pay")])
    with build_app(Settings(store_url="memory://"), with_v1) as app:
        assert app.orchestrator.start("pay", {}).workflow_version == "2"
        done = app.orchestrator_for(actor="carol").approve(waiting.id, approver="bob", role="r")
        assert done.state is ExecutionState.SUCCEEDED and list(done.step_outputs) == ["ask", "pay"]


def test_an_orchestrator_for_another_tenant_sees_only_that_tenants_executions() -> None:
    from domain.model.errors import InvalidInput
    from ports.errors import RecordNotFound

    with build_app(Settings(store_url="memory://", tenant="alpha")) as app:
        beta = app.orchestrator_for(tenant="beta", actor="bea")
        theirs = beta.start(kp.NAME, request("t-1"))
        assert theirs.tenant == "beta" and theirs.requested_by == "bea"
        with pytest.raises(RecordNotFound):
            app.orchestrator.get(theirs.id)
        assert beta.get(theirs.id).id == theirs.id
        with pytest.raises(InvalidInput, match="tenant"):
            app.orchestrator_for(tenant="not a tenant")


def test_a_service_checks_every_chain_after_a_crash_then_forgets_it(tmp_path: Path) -> None:
    settings = Settings(store_url=f"surrealkv://{tmp_path / 'store'}")
    with build_app(settings) as app:
        assert publish(app, "p-1") is ExecutionState.SUCCEEDED
        assert app.unclean_shutdown is None and app.check_after_crash() == []
        xid = app.orchestrator.start(kp.NAME, request("p-2")).id
    lock = tmp_path / "store.lock"
    lock.write_text("4242")  # a holder that died
    with build_app(settings) as app:
        assert app.unclean_shutdown == "4242" and isinstance(app.store, SurrealStore)
        entry = {"k": f"{xid}:000000002"}
        [reason] = app.store.select_rows("SELECT VALUE reason FROM type::thing('audit', $k)", entry)
        app.store.select_rows(  # a chain the crash (say) left broken
            "UPDATE type::thing('audit', $k) SET reason = 'torn'", entry
        )
        [(tenant, report)] = app.check_after_crash()
        assert (tenant, report.execution_id, report.ok) == (settings.tenant, xid, False)
        assert app.unclean_shutdown == "4242"  # not forgotten while a chain is broken
    assert lock.read_text() == "unclean 4242"
    lock.write_text("4242")
    with build_app(settings) as app:
        assert isinstance(app.store, SurrealStore)
        app.store.select_rows(  # put back as it was: the chain verifies, the crash is forgotten
            "UPDATE type::thing('audit', $k) SET reason = $r", entry | {"r": reason}
        )
        assert app.check_after_crash() == [] and app.unclean_shutdown is None
    assert lock.read_text() == ""


def test_every_event_is_read_a_page_at_a_time_and_a_page_holds_at_least_one() -> None:
    from composition import queries

    with build_app(Settings(store_url="memory://")) as app:
        publish(app, "p-1")
        events = list(queries.all_events(app.uow_factory, app.runtime.tenant, page=2))
        assert len(events) > 2 and [e.position for e in events] == list(range(1, len(events) + 1))
        for page in (0, -1, True, "5"):  # 0 read nothing, then failed on an empty page
            with pytest.raises(ValueError, match="page must be an integer >= 1"):
                queries.all_events(app.uow_factory, app.runtime.tenant, page=page)  # type: ignore[arg-type]
