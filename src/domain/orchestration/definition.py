"""What a workflow is: ordered steps, their retry rules and an optional compensation."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from attrs import field, frozen

from domain.model.errors import reduced
from domain.model.execution import WorkflowExecution, WorkflowMetadata
from domain.model.runtime import RuntimeContext
from domain.model.validation import IDENTIFIER, IDENTIFIER_RULE, several, type_name
from ports.unit_of_work import UnitOfWork


class RetryableError(Exception):
    """A step failure worth another attempt (a transient dependency, a lost race)."""

    def __reduce__(self) -> tuple[Any, ...]:  # a team's subclass may take other arguments
        return reduced(self)


@frozen
class StepContext:
    """What a step sees: the runtime (with ids derived from the execution and the step,
    the same when a crashed attempt is replayed) and the execution as committed before the
    step began."""

    runtime: RuntimeContext
    execution: WorkflowExecution
    step: str
    # The same in every attempt of this step of this execution (a replay, a retry, a run
    # after an approval): the idempotency key for a call outside the unit of work that no
    # attempt may repeat, such as a payment whose reply timed out after it went through.
    step_key: str

    @property
    def input(self) -> Mapping[str, Any]:
        return self.execution.input

    def output_of(self, step: str) -> Any:
        if step not in self.execution.step_outputs:
            done = ", ".join(self.execution.step_outputs) or "none yet"
            raise KeyError(f"step {step!r} has no output in this execution (steps done: {done})")
        return self.execution.step_outputs[step]


StepFn = Callable[[UnitOfWork, StepContext], Any]


# The longest a retry may be put off: retry times are stored as instants, and a wait past
# what a calendar holds would fail the very commit that schedules it.
MAX_RETRY_DELAY = timedelta(days=365)


@frozen
class RetryPolicy:
    max_attempts: int = 3
    backoff: timedelta = timedelta(milliseconds=50)
    multiplier: float = 2.0
    # Each wait is backoff * multiplier ** (attempt - 1), never longer than this.
    max_delay: timedelta = MAX_RETRY_DELAY

    def __attrs_post_init__(self) -> None:
        for name, kind, said in (
            ("max_attempts", int, "an int"),
            ("backoff", timedelta, "a timedelta, e.g. timedelta(milliseconds=50)"),
            ("max_delay", timedelta, "a timedelta"),
            ("multiplier", int | float, "a number"),
        ):
            value = getattr(self, name)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"retry policy: {name} must be {said}, got {value!r}")
        if (
            self.max_attempts < 1
            or not timedelta(0) <= self.backoff <= self.max_delay <= MAX_RETRY_DELAY
            or not 1 <= self.multiplier < math.inf
        ):
            raise ValueError(
                "a retry policy needs max_attempts >= 1, 0 <= backoff <= max_delay <="
                f" {MAX_RETRY_DELAY.days} days and a finite multiplier >= 1, got"
                f" max_attempts={self.max_attempts}, backoff={self.backoff},"
                f" max_delay={self.max_delay}, multiplier={self.multiplier}"
            )

    def delay(self, attempt: int) -> timedelta:
        if not self.backoff:
            return timedelta(0)
        try:
            seconds = self.backoff.total_seconds() * self.multiplier ** max(attempt - 1, 0)
        except OverflowError:
            return self.max_delay
        return timedelta(seconds=min(seconds, self.max_delay.total_seconds()))


@frozen
class Step:
    name: str
    run: StepFn
    retry: RetryPolicy = RetryPolicy()
    side_effecting: bool = False

    def __attrs_post_init__(self) -> None:
        if not callable(self.run):
            raise ValueError(f"step {self.name!r}: run must be a function, got {self.run!r}")
        call = getattr(type(self.run), "__call__", None)  # noqa: B004 - an object's own
        if _deferred(self.run) or _deferred(call):
            # It would return a coroutine or generator unrun, found only as a run fails.
            raise ValueError(
                f"step {self.name!r}: run must be a plain function that does its work when"
                " called, not an async function or a generator (wrap a coroutine in"
                " asyncio.run, or collect a generator's items, inside a plain function)"
            )
        if not isinstance(self.retry, RetryPolicy) or not isinstance(self.side_effecting, bool):
            raise ValueError(
                f"step {self.name!r}: retry must be a RetryPolicy and side_effecting a bool"
            )
        try:
            # What is called: a decorator's wrapper, not the function it wraps.
            signature: inspect.Signature | None = inspect.signature(self.run, follow_wrapped=False)
        except (TypeError, ValueError):  # one without a signature to read: its call will tell
            signature = None
        try:
            if signature is not None:
                signature.bind(None, None)
        except TypeError:
            # Else found only as a run fails, the execution failed for good.
            raise ValueError(
                f"step {self.name!r}: run is called as run(uow, ctx), with the unit of work"
                f" and the step's context, and {_named(self.run)}{signature} cannot take that"
            ) from None


def _named(function: object) -> str:
    return str(getattr(function, "__qualname__", type(function).__qualname__))


def _deferred(function: object) -> bool:
    """Whether calling `function` only makes a coroutine or generator (partials seen through)."""
    return (
        inspect.iscoroutinefunction(function)
        or inspect.isgeneratorfunction(function)
        or inspect.isasyncgenfunction(function)
    )


def _as_steps(value: Iterable[Step]) -> tuple[Step, ...]:
    # Any iterable of steps, a generator included (checked twice below, so kept as a tuple).
    if not several(value):
        raise ValueError(f"steps must be a sequence of Steps, got {type(value).__name__}")
    return tuple(value)


@frozen
class WorkflowDefinition:
    name: str
    version: str
    metadata: WorkflowMetadata
    steps: tuple[Step, ...] = field(converter=_as_steps)
    compensation: Step | None = None
    # Checks an input before anything is written: raises InvalidInput naming the field (a
    # ValueError, TypeError or KeyError, or returning False, refuses it too); what it returns
    # is otherwise ignored.
    validate_input: Callable[[Mapping[str, Any]], object] | None = None

    def __attrs_post_init__(self) -> None:
        # Names travel into audit entries, CLI arguments and stored records: identifiers only.
        for what, value in (("workflow name", self.name), ("workflow version", self.version)):
            _name(what, value)
        if not isinstance(self.metadata, WorkflowMetadata):
            raise ValueError(f"workflow {self.name}: metadata must be a WorkflowMetadata")
        if self.validate_input is not None and not callable(self.validate_input):
            raise ValueError(f"workflow {self.name}: validate_input must be a function or None")
        steps = (*self.steps, *((self.compensation,) if self.compensation is not None else ()))
        for step in steps:
            if not isinstance(step, Step):
                raise ValueError(f"workflow {self.name}: every step must be a Step, got {step!r}")
            _name(f"workflow {self.name}: step name", step.name)
        names = [s.name for s in self.steps]
        if not names:
            raise ValueError(f"workflow {self.name}: steps must not be empty")
        twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
        if twice is not None:
            raise ValueError(f"workflow {self.name}: step {twice!r} is named twice")
        if self.compensation is not None and self.compensation.name in names:
            # Attempts are counted per name: sharing one would spend the step's on the undo.
            raise ValueError(
                f"workflow {self.name}: compensation {self.compensation.name!r} shares a step's"
                " name"
            )

    def step_names(self) -> Sequence[str]:
        return [s.name for s in self.steps]

    def shape(self) -> dict[str, Any]:
        """What an execution this definition starts is pinned to: its steps in order, which
        of them have side effects, and its compensation. Steps changed under the same version
        would otherwise drive an execution by position: a step run again, another skipped,
        an undo lost."""
        return {
            "steps": [[s.name, s.side_effecting] for s in self.steps],
            "compensation": None if self.compensation is None else self.compensation.name,
        }


def _name(what: str, value: object) -> None:
    if not isinstance(value, str):  # version=1 read as valid: "... got 1"
        raise ValueError(f"{what} must be text ({IDENTIFIER_RULE}); got {type_name(value)}")
    if not IDENTIFIER.match(value):
        raise ValueError(f"{what} must be {IDENTIFIER_RULE}; got {value!r}")
