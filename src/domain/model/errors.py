"""Typed domain errors. Each names what was wrong so callers never parse messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # lifecycle imports this module
    from domain.model.lifecycle import ExecutionState


# How much of a value a not-found error echoes.
ECHOED = 120


def both_ends(text: str, most: int) -> str:
    """`text`, or its two ends when longer than `most`: a value echoed, not repeated whole."""
    return text if len(text) <= most else f"{text[: most // 2]}...{text[-(most // 2) :]}"


def shown(value: object, most: int = 60) -> str:
    """`value` as an error echoes it: its repr, cut (a mistake is echoed, a megabyte of one
    is not); its type's name when its repr fails (the refusal must not)."""
    try:
        text = repr(value)
    except Exception:
        return f"<a {type(value).__name__}>"
    return text if len(text) <= most else f"{text[:most]}..."


def reduced(error: BaseException) -> tuple[Any, ...]:
    """How an error of ours pickles: as its class, message and attributes, without calling
    its constructor again. Pickle's own way calls the class with the message alone, which
    constructors taking the parts of a message refuse: an error raised in a process pool or
    a task queue's worker broke the pool instead of reaching its caller."""
    state = dict(vars(error))
    for cls in type(error).__mro__:  # a subclass's slots hold attributes too
        for name in (cls.__dict__.get("__slots__") or ()) if cls is not BaseException else ():
            if name not in ("__dict__", "__weakref__") and hasattr(error, name):
                state[name] = getattr(error, name)
    return _rebuilt, (type(error), error.args, state)


def _rebuilt(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls, *args)
    error.args = args
    for name, value in state.items():
        object.__setattr__(error, name, value)
    return error


class DomainError(Exception):
    """Base of every error the domain raises on purpose."""

    def __reduce__(self) -> tuple[Any, ...]:
        return reduced(self)


class InvalidInput(DomainError):
    """A value failed validation; `field` names it (dotted path for nested values)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class PolicyDenied(DomainError):
    """A guarded mutation was denied; the denial itself has been recorded."""

    def __init__(
        self, action: str, reasons: Sequence[str] | str = (), decision_id: str | None = None
    ) -> None:
        reasons = (reasons,) if isinstance(reasons, str) else tuple(reasons)  # not letter by letter
        # Raised by a step's own code as often as by a policy: a denial (or a gate, which an
        # approver must understand) always says something.
        reasons = tuple(r if isinstance(r, str) else repr(r) for r in reasons if str(r).strip())
        reasons = reasons or ("no reason given",)
        super().__init__(f"{action} denied: " + "; ".join(reasons))
        self.action = action
        self.reasons = reasons
        self.decision_id = decision_id


class IllegalTransition(DomainError):
    def __init__(self, execution_id: str, source: str, target: str) -> None:
        super().__init__(f"execution {execution_id}: illegal transition {source} -> {target}")
        self.execution_id = execution_id
        self.source = source
        self.target = target


class UnknownReference(DomainError):
    """A mutation referred to a record that does not exist (or is not visible to the tenant)."""

    def __init__(self, kind: str, ref: str) -> None:
        # A reference is the caller's: echoed cut, never a megabyte (or a secret) whole.
        super().__init__(f"unknown {kind}: {both_ends(str(ref), ECHOED)}")
        self.kind = kind
        self.ref = ref


class AlreadyPublished(DomainError):
    def __init__(self, publication_id: str, capsule_id: str, *, retracted: bool = False) -> None:
        since = ", since retracted: a publication id is used once" if retracted else ""
        super().__init__(
            f"publication {publication_id} already published as capsule {capsule_id}{since}"
        )
        self.publication_id = publication_id
        self.capsule_id = capsule_id
        self.retracted = retracted


class InvalidState(DomainError):
    """An entity method was called in a state that does not allow it. When an execution is
    what refused, `execution_id` names it and `state` is the `ExecutionState` it is in, so
    that a caller tells "already ended" from "still running" without reading the message."""

    def __init__(
        self,
        message: str,
        *,
        execution_id: str | None = None,
        state: ExecutionState | None = None,
    ) -> None:
        super().__init__(message)
        self.execution_id = execution_id
        self.state = state
