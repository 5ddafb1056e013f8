"""Keeping a worker's lease while its step runs.

A lease is set as a step commits and must outlast the next step, or another worker's
`recover` takes the execution over while the step is still under way, and runs it again.
While a step runs, its lease is renewed about three times per lease, each renewal a commit
of its own, so a step may run longer than the lease as long as its worker lives.

A renewal moves the execution's version on, as every commit does: the step's own commit is
made against the version the renewals left. One that finds the execution moved by someone
else (a cancel) goes on renewing while the lease is still this worker's, so nobody takes the
execution over while the step runs, but leaves the step the version it had: the step's
commit loses, as it would have, and the worker then acts on what moved it. Renewals stop
when the lease is another worker's, or the execution ended. A renewal that fails is tried
again at the next turn; one whose outcome is unknown is settled by reading the execution.

One thread per store (per unit-of-work factory) serves every orchestrator on it (a service
may make one per request), so a store slow to commit delays no other store's renewals; it
ends after a second with nothing to renew. A forked child starts with none.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

from domain.model.execution import WorkflowExecution
from ports.errors import CommitOutcomeUnknown
from ports.unit_of_work import UnitOfWorkFactory

_log = logging.getLogger("govkernel.orchestrator")

IDLE_SECONDS = 1.0  # the thread ends after this long with nothing to renew


class LeaseKeeper:
    """One worker's side of the renewals: what each renewal is made with."""

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        worker_id: str,
        ttl: timedelta,
        now: Callable[[], datetime],
    ) -> None:
        self.uow_factory = uow_factory
        self.worker_id = worker_id
        self.ttl = ttl
        self.now = now
        self.every = ttl.total_seconds() / 3

    @contextlib.contextmanager
    def kept(self, execution: WorkflowExecution) -> Iterator[None]:
        """Renew `execution`'s lease while the block runs (a step). On leaving, the execution
        carries the version and lease the renewals left, for the step's commit. Whoever
        holds the lease, the step is known to run here meanwhile (`kept_here`)."""
        with _running_here(self.uow_factory, execution.id), self._renewed(execution):
            yield

    @contextlib.contextmanager
    def _renewed(self, execution: WorkflowExecution) -> Iterator[None]:
        if execution.lease_owner != self.worker_id:  # not this worker's to keep
            yield
            return
        entry = _Kept(self, execution)
        renewals = _renewals_for(self.uow_factory, entry)
        try:
            yield
        finally:
            renewals.remove(entry)
            if entry.pending is not None:  # a renewal's outcome still unknown: settle it now
                with contextlib.suppress(Exception):
                    entry.settle()
            execution.version, execution.lease_expires_at = entry.version, entry.expires


class _Kept:
    def __init__(self, keeper: LeaseKeeper, execution: WorkflowExecution) -> None:
        self.keeper = keeper
        self.execution_id = execution.id
        self.version = execution.version  # the step's to commit on
        self.expires = execution.lease_expires_at
        self.due = time.monotonic() + keeper.every
        self.renewing = False
        self.stopped = False
        # The lease a renewal whose outcome is unknown wrote, until a read tells whether it
        # landed (the step would otherwise commit on a stale version, lose, and run again).
        self.pending: datetime | None = None

    def renew(self) -> None:
        """One renewal (outside the renewals' lock); stops this entry when the lease is no
        longer this worker's to keep."""
        keeper = self.keeper
        try:
            with keeper.uow_factory() as uow:
                execution = uow.executions.require(self.execution_id, with_input=False)
                self._settled_by(execution)
                if execution.lease_owner != keeper.worker_id or execution.state.terminal:
                    self.stopped = True
                    return
                ours = execution.version == self.version
                execution.claim(keeper.worker_id, now=keeper.now(), ttl=keeper.ttl)
                expires = execution.lease_expires_at
                uow.executions.save(execution)
                try:
                    uow.commit()
                except CommitOutcomeUnknown:
                    self.pending = expires
                    self.settle()
                    return
            if ours:  # moved by someone else, the step keeps the version it had: it loses
                self.version = execution.version
            self.expires = expires
        except Exception as exc:  # tried again at the next turn
            _log.warning(
                "could not renew the lease of execution %s: %s: %s",
                self.execution_id,
                type(exc).__name__,
                exc,
            )

    def settle(self) -> None:
        """Whether a renewal whose outcome is unknown was stored: read, never guessed."""
        with self.keeper.uow_factory() as uow:
            self._settled_by(uow.executions.require(self.execution_id, with_input=False))

    def _settled_by(self, stored: WorkflowExecution) -> None:
        if self.pending is None:
            return
        if stored.lease_expires_at == self.pending and stored.version == self.version + 1:
            self.version, self.expires = stored.version, self.pending
        self.pending = None


class _Renewals:
    """The leases kept on one store, renewed by one thread."""

    def __init__(self, factory: UnitOfWorkFactory) -> None:
        self._factory = factory
        self._entries: dict[int, _Kept] = {}
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._wake_at = 0.0  # when the thread looks again, unless woken

    def add(self, entry: _Kept) -> None:
        with self._changed:
            self._entries[id(entry)] = entry
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="govkernel-lease-keeper", daemon=True
                )
                self._thread.start()
            elif entry.due < self._wake_at:  # only then: a step's start costs no wake-up
                self._changed.notify_all()

    def remove(self, entry: _Kept) -> None:
        with self._changed:
            try:
                while entry.renewing:  # a renewal in flight decides the version
                    self._changed.wait()
            finally:  # even when interrupted (Ctrl-C): never renewed past its step
                entry.stopped = True
                self._entries.pop(id(entry), None)
        # No wake-up here: waking the thread at every step's end cost more than the step's
        # other bookkeeping. It looks again at least every IDLE_SECONDS (`_next_due`).

    def _run(self) -> None:
        while True:
            with self._changed:
                entry = self._next_due()
                if entry is None:
                    break
                entry.renewing = True
            try:
                entry.renew()
            finally:
                with self._changed:
                    entry.renewing = False
                    entry.due = time.monotonic() + entry.keeper.every
                    self._changed.notify_all()
        with _REGISTRY_LOCK, self._changed:  # idle: forgotten, unless a step came meanwhile
            if self._thread is None and not self._entries:
                _REGISTRY.pop(_key(self._factory), None)

    def _next_due(self) -> _Kept | None:
        """The next entry due (waited for, holding the lock); None, the thread then ending,
        after IDLE_SECONDS with nothing to renew."""
        idle_since = time.monotonic()
        while True:
            live = [e for e in self._entries.values() if not e.stopped]
            now = time.monotonic()
            if not live:
                if now - idle_since >= IDLE_SECONDS:
                    self._thread = None
                    return None
                self._wake_at = idle_since + IDLE_SECONDS
                self._changed.wait(self._wake_at - now)
                continue
            idle_since = now
            first = min(live, key=lambda e: e.due)
            if first.due <= now:
                return first
            # Capped, so that the thread notices within IDLE_SECONDS that the steps it
            # waited for have ended, and goes idle.
            self._wake_at = min(first.due, now + IDLE_SECONDS)
            self._changed.wait(self._wake_at - now)


_REGISTRY: dict[object, _Renewals] = {}
_REGISTRY_LOCK = threading.Lock()


def _key(factory: UnitOfWorkFactory) -> object:
    # By equality where the factory has it (`store.unit_of_work` is a new bound method at
    # each access, equal to the last), else by identity (the registry keeps it alive).
    try:
        hash(factory)
    except TypeError:
        return id(factory)
    return factory


# The steps running in this process now, by store (factory key) and execution: how many.
_RUNNING: dict[tuple[object, str], int] = {}
_RUNNING_LOCK = threading.Lock()


@contextlib.contextmanager
def _running_here(factory: UnitOfWorkFactory, execution_id: str) -> Iterator[None]:
    key = (_key(factory), execution_id)
    with _RUNNING_LOCK:
        _RUNNING[key] = _RUNNING.get(key, 0) + 1
    try:
        yield
    finally:
        with _RUNNING_LOCK:
            left = _RUNNING.pop(key) - 1
            if left:
                _RUNNING[key] = left


def kept_here(factory: UnitOfWorkFactory, execution_id: str) -> bool:
    """Whether a step of the execution runs in this process now, on this store: nobody
    here takes it over, whoever holds its lease and whatever the lease's time says (a clock
    that jumped, `recover(ignore_leases=True)` beside it), for the step would run twice."""
    with _RUNNING_LOCK:
        return (_key(factory), execution_id) in _RUNNING


def _renewals_for(factory: UnitOfWorkFactory, entry: _Kept) -> _Renewals:
    key = _key(factory)
    with _REGISTRY_LOCK:
        renewals = _REGISTRY.get(key)
        if renewals is None:
            renewals = _REGISTRY[key] = _Renewals(factory)
        renewals.add(entry)
    return renewals


def _forget_after_fork() -> None:
    """A forked child has none of its parent's threads: nothing of the parent's is renewed
    or running there, and its own steps start afresh."""
    global _REGISTRY_LOCK, _RUNNING_LOCK
    _RUNNING.clear()
    _RUNNING_LOCK = threading.Lock()
    for renewals in _REGISTRY.values():
        renewals._changed = threading.Condition()
        renewals._thread = None
        for entry in renewals._entries.values():
            entry.renewing, entry.stopped = False, True
        renewals._entries.clear()
    _REGISTRY.clear()
    _REGISTRY_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
