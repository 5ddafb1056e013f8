"""Workflow-plane tests: lifecycle, audit chain, orchestrator, faults, crashes, races."""
