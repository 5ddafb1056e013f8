"""The workflow execution plane: definitions, the orchestrator and recovery."""
