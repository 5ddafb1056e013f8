"""Fault injection around any adapter's unit-of-work factory."""

from adapters.faults.injector import FaultInjector, FaultPlan, FaultyUnitOfWork

__all__ = ["FaultInjector", "FaultPlan", "FaultyUnitOfWork"]
