"""Clock and id-generator implementations (the protocols live in domain.model.runtime)."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

from domain.model.errors import InvalidInput
from domain.model.runtime import Clock, IdGenerator
from domain.model.validation import aware

__all__ = ["Clock", "FixedClock", "IdGenerator", "SequentialIds", "SystemClock", "UuidIds"]


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A manual clock for tests and replays; thread-safe."""

    moves_by_itself = False  # see domain.model.runtime.Clock

    def __init__(self, start: datetime) -> None:
        # Every instant govkernel stores is aware: a naive start would be refused only as
        # the first record is written, or compared with aware approvals (a TypeError).
        self._now = aware("start", start)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> None:
        if not isinstance(delta, timedelta):
            raise InvalidInput("delta", f"must be a timedelta, got {type(delta).__name__}")
        with self._lock:
            self._now += delta


class UuidIds:
    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex}"


class SequentialIds:
    """Deterministic ids for tests and examples."""

    def __init__(self, start: int = 0) -> None:
        self._n = start
        self._lock = threading.Lock()

    def new_id(self, prefix: str) -> str:
        with self._lock:
            self._n += 1
            return f"{prefix}-{self._n:06d}"
