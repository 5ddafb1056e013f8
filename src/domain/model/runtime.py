"""The typed runtime context a workflow receives. Only the composition root builds one."""

from __future__ import annotations

import copy
import hashlib
from datetime import datetime
from typing import Protocol

from attrs import evolve, frozen

from domain.model.environment import Environment
from domain.model.errors import InvalidInput, shown
from domain.model.validation import actor_name, identifier, text


class Clock(Protocol):
    """What gives the time. A clock that moves only when told to (a test's) may also say
    `moves_by_itself = False`: a retry's in-line wait then ends as soon as a wait leaves it
    where it was, instead of waiting out `max_inline_wait` in real time."""

    def now(self) -> datetime: ...


class IdGenerator(Protocol):
    def new_id(self, prefix: str) -> str: ...


class DerivedIds:
    """Ids derived from a scope (an execution's, a step's) and a count: a replayed step
    mints the very same ids."""

    def __init__(self, *scope: str) -> None:
        self._scope = ":".join(scope)
        self._n = 0

    def new_id(self, prefix: str) -> str:
        self._n += 1
        digest = hashlib.sha256(f"{self._scope}:{prefix}:{self._n}".encode()).hexdigest()
        return f"{prefix}-{digest[:24]}"


@frozen
class RuntimeContext:
    environment: Environment
    tenant: str
    service: str
    actor: str
    clock: Clock
    ids: IdGenerator
    trace_id: str
    change_freeze: bool = False
    # False while a step runs on an execution not stored yet (the first step, committed with
    # the start): a denial is then only raised, and recorded when the step runs again on the
    # stored execution, so a start that never lands leaves no denial behind.
    record_denials: bool = True

    def __attrs_post_init__(self) -> None:
        # Built by hand in services and tests too: what it says is written into every
        # record a workflow makes, so it is held to the rules the settings are.
        if not isinstance(self.environment, Environment):
            raise InvalidInput(
                "environment",
                f"must be one of {Environment.spelled_in_code()}, got {self.environment!r}",
            )
        # Kept as the plain text checked: a str subclass's own __eq__ would decide which
        # tenant's executions this context reads.
        checked = {
            "tenant": identifier("tenant", self.tenant),
            "service": identifier("service", self.service),
            "actor": actor_name("actor", self.actor),
            "trace_id": text("trace_id", self.trace_id, max_len=200, single_line=True),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)
        for flag in ("change_freeze", "record_denials"):
            if not isinstance(getattr(self, flag), bool):
                raise InvalidInput(flag, f"must be a bool, got {shown(getattr(self, flag))}")
        for name, method in (("clock", "now"), ("ids", "new_id")):
            if not callable(getattr(getattr(self, name), method, None)):
                raise InvalidInput(name, f"must have a {method}() method")

    def with_ids(self, ids: IdGenerator) -> RuntimeContext:
        return evolve(self, ids=ids)

    def for_execution(
        self,
        *,
        ids: IdGenerator,
        trace_id: str,
        tenant: str,
        actor: str,
        record_denials: bool = True,
    ) -> RuntimeContext:
        """The context a step of a stored execution runs with: its ids, and the trace,
        tenant and requester the execution carries. Those are not checked again: checked
        when it started, or stored by an earlier release under looser rules, an execution
        must still run (and be undone) as it started."""
        step = copy.copy(self)  # without __init__: no checks
        changed: dict[str, object] = {
            "ids": ids,
            "trace_id": trace_id,
            "tenant": tenant,
            "actor": actor,
            "record_denials": record_denials,
        }
        for name, value in changed.items():
            object.__setattr__(step, name, value)
        return step

    def with_actor(self, actor: str) -> RuntimeContext:
        return evolve(self, actor=actor)

    def with_tenant(self, tenant: str) -> RuntimeContext:
        return evolve(self, tenant=tenant)
