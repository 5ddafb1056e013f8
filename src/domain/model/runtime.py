"""The typed runtime context a workflow receives. Only the composition root builds one."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Protocol

from attrs import evolve, frozen

from domain.model.environment import Environment


class Clock(Protocol):
    def now(self) -> datetime: ...


class IdGenerator(Protocol):
    def new_id(self, prefix: str) -> str: ...


class DerivedIds:
    """Ids derived from (execution, step, n): a replayed step mints the very same ids."""

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

    def with_ids(self, ids: IdGenerator) -> RuntimeContext:
        return evolve(self, ids=ids)

    def with_actor(self, actor: str) -> RuntimeContext:
        return evolve(self, actor=actor)

    def with_tenant(self, tenant: str) -> RuntimeContext:
        return evolve(self, tenant=tenant)
