"""Every error govkernel raises crosses a process boundary as what it is: a process pool, a
task queue's worker or a multiprocessing queue hands its caller the same class, message and
attributes."""

from __future__ import annotations

import importlib
import pickle
import pkgutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

import pytest

from composition.queries import EventGap
from composition.settings import ConfigurationError, Problem
from domain.model import errors as domain_errors
from domain.model.errors import (
    AlreadyPublished,
    IllegalTransition,
    InvalidInput,
    InvalidState,
    PolicyDenied,
    UnknownReference,
)
from domain.model.lifecycle import ExecutionState
from domain.orchestration.definition import RetryableError
from domain.orchestration.orchestrator import RecoveryIncomplete
from domain.services.governance import ApprovalRequired
from domain.workflows.knowledge_publication import VerificationFailed
from ports import errors as port_errors

PACKAGES = ("domain", "ports", "adapters", "composition")

# One of each public error class, built as the code that raises it does.
SAMPLES: dict[str, BaseException] = {
    e.__class__.__name__: e
    for e in [
        domain_errors.DomainError("plain"),
        InvalidInput("documents[0].title", "must not be empty"),
        PolicyDenied("publish", ["tier Tier1 needs a reviewer"], "dec-1"),
        ApprovalRequired("publish", ("needs approval",), "dec-2"),
        IllegalTransition("wfx-1", "succeeded", "running"),
        UnknownReference("analysis", "an-1"),
        AlreadyPublished("pub-1", "cap-1", retracted=True),
        InvalidState("wfx-1 is succeeded", execution_id="wfx-1", state=ExecutionState.SUCCEEDED),
        VerificationFailed("capsule cap-1 does not match"),
        RecoveryIncomplete([], [("wfx-2", "StorageUnavailable: gone")]),
        RetryableError("try again"),
        port_errors.PortError("plain"),
        port_errors.ConcurrencyConflict("execution", "wfx-1", "version 3, not 2"),
        port_errors.DuplicateRecord("capsule", "cap-1", "publication id pub-1"),
        port_errors.RecordNotFound("execution", "wfx-9"),
        port_errors.ExecutionNotFound("wfx-8"),
        port_errors.InvalidRecord("knowledge_source: field `x` is not part of the schema"),
        port_errors.CorruptRecord("audit entry does not read", entry=4),
        port_errors.StorageUnavailable("cannot reach SurrealDB"),
        port_errors.StoreInUse("store data is in use by another process (pid 7)"),
        port_errors.CommitOutcomeUnknown("commit outcome unknown"),
        port_errors.UnitOfWorkClosed("closed"),
        port_errors.UnitOfWorkLent("lent"),
        port_errors.UnitOfWorkEntered("entered"),
        port_errors.InjectedFault("planned"),
        EventGap(7, []),
        ConfigurationError([Problem("tenant", "GOVKERNEL_TENANT", "must not be empty")]),
    ]
}


def public_errors() -> set[str]:
    """The error classes govkernel's modules define (tests' own and private ones aside)."""
    found = set()
    for package in PACKAGES:
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            if ".contract" in info.name or info.name.endswith("__main__"):
                continue  # the contract suite's own signals; running the CLI
            module = importlib.import_module(info.name)
            for name, value in vars(module).items():
                if (
                    isinstance(value, type)
                    and issubclass(value, BaseException)
                    and value.__module__ == module.__name__
                    and not name.startswith("_")
                ):
                    found.add(name)
    return found


def round_trip(error: BaseException) -> BaseException:
    return pickle.loads(pickle.dumps(error))  # type: ignore[no-any-return]


def test_every_public_error_has_a_sample_here() -> None:
    # The CLI's own failures and what reading files raises never leave their process.
    internal = {"Failed", "DocumentError", "UnreadableFile", "AnchorFileError"}
    assert public_errors() - internal == set(SAMPLES)


@pytest.mark.parametrize("error", SAMPLES.values(), ids=list(SAMPLES))
def test_an_error_pickles_as_its_class_message_and_attributes(error: BaseException) -> None:
    again = round_trip(error)
    assert type(again) is type(error)
    assert str(again) == str(error) and again.args == error.args
    assert vars(again) == vars(error)


def test_a_teams_own_error_with_other_arguments_pickles_too() -> None:
    class OverLimit(InvalidInput):
        __slots__ = ("limit",)  # attributes in slots come along too

        def __init__(self, amount: int) -> None:
            super().__init__("amount", f"{amount} is over the limit")
            self.amount, self.limit = amount, 100

    globals()["OverLimit"] = OverLimit  # pickle finds a class by its module's name for it
    OverLimit.__qualname__ = "OverLimit"
    try:
        error = OverLimit(500)
        error.add_note("raised by a test")
        again = round_trip(error)
        assert isinstance(again, OverLimit) and again.amount == 500 and again.field == "amount"
        assert again.limit == 100 and again.__notes__ == ["raised by a test"]
    finally:
        del globals()["OverLimit"]


def test_pickles_default_way_is_what_fails_without_this() -> None:
    """The check above can fail: an error whose constructor takes the parts of its message,
    pickled Python's default way, does not come back."""

    class Parts(Exception):
        def __init__(self, field: str, problem: str) -> None:
            super().__init__(f"{field}: {problem}")

    globals()["Parts"] = Parts
    Parts.__qualname__ = "Parts"
    try:
        with pytest.raises(TypeError, match="missing 1 required positional argument"):
            round_trip(Parts("a", "b"))
    finally:
        del globals()["Parts"]


def start_with_bad_input() -> Any:
    from composition.container import build_app
    from composition.settings import Settings
    from domain.workflows import knowledge_publication as kp

    with build_app(Settings(store_url="memory://")) as app:
        return app.orchestrator.start(kp.NAME, {"documents": "none"})


def test_a_refusal_in_a_process_pool_reaches_its_caller_as_itself() -> None:
    with (
        ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool,
        pytest.raises(InvalidInput) as refused,
    ):
        pool.submit(start_with_bad_input).result(timeout=120)
    assert refused.value.field.startswith("documents")


def test_a_refusal_names_its_execution_and_state_and_an_unknown_one_is_a_refusal_too() -> None:
    """What a service maps to its own answers (404, 409) without reading messages."""
    from composition.container import build_app
    from composition.settings import Settings
    from tests.composition.test_container import request

    with build_app(Settings(store_url="memory://")) as app:
        done = app.orchestrator.start("knowledge_publication", request("pub-1"))
        with pytest.raises(InvalidState) as ended:
            app.orchestrator.acting_as("bob").approve(done.id, role="reviewer")
        assert (ended.value.execution_id, ended.value.state) == (done.id, ExecutionState.SUCCEEDED)
        with pytest.raises(InvalidState) as cancelled:
            app.orchestrator.cancel(done.id)
        assert (cancelled.value.execution_id, cancelled.value.state) == (
            done.id,
            ExecutionState.SUCCEEDED,
        )
        acts: list[Callable[[], object]] = [
            lambda: app.orchestrator.get("wfx-none"),
            lambda: app.orchestrator.acting_as("bob").approve("wfx-none", role="reviewer"),
            lambda: app.orchestrator.cancel("wfx-none"),
        ]
        for act in acts:
            with pytest.raises(port_errors.ExecutionNotFound) as missing:
                act()
            assert isinstance(missing.value, port_errors.RecordNotFound)  # as it always was
            assert isinstance(missing.value, UnknownReference)  # and a refusal: a DomainError
            assert missing.value.execution_id == missing.value.key == "wfx-none"


@pytest.mark.parametrize(
    "reasons", [[], "", ["  ", "\n"], None], ids=["none", "empty", "blank", "left out"]
)
def test_a_denial_or_gate_raised_without_a_reason_says_none_was_given(reasons: Any) -> None:
    """A step's own `ApprovalRequired("payout", [])` left its approver with "payout denied: ";
    `ApprovalRequired("payout")` was a TypeError (a library user, h155)."""
    given = () if reasons is None else (reasons,)
    for error in (PolicyDenied("payout", *given), ApprovalRequired("payout", *given)):
        assert str(error) == "payout denied: no reason given"
        assert error.reasons == ("no reason given",)


def test_a_denial_raised_with_reasons_not_text_says_them() -> None:
    error = PolicyDenied("payout", ["limit", 120, None])  # type: ignore[list-item]
    assert error.reasons == ("limit", "120", "None")
    assert str(error) == "payout denied: limit; 120; None"
