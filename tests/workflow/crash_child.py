"""Crash-test child: run knowledge_publication workflows on one store until killed.

    python crash_child.py surrealkv:///path/to/store

Prints `ready` once imported and waits for a line on stdin (so the parent can spawn it
while it still holds the store), then opens the store, prints `started` and runs
publications back to back (1 to 3 documents each) until the parent kills it with SIGKILL.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from adapters.surrealdb import SurrealConfig, SurrealStore
from domain.orchestration.orchestrator import Orchestrator
from ports.clock import SystemClock, UuidIds
from tests.workflow.harness import WORKFLOW, definitions, request, runtime


def main(url: str) -> None:
    print("ready", flush=True)
    if not sys.stdin.readline():
        return  # the parent is gone: nothing to do
    store = SurrealStore(SurrealConfig(url))
    ids = UuidIds()
    clock = SystemClock()
    orch = Orchestrator(
        store.unit_of_work,
        runtime(clock, ids),
        definitions(store.unit_of_work),
        worker_id=f"crash-child-{uuid.uuid4().hex[:8]}",
    )
    print("started", flush=True)
    n = 0
    while True:
        n += 1
        publication = f"pub-{uuid.uuid4().hex[:12]}"
        orch.start(
            WORKFLOW,
            request(publication, documents=1 + n % 3),
            idempotency_key=f"crash-{publication}",
        )


if __name__ == "__main__":
    main(sys.argv[1])
