"""Scaling: do the everyday operations stay flat as the store grows to 100k executions?

The store is grown in place (1k, then 10k, then 100k executions with their events) and the
same operations are timed at every size. Fixture records are generated inside SurrealDB by
one `FOR` loop per chunk, from documents a real workflow produced (so they satisfy the
SCHEMAFULL schema and its assertions): going through units of work with pre-built documents
costs ~50x more time in CBOR encoding and statement parsing, and the fixture is not what is
measured. A constant number of interrupted (running) executions is stored through units of
work, so the recovery scan and the `running` listing have the same answer at every size;
any growth in their cost is the store's doing.

Every query the measured operations issue is captured and EXPLAINed (`select_rows`), so a
full scan or an in-memory sort names itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from adapters.memory import MemoryStore
from adapters.surrealdb import SurrealStore
from adapters.surrealdb.compiler import EVENTS_COUNTER, ident
from benchmarks.workflow import (
    TENANT,
    Progress,
    interrupted_executions,
    median,
    open_store,
    orchestrator,
    publication_input,
    recovery_scan,
    run_workflows,
    save_in_units,
    store_label,
)
from domain.model.lifecycle import ExecutionState
from ports.storage import EVENT_TABLE, Document

GEN_CHUNK = 2_000
GEN_SPACING = 30  # seconds between generated executions
FLAT_RATIO = 2.0  # largest/smallest above this (on a noisy shared machine) is "not flat"
OPERATIONS = (
    ("workflow", "one knowledge_publication workflow, end to end"),
    ("running_50", "executions list --state running --limit 50 (executions.recent)"),
    ("recovery_scan", "recovery's scan (in_state for every recoverable state)"),
    ("count_running", "executions count --state running (executions.count)"),
    ("read_after", "events.read_after(near the end, 100)"),
    ("succeeded_50", "executions list --state succeeded --limit 50"),
    ("failed_50", "executions list --state failed --limit 50 (none stored: every window read)"),
    ("recent_50", "executions list --limit 50"),
)


def templates() -> tuple[Document, Document, list[Document]]:
    """The execution document, its input's and the event documents of one real, succeeded
    workflow."""
    store = MemoryStore()
    run_workflows(orchestrator(store.unit_of_work), [publication_input("template", 0)])
    (execution,) = store.tables["execution"].values()
    (execution_input,) = store.tables["execution_input"].values()
    events = [{k: v for k, v in e.items() if k != "position"} for e in store.events]
    return dict(execution), dict(execution_input), events


def _generator(execution: Document, events: Sequence[Document]) -> str:
    """SurrealQL creating executions [$lo, $hi) and their events in one transaction."""
    own = {
        "idempotency_key": "'idem-gen-' + $k",
        # A steady workload: one execution every GEN_SPACING seconds, so a bigger store is an
        # older one, not a denser one.
        "created_at": "$t0 + <duration>(<string>($i * $spacing) + 's')",
        "updated_at": "$t0 + <duration>(<string>($i * $spacing) + 's')",
    }
    sets = ", ".join(f"{ident(f)} = {own.get(f, f'$x.{f}')}" for f in sorted(execution))
    lines = [
        "BEGIN TRANSACTION;",
        "FOR $i IN $lo..$hi {",
        "  LET $k = <string>$i;",
        f"  CREATE type::thing('execution', 'wfx-gen-' + $k) SET {sets} RETURN NONE;",
        "  CREATE type::thing('execution_input', 'wfx-gen-' + $k) CONTENT $input RETURN NONE;",
    ]
    per = len(events)
    for j, event in enumerate(events):
        fields = ", ".join(f"{ident(f)} = $e{j}.{f}" for f in sorted(event) if f != "event_id")
        eid = f"'evt-gen-' + $k + '-{j}'"
        lines.append(
            f"  CREATE type::thing('{EVENT_TABLE}', {eid}) SET {fields}, event_id = {eid},"
            f" position = $base + ($i - $lo) * {per} + {j + 1} RETURN NONE;"
        )
    lines += [
        "};",
        f"UPSERT $ctr SET n = $base + ($hi - $lo) * {per};",
        "COMMIT TRANSACTION;",
    ]
    return "\n".join(lines)


class Fixture:
    """A SurrealDB store grown in place to successive sizes."""

    def __init__(self, store: SurrealStore, running: int) -> None:
        self.store = store
        self.executions = 0
        self.running = running
        execution, self._input, self._events = templates()
        self._execution = execution
        self._text = _generator(execution, self._events)
        save_in_units(store.unit_of_work, interrupted_executions(running, "scale-running"))

    def grow_to(self, size: int) -> None:
        while self.executions + self.running < size:
            lo = self.executions
            hi = min(lo + GEN_CHUNK, size - self.running)
            params: dict[str, Any] = {
                "lo": lo,
                "hi": hi,
                "x": self._execution,
                "input": self._input,
                "t0": self._execution["created_at"],
                "spacing": GEN_SPACING,
                "ctr": EVENTS_COUNTER,
                "base": self.event_count(),
            }
            params.update({f"e{j}": e for j, e in enumerate(self._events)})
            # One transaction: select_rows raises unless every statement of it succeeded.
            self.store.select_rows(self._text, params)
            self.executions = hi

    def now(self) -> datetime:
        """The present for this store: just after its newest generated execution."""
        created: datetime = self._execution["created_at"]
        return created + timedelta(seconds=GEN_SPACING * self.executions + 1)

    def event_count(self) -> int:
        rows = self.store.select_rows("SELECT VALUE n FROM $c", {"c": [EVENTS_COUNTER]})
        return int(rows[0]) if rows and rows[0] is not None else 0

    @property
    def size(self) -> int:
        return self.executions + self.running


@contextmanager
def captured(store: SurrealStore) -> Iterator[dict[str, dict[str, Any]]]:
    """Record every read query the store issues (text -> first parameters seen)."""
    seen: dict[str, dict[str, Any]] = {}
    original = store.select_rows

    def recording(text: str, params: dict[str, Any]) -> list[Any]:
        seen.setdefault(text, dict(params))
        return original(text, params)

    setattr(store, "select_rows", recording)  # noqa: B010 - instance-level wrap, undone below
    try:
        yield seen
    finally:
        delattr(store, "select_rows")


def explain(store: SurrealStore, text: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """EXPLAIN FULL of one captured SELECT (ONLY dropped: EXPLAIN returns several rows)."""
    rows = store.select_rows(text.replace("FROM ONLY", "FROM") + " EXPLAIN FULL", params)
    return [r for r in rows if isinstance(r, dict)]


def summarise_plan(plan: Sequence[dict[str, Any]]) -> str:
    # Under a LIMIT collector, core 2.3's EXPLAIN FULL reports "Fetch count 0" whatever it
    # read: that figure is left out (`rows_matched` says what the WHERE matches instead).
    limited = any("limit" in (s.get("detail") or {}) for s in plan)
    parts = []
    for step in plan:
        op = str(step.get("operation"))
        detail = step.get("detail") or {}
        if op == "Iterate Index":
            inner = detail.get("plan") or {}
            how = inner.get("operator") or ("range" if "from" in inner else "?")
            parts.append(f"index {inner.get('index')} ({how})")
        elif op == "Iterate Table":
            parts.append(f"FULL TABLE SCAN of {detail.get('table')}")
        elif op == "Iterate Thing":
            parts.append("record by id")
        elif op == "Collector":
            parts.append(f"collect {detail.get('type')}")
        elif op == "Fetch":
            if not limited:
                parts.append(f"fetched {detail.get('count')} rows")
        elif op == "RecordStrategy":
            continue
        else:
            parts.append(op)
    return "; ".join(parts)


def rows_matched(store: SurrealStore, text: str, params: dict[str, Any]) -> int | None:
    """For a query with ORDER BY and LIMIT: how many rows its WHERE matches (all of which
    the engine reads and sorts when it cannot walk an index in order)."""
    if " LIMIT " not in text or " WHERE " not in text:
        return None
    count = text.split(" ORDER BY")[0].replace("SELECT *", "SELECT count() AS n", 1)
    rows = store.select_rows(count + " GROUP ALL", params)
    return int(rows[0]["n"]) if rows else 0


def _operations(store: SurrealStore, fixture: Fixture, tag: str) -> dict[str, Callable[[], None]]:
    factory = store.unit_of_work
    orch = orchestrator(factory)
    counter = iter(range(10**9))
    events = fixture.event_count()

    def one_workflow() -> None:
        run_workflows(orch, [publication_input(tag, next(counter))])

    def running_50() -> None:
        with factory() as uow:
            found = uow.executions.recent(
                now=fixture.now(), state=ExecutionState.RUNNING, tenant=TENANT, limit=50
            )
        if len(found) != min(50, fixture.running):
            raise RuntimeError(f"running listing returned {len(found)}")

    def scan() -> None:
        found = recovery_scan(factory)
        if len(found) != fixture.running:
            raise RuntimeError(f"recovery scan returned {len(found)}, not {fixture.running}")

    def count_running() -> None:
        with factory() as uow:
            counted = uow.executions.count(ExecutionState.RUNNING, tenant=TENANT)
        if counted != fixture.running:
            raise RuntimeError(f"running count returned {counted}, not {fixture.running}")

    def read_after() -> None:
        with factory() as uow:
            got = uow.events.read_after(max(events - 150, 0), 100)
        if not 0 < len(got) <= 100:
            raise RuntimeError(f"read_after returned {len(got)} events")

    def succeeded_50() -> None:
        with factory() as uow:
            found = uow.executions.recent(
                now=fixture.now(), state=ExecutionState.SUCCEEDED, tenant=TENANT, limit=50
            )
        if not min(50, fixture.executions) <= len(found) <= 50:
            raise RuntimeError(f"succeeded listing returned {len(found)}")

    def failed_50() -> None:
        with factory() as uow:
            found = uow.executions.recent(
                now=fixture.now(), state=ExecutionState.FAILED, tenant=TENANT, limit=50
            )
        if found:
            raise RuntimeError(f"failed listing returned {len(found)}, not none")

    def recent_50() -> None:
        with factory() as uow:
            found = uow.executions.recent(now=fixture.now(), tenant=TENANT, limit=50)
        if not min(50, fixture.executions + fixture.running) <= len(found) <= 50:
            raise RuntimeError(f"recent listing returned {len(found)}")

    return {
        "workflow": one_workflow,
        "running_50": running_50,
        "recovery_scan": scan,
        "count_running": count_running,
        "read_after": read_after,
        "succeeded_50": succeeded_50,
        "failed_50": failed_50,
        "recent_50": recent_50,
    }


def bench_scaling(
    kind: str,
    sizes: Sequence[int],
    running: int,
    reps: int,
    workdir: Path,
    progress: Progress,
    *,
    budget_s: float = 3.0,
) -> dict[str, Any]:
    """One store per size, all open at once, measured in interleaved rounds: the machine's
    noise then falls on every size alike instead of on whichever was measured last."""
    stores: list[SurrealStore] = []
    built: list[tuple[int, Fixture, dict[str, Callable[[], None]], float]] = []
    try:
        for size in sorted(sizes):
            store = open_store(kind, workdir / "scaling")
            assert isinstance(store, SurrealStore)
            stores.append(store)
            t0 = time.perf_counter()
            fixture = Fixture(store, running)
            fixture.grow_to(size)
            grow_s = time.perf_counter() - t0
            ops = _operations(store, fixture, f"s{kind}{size}")
            ops["workflow"]()  # warm the orchestrator and the store's caches once
            built.append((size, fixture, ops, grow_s))
            progress(f"scaling {kind}: {fixture.size} executions stored in {grow_s:.1f} s")
        samples: dict[tuple[int, str], list[float]] = {
            (size, name): [] for size, _, ops, _ in built for name in ops
        }
        for _ in range(reps):
            for size, _, ops, _ in built:
                for name, fn in ops.items():
                    taken = samples[(size, name)]
                    if taken and sum(taken) > budget_s * 1000:
                        continue  # an expensive operation: enough repetitions already
                    t0 = time.perf_counter()
                    fn()
                    taken.append((time.perf_counter() - t0) * 1000)
        rows: list[dict[str, Any]] = []
        for size, fixture, ops, grow_s in built:
            ms = {name: median(samples[(size, name)]) for name in ops}
            rows.append(
                {
                    "executions": fixture.size,
                    "events": fixture.event_count(),
                    "grow_s": grow_s,
                    "ms": ms,
                    "min_ms": {name: min(samples[(size, name)]) for name in ops},
                    "repetitions": {name: len(samples[(size, name)]) for name in ops},
                }
            )
            progress(
                f"scaling {kind} {fixture.size}: "
                + ", ".join(f"{name} {value:.2f} ms" for name, value in ms.items())
            )
        ratios = {}
        min_ratios = {}
        for name, _ in OPERATIONS:
            ratios[name] = _ratio(rows[0]["ms"][name], rows[-1]["ms"][name])
            min_ratios[name] = _ratio(rows[0]["min_ms"][name], rows[-1]["min_ms"][name])
        largest_store = stores[-1]
        _, _, largest_ops, _ = built[-1]
        plans: dict[str, list[dict[str, Any]]] = {}
        for name, fn in largest_ops.items():
            with captured(largest_store) as seen:
                fn()
            plans[name] = [
                {
                    "query": text,
                    "plan": summarise_plan(plan := explain(largest_store, text, params)),
                    "rows_matched": rows_matched(largest_store, text, params),
                    "explain": plan,
                }
                for text, params in seen.items()
            ]
    finally:
        for store in stores:
            store.close()
    return {
        "label": store_label(kind),
        "running_executions": running,
        "events_per_execution": len(templates()[1]),
        "rows": rows,
        "ratio_largest_over_smallest": ratios,
        "min_ratio_largest_over_smallest": min_ratios,
        "flat_threshold": FLAT_RATIO,
        "not_flat": [n for n, r in ratios.items() if r > FLAT_RATIO],
        "plans": plans,
        "operations": dict(OPERATIONS),
    }


def _ratio(small: float, large: float) -> float:
    return large / small if small > 0 else float("inf")
