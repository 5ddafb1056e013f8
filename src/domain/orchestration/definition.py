"""What a workflow is: ordered steps, their retry rules and an optional compensation."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from attrs import frozen

from domain.model.execution import WorkflowExecution, WorkflowMetadata
from domain.model.runtime import RuntimeContext
from ports.unit_of_work import UnitOfWork


class RetryableError(Exception):
    """A step failure worth another attempt (a transient dependency, a lost race)."""


@frozen
class StepContext:
    """What a step sees: the runtime (with ids derived from execution and step) and the
    execution as committed before the step began."""

    runtime: RuntimeContext
    execution: WorkflowExecution

    @property
    def input(self) -> Mapping[str, Any]:
        return self.execution.input

    def output_of(self, step: str) -> Any:
        return self.execution.step_outputs[step]


StepFn = Callable[[UnitOfWork, StepContext], Any]


@frozen
class RetryPolicy:
    max_attempts: int = 3
    backoff: timedelta = timedelta(milliseconds=50)
    multiplier: float = 2.0

    def __attrs_post_init__(self) -> None:
        if self.max_attempts < 1 or self.backoff < timedelta(0) or self.multiplier < 1:
            raise ValueError(
                "a retry policy needs max_attempts >= 1, a backoff >= 0 and a multiplier >= 1,"
                f" got {self.max_attempts}, {self.backoff}, {self.multiplier}"
            )

    def delay(self, attempt: int) -> timedelta:
        return self.backoff * (self.multiplier ** max(attempt - 1, 0))


@frozen
class Step:
    name: str
    run: StepFn
    retry: RetryPolicy = RetryPolicy()
    side_effecting: bool = False


@frozen
class WorkflowDefinition:
    name: str
    version: str
    metadata: WorkflowMetadata
    steps: tuple[Step, ...]
    compensation: Step | None = None
    # Checks an input before anything is written; raises InvalidInput naming the field.
    validate_input: Callable[[Mapping[str, Any]], object] | None = None

    def __attrs_post_init__(self) -> None:
        names = [s.name for s in self.steps]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"workflow {self.name}: steps must be non-empty and uniquely named")
        if self.compensation is not None and self.compensation.name in names:
            # Attempts are counted per name: sharing one would spend the step's on the undo.
            raise ValueError(
                f"workflow {self.name}: compensation {self.compensation.name!r} shares a step's"
                " name"
            )

    def step_names(self) -> Sequence[str]:
        return [s.name for s in self.steps]
