"""The lease keeper's own bookkeeping (domain.orchestration.leases)."""

from __future__ import annotations

import signal
import threading
from datetime import timedelta
from types import FrameType

import pytest

from adapters.contract import samples
from adapters.memory import MemoryStore
from domain.orchestration import leases
from ports.clock import FixedClock
from tests.workflow.harness import T0


def test_a_step_interrupted_while_a_renewal_is_in_flight_is_no_longer_renewed() -> None:
    """Before, Ctrl-C while the step's end waited for a renewal in flight left its entry
    behind: renewed for good if letting go of the lease then failed, no worker ever able
    to take the execution over."""
    store = MemoryStore()
    keeper = leases.LeaseKeeper(
        store.unit_of_work, "worker-1", timedelta(seconds=30), FixedClock(T0).now
    )
    execution = samples.execution()
    execution.lease_owner = "worker-1"

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        with pytest.raises(KeyboardInterrupt), keeper.kept(execution):
            [renewals] = [r for r in leases._REGISTRY.values() if r._factory == store.unit_of_work]
            [entry] = renewals._entries.values()
            entry.renewing = True  # as if the keeper's thread were renewing it right now
            signal.setitimer(signal.ITIMER_REAL, 0.2)  # Ctrl-C while the end waits for it
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert entry.stopped and id(entry) not in renewals._entries
    assert threading.current_thread() is threading.main_thread()
