"""Workflow benchmarks: knowledge_publication end to end, recovery, concurrency and memory.

Every figure here is measured in the calling process against stores opened by the helpers
below; `benchmarks.run` decides the counts and renders the results. Stores are real adapters
(the in-memory adapter, SurrealDB `mem://` and `surrealkv://` with per-commit fsync), driven
through the public orchestrator API only.
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from adapters.memory import MemoryStore
from adapters.surrealdb import SurrealConfig, SurrealStore, SurrealUnitOfWork
from domain.model.environment import Environment
from domain.model.execution import WorkflowExecution
from domain.model.lifecycle import ExecutionState
from domain.model.runtime import RuntimeContext
from domain.orchestration.orchestrator import RECOVERABLE, Orchestrator
from domain.services.governance import Gate
from domain.services.knowledge import KnowledgeService
from domain.workflows import knowledge_publication as kp
from ports.clock import SystemClock, UuidIds
from ports.errors import ConcurrencyConflict
from ports.storage import Batch, CommitReceipt
from ports.unit_of_work import UnitOfWork, UnitOfWorkFactory

TENANT = "bench"
STORE_KINDS = ("surrealkv", "mem", "memory")
DOC_CHARS = 300

Progress = Callable[[str], None]
Store = MemoryStore | SurrealStore


def stderr_progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# -- stores, runtimes, orchestrators ---------------------------------------------------------


def open_store(kind: str, workdir: Path | None = None) -> Store:
    """`memory` (the in-memory adapter), `mem` (SurrealDB mem://) or `surrealkv` (on disk,
    per-commit fsync, in a fresh directory under `workdir`)."""
    if kind == "memory":
        return MemoryStore()
    if kind == "mem":
        return SurrealStore(SurrealConfig("mem://"))
    if kind == "surrealkv":
        if workdir is None:
            raise ValueError("a surrealkv store needs a work directory")
        workdir.mkdir(parents=True, exist_ok=True)
        n = sum(1 for _ in workdir.glob("kv-*"))
        path = workdir / f"kv-{n:03d}-{os.getpid()}"
        return SurrealStore(SurrealConfig(f"surrealkv://{path}", sync_data=True))
    raise ValueError(f"unknown store kind {kind!r}; known: {', '.join(STORE_KINDS)}")


def store_label(kind: str) -> str:
    return {
        "surrealkv": "SurrealDB surrealkv:// (fsync per commit)",
        "mem": "SurrealDB mem://",
        "memory": "in-memory adapter",
    }[kind]


def round_trips(store: Store) -> int:
    """Database round trips so far (SurrealDB), or commits for the in-memory adapter."""
    return store.round_trips if isinstance(store, SurrealStore) else store.commits


def runtime(actor: str = "bench") -> RuntimeContext:
    return RuntimeContext(
        environment=Environment.TEST,
        tenant=TENANT,
        service="govkernel-bench",
        actor=actor,
        clock=SystemClock(),
        ids=UuidIds(),
        trace_id=UuidIds().new_id("trace"),
    )


def orchestrator(factory: UnitOfWorkFactory, *, worker_id: str | None = None) -> Orchestrator:
    service = KnowledgeService(Gate(factory))
    return Orchestrator(
        factory,
        runtime(),
        {kp.NAME: kp.definition(service)},
        worker_id=worker_id,
    )


def publication_input(tag: str, i: int) -> dict[str, Any]:
    """One small document (~300 characters) and a fresh publication id."""
    sentence = f"Inflation outlook {tag}-{i}: core prices eased while wages kept rising. "
    body = (sentence * (DOC_CHARS // len(sentence) + 1))[:DOC_CHARS]
    raw = {
        "documents": [
            {
                "kind": "imf",
                "title": f"Outlook note {tag}-{i}",
                "source_url": f"https://www.imf.org/en/Publications/bench/{tag}/{i}",
                "format": "text",
                "classification": "internal",
                "content_text": body,
            }
        ],
        "title": f"Capsule {tag}-{i}",
        "publication_id": f"pub-{tag}-{i}",
        "policy_refs": ["POL-KNOWLEDGE-1"],
    }
    return kp.PublicationRequest.parse(raw).to_input()


class EngineTimer:
    """Seconds spent inside the SurrealDB engine itself: the SDK's native `execute` call,
    without its Python CBOR coding and without any of govkernel's Python.

    It reaches into the SDK's embedded connection (a measurement aid, never used by the
    kernel); on a store without that native call, `seconds` stays None.
    """

    def __init__(self, store: Store) -> None:
        self.seconds: float | None = None
        conn = getattr(store, "_db", None)
        native = getattr(conn, "_db", None)
        if conn is None or native is None or not hasattr(native, "execute"):
            return
        self.seconds = 0.0
        conn._db = _TimedNative(native, self)


class _TimedNative:
    def __init__(self, native: Any, timer: EngineTimer) -> None:
        self._native = native
        self._timer = timer

    def execute(self, request: bytes) -> bytes:
        start = time.perf_counter()
        try:
            return bytes(self._native.execute(request))
        finally:
            self._timer.seconds = (self._timer.seconds or 0.0) + time.perf_counter() - start

    def __getattr__(self, name: str) -> Any:
        return getattr(self._native, name)


def run_workflows(orch: Orchestrator, inputs: Sequence[dict[str, Any]]) -> float:
    """Start and run each workflow to completion; seconds elapsed. Any failure is fatal."""
    start = time.perf_counter()
    for payload in inputs:
        execution = orch.start(kp.NAME, payload)
        if execution.state is not ExecutionState.SUCCEEDED:
            raise RuntimeError(f"workflow {execution.id} ended {execution.state.value}")
    return time.perf_counter() - start


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


# -- 2. workflow throughput vs the DBOS peer -------------------------------------------------


class PeerRunner(Protocol):
    def __call__(self, n: int, workdir: Path) -> float: ...


def bench_workflow(
    n: int,
    rounds: int,
    workdir: Path,
    peer: PeerRunner | None,
    peer_skipped: str | None,
    progress: Progress,
) -> dict[str, Any]:
    """Alternate rounds: govkernel on each store, then the peer, all with `n` workflows.

    Every round uses fresh stores (the peer makes fresh SQLite files each run too); store
    opening and the peer's process start-up are outside the timings on both sides.
    """
    rates: dict[str, list[float]] = {kind: [] for kind in STORE_KINDS}
    trips: dict[str, list[float]] = {kind: [] for kind in STORE_KINDS}
    engine_ms: dict[str, list[float]] = {kind: [] for kind in STORE_KINDS}
    peer_rates: list[float] = []
    peer_errors: list[str] = []
    for r in range(rounds):
        for kind in STORE_KINDS:
            store = open_store(kind, workdir / "workflow")
            try:
                orch = orchestrator(store.unit_of_work)
                inputs = [publication_input(f"w{r}{kind}", i) for i in range(n)]
                before = round_trips(store)
                engine = EngineTimer(store)
                seconds = run_workflows(orch, inputs)
                trips[kind].append((round_trips(store) - before) / n)
                if engine.seconds is not None:
                    engine_ms[kind].append(engine.seconds / n * 1000)
            finally:
                store.close()
            rates[kind].append(rate(n, seconds))
            progress(f"workflow round {r + 1}/{rounds}: {kind} {rates[kind][-1]:.1f} wf/s")
        if peer is not None:
            try:
                peer_rate = peer(n, workdir / f"peer-{r}")
            except Exception as exc:  # the peer is optional evidence, never fatal
                peer_errors.append(f"{type(exc).__name__}: {exc}"[:600])
                progress(f"workflow round {r + 1}/{rounds}: peer FAILED ({peer_errors[-1][:120]})")
            else:
                peer_rates.append(peer_rate)
                progress(f"workflow round {r + 1}/{rounds}: DBOS peer {peer_rate:.1f} wf/s")
    stores = {
        kind: {
            "label": store_label(kind),
            "workflows_per_s": median(rates[kind]),
            "rounds_workflows_per_s": rates[kind],
            # Time inside the SurrealDB engine alone; 1000 / it is what even a kernel with
            # no Python at all could reach on this store.
            "engine_ms_per_workflow": median(engine_ms[kind]) if engine_ms[kind] else None,
            # SurrealDB: query_raw calls per workflow; in-memory adapter: commits per workflow.
            "round_trips_per_workflow" if kind != "memory" else "commits_per_workflow": median(
                trips[kind]
            ),
        }
        for kind in STORE_KINDS
    }
    peer_entry: dict[str, Any]
    if peer is None:
        peer_entry = {"run": False, "reason": peer_skipped or "not requested"}
    elif not peer_rates:
        peer_entry = {"run": False, "reason": "peer failed", "errors": peer_errors}
    else:
        peer_entry = {
            "run": True,
            "name": "DBOS 3.4 + SQLite (fsync per commit), 3 transactional steps",
            "workflows_per_s": median(peer_rates),
            "rounds_workflows_per_s": peer_rates,
            "errors": peer_errors,
        }
    ratio: float | None = None
    ceiling_ratio: float | None = None
    if peer_entry.get("run"):
        ratio = stores["surrealkv"]["workflows_per_s"] / peer_entry["workflows_per_s"]
        if engine_ms["surrealkv"]:
            in_engine = median(engine_ms["surrealkv"])
            ceiling_ratio = 1000 / in_engine / peer_entry["workflows_per_s"]
    return {
        "workflows_per_round": n,
        "rounds": rounds,
        "document_chars": DOC_CHARS,
        "stores": stores,
        "peer": peer_entry,
        "ratio_surrealkv_over_peer": ratio,
        # The ratio if govkernel's and the SDK's Python cost nothing: the engine's own limit.
        "engine_ceiling_ratio_over_peer": ceiling_ratio,
        "target_ratio": 4.0,
    }


# -- 3. recovery -------------------------------------------------------------------------------


def interrupted_executions(count: int, tag: str) -> list[WorkflowExecution]:
    """Executions as a crash leaves them: running, no step done, the lease long expired."""
    rt = runtime()
    definition = kp.definition(KnowledgeService(Gate(MemoryStore().unit_of_work)))
    now = rt.clock.now()
    ttl = timedelta(seconds=30)
    out = []
    for i in range(count):
        execution = WorkflowExecution.start(
            execution_id=rt.ids.new_id("wfx"),
            tenant=rt.tenant,
            workflow_name=definition.name,
            workflow_version=definition.version,
            metadata=definition.metadata,
            idempotency_key=f"idem-{tag}-{i}",
            correlation_id=rt.trace_id,
            input=publication_input(tag, i),
            at=now,
            actor=rt.actor,
        )
        execution.transition(ExecutionState.RUNNING, at=now, actor=rt.actor, reason="started")
        execution.claim("crashed-worker", now=now - 10 * ttl, ttl=ttl)
        out.append(execution)
    return out


def save_in_units(
    factory: UnitOfWorkFactory, executions: Sequence[WorkflowExecution], per_unit: int = 200
) -> None:
    for start in range(0, len(executions), per_unit):
        with factory() as uow:
            for execution in executions[start : start + per_unit]:
                uow.executions.save(execution)
            uow.commit()


def recovery_scan(factory: UnitOfWorkFactory) -> list[WorkflowExecution]:
    """Exactly the listing `Orchestrator.recover` starts with."""
    with factory() as uow:
        return [
            x for state in RECOVERABLE for x in uow.executions.in_state(state, with_input=False)
        ]


def bench_recovery(
    sizes: Sequence[int], kinds: Sequence[str], workdir: Path, progress: Progress
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in kinds:
        rows = []
        for size in sizes:
            store = open_store(kind, workdir / "recovery")
            try:
                t0 = time.perf_counter()
                save_in_units(store.unit_of_work, interrupted_executions(size, f"r{size}"))
                setup = time.perf_counter() - t0
                scans = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    found = recovery_scan(store.unit_of_work)
                    scans.append(time.perf_counter() - t0)
                if len(found) != size:
                    raise RuntimeError(f"recovery scan found {len(found)} of {size}")
                orch = orchestrator(store.unit_of_work, worker_id="recovering-worker")
                before = round_trips(store)
                t0 = time.perf_counter()
                resumed = orch.recover(ignore_leases=True)
                seconds = time.perf_counter() - t0
                trips = round_trips(store) - before
                succeeded = sum(1 for x in resumed if x.state is ExecutionState.SUCCEEDED)
                left = len(recovery_scan(store.unit_of_work))
            finally:
                store.close()
            if succeeded != size or left:
                raise RuntimeError(f"recovery: {succeeded}/{size} succeeded, {left} left over")
            rows.append(
                {
                    "executions": size,
                    "setup_s": setup,
                    "scan_s": median(scans),
                    "recover_s": seconds,
                    "executions_per_s": rate(size, seconds),
                    "round_trips_per_execution": trips / size,
                }
            )
            progress(
                f"recovery {kind} {size}: {rows[-1]['executions_per_s']:.1f} exec/s, "
                f"scan {rows[-1]['scan_s'] * 1000:.1f} ms"
            )
        out[kind] = {"label": store_label(kind), "sizes": rows}
    return out


# -- 5. concurrency ----------------------------------------------------------------------------


class _Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.conflicts = 0
        self.commits = 0


class CountingUnitOfWork(SurrealUnitOfWork):
    """The SurrealDB unit of work, counting commits and ConcurrencyConflicts."""

    counters: _Counters

    def _apply(self, batch: Batch) -> CommitReceipt:
        try:
            receipt = super()._apply(batch)
        except ConcurrencyConflict:
            with self.counters.lock:
                self.counters.conflicts += 1
            raise
        with self.counters.lock:
            self.counters.commits += 1
        return receipt


def counting_factory(store: SurrealStore, counters: _Counters) -> UnitOfWorkFactory:
    def make() -> UnitOfWork:
        uow = CountingUnitOfWork(store)
        uow.counters = counters
        return uow

    return make


def _census(store: SurrealStore) -> dict[str, int]:
    counts = {}
    for table in ("knowledge_source", "capsule", "event", "execution"):
        rows = store.select_rows(f"SELECT count() AS n FROM {table} GROUP ALL", {})
        counts[table] = int(rows[0]["n"]) if rows else 0
    return counts


def _exactly_once(store: SurrealStore, ids: Sequence[str], workflows: int) -> list[str]:
    """Every execution succeeded with each step attempted once; one record set apiece."""
    problems = []
    counts = _census(store)
    expected = {"knowledge_source": workflows, "capsule": workflows, "event": 3 * workflows}
    expected["execution"] = workflows
    for table, want in expected.items():
        if counts[table] != want:
            problems.append(f"{table}: {counts[table]} stored, {want} expected")
    with store.unit_of_work() as uow:
        for execution_id in ids:
            x = uow.executions.require(execution_id)
            if x.state is not ExecutionState.SUCCEEDED:
                problems.append(f"{execution_id} is {x.state.value}")
            elif any(n != 1 for n in x.attempts.values()):
                problems.append(f"{execution_id} attempts {x.attempts}")
    return problems


def bench_concurrency(
    threads: Sequence[int],
    per_thread: int,
    contended: int,
    workdir: Path,
    progress: Progress,
) -> dict[str, Any]:
    """Workers (one Orchestrator and thread each) on one surrealkv store.

    `disjoint`: each worker starts and runs its own workflows (throughput; no conflicts are
    expected). `contended`: every worker drives the same pending executions, in a different
    order, so they race for each step; leases and version checks must keep each step to one.
    """
    rows = []
    for k in threads:
        for mode in ("disjoint", "contended"):
            if mode == "contended" and (k < 2 or contended <= 0):
                continue
            count = per_thread if mode == "disjoint" else contended
            row = _concurrency_round(k, mode, count, workdir / "concurrency")
            rows.append(row)
            progress(
                f"concurrency {k} thread(s) {mode}: {row['workflows_per_s']:.1f} wf/s, "
                f"{row['concurrency_conflicts']} conflicts, {row['lost_or_duplicated']} problems"
            )
    return {"store": store_label("surrealkv"), "rows": rows}


def _concurrency_round(k: int, mode: str, count: int, workdir: Path) -> dict[str, Any]:
    store = open_store("surrealkv", workdir)
    assert isinstance(store, SurrealStore)
    counters = _Counters()
    factory = counting_factory(store, counters)
    workers = [orchestrator(factory, worker_id=f"worker-{w}") for w in range(k)]
    errors: list[str] = []
    ids: list[str] = []
    ids_lock = threading.Lock()
    barrier = threading.Barrier(k)
    inputs: list[list[dict[str, Any]]] = []
    pending: list[str] = []
    try:
        if mode == "disjoint":
            inputs = [[publication_input(f"c{k}t{w}", i) for i in range(count)] for w in range(k)]
            total = k * count
        else:
            starter = orchestrator(store.unit_of_work, worker_id="starter")
            pending = [
                starter.start(kp.NAME, publication_input(f"x{k}", i), run=False).id
                for i in range(count)
            ]
            ids.extend(pending)
            total = count

        def work(w: int) -> None:
            orch = workers[w]
            barrier.wait()
            try:
                if mode == "disjoint":
                    for payload in inputs[w]:
                        x = orch.start(kp.NAME, payload)
                        with ids_lock:
                            ids.append(x.id)
                else:
                    shift = w * len(pending) // k
                    for execution_id in pending[shift:] + pending[:shift]:
                        orch.run(execution_id)
            except Exception as exc:  # every error is a finding
                errors.append(f"worker-{w}: {type(exc).__name__}: {exc}"[:300])

        pool = [threading.Thread(target=work, args=(w,)) for w in range(k)]
        t0 = time.perf_counter()
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        seconds = time.perf_counter() - t0
        problems = errors + _exactly_once(store, ids, total)
    finally:
        store.close()
    return {
        "threads": k,
        "mode": mode,
        "workflows": total,
        "seconds": seconds,
        "workflows_per_s": rate(total, seconds),
        "commits": counters.commits,
        "concurrency_conflicts": counters.conflicts,
        "lost_or_duplicated": len(problems),
        "problems": problems[:10],
    }


# -- 6. memory ---------------------------------------------------------------------------------


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb() -> float:
    kb = _status_kb("VmRSS")
    if kb is None:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return kb / 1024


def hwm_mb() -> float | None:
    kb = _status_kb("VmHWM")
    return None if kb is None else kb / 1024


def _disk_mb(store: Store) -> float:
    """Bytes on disk of a surrealkv store's directory (0 for stores in memory)."""
    path = store.config.path if isinstance(store, SurrealStore) else None
    if path is None or not path.exists():
        return 0.0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def bench_memory(
    kinds: Sequence[str],
    count: int,
    warmup: int,
    sample_every: int,
    workdir: Path,
    progress: Progress,
) -> dict[str, Any]:
    """Run `count` workflows on one store, sampling the process's RSS and Python heap.

    RSS includes the embedded engine (which keeps a mem:// store's data in memory); the
    Python heap (`sys.getallocatedblocks`) is govkernel, the SDK and the interpreter only,
    so a leak in govkernel shows there even where the store's own growth swamps RSS.
    """
    out: dict[str, Any] = {}
    for kind in kinds:
        gc.collect()
        store = open_store(kind, workdir / "memory")
        samples: list[dict[str, float]] = []
        try:
            orch = orchestrator(store.unit_of_work)
            done = 0
            t_chunk = time.perf_counter()
            while done < count:
                chunk = min(sample_every, count - done)
                run_workflows(orch, [publication_input(f"m{kind}", done + i) for i in range(chunk)])
                done += chunk
                now = time.perf_counter()
                samples.append(
                    {
                        "workflows": done,
                        "rss_mb": rss_mb(),
                        "py_blocks": float(sys.getallocatedblocks()),
                        "cache_entries": float(len(getattr(store, "_immutable", {}))),
                        "disk_mb": _disk_mb(store),
                        "chunk_workflows_per_s": rate(chunk, now - t_chunk),
                    }
                )
                t_chunk = now
                if done * 5 // count != (done - chunk) * 5 // count or done == count:
                    progress(f"memory {kind}: {done}/{count}, RSS {samples[-1]['rss_mb']:.0f} MB")
        finally:
            store.close()
        base = next((s for s in samples if s["workflows"] >= warmup), samples[0])
        end = samples[-1]
        span_k = max(end["workflows"] - base["workflows"], 1) / 1000
        out[kind] = {
            "label": store_label(kind),
            "workflows": count,
            "warmup_workflows": base["workflows"],
            "rss_after_warmup_mb": base["rss_mb"],
            "rss_end_mb": end["rss_mb"],
            "rss_growth_mb_per_1k": (end["rss_mb"] - base["rss_mb"]) / span_k,
            "py_blocks_after_warmup": base["py_blocks"],
            "py_blocks_end": end["py_blocks"],
            "py_blocks_growth_ratio": end["py_blocks"] / base["py_blocks"],
            "cache_entries_after_warmup": base["cache_entries"],
            "cache_entries_end": end["cache_entries"],
            "disk_growth_mb_per_1k": (end["disk_mb"] - base["disk_mb"]) / span_k,
            "peak_rss_mb": hwm_mb(),
            "first_chunk_workflows_per_s": samples[0]["chunk_workflows_per_s"],
            "last_chunk_workflows_per_s": end["chunk_workflows_per_s"],
            "samples": samples,
        }
    return out


def memory_in_subprocess(
    kind: str, count: int, warmup: int, sample_every: int, workdir: Path
) -> dict[str, Any]:
    """`bench_memory` for one store in a fresh interpreter: RSS then says nothing about what
    earlier benchmarks (a 100k-execution store, say) left behind in this process."""
    import json
    import subprocess

    args = json.dumps(
        {
            "kind": kind,
            "count": count,
            "warmup": warmup,
            "sample_every": sample_every,
            "workdir": str(workdir),
        }
    )
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.workflow", "memory", args],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory benchmark subprocess failed (exit {proc.returncode})")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str]) -> int:
    import json

    if len(argv) != 2 or argv[0] != "memory":
        print("usage: python -m benchmarks.workflow memory JSON-ARGS", file=sys.stderr)
        return 2
    a = json.loads(argv[1])
    result = bench_memory(
        [a["kind"]], a["count"], a["warmup"], a["sample_every"], Path(a["workdir"]), stderr_progress
    )
    print(json.dumps(result[a["kind"]]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
