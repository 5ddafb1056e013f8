"""Runs workflow executions durably: one unit of work per step, exactly-once step effects.

Each step's domain writes, the execution checkpoint (output, cursor, lease) and the audit
entry of its transition commit together. Anything that goes wrong is resolved by re-reading
the execution, never by blindly repeating a commit.
"""

from __future__ import annotations

import contextlib
import copy
import enum
import inspect
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any

from attrs import evolve, frozen

from domain.model.errors import DomainError, InvalidInput, InvalidState, PolicyDenied, shown
from domain.model.execution import (
    RollbackStrategy,
    WorkflowExecution,
    approval_reason,
    started_steps,
    steps_done,
)
from domain.model.frozen import read_only
from domain.model.lifecycle import AuditEntry, ChainReport, ExecutionState
from domain.model.policy import Approval, ImpactTier
from domain.model.runtime import DerivedIds, RuntimeContext
from domain.model.validation import actor_name, one_line, plain, text
from domain.orchestration.definition import (
    RetryableError,
    RetryPolicy,
    Step,
    StepContext,
    WorkflowDefinition,
)
from domain.orchestration.leases import LeaseKeeper, kept_here
from domain.services.governance import ApprovalRequired
from ports.errors import (
    CommitOutcomeUnknown,
    ConcurrencyConflict,
    CorruptRecord,
    DuplicateRecord,
    ExecutionNotFound,
    InjectedFault,
    InvalidRecord,
    PortError,
    StorageUnavailable,
    UnitOfWorkLent,
)
from ports.unit_of_work import UnitOfWork, UnitOfWorkFactory

S = ExecutionState
RECOVERABLE = (S.RUNNING, S.PENDING, S.RETRY_SCHEDULED, S.CANCELLING, S.COMPENSATING)
MAX_ERROR = 500


class RecoveryIncomplete(DomainError):
    """Some executions could not be resumed; every other one was."""

    def __init__(self, resumed: list[WorkflowExecution], failures: list[tuple[str, str]]) -> None:
        first_id, first_error = failures[0]
        super().__init__(
            f"{len(failures)} execution(s) could not be resumed, first {first_id}: {first_error}"
        )
        self.resumed = resumed
        self.failures = failures


class _Next(enum.Enum):
    CONTINUE = "continue"
    # Another worker or command moved the execution while this attempt ran: this worker's
    # commit lost (the version check decided). If a worker took it over, this one stops.
    LOST = "lost"
    # Lost to a write of the execution record itself (its version moved), not of a record
    # the step read: what a twin (a worker of the same id) renewing "its" lease does.
    OVERWRITTEN = "overwritten"


@frozen
class _Stop:
    execution: WorkflowExecution | None = None


@frozen
class _FirstStepFailed:
    step: str
    error: Exception


@frozen
class _Wait:
    delay: timedelta


@frozen
class _Unknown:
    """A commit whose outcome is unknown: the next turn re-reads what is stored."""

    error: CommitOutcomeUnknown
    # The execution's version the attempt started from: a later attempt that starts from
    # another one shows the commit landed after all.
    seen_version: int


def _stopping(error: BaseException) -> bool:
    """What stops a worker without it dying, as opposed to a step's failure: Ctrl-C (SIGTERM
    as the CLI maps it), sys.exit, an asyncio task's cancellation (a service running workers
    in tasks' threads), gevent's and trio's own; any BaseException that is no Exception."""
    return not isinstance(error, Exception)


# Commits in a row whose outcome is unknown before `run` gives up: a store that cannot
# commit (a full disk) must not have a step re-run in a tight loop for good.
MAX_UNKNOWN_COMMITS = 5
# Steps lost in a row, each to a write of the execution while this worker held its lease,
# before `run` stops: one is a race (a command landing), which the next turn acts on.
MAX_LOST_IN_A_ROW = 3


class Orchestrator:
    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        runtime: RuntimeContext,
        workflows: Mapping[str, WorkflowDefinition],
        *,
        worker_id: str | None = None,
        lease_ttl: timedelta = timedelta(seconds=30),
        max_inline_wait: timedelta = timedelta(seconds=5),
        sleep: Callable[[float], None] = time.sleep,
        on_transition: Callable[[WorkflowExecution], object] | None = None,
        retired: Iterable[WorkflowDefinition] = (),
    ) -> None:
        """`workflows` are what `start` starts, by name. `retired` are earlier versions of
        them (or of workflows no longer started): they start nothing, and drive on the
        executions they started, so that steps can change under a new version while the
        old version's executions finish."""
        self._uow_factory = uow_factory
        self._runtime = runtime
        if not isinstance(workflows, Mapping):
            raise ValueError(
                "workflows must be a mapping of name to WorkflowDefinition, got"
                f" {type(workflows).__name__} ({{d.name: d for d in definitions}} makes one)"
            )
        if not isinstance(lease_ttl, timedelta) or lease_ttl <= timedelta(0):
            raise ValueError(f"lease_ttl must be a positive timedelta, got {shown(lease_ttl)}")
        # Refused here, not at the first retry or transition that uses them: by then a step
        # has committed, and its execution would be left under this worker's lease.
        if not isinstance(max_inline_wait, timedelta) or max_inline_wait < timedelta(0):
            raise ValueError(
                f"max_inline_wait must be a timedelta of 0 or more, got {shown(max_inline_wait)}"
            )
        if not callable(sleep):
            raise ValueError(f"sleep must be a function of seconds, got {shown(sleep)}")
        if on_transition is not None and not callable(on_transition):
            raise ValueError(
                f"on_transition must be a function of the execution, or None, got"
                f" {shown(on_transition)}"
            )
        if isinstance(retired, str | bytes):
            raise ValueError(f"retired must be a list of WorkflowDefinition, got {shown(retired)}")
        self._workflows = dict(workflows)
        for name, definition in self._workflows.items():
            # Executions are found again by the name they record: any other key is never hit.
            if not isinstance(definition, WorkflowDefinition) or name != definition.name:
                given = getattr(definition, "name", type(definition).__name__)
                raise ValueError(
                    f"workflow registry: {name!r} maps to {given!r}; map each"
                    " definition under its own name"
                )
        # Every definition this worker drives executions with, by name and version.
        self._versions = {(d.name, d.version): d for d in self._workflows.values()}
        earlier = [retired] if isinstance(retired, WorkflowDefinition) else list(retired)
        for definition in earlier:
            if not isinstance(definition, WorkflowDefinition):
                raise ValueError(f"retired workflows: {definition!r} is not a WorkflowDefinition")
            key = (definition.name, definition.version)
            if key in self._versions:
                current = self._workflows.get(definition.name)
                given = (
                    "is current"
                    if current is not None and current.version == definition.version
                    else "is retired twice"
                )
                raise ValueError(
                    f"retired workflows: {definition.name} version {definition.version} {given}"
                    ": a version is either current or retired, and named once"
                )
            self._versions[key] = definition
        if worker_id is not None and (
            not isinstance(worker_id, str)
            or len(worker_id) > 200
            or any(not c.isprintable() for c in worker_id)
        ):
            # Stored as the lease's owner and shown in listings: one line of text.
            raise ValueError(
                f"worker_id must be one line of text (at most 200 characters), got"
                f" {shown(worker_id)}"
            )
        self.worker_id = worker_id or runtime.ids.new_id("worker")
        self._lease_ttl = lease_ttl
        self._leases = LeaseKeeper(uow_factory, self.worker_id, lease_ttl, runtime.clock.now)
        self._max_wait = max_inline_wait
        self._sleep = sleep
        self._on_transition = on_transition
        # Executions this worker committed last, exactly as stored: the next step starts from
        # them without a read. Safe because every save is guarded by the version it carries;
        # if anyone else moved the execution, that commit conflicts and the next turn re-reads.
        self._committed: dict[str, WorkflowExecution] = {}
        # Executions a thread of this worker is driving, each with whether another thread
        # asked for it meanwhile. Its threads share one lease, so the lease cannot keep a
        # second thread (a `cancel` from a request handler, say) from running a step, or the
        # compensation, beside the first.
        self._driving: dict[str, bool] = {}
        # Executions being started, stored only with their first step's commit.
        self._unstored: set[str] = set()
        self._cache_lock = threading.Lock()

    # -- commands ----------------------------------------------------------------------------

    def start(
        self,
        workflow: str,
        input: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        risk_tier: ImpactTier | None = None,
        run: bool = True,
        correlation_id: str | None = None,
    ) -> WorkflowExecution:
        """Start (and by default run) an execution; a known idempotency key returns its
        execution and starts nothing new. `correlation_id` (a request's, say) is carried by
        its audit entries and events; the runtime's trace id by default."""
        _a_flag("run", run)
        definition = self._definition(workflow)
        if risk_tier is not None and not isinstance(risk_tier, ImpactTier):
            known = ", ".join(t.value for t in ImpactTier)
            raise InvalidInput("risk_tier", f"must be an ImpactTier ({known}), got {risk_tier!r}")
        rt = self._runtime
        given = idempotency_key is not None
        if given:
            key = idempotency_key_of(idempotency_key)
        correlation = (
            rt.trace_id
            if correlation_id is None
            else text("correlation_id", correlation_id, max_len=200, single_line=True)
        )
        if given:
            # A read by id (its key record): a known key starts nothing, not even the first
            # step's code, whatever input it is given (a retry's may no longer pass checks
            # tightened since). Starts racing on one key may each run it; one commits.
            known = self._by_key(key)
            if known is not None:
                return reused(known, definition.name)
        input = self.check_input(workflow, input)
        if not given:
            key = idempotency_key_of(rt.ids.new_id("idem"))
        execution_id = rt.ids.new_id("wfx")

        def fresh() -> WorkflowExecution:
            now = rt.clock.now()
            execution = WorkflowExecution.start(
                execution_id=execution_id,
                tenant=rt.tenant,
                workflow_name=definition.name,
                workflow_version=definition.version,
                metadata=evolve(
                    definition.metadata, risk_tier=risk_tier or definition.metadata.risk_tier
                ),
                idempotency_key=key,
                correlation_id=correlation,
                input=input,
                at=now,
                actor=rt.actor,
                definition=definition.shape(),
                environment=rt.environment,
            )
            if run:
                execution.transition(S.RUNNING, at=now, actor=rt.actor, reason="started")
                execution.claim(self.worker_id, now=now, ttl=self._lease_ttl)
            return execution

        def keyed(found: WorkflowExecution) -> WorkflowExecution:
            """The execution that had the key: the caller's, or the id generator repeating."""
            if not given:
                raise InvalidState(
                    f"the idempotency key {key!r} this worker made for a new execution is"
                    f" {found.id}'s already: the id generator repeats ids (one restarted?)"
                )
            return reused(found, definition.name)

        def starting() -> WorkflowExecution:
            first_failure: _FirstStepFailed | None = None
            if run:
                ours = fresh()
                outcome = self._start_with_first_step(ours, definition, key)
                if isinstance(outcome, WorkflowExecution):
                    if outcome.id != execution_id:  # the key was used before: that execution
                        return keyed(outcome)
                    # Known as this worker committed it; one read back after a lost reply is
                    # judged against its trail as it is driven, as any stored one is.
                    if outcome is ours:
                        self._remember(outcome)
                    return self._run(execution_id)
                first_failure = outcome
            ours = fresh()
            execution = self._start_alone(ours, key)
            if execution.id != execution_id:
                return keyed(execution)
            # A denial runs again on the stored execution, where the gate records it; any
            # other failure is recorded like any failed attempt, on the execution now stored
            # without it.
            if first_failure is not None and not isinstance(first_failure.error, PolicyDenied):
                if execution is ours:  # its own commit, told as every other one is
                    self._notify(execution)
                self._after_failure(
                    execution_id, execution.version, first_failure.step, first_failure.error
                )
                return self._run(execution_id)
            if not run:  # kept by nobody: another worker may run it, and this one know nothing
                if execution is ours:
                    self._notify(execution)
                return execution
            if execution is ours:
                self._remember(execution)
            return self._run(execution_id)

        if not run:  # nothing to drive: another thread may run it as soon as it is stored
            return starting()
        driven = self._drive(execution_id, starting)
        if driven is None:  # a fresh id another start of this worker is driving
            raise InvalidState(
                f"execution id {execution_id} is another start's: the id generator repeats ids"
            )
        return driven

    def check_input(self, workflow: str, input: Mapping[str, Any]) -> Mapping[str, Any]:
        """The input as `start` would store it, or the `InvalidInput` it would refuse it with
        before writing anything: a caller may ask before it opens anything to write to."""
        definition = self._definition(workflow)
        if not isinstance(input, Mapping):
            raise InvalidInput(
                "input", f"must be a mapping (a JSON object), got {type(input).__name__}"
            )
        stored: Mapping[str, Any] = _storable("input", input)
        if definition.validate_input is not None:
            try:
                # Judged as it is stored and as steps read it (JSON, read-only), not as the
                # caller's object: a tuple it accepted would reach steps as a list, and a
                # change it made in place would be stored, unlike an identical request's.
                verdict = definition.validate_input(read_only(stored))
            except InvalidInput:
                raise
            except (ValueError, TypeError, LookupError, AttributeError) as exc:
                # What validators commonly raise reading an input of another shape than they
                # expect (pydantic's errors are ValueErrors; `input["items"][0]` of an empty
                # list, `.get` of a list): refused all the same, as input, not as a fault of
                # the kernel. What it was is said, so a validator's own bug shows too.
                cause = describe(exc)
                raise InvalidInput(
                    "input", f"refused by {workflow}'s validate_input: {cause}"
                ) from exc
            except Exception as exc:  # the validator's own: to the caller as it is, named
                exc.add_note(f"raised by {workflow}'s validate_input")
                raise
            if verdict is False:  # a predicate's no
                raise InvalidInput("input", f"refused by {workflow}'s validate_input")
        return stored

    def _start_with_first_step(
        self, execution: WorkflowExecution, definition: WorkflowDefinition, key: str
    ) -> WorkflowExecution | _FirstStepFailed:
        """Store a new execution together with its first step: one transaction fewer.

        Returns the stored execution (another one, if the idempotency key was used before), or
        the first step's failure, whose writes went with the discarded unit.
        """
        with self._cache_lock:
            self._unstored.add(execution.id)
        try:
            return self._store_with_first_step(execution, definition, key)
        finally:
            with self._cache_lock:
                self._unstored.discard(execution.id)

    def _store_with_first_step(
        self, execution: WorkflowExecution, definition: WorkflowDefinition, key: str
    ) -> WorkflowExecution | _FirstStepFailed:
        rt = self._runtime
        # Stored without a read: `start` looked a caller's key up, and the unique (tenant,
        # idempotency key) index refuses a start that lost a race for it.
        with self._uow_factory() as uow:
            uow.executions.save(execution)
            step = definition.steps[0]
            execution.begin_attempt(step.name)
            # Not stored yet: a denial must not be recorded for a start that may never land.
            context = self._context(execution, step.name, record_denials=False)
            try:
                output = _output(step, _lent(step, uow, context, stored=False))
            except Exception as exc:  # recorded once the start is stored on its own
                return _FirstStepFailed(step.name, exc)
            now = rt.clock.now()
            execution.checkpoint(step.name, output, at=now, actor=rt.actor)
            if execution.current_step >= len(definition.steps):
                execution.transition(
                    S.SUCCEEDED, at=now, actor=rt.actor, reason="all steps completed"
                )
            else:
                execution.claim(self.worker_id, now=now, ttl=self._lease_ttl)
            uow.executions.save(execution)
            try:
                uow.commit()
            except (DuplicateRecord, CommitOutcomeUnknown) as exc:
                # The key was used before (perhaps by a concurrent start), or the reply was
                # lost: the stored execution, if any, is the answer. Otherwise a record of the
                # step collided with one another execution stored first: a failed attempt.
                found = self._by_key(key)
                if found is not None:
                    return _not_ours_twice(exc, found, execution)
                if isinstance(exc, CommitOutcomeUnknown):
                    raise _not_stored(f"execution {execution.id} was not stored", exc) from exc
                self._not_taken(execution.id)
                return _FirstStepFailed(step.name, exc)
        return execution

    def _start_alone(self, execution: WorkflowExecution, key: str) -> WorkflowExecution:
        """Store a new execution before any step: the stored one if the key was used."""
        with self._uow_factory() as uow:
            uow.executions.save(execution)
            try:
                uow.commit()
            except (DuplicateRecord, CommitOutcomeUnknown) as exc:
                found = self._by_key(key)
                if found is None:
                    if isinstance(exc, DuplicateRecord):
                        self._not_taken(execution.id)
                        raise
                    raise _not_stored(f"execution {execution.id} was not stored", exc) from exc
                return _not_ours_twice(exc, found, execution)
        return execution

    def _not_taken(self, execution_id: str) -> None:
        """Refuse a new execution id stored already, under another key than the start's: the
        id generator repeats ids. (Any tenant's: ids are the store's, not a tenant's.)"""
        with self._uow_factory() as uow:
            taken = uow.executions.tenant_of(execution_id) is not None
        if taken:
            raise _repeated(execution_id)

    def run(self, execution_id: str, *, ignore_leases: bool = False) -> WorkflowExecution:
        """Drive an execution until it ends, waits for approval, or another worker owns it.
        One another thread of this worker is driving is returned as stored: that thread
        drives it on, once more if it was stopping, so what this one committed (a command)
        is acted on."""
        execution_id = _an_id(execution_id)
        _a_flag("ignore_leases", ignore_leases)
        driven = self._drive(
            execution_id, lambda: self._run(execution_id, ignore_leases=ignore_leases)
        )
        return self.get(execution_id) if driven is None else driven

    def _drive(
        self, execution_id: str, first: Callable[[], WorkflowExecution]
    ) -> WorkflowExecution | None:
        """`first()` as the thread driving the execution, then the execution driven once
        more for as long as another thread asked for it meanwhile; None, and that thread
        asked, when another thread drives it.

        A turn that fails does not drop what another thread asked meanwhile (its command is
        committed, and it left the execution to this thread): the execution is driven on,
        and the first failure then goes to this thread's caller. An interrupt stops at once.
        """
        owned = False
        turn = first
        result: WorkflowExecution | None = None
        failure: Exception | None = None
        try:
            with self._cache_lock:
                if execution_id in self._driving:
                    self._driving[execution_id] = True
                    return None
                owned = True
                self._driving[execution_id] = False
            while True:
                try:
                    result = turn()
                except Exception as exc:
                    if failure is not None:  # the caller hears of the first one
                        _log.warning("execution %s: %s", execution_id, describe(exc))
                    failure = failure or exc
                with self._cache_lock:
                    if not self._driving[execution_id]:
                        del self._driving[execution_id]
                        owned = False
                        break
                    self._driving[execution_id] = False
                turn = lambda: self._run(execution_id)  # noqa: E731 - the turns after the first
        except BaseException as stop:
            # Stopped between turns, or in a start between its commit and its run (which
            # gives up the lease itself): given up here, so recover need not wait it out.
            if owned and _stopping(stop):
                self._let_go(execution_id)
            raise
        finally:
            if owned:  # an interrupt: nobody drives it now
                with self._cache_lock:
                    self._driving.pop(execution_id, None)
        if failure is not None:
            raise failure
        return result

    def _run(self, execution_id: str, *, ignore_leases: bool = False) -> WorkflowExecution:
        waited = timedelta(0)
        unknown, landed_from = 0, None
        lost, lost_in_a_row = False, 0
        try:
            for _ in range(100_000):
                outcome = self._advance(execution_id, ignore_leases=ignore_leases, lost=lost)
                lost = outcome in (_Next.LOST, _Next.OVERWRITTEN)
                # (Counted while the lease, re-read after each loss, stays this worker's id:
                # a loss to another worker stops the next turn.)
                lost_in_a_row = lost_in_a_row + 1 if outcome is _Next.OVERWRITTEN else 0
                if lost_in_a_row >= MAX_LOST_IN_A_ROW and not ignore_leases:
                    # Its step lost again and again to writes of the execution while the
                    # lease stayed its own: a worker of the same id renewing "its" lease.
                    # Run on, the two would re-run the step for good.
                    self._let_go(execution_id)
                    raise InvalidState(
                        f"execution {execution_id}: its step's commit was lost"
                        f" {lost_in_a_row} times in a row while this worker held its lease:"
                        f" another worker uses the same worker_id ({self.worker_id!r})? Give"
                        " each its own",
                        execution_id=execution_id,
                    )
                if isinstance(outcome, _Unknown):
                    # Counted while no attempt lands: lost replies of commits that did land
                    # (the execution moved on) are not a store that cannot commit.
                    moved = outcome.seen_version != landed_from
                    unknown, landed_from = (1 if moved else unknown + 1), outcome.seen_version
                    if unknown >= MAX_UNKNOWN_COMMITS:
                        self._let_go(execution_id)
                        raise StorageUnavailable(
                            f"execution {execution_id}: {unknown} commits in a row failed with"
                            f" their outcome unknown, the last: {outcome.error}; what is"
                            " stored stands, and `recover` resumes it once the store commits"
                        ) from outcome.error
                    self._sleep(min(0.05 * 2 ** (unknown - 1), 1.0))
                    continue
                unknown = 0
                if isinstance(outcome, _Wait):
                    # Bounded in total, not per wait: a clock that does not move (a test's)
                    # would otherwise have the same short wait repeated for hours.
                    waited += max(outcome.delay, timedelta(0))
                    if waited > self._max_wait:
                        # Not driven on by this worker now: any worker may take the retry
                        # when due, or a cancel compensate at once, without waiting on a lease.
                        self._let_go(execution_id)
                        break
                    clock = self._runtime.clock
                    before = clock.now()
                    self._sleep(max(outcome.delay.total_seconds(), 0.0))
                    if (
                        outcome.delay > timedelta(0)
                        and not getattr(clock, "moves_by_itself", True)
                        and clock.now() == before
                    ):
                        # A clock that moves only when told (a test's FixedClock) never
                        # reaches the retry's time: waiting on would stall the caller for
                        # max_inline_wait. (A clock of whole seconds may not have moved yet.)
                        self._let_go(execution_id)
                        break
                elif isinstance(outcome, _Stop):
                    if outcome.execution is not None:
                        return outcome.execution
                    break
        except BaseException as error:
            if not _stopping(error):
                raise
            # Stopping, not dying. Which of them a step's own code raised cannot be told
            # from a signal: the execution is left running, not failed, and the note says
            # where it stopped.
            self._let_go(execution_id)
            raise
        self._take(execution_id)
        return self.get(execution_id)

    def _let_go(self, execution_id: str) -> None:
        """Give up this worker's lease on an execution it stops driving, so that another
        worker (`recover`) can take it on at once instead of when the lease expires. Best
        effort: the step under way was rolled back or committed, and either way the stored
        execution says where it stands."""
        self._take(execution_id)
        with contextlib.suppress(Exception), self._uow_factory() as uow:
            execution = uow.executions.require(execution_id, with_input=False)
            if execution.lease_owner == self.worker_id and not execution.state.terminal:
                execution.release_lease()
                uow.executions.save(execution)
                uow.commit()

    @property
    def lease_ttl(self) -> timedelta:
        """How long a lease of this worker's runs unrenewed."""
        return self._lease_ttl

    def acting_as(self, actor: str) -> Orchestrator:
        """This worker (its id, and the executions it has in hand) acting for `actor`: how a
        service with one worker records its users' commands, each approval by its approver
        (the requester may neither approve nor record an approval)."""
        twin = copy.copy(self)
        twin._runtime = self._runtime.with_actor(actor)
        return twin

    def approve(
        self, execution_id: str, *, role: str, approver: str | None = None
    ) -> WorkflowExecution:
        """Record an approval by `approver` (the runtime actor, who records it, by default)
        and resume the execution."""
        execution_id = _an_id(execution_id)
        rt = self._runtime
        approver = actor_name("approver", rt.actor if approver is None else approver)
        role = actor_name("role", role)

        def approving(execution: WorkflowExecution, now: datetime) -> None:
            execution.add_approval(Approval(approver, role, now), recorded_by=rt.actor)
            # The entry names who ran the command; the approver it names stands in the reason.
            execution.transition(
                S.RUNNING, at=now, actor=rt.actor, reason=approval_reason(approver, role)
            )
            execution.claim(self.worker_id, now=now, ttl=self._lease_ttl)

        return self._command(execution_id, approving, before=self._await_regate)

    def _await_regate(self, execution_id: str, driving: bool) -> bool:
        """Wait (up to `max_inline_wait`) while an approval just given re-runs its gate;
        whether there was anything to wait for.

        The execution is running for that moment; a second approver arriving then would be
        refused, only to find it awaiting approval again a moment later.
        """
        delay, waited = 0.01, 0.0
        while waited < self._max_wait.total_seconds():
            x = self.get(execution_id, with_input=False)
            if not self._regating(x):
                return waited > 0
            if driving and self._resumed_by_approval(x):
                # The gate is this worker's to run again, and this thread is the one that
                # drives it here (another thread's approval landed and left it to this one):
                # nobody runs it while this waits. It runs it, then approves what it finds.
                self._run(execution_id)
                return True
            self._sleep(delay)
            waited += delay
            delay = min(delay * 2, 0.5)
        return True

    def _resumed_by_approval(self, x: WorkflowExecution) -> bool:
        """Whether `x` is this worker's, and its last entry the approval that resumed it:
        its gate, and nothing after it, is what runs next."""
        return x.lease_owner == self.worker_id and self._last_resumed(x)

    def _regating(self, x: WorkflowExecution) -> bool:
        # Only until the gate has run again: past it (a step completed since), no gate
        # returns under this approval, and a second approver is told so at once.
        return (
            x.state is S.RUNNING
            and bool(x.approvals)
            and not x.lease_expired(self._runtime.clock.now())
            and self._last_resumed(x)
        )

    def _last_resumed(self, x: WorkflowExecution) -> bool:
        """Whether `x`'s last entry is the approval that resumed it."""
        with self._uow_factory() as uow:
            last = uow.audit.entry(x.id, x.audit_sequence)
        return (
            last is not None
            and last.from_state is S.AWAITING_APPROVAL
            and last.to_state is S.RUNNING
        )

    def reject(self, execution_id: str, *, reason: str) -> WorkflowExecution:
        execution_id = _an_id(execution_id)
        reason = text("reason", reason, max_len=1000, single_line=True)

        def rejecting(execution: WorkflowExecution, now: datetime) -> None:
            if execution.state is not S.AWAITING_APPROVAL:
                raise InvalidState(
                    f"execution {execution_id} is {execution.state.value}, not awaiting approval",
                    execution_id=execution_id,
                    state=execution.state,
                )
            self._fail(execution, f"rejected: {reason}")
            if not execution.state.terminal:  # the undo is this worker's, as approve's run is
                execution.claim(self.worker_id, now=now, ttl=self._lease_ttl)

        return self._command(execution_id, rejecting, needs=_has_work_in_hand)

    def cancel(self, execution_id: str, *, reason: str = "cancel requested") -> WorkflowExecution:
        """Request cancellation. It takes effect at a step boundary: a step under way runs to
        its end, but its commit loses to the cancel and its writes are discarded, so the
        cancellation (and the compensation) covers the steps completed before it."""
        execution_id = _an_id(execution_id)
        reason = text("reason", reason, max_len=1000, single_line=True)
        rt = self._runtime

        def cancelling(execution: WorkflowExecution, now: datetime) -> None:
            execution.request_cancel()
            if execution.state is S.PENDING:
                execution.transition(S.CANCELLED, at=now, actor=rt.actor, reason=reason)
                return
            if execution.state is not S.CANCELLING:
                execution.transition(S.CANCELLING, at=now, actor=rt.actor, reason=reason)
            if _idle_with_nothing_done(execution):
                execution.retry_at = execution.last_error = None  # the retry is abandoned
                execution.transition(
                    S.CANCELLED, at=now, actor=rt.actor, reason="cancelled; no step had completed"
                )

        return self._command(execution_id, cancelling, needs=_has_work_in_hand)

    def _command(
        self,
        execution_id: str,
        apply: Callable[[WorkflowExecution, datetime], None],
        *,
        before: Callable[[str, bool], bool] | None = None,
        needs: Callable[[WorkflowExecution], bool] = lambda x: True,
    ) -> WorkflowExecution:
        """Apply an operator's command to the execution as stored, commit it, then drive the
        execution on. A command that loses a race (a worker's step, another command) is
        applied again to what won, which may refuse it for the state it is now in. Unless
        `needs` says the execution as found needs no definition for the command (it ends it
        with nothing to run or undo), this worker must have the very definition that
        started it.

        The command is committed holding the execution's wheel when no other thread of this
        worker drives it: between the commit and the drive that follows, no other thread may
        take it on and finish it, leaving the copy committed here stale for a later turn.
        Beside a thread that drives it, the command leaves that thread its copy, and asks it
        to drive on."""

        def commanded() -> WorkflowExecution:
            self._take(execution_id)  # nothing kept from before: the command reads afresh
            self._remember(self._commit_command_loop(execution_id, apply, before, needs, True))
            return self._run(execution_id)

        driven = self._drive(execution_id, commanded)
        if driven is not None:
            return driven
        self._remember(self._commit_command_loop(execution_id, apply, before, needs, False))
        return self.run(execution_id)  # asks the driving thread again, or drives it if it left

    def _commit_command_loop(
        self,
        execution_id: str,
        apply: Callable[[WorkflowExecution, datetime], None],
        before: Callable[[str, bool], bool] | None,
        needs: Callable[[WorkflowExecution], bool],
        driving: bool,
    ) -> WorkflowExecution:
        """`driving`: whether this thread drives the execution for this worker."""
        waited, attempt = True, 0
        while True:
            attempt += 1
            if before is not None:
                waited = before(execution_id, driving)
            try:
                with self._uow_factory() as uow:
                    found = self._require(uow, execution_id)
                    driven = needs(found)
                    execution = self._trusted(uow, found, steps=driven)
                    if driven:
                        # Refused before anything is written: this worker could not drive it.
                        self._definition_of(execution)
                    read_at = execution.audit_sequence
                    apply(execution, self._runtime.clock.now())
                    uow.executions.save(execution)
                    self._commit_command(uow, execution, execution.audit_sequence > read_at)
            except ConcurrencyConflict:
                if attempt == COMMAND_ATTEMPTS:
                    raise
                continue
            except InvalidState:
                # An approval landed between a wait that found none to wait for and the read:
                # wait for its gate this once.
                if (
                    waited
                    or attempt == COMMAND_ATTEMPTS
                    or not self._regating(self.get(execution_id, with_input=False))
                ):
                    raise
                continue
            return execution

    def _commit_command(self, uow: UnitOfWork, execution: WorkflowExecution, entered: bool) -> None:
        """Commit an operator's command; a lost reply is resolved by re-reading, and only a
        command that did not land is reported (a caller retrying one that did would be
        refused for the state it moved the execution to). One that made audit entries landed
        if its last entry is in the trail, whatever moved the execution on since."""
        try:
            uow.commit()
        except CommitOutcomeUnknown as exc:
            if entered:
                with self._uow_factory() as reading:
                    last = reading.audit.entry(execution.id, execution.audit_sequence)
                landed = last is not None and last.hash == execution.audit_head
            else:
                landed = _landed(self.get(execution.id)) == _landed(execution)
            if not landed:
                what = f"the command on execution {execution.id} was not recorded"
                raise _not_stored(what, exc) from exc

    def recover(self, *, ignore_leases: bool = False) -> list[WorkflowExecution]:
        """Resume every interrupted execution whose lease has expired; a retry not due yet is
        left for a later call.

        `ignore_leases` is for a process that holds the store exclusively: no one else can
        be running them, so it need not wait for the leases of a crashed run to expire.
        Executions started in another environment are left to its workers, as other
        tenants' are to theirs.
        """
        _a_flag("ignore_leases", ignore_leases)
        now = self._runtime.clock.now()
        unreadable: list[str] = []
        with self._uow_factory() as uow:
            # By id: on a server the reads of each state are no one snapshot, and one that
            # moved (running to cancelling) between two of them is read in both.
            candidates = {
                x.id: x
                for state in RECOVERABLE
                # Each run re-reads; a record that does not read back is named, not a stop.
                for x in uow.executions.in_state(
                    state, tenant=self._runtime.tenant, with_input=False, unreadable=unreadable
                )
                if x.tenant == self._runtime.tenant and x.runs_in(self._runtime.environment)
            }.values()
            ours = [
                k
                for k in dict.fromkeys(unreadable)
                if uow.executions.tenant_of(k) == self._runtime.tenant
            ]
        resumed = []
        failures = [(key, self._why_unreadable(key)) for key in ours]
        for execution in candidates:
            leased_elsewhere = execution.lease_owner not in (None, self.worker_id)
            if not ignore_leases and leased_elsewhere and not execution.lease_expired(now):
                continue
            with self._cache_lock:
                if execution.id in self._driving:  # not interrupted: a thread of ours has it
                    continue
            if kept_here(self._uow_factory, execution.id):  # another orchestrator here has it
                continue
            try:
                if execution.retry_not_due(now):
                    # Left for a later recover, not waited for; one this worker could never
                    # run (its trail edited, its steps changed) is said now all the same.
                    self._drivable(execution.id)
                    continue
                driven = self.run(execution.id, ignore_leases=ignore_leases)
                if driven.lease_owner not in (None, self.worker_id) and not driven.state.terminal:
                    continue  # another worker claimed it since the scan: it drives it on
                resumed.append(driven)
            except (StorageUnavailable, InjectedFault):
                raise  # the store (or, when injected, the process) is gone: so are the rest
            except Exception as exc:  # one bad record must not keep the others waiting
                failures.append((execution.id, describe(exc)))
        if failures:
            raise RecoveryIncomplete(resumed, failures)
        return resumed

    def _drivable(self, execution_id: str) -> None:
        """Raise what driving the stored execution would raise before its first step."""
        with self._uow_factory() as uow:
            self._definition_of(self._trusted(uow, self._require(uow, execution_id)))

    def _why_unreadable(self, execution_id: str) -> str:
        try:
            self.get(execution_id)
        except Exception as exc:
            return describe(exc)
        return "it could not be read"  # it reads now: someone repaired it meanwhile

    # -- queries -----------------------------------------------------------------------------

    def get(self, execution_id: str, *, with_input: bool = True) -> WorkflowExecution:
        """The tenant's execution (`with_input=False`: its input left unread, as listings
        read executions)."""
        execution_id = _an_id(execution_id)
        _a_flag("with_input", with_input)
        with self._uow_factory() as uow:
            return self._require(uow, execution_id, with_input=with_input)

    def trail(self, execution_id: str) -> list[AuditEntry]:
        """The tenant's execution's audit entries, oldest first: each transition, who made it,
        when and why (why one awaits approval: its last entry's reason). Read as stored; an
        entry that cannot be read raises `CorruptRecord` (`verify` says which)."""
        execution_id = _an_id(execution_id)
        with self._uow_factory() as uow:
            self._require(uow, execution_id, with_input=False)
            return uow.audit.for_execution(execution_id)

    def verify(self, execution_id: str) -> ChainReport:
        execution_id = _an_id(execution_id)
        for _ in range(COMMAND_ATTEMPTS):
            try:
                with self._uow_factory() as uow:
                    # Its input is pinned too, and read from storage, not from a cache.
                    execution = self._require(uow, execution_id, fresh=True)
                    entries = uow.audit.for_execution(execution_id)
            except CorruptRecord as exc:  # damaged or edited by hand: broken, and said why
                with self._uow_factory() as uow:
                    stored = uow.audit.stored(execution_id)
                return ChainReport(execution_id, stored, False, exc.entry or 1, str(exc))
            report = execution.verify_trail(entries, key=uow.audit_key)
            past_head = any(e.sequence > execution.audit_sequence for e in entries)
            # A trail past the head read may be a step that committed between the two reads:
            # only an execution that has not moved since is judged on it.
            if report.ok or not past_head or self.get(execution_id).version == execution.version:
                return report
        return report

    # -- the engine --------------------------------------------------------------------------

    def definitions(self) -> list[WorkflowDefinition]:
        """Every definition this worker drives executions with, current and retired."""
        return list(self._versions.values())

    def registered(self, name: str, version: str) -> WorkflowDefinition | None:
        """The definition this worker drives `name` version `version` with (current or
        retired), or None."""
        return self._versions.get((name, version))

    def current(self, name: str) -> WorkflowDefinition:
        """The definition a start of `name` runs (`InvalidInput` if none is current)."""
        return self._definition(name)

    def _definition(self, name: str) -> WorkflowDefinition:
        if not isinstance(name, str):  # a list would raise TypeError (unhashable) below
            raise InvalidInput("workflow", f"must be a workflow's name, got {type(name).__name__}")
        name = plain(name)
        if name not in self._workflows:
            known = ", ".join(sorted(self._workflows)) or "none"
            retired = sorted(v for n, v in self._versions if n == name)
            if retired:  # registered, but only to finish what its versions started
                raise InvalidInput(
                    "workflow",
                    f"{shown(name)} is registered as retired only (version"
                    f" {', '.join(retired)}): it finishes executions it started, and starts"
                    f" none; register a current version to start it (current: {known})",
                )
            raise InvalidInput("workflow", f"unknown workflow {shown(name)}; known: {known}")
        return self._workflows[name]

    def _definition_of(self, execution: WorkflowExecution) -> WorkflowDefinition:
        """The definition that started `execution`: another version's steps must not run
        on it (they may differ in number, order and effect). Nor may a worker of another
        environment's (its policies, its ids): an execution started in production is never
        approved through, or recovered, under development's rules."""
        started_in, here = execution.environment, self._runtime.environment
        if started_in is not None and not execution.runs_in(here):
            raise InvalidState(
                f"execution {execution.id} was started in {started_in.value}, and this"
                f" orchestrator runs in {here.value}: act on it from a worker of"
                f" {started_in.value}",
                execution_id=execution.id,
                state=execution.state,
            )
        found = self._versions.get((execution.workflow_name, execution.workflow_version))
        if found is not None:
            return found
        versions = sorted(v for n, v in self._versions if n == execution.workflow_name)
        if not versions:
            raise InvalidState(
                f"execution {execution.id} runs workflow {execution.workflow_name!r}, which"
                " this orchestrator does not have: act on it from a service that registers it",
                execution_id=execution.id,
                state=execution.state,
            )
        raise InvalidState(
            f"execution {execution.id} was started by {execution.workflow_name} version"
            f" {execution.workflow_version}, and this orchestrator runs version"
            f" {', '.join(versions)}: run it with an orchestrator that has that version (as"
            " current or retired)",
            execution_id=execution.id,
            state=execution.state,
        )

    def _require(
        self, uow: UnitOfWork, execution_id: str, *, with_input: bool = True, fresh: bool = False
    ) -> WorkflowExecution:
        """The execution, if it belongs to this orchestrator's tenant: another tenant's is
        reported exactly as a missing one, so its existence is not disclosed either (even
        when it cannot be read)."""
        try:
            execution = uow.executions.require(execution_id, with_input=with_input, fresh=fresh)
        except CorruptRecord:
            if uow.executions.tenant_of(execution_id) != self._runtime.tenant:
                raise ExecutionNotFound(execution_id) from None
            raise
        except ExecutionNotFound:
            with self._cache_lock:
                unstored = execution_id in self._unstored
            if unstored:  # asked by its own first step, or by a command racing it
                raise ExecutionNotFound(
                    execution_id,
                    "it is being started, and is stored with its first step's commit (a step"
                    " has its own execution as ctx.execution)",
                ) from None
            raise
        if execution.tenant != self._runtime.tenant:
            raise ExecutionNotFound(execution_id)
        return execution

    def _trusted(
        self, uow: UnitOfWork, execution: WorkflowExecution, *, steps: bool = True
    ) -> WorkflowExecution:
        """An execution read from storage, if its audit trail vouches for it. One edited
        there (a risk tier lowered to skip an approval, a step's output swapped, a cursor
        moved past a step) is not acted on. What this worker committed itself it knows."""
        # Read after the execution, the trail may hold entries another worker committed
        # since: the execution is checked against the entries up to its own head (if it is
        # stale, its next commit conflicts anyway). Read again, it then records them; one
        # that still does not was set back behind its trail in storage (a rejection's entry
        # moved aside to approve it after all), and is judged on the whole trail.
        stored = uow.audit.for_execution(execution.id)
        entries = stored[: execution.audit_sequence]
        if len(stored) > len(entries):
            again = uow.executions.get(execution.id, with_input=False)
            if again is None or again.audit_sequence < len(stored):
                entries = stored
        report = execution.verify_trail(entries, key=uow.audit_key)
        if not report.ok:
            where = (
                "its audit seal does not hold"
                if report.seal
                else f"its audit trail is broken at entry #{report.first_bad_sequence}"
            )
            raise CorruptRecord(
                f"execution {execution.id} is not acted on: {where}: {report.problem}"
            )
        if steps:
            self._same_steps(execution, entries)
        return execution

    def _same_steps(self, execution: WorkflowExecution, entries: Sequence[AuditEntry]) -> None:
        """Refuse, before anything is written, a definition of the execution's name and
        version whose steps are not those it started with (or, for an execution started
        before steps were pinned, not those it completed)."""
        definition = self._versions.get((execution.workflow_name, execution.workflow_version))
        if definition is None:
            return  # not driven here at all: `_definition_of` says why
        if execution.state.terminal:
            return  # nothing is left to drive
        started = started_steps(entries)
        done = steps_done(entries)
        if started in (None, definition.shape()) and done == definition.step_names()[: len(done)]:
            return
        then = (
            _shape_text(started)
            if started is not None
            else f"completed steps {', '.join(done) or 'none'}"
        )
        raise InvalidState(
            f"execution {execution.id} was started by {definition.name} version"
            f" {definition.version} with {then}; the {definition.name} version"
            f" {definition.version} registered here has {_shape_text(definition.shape())}:"
            " this execution needs the steps it started with. Register the changed steps"
            f" under a new version, and keep the steps it started with as version"
            f" {definition.version}, retired, until its executions are done",
            execution_id=execution.id,
            state=execution.state,
        )

    def _by_key(self, key: str) -> WorkflowExecution | None:
        with self._uow_factory() as uow:
            return uow.executions.by_idempotency_key(self._runtime.tenant, key)

    def _advance(
        self, execution_id: str, *, ignore_leases: bool, lost: bool = False
    ) -> _Next | _Wait | _Stop | _Unknown:
        rt = self._runtime
        with self._uow_factory() as uow:
            execution = self._take(execution_id)
            if execution is None:
                found = self._require(uow, execution_id)
                # A cancellation with nothing to undo is ended whatever its steps became.
                idle = found.state is S.CANCELLING and _idle_with_nothing_done(found)
                execution = self._trusted(uow, found, steps=not idle)
            now = rt.clock.now()
            state = execution.state
            if state.terminal or state is S.AWAITING_APPROVAL:
                return _Stop(execution)
            owner = execution.lease_owner
            if kept_here(self._uow_factory, execution.id):
                # Its step runs in this process now, by another orchestrator of it (one of
                # this orchestrator's own threads is kept out by `_drive` before this).
                return _Stop(execution)
            if (
                not ignore_leases
                and owner not in (None, self.worker_id)
                and (lost or not execution.lease_expired(now))
            ):
                # Another live worker owns it; or one took it over while this worker's step
                # ran, and lost its race: it stops, even once that worker's lease has expired
                # (that worker may still be in the step: taking it back would have them run
                # it in turn for good; `recover` takes it over from a worker that died).
                return _Stop(execution)
            if state is not S.CANCELLING:  # (which needs a definition only to undo something)
                # Before the wait: a retry this worker could never run is said now.
                definition = self._definition_of(execution)
                if execution.retry_not_due(now) and execution.retry_at is not None:
                    return _Wait(execution.retry_at - now)
            seen_version = execution.version
            step_name: str | None = None
            held = execution.lease_owner == self.worker_id and not execution.lease_expired(now)
            if state is not S.CANCELLING and not held and not ignore_leases:
                # Claimed in a commit of its own (below) before a step or the undo runs: of
                # workers resuming it at once, one wins the claim, and the others find it
                # leased before running the step, not after. (Ignoring leases, workers would
                # only take the claim from each other in turn: then the step's commit decides.)
                self._resume(execution, now)
            elif state is S.CANCELLING:
                # A retry it was waiting for is abandoned: the undo is due now, and what it
                # says it undoes is the cancellation, not the failure retried.
                execution.retry_at = execution.last_error = None
                target = S.COMPENSATING if self._needs_compensation(execution) else S.CANCELLED
                execution.transition(target, at=now, actor=rt.actor, reason="cancelled")
            elif state is S.COMPENSATING:
                step = definition.compensation
                if step is None:
                    execution.transition(S.FAILED, at=now, actor=rt.actor, reason="no compensation")
                else:
                    step_name = step.name
                    execution.begin_attempt(step.name)
                    try:
                        with self._leases.kept(execution):
                            context = self._context(execution, step.name)
                            _lent(step, uow, context, "compensation")
                    except Exception as exc:  # recorded, then retried or failed
                        return self._after_failure(execution_id, execution.version, step.name, exc)
                    seen_version = execution.version  # as the lease's renewals left it
                    now = rt.clock.now()  # the undo's end: when it completed
                    execution.retry_at = None
                    execution.transition(
                        S.COMPENSATED,
                        at=now,
                        actor=rt.actor,
                        reason="compensation completed",
                        step=step.name,  # which undo ran: its output is not kept
                    )
            else:
                self._resume(execution, now)
                if execution.current_step >= len(definition.steps):
                    raise InvalidState(
                        f"execution {execution.id} is {state.value} past its last step"
                        f" ({execution.current_step} of {len(definition.steps)} done)",
                        execution_id=execution.id,
                        state=state.value,
                    )
                step = definition.steps[execution.current_step]
                step_name = step.name
                execution.begin_attempt(step.name)
                try:
                    with self._leases.kept(execution):
                        ran = _lent(step, uow, self._context(execution, step.name))
                    output = _output(step, ran)
                except Exception as exc:  # any step failure is recorded, then classified
                    return self._after_failure(execution_id, execution.version, step.name, exc)
                seen_version = execution.version  # as the lease's renewals left it
                now = rt.clock.now()  # the step's end: when it completed, what the lease runs from
                execution.checkpoint(step.name, output, at=now, actor=rt.actor)
                if execution.current_step >= len(definition.steps):
                    execution.transition(
                        S.SUCCEEDED, at=now, actor=rt.actor, reason="all steps completed"
                    )
            if not execution.state.terminal:
                if ignore_leases:
                    execution.release_lease()  # taking over: the caller vouched for that
                execution.claim(self.worker_id, now=now, ttl=self._lease_ttl)
            uow.executions.save(execution)
            try:
                uow.commit()
            except ConcurrencyConflict as exc:
                # Another worker moved it (the version check decided): re-read on the next
                # turn and act on what is stored. (A claim alone that lost is no step lost.)
                if step_name is None:
                    return _Next.CONTINUE
                ours = (exc.table, exc.key) == (uow.executions.table, execution_id)
                self._said_lost(execution_id, step_name)
                return _Next.OVERWRITTEN if ours else _Next.LOST
            except CommitOutcomeUnknown as exc:
                return _Unknown(exc, seen_version)  # the next turn re-reads what is stored
            except (DuplicateRecord, InvalidRecord) as exc:
                # Racing workers mint the same ids for a step, so the loser's creates can
                # collide before its version guard is reached: a lost race if the execution
                # moved on meanwhile.
                stored = self.get(execution_id) if isinstance(exc, DuplicateRecord) else None
                if stored is not None and stored.version != seen_version:
                    if step_name is not None:
                        self._said_lost(execution_id, step_name, stored)
                    return _Next.LOST
                # Otherwise another execution stored a shared record first (the same source
                # ingested by two workflows at once), or the store refused a write of the
                # step's as the commit ran (a natural key changed): a failed attempt, as a
                # refusal while it staged is (the next attempt reuses a shared record).
                if step_name is None:
                    raise
                return self._after_failure(execution_id, seen_version, step_name, exc)
        self._remember(execution)
        if execution.state.terminal or execution.state is S.AWAITING_APPROVAL:
            return _Stop(execution)
        return _Next.CONTINUE

    def _said_lost(
        self, execution_id: str, step: str, stored: WorkflowExecution | None = None
    ) -> None:
        """A step whose commit lost to another worker is a warning naming it, whatever the
        execution became (that worker may have run the step again, or finished it): it was
        said only when that worker still held the lease. A command's move (a cancel) while
        the lease stayed this worker's is no loss to it. `stored`: the execution as already
        read again, if it was."""
        if stored is None:
            try:
                stored = self.get(execution_id, with_input=False)
            except (PortError, DomainError):
                return  # the next turn's read says what is wrong
        if stored.lease_owner == self.worker_id:
            return
        _log.warning(
            "worker %s's step %s of execution %s was not committed: the execution was moved"
            " on by another worker while the step ran (its lease of %s ran out unrenewed);"
            " the step's writes were discarded, and the execution is %s (%s)",
            self.worker_id,
            step,
            execution_id,
            self._lease_ttl,
            stored.state.value,
            f"leased by worker {stored.lease_owner}" if stored.lease_owner else "leased by none",
        )

    def _resume(self, execution: WorkflowExecution, now: datetime) -> None:
        """A pending execution, or one waiting for a retry, running again."""
        state = execution.state
        if state in (S.PENDING, S.RETRY_SCHEDULED):
            execution.retry_at = None  # the retry it waited for is this one
            execution.transition(
                S.RUNNING, at=now, actor=self._runtime.actor, reason=f"resumed from {state.value}"
            )

    def _remember(self, execution: WorkflowExecution) -> None:
        # Only executions this worker will go on driving; a stop is always decided on a read.
        # A copy of its own: `execution` goes on to the callback and the caller, and nothing
        # they do to it may steer the next step.
        if not (execution.state.terminal or execution.state is S.AWAITING_APPROVAL):
            with self._cache_lock:
                self._committed[execution.id] = execution.copy()
        self._notify(execution)

    def _notify(self, execution: WorkflowExecution) -> None:
        """Tell the `on_transition` hook about a commit. The commit has happened: a hook that
        fails is logged, and the run goes on (stopping it would leave the execution running
        under this worker's lease, with its caller never told its id)."""
        _told(execution)
        if self._on_transition is None:
            return
        try:
            # A copy of its own: the execution itself may be what the caller gets back.
            self._on_transition(execution.copy())
        except Exception:
            _log.exception("on_transition hook failed on execution %s", execution.id)
        except BaseException as stop:  # Ctrl-C landing in the hook: stopping, as in a step
            stop.add_note(f"while the on_transition hook ran on execution {execution.id}")
            if execution.lease_owner == self.worker_id and not execution.state.terminal:
                self._let_go(execution.id)
            raise

    def _take(self, execution_id: str) -> WorkflowExecution | None:
        with self._cache_lock:
            return self._committed.pop(execution_id, None)

    def _context(
        self, execution: WorkflowExecution, step: str, *, record_denials: bool = True
    ) -> StepContext:
        # Scoped by the environment, tenant and idempotency key (one execution per key and
        # tenant: a start retried after its process died in the first step, which stored
        # nothing, is a new execution with the same key) and the step.
        scope = json.dumps(
            ["key", self._runtime.environment.value, execution.tenant, execution.idempotency_key]
        )
        runtime = self._runtime.for_execution(
            # ...and by the trail entry the step starts from: a replay after a crash mints the
            # same ids, whichever worker claimed the execution meanwhile (a claim is no
            # transition); a later attempt (after a denial, a retry) follows new entries and
            # mints fresh ones.
            ids=DerivedIds(scope, step, str(execution.audit_sequence)),
            trace_id=execution.correlation_id,
            tenant=execution.tenant,
            # The mutation is the requester's, whichever worker happens to run the step.
            actor=execution.requested_by or self._runtime.actor,
            record_denials=record_denials,
        )
        # A copy of its own: nothing a step does to it (approvals, the cursor) steers the run.
        return StepContext(
            runtime=runtime,
            execution=execution.copy(),
            step=step,
            # In brackets, which no step name holds: a step `charge:2`'s key must not be
            # the first id step `charge` mints at entry 2 (parts are joined with `:`).
            step_key=DerivedIds(scope, json.dumps([step])).new_id("step"),
        )

    def _after_failure(
        self, execution_id: str, seen_version: int, step: str, error: BaseException
    ) -> _Next | _Unknown:
        """Record a failed attempt in a fresh unit (the step's own writes were discarded)."""
        if not isinstance(error, ApprovalRequired):
            # The trail keeps the error's one line; where in the step it was raised is for
            # whoever reads the service's log (`govkernel --debug` shows it).
            _log.info("execution %s: %s raised", execution_id, step, exc_info=error)
        rt = self._runtime
        with self._uow_factory() as uow:
            execution = self._trusted(uow, self._require(uow, execution_id))
            if execution.version != seen_version:
                return _Next.LOST  # someone else moved it meanwhile; re-read
            now = rt.clock.now()
            if execution.state in (S.PENDING, S.RETRY_SCHEDULED):
                # The attempt ran on a resumed execution; that resume was discarded with the
                # step's unit, and neither state may move straight to failed or waiting.
                resumed = f"resumed from {execution.state.value}"
                execution.transition(S.RUNNING, at=now, actor=rt.actor, reason=resumed)
            definition = self._definition_of(execution)
            attempt = execution.begin_attempt(step)
            message = describe(error)
            compensation = definition.compensation
            # An undo that fails transiently is retried like a step: giving up would leave the
            # side effect in place for good.
            undoing = execution.state is S.COMPENSATING and compensation is not None
            if undoing and compensation is not None:
                retry: RetryPolicy | None = compensation.retry
            else:
                retry = next((s.retry for s in definition.steps if s.name == step), None)
            what = "compensation" if undoing else "step"
            if isinstance(error, ApprovalRequired) and not undoing:
                execution.attempts[step] -= 1  # waiting for people is not a failed attempt
                execution.retry_at = None
                execution.transition(
                    S.AWAITING_APPROVAL, at=now, actor=rt.actor, reason=message, step=step
                )
            elif (
                execution.state in (S.RUNNING, S.COMPENSATING)
                and retry is not None
                and _retryable(error)
                and attempt < retry.max_attempts
            ):
                said = f"{what} {step} attempt {attempt} failed: {message}"
                if not undoing:  # an undo retried still undoes the failure that started it
                    execution.last_error = said[:MAX_ERROR]  # which step, as once it fails
                execution.retry_at = _later(now, retry.delay(attempt))
                execution.transition(
                    S.COMPENSATING if undoing else S.RETRY_SCHEDULED,
                    at=now,
                    actor=rt.actor,
                    reason=said,
                    step=step,
                )
            else:
                self._fail(execution, f"{what} {step} failed: {message}", step=step)
            uow.executions.save(execution)
            try:
                uow.commit()
            except ConcurrencyConflict:
                return _Next.LOST
            except CommitOutcomeUnknown as exc:
                return _Unknown(exc, seen_version)
        self._remember(execution)
        return _Next.CONTINUE

    def _fail(self, execution: WorkflowExecution, reason: str, step: str | None = None) -> None:
        rt = self._runtime
        undone = execution.last_error if execution.state is S.COMPENSATING else None
        said = reason if undone is None else f"{reason}; it was undoing: {undone}"
        execution.last_error = said[:MAX_ERROR]
        execution.retry_at = None  # no retry is coming
        compensate = execution.state is not S.COMPENSATING and self._needs_compensation(execution)
        target = S.COMPENSATING if compensate else S.FAILED
        execution.transition(target, at=rt.clock.now(), actor=rt.actor, reason=reason, step=step)

    def _needs_compensation(self, execution: WorkflowExecution) -> bool:
        if not execution.step_outputs:
            return False  # no step completed: nothing to undo, whatever the definition
        definition = self._definition_of(execution)
        if definition.compensation is None:
            return False
        if execution.metadata.rollback_strategy is not RollbackStrategy.COMPENSATE:
            return False
        return any(s.side_effecting and s.name in execution.step_outputs for s in definition.steps)


def _shape_text(shape: Any) -> str:
    """A pinned shape in words; a pin that does not read as one is shown as stored."""
    try:
        steps = ", ".join(f"{name}{' (side effect)' * bool(side)}" for name, side in shape["steps"])
        undo = shape["compensation"]
    except (KeyError, TypeError, ValueError):
        return f"steps {shape!r}"[:500]
    return f"steps {steps} and {'no compensation' if undo is None else f'compensation {undo}'}"


def _idle_with_nothing_done(x: WorkflowExecution) -> bool:
    """No step completed (by its cursor and its outputs), and none running as stored: ending
    it takes no step, nor any undo."""
    return x.current_step == 0 and not x.step_outputs and x.state is not S.RUNNING


def _has_work_in_hand(x: WorkflowExecution) -> bool:
    """Whether a command that ends `x` needs its definition (a step to finish or an undo)."""
    return not (_idle_with_nothing_done(x) or x.state.terminal)


def _not_stored(what: str, error: CommitOutcomeUnknown) -> StorageUnavailable:
    """A commit whose outcome was unknown, resolved by reading again: it did not land, so the
    store failed to commit, and the same call may be made again."""
    return StorageUnavailable(
        f"{what}: its commit failed ({error}), and reading it back shows it has not landed;"
        " the same call may be made again"
    )


def _landed(x: WorkflowExecution) -> tuple[Any, ...]:
    """What a command changes on an execution: equal when stored means it was committed."""
    return (x.version, x.audit_head, x.state, x.cancel_requested, x.approvals)


def describe(error: BaseException) -> str:
    """What a failure says, as the one bounded line its audit entry can store: a step's
    error says whatever the step made it say, and a failure that could not be recorded would
    leave its execution running, its step re-run at every recovery."""
    try:
        said = str(error)[: MAX_ERROR * 2]  # cut first: messages can run to megabytes
    except BaseException:  # a message that fails, even by raising an interrupt
        said = "(its message could not be read)"
    return one_line(f"{type(error).__name__}{_origin(error)}: {said}")[:MAX_ERROR]


def _origin(error: BaseException) -> str:
    """Which of your policies raised it, said first (the line is cut at its end); nothing
    when its notes cannot be read as plain text, whatever they are."""
    try:
        notes = [str.__str__(n) for n in list(error.__notes__) if isinstance(n, str)]
    except BaseException:  # no notes, or notes that fail to be read
        return ""
    return next((f" ({n[:200]})" for n in notes if n.startswith("raised by policy ")), "")


_log = logging.getLogger("govkernel.orchestrator")
# Outcomes are for a service's own log: without one configured, Python's last-resort handler
# would print each warning on stderr (the CLI says each outcome itself).
_outcomes = logging.getLogger("govkernel.outcomes")
_outcomes.addHandler(logging.NullHandler())


def _told(execution: WorkflowExecution) -> None:
    """One line in the service's log for each commit that ends an execution, leaves it
    waiting or schedules a retry: WARNING for one that ended undone (failed, compensated,
    cancelled), INFO otherwise. Its last error is the step's exception's one line, as the
    audit trail keeps it."""
    x, s = execution, execution.state
    if not (s.terminal or s in (S.AWAITING_APPROVAL, S.RETRY_SCHEDULED)):
        return
    level = (
        logging.INFO
        if s in (S.SUCCEEDED, S.AWAITING_APPROVAL, S.RETRY_SCHEDULED)
        else (logging.WARNING)
    )
    if not _outcomes.isEnabledFor(level):
        return
    attempts = sum(x.attempts.values())
    why = f": {x.last_error}" if x.last_error and s is not S.SUCCEEDED else ""
    _outcomes.log(
        level,
        "execution %s (%s v%s, tenant %s) %s (%d step attempt%s)%s",
        x.id,
        x.workflow_name,
        x.workflow_version,
        x.tenant,
        s.value,
        attempts,
        "" if attempts == 1 else "s",
        why,
    )


MAX_NESTING = 100
MAX_OUTPUT_CHARS = 4 * 1024 * 1024
COMMAND_ATTEMPTS = 5


def idempotency_key_of(value: object) -> str:
    """An idempotency key as `start` takes it: a caller checks one with this before it opens
    anything (a command that would make a store for nothing)."""
    return text("idempotency_key", value, max_len=200, single_line=True)


def reused(found: WorkflowExecution, workflow: str) -> WorkflowExecution:
    """The execution an idempotency key already names is the answer to a start of the same
    workflow; to another workflow's, it is a collision, said rather than answered with an
    execution of something else."""
    if found.workflow_name != workflow:
        raise InvalidInput(
            "idempotency_key",
            f"already used by execution {found.id} of workflow {found.workflow_name!r}",
        )
    return found


def _not_ours_twice(
    error: Exception, found: WorkflowExecution, ours: WorkflowExecution
) -> WorkflowExecution:
    """The execution a start's key names after its commit failed: its own when the reply
    was lost; but one of its id refused as a duplicate was stored before, by an id generator
    that repeats ids (one restarted): it is another request's, whatever its input."""
    if isinstance(error, DuplicateRecord) and found.id == ours.id:
        raise _repeated(ours.id)
    return found


def _repeated(execution_id: str) -> InvalidState:
    return InvalidState(
        f"execution id {execution_id} was taken already: the id generator repeats ids"
        " (one restarted?)"
    )


# How a stop in a start's first step is noted: nothing of that execution was stored.
UNSTORED = "the first step of an execution not stored"


def _lent(
    step: Step, uow: UnitOfWork, context: StepContext, what: str = "step", *, stored: bool = True
) -> Any:
    """What `step` returns, run on `uow` lent to it: a step stages, and a commit (or
    rollback) of its own is refused before it writes anything; the orchestrator commits its
    writes with the checkpoint, or discards them. `stored`: False for the first step, which
    commits with the start."""
    uow.lend(f"step {step.name}", tenant=context.runtime.tenant)
    try:
        output = step.run(uow, context)
    except BaseException as error:
        if _stopping(error):  # (unstored, its id is no execution's: not named)
            where = f"of execution {context.execution.id} ran" if stored else f"ran, {UNSTORED}"
            error.add_note(f"while {what} {step.name} {where}")
        raise
    finally:
        refused = uow.lend(None)
    if refused is not None:  # caught by the step, which went on: its attempt still fails
        raise UnitOfWorkLent(refused)
    if uow.closed:  # taken back by the step itself, and closed: a failed attempt, not stuck
        raise UnitOfWorkLent(f"step {step.name} took back its unit of work and closed it")
    return output


def _output(step: Step, value: Any) -> Any:
    if inspect.iscoroutine(value) or inspect.isgenerator(value):
        value.close()  # never run: closed, so Python does not warn it was never awaited
    if inspect.iscoroutine(value) or inspect.isgenerator(value) or inspect.isasyncgen(value):
        # A plain function handing back an async one's call (`lambda u, c: charge(u, c)`):
        # refused when the Step is made only if it is async itself.
        raise InvalidInput(
            f"output of step {step.name}",
            f"is a {type(value).__name__}, so the step's work was not done: run it inside the"
            " step (asyncio.run for a coroutine) and return its result",
        )
    return _storable(f"output of step {step.name}", value, limit=MAX_OUTPUT_CHARS)


def _storable(field: str, value: Any, *, limit: int | None = None) -> Any:
    """`value` as it will read back from storage (JSON: keys become strings, tuples lists),
    so that what its audit entry pins is what verification will find; an `InvalidInput`
    naming `field`, raised before anything is written, if it cannot be stored (a step's
    output failing later, at its checkpoint, would leave its execution running and the step
    re-run forever)."""
    if _depth(value) > MAX_NESTING:
        # Well below the interpreter's recursion limit, which every later reader must stay
        # under too (verification parses it again).
        raise InvalidInput(field, f"is nested more than {MAX_NESTING} levels deep")
    try:
        # Not NaN or Infinity: JSON has neither, and `--json` would print what no parser reads.
        text = json.dumps(value, allow_nan=False, ensure_ascii=False, default=_as_json)
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(field, "contains a lone surrogate, which is not Unicode text") from None
    except (TypeError, ValueError) as exc:
        raise InvalidInput(field, f"must be JSON-serialisable ({exc})") from None
    if limit is not None and len(text) > limit:
        # Stored in the execution, which every later step rewrites and every listing reads.
        raise InvalidInput(
            field,
            f"is {len(text):,} characters of JSON, over {limit:,}: keep large data in records"
            " the step writes, and return their ids",
        )
    return json.loads(text, object_pairs_hook=lambda pairs: _one_each(field, pairs))


def _as_json(value: object) -> object:
    # Any mapping (a read-only view, say) is the JSON object it is stored as.
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _one_each(field: str, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Keys become strings: 1 and "1" in one mapping would silently become one key. They are
    # stored sorted, and read back so: sorted here too, so that a step sees its input (and
    # earlier outputs) in one order, whether it runs within `start` or after a read.
    found = dict(sorted(pairs, key=itemgetter(0)))
    if len(found) != len(pairs):
        twice = next(k for n, (k, _) in enumerate(pairs) if k in dict(pairs[:n]))
        raise InvalidInput(field, f"has two keys that both read back as {shown(twice)}")
    return found


def _depth(value: Any) -> int:
    """How deeply lists and mappings nest in `value`, counted without recursion."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_NESTING:
            break
        pending.extend((child, depth + 1) for child in children)
    return deepest


def _later(now: datetime, delay: timedelta) -> datetime:
    # A retry due past the end of time is never due; a clock that near it fails the next claim.
    try:
        return (now + delay).astimezone(UTC)  # stored in UTC: it must end there too
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC)


def _an_id(execution_id: object) -> str:
    # Ids come from requests and command lines: another kind of value is said to be one.
    if not isinstance(execution_id, str):
        raise InvalidInput("execution_id", f"must be text, got {type(execution_id).__name__}")
    return plain(execution_id)


def _a_flag(name: str, value: object) -> None:
    # "no" would read as yes: a flag is a bool. Refused as any other argument is, so a
    # service mapping the domain's refusals to "bad request" maps this one too.
    if not isinstance(value, bool):
        raise InvalidInput(name, f"must be a bool, got {shown(value)}")


def _retryable(error: BaseException) -> bool:
    # A storage failure inside a step (the store unreachable, a planned fault) wrote nothing:
    # like a lost race it is worth another attempt, not the end of the workflow.
    return isinstance(
        error,
        RetryableError | ConcurrencyConflict | DuplicateRecord | StorageUnavailable | InjectedFault,
    )
