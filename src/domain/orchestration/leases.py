"""Keeping a worker's lease while its step runs.

A lease is set as a step commits and must outlast the next step, or another worker's
`recover` takes the execution over while the step is still under way, and runs it again.
The keeper renews the lease of every step under way about three times per lease, each in a
commit of its own, so a step may run longer than the lease as long as its worker lives.

A renewal moves the execution's version on, as every commit does: the step's own commit is
then made against the version the keeper left (`Kept.version`). A renewal that finds the
execution moved by someone else (a cancel, a worker that took it over) stops renewing it:
the step's commit then loses, as it would have.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

from domain.model.execution import WorkflowExecution
from ports.unit_of_work import UnitOfWorkFactory

_log = logging.getLogger("govkernel.orchestrator")

# A keeper with nothing to renew for this long lets its thread end (one is started again for
# the next step): an orchestrator left idle holds no thread.
IDLE_SECONDS = 1.0


class _Kept:
    def __init__(
        self, execution_id: str, version: int, expires: datetime | None, due: float
    ) -> None:
        self.execution_id = execution_id
        self.version = version
        self.expires = expires
        self.due = due
        self.renewing = False
        self.stopped = False


class LeaseKeeper:
    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        worker_id: str,
        ttl: timedelta,
        now: Callable[[], datetime],
    ) -> None:
        self._uow_factory = uow_factory
        self._worker_id = worker_id
        self._ttl = ttl
        self._now = now
        self._every = ttl.total_seconds() / 3
        self._kept: dict[int, _Kept] = {}
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._wake_at = 0.0  # when the keeper's thread looks again, unless woken

    @contextlib.contextmanager
    def kept(self, execution: WorkflowExecution) -> Iterator[None]:
        """Renew `execution`'s lease while the block runs (a step); on leaving, the execution
        carries the version the renewals left it at, for the step's commit to be made on."""
        if execution.lease_owner != self._worker_id:  # not this worker's to keep
            yield
            return
        entry = _Kept(
            execution.id,
            execution.version,
            execution.lease_expires_at,
            time.monotonic() + self._every,
        )
        with self._changed:
            self._kept[id(entry)] = entry
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name=f"govkernel-lease-{self._worker_id}", daemon=True
                )
                self._thread.start()
            elif entry.due < self._wake_at:  # only then: a step's start costs no wake-up
                self._changed.notify_all()
        try:
            yield
        finally:
            with self._changed:
                while entry.renewing:  # a renewal in flight decides the version
                    self._changed.wait()
                del self._kept[id(entry)]
            execution.version, execution.lease_expires_at = entry.version, entry.expires

    def _run(self) -> None:
        while True:
            with self._changed:
                entry = self._next_due()
                if entry is None:
                    return
                entry.renewing = True
            try:
                renewed = self._renew(entry)
            finally:
                with self._changed:
                    entry.renewing = False
                    entry.due = time.monotonic() + self._every
                    if renewed is None:
                        entry.stopped = True
                    else:
                        entry.version, entry.expires = renewed
                    self._changed.notify_all()

    def _next_due(self) -> _Kept | None:
        """The next entry due for renewal, waited for (holding the condition); None once
        nothing has been kept for IDLE_SECONDS."""
        idle_since = time.monotonic()
        while True:
            live = [e for e in self._kept.values() if not e.stopped]
            now = time.monotonic()
            if not live:
                if now - idle_since >= IDLE_SECONDS:
                    self._thread = None
                    return None
                self._wake_at = idle_since + IDLE_SECONDS
                self._changed.wait(self._wake_at - now)
                continue
            first = min(live, key=lambda e: e.due)
            if first.due <= now:
                return first
            self._wake_at = first.due
            self._changed.wait(first.due - now)
            idle_since = time.monotonic()

    def _renew(self, entry: _Kept) -> tuple[int, datetime | None] | None:
        """The execution's version and lease after renewing it, or None if it is no longer
        this worker's to renew (moved by someone else) or the renewal failed."""
        try:
            with self._uow_factory() as uow:
                execution = uow.executions.require(entry.execution_id, with_input=False)
                if execution.version != entry.version or execution.lease_owner != self._worker_id:
                    return None
                execution.claim(self._worker_id, now=self._now(), ttl=self._ttl)
                uow.executions.save(execution)
                uow.commit()
                return execution.version, execution.lease_expires_at
        except Exception as exc:  # the step's commit tells whether the lease was kept
            _log.warning(
                "could not renew the lease of execution %s: %s: %s",
                entry.execution_id,
                type(exc).__name__,
                exc,
            )
            return None
