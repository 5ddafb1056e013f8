"""Run by the integration tests in a separate process: `python store_child.py COMMAND PATH`.

Commands print one JSON line: `dump` (every table, through the back door), `commit` (one
mutation; its event positions), `fill` (many) and `open` (whether the store could be opened,
and why not).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

from adapters.contract import SurrealBackdoor, samples
from adapters.surrealdb import SurrealConfig, SurrealStore
from ports.errors import PortError


def jsonable(value: Any) -> Any:
    """Snapshots as JSON, so two processes can compare them exactly."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def main(command: str, path: str) -> dict[str, Any]:
    try:
        store = SurrealStore(SurrealConfig(f"surrealkv://{path}"))
    except PortError as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    with store:
        if command == "dump":
            return {"snapshot": jsonable(SurrealBackdoor(store).snapshot())}
        if command == "commit":
            source = samples.source(id="from-child")
            with store.unit_of_work() as uow:
                uow.sources.add(source)
                uow.evidence.add(samples.evidence(source.id, id="from-child"))
                uow.events.append(samples.event(id="from-child"))
                return {"positions": list(uow.commit().event_positions)}
        if command == "fill":  # enough commits for the log to take several segments
            for _ in range(150):
                with store.unit_of_work() as uow:
                    source = samples.source()
                    uow.sources.add(source)
                    uow.evidence.add(samples.evidence(source.id))
                    uow.events.append(samples.event())
                    uow.commit()
            return {"filled": True}
        return {"opened": True}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
