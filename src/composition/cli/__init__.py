"""The `govkernel` command line: run, approve and inspect governed workflow executions.

Exit statuses: 0 ok; 1 denied by policy, a failed execution or a verification failure;
2 usage or configuration error (including a store held by another process, an unknown
execution or invalid input). Errors are one line on stderr (a traceback only with --debug).
With --json, stdout carries exactly one JSON document and nothing else.
"""

from composition.cli.command import main, run_cli
from composition.cli.root import cli

__all__ = ["cli", "main", "run_cli"]
