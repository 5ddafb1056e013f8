"""`make bench`: how fast and how scalable govkernel is, every figure a ratio from one run.

    python -m benchmarks.run            # the full benchmark (about 7 minutes on 2 cores)
    python -m benchmarks.run --quick    # tiny counts, no DBOS peer: a smoke run (seconds)
    GOVKERNEL_BENCH_SCALE=0.5 python -m benchmarks.run   # every count halved (or 2: doubled)

Sections: (1) kernel commit vs a hand-written transaction (benchmarks.kernel, if present),
(2) the knowledge_publication workflow vs the DBOS peer, side by side in alternating rounds,
(3) recovery, (4) scaling with the store's size, (5) concurrent workers, (6) memory.
Progress goes to stderr, the table to stdout, all figures to
benchmarks/results/latest.json and a timestamped copy.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# The adapter sets this itself for surrealkv stores; set it before any engine starts so the
# engine's one-time configuration read can never see it missing.
os.environ.setdefault("SURREAL_SYNC_DATA", "true")

from benchmarks import scaling
from benchmarks import workflow as wf

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
SCALE_ENV = "GOVKERNEL_BENCH_SCALE"
QUICK_PEER_REASON = "not run: quick mode (--quick) skips the DBOS peer"


@dataclass(frozen=True)
class Plan:
    scale: float
    quick: bool
    peer: bool
    kernel_n: int
    workflow_n: int
    workflow_rounds: int
    # (store kind, executions, run them to completion? else time the scan only)
    recovery: tuple[tuple[str, int, bool], ...]
    scaling: tuple[tuple[str, tuple[int, ...]], ...]
    scaling_running: int
    scaling_reps: int
    threads: tuple[int, ...]
    per_thread: int
    contended: int
    # (store kind, workflows, warm-up workflows, sample every)
    memory: tuple[tuple[str, int, int, int], ...] = field(default=())

    @classmethod
    def full(cls, scale: float, peer: bool = True) -> Plan:
        def n(base: int, least: int = 1) -> int:
            return max(least, round(base * scale))

        return cls(
            scale=scale,
            quick=False,
            peer=peer,
            kernel_n=n(1_000, 20),
            workflow_n=n(200, 10),
            workflow_rounds=3,
            recovery=(
                ("surrealkv", n(1_000), True),
                ("surrealkv", n(10_000), True),
                ("memory", n(1_000), True),
                ("memory", n(10_000), True),
            ),
            scaling=(
                ("mem", (n(1_000, 200), n(10_000, 400), n(100_000, 800))),
                ("surrealkv", (n(1_000, 200), n(10_000, 400))),
            ),
            scaling_running=100,
            scaling_reps=7,
            threads=(1, 2, 4),
            per_thread=n(100, 5),
            contended=n(100, 5),
            # The store's immutable-record cache fills (20k entries) after ~2.5k workflows:
            # warm-up goes past that, so what follows shows growth per workflow only.
            memory=(
                ("mem", n(10_000, 100), n(3_000, 20), n(500, 10)),
                ("surrealkv", n(3_500, 60), n(2_500, 20), n(500, 10)),
            ),
        )

    @classmethod
    def tiny(cls) -> Plan:
        return cls(
            scale=0.0,
            quick=True,
            peer=False,
            kernel_n=5,
            workflow_n=4,
            workflow_rounds=1,
            recovery=(("surrealkv", 10, True), ("memory", 10, True), ("memory", 30, True)),
            scaling=(("mem", (30, 120)),),
            scaling_running=5,
            scaling_reps=2,
            threads=(1, 2),
            per_thread=3,
            contended=3,
            memory=(("mem", 30, 10, 10),),
        )


# -- machine -----------------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    mem = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/meminfo").splitlines()
            if line.startswith("MemTotal")
        ),
        "unknown",
    )
    try:
        sdk = importlib.metadata.version("surrealdb")
    except importlib.metadata.PackageNotFoundError:
        sdk = "unknown"
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "memory": mem,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "surrealdb_sdk": sdk,
        "surreal_sync_data": os.environ.get("SURREAL_SYNC_DATA"),
        "git": _git(),
    }


def _git() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head}{' (uncommitted changes)' if dirty else ''}" if head else "unknown"


def load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# -- sections ----------------------------------------------------------------------------------


def kernel_section(plan: Plan, progress: wf.Progress) -> dict[str, Any]:
    try:
        module = importlib.import_module("benchmarks.kernel")
    except ImportError as exc:
        return {"run": False, "reason": f"benchmarks/kernel.py not importable: {exc}"}
    runner = getattr(module, "run", None)
    if not callable(runner):
        return {"run": False, "reason": "benchmarks.kernel has no run(n)"}
    progress(f"kernel: benchmarks.kernel.run({plan.kernel_n})")
    try:
        rows = runner(plan.kernel_n)
    except Exception as exc:  # another helper's module: report, never abort the benchmark
        return {
            "run": False,
            "reason": f"benchmarks.kernel.run failed: {type(exc).__name__}: {str(exc)[:500]}",
        }
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        return {"run": False, "reason": "benchmarks.kernel.run did not return list[dict]"}
    progress(f"kernel: profiling {plan.kernel_n} commits on mem://")
    return {
        "run": True,
        "n": plan.kernel_n,
        "rows": rows,
        "hot_path": module.hot_path(plan.kernel_n),
    }


def workflow_section(plan: Plan, workdir: Path, progress: wf.Progress) -> dict[str, Any]:
    peer: wf.PeerRunner | None = None
    skipped: str | None = None
    if plan.quick:
        skipped = QUICK_PEER_REASON
    elif not plan.peer:
        skipped = "not run: --no-peer"
    else:
        try:
            from benchmarks.peer import ensure_peer_venv, run_peer

            python = ensure_peer_venv(REPO)

            def peer_rate(n: int, workdir: Path) -> float:
                return run_peer(n, workdir, python).workflows_per_s

            peer = peer_rate
        except Exception as exc:
            skipped = f"not run: peer unavailable: {type(exc).__name__}: {str(exc)[:300]}"
            progress(f"workflow: {skipped}")
    return wf.bench_workflow(
        plan.workflow_n, plan.workflow_rounds, workdir, peer, skipped, progress
    )


def recovery_section(plan: Plan, workdir: Path, progress: wf.Progress) -> dict[str, Any]:
    rows = []
    for kind, size, full in plan.recovery:
        if full:
            result = wf.bench_recovery([size], [kind], workdir, progress)[kind]["sizes"][0]
        else:
            result = scan_only(kind, size, workdir, progress)
        rows.append({"store": kind, "label": wf.store_label(kind), "full": full, **result})
    return {"rows": rows}


def scan_only(kind: str, size: int, workdir: Path, progress: wf.Progress) -> dict[str, Any]:
    store = wf.open_store(kind, workdir / "recovery")
    try:
        t0 = time.perf_counter()
        wf.save_in_units(store.unit_of_work, wf.interrupted_executions(size, f"scan{size}"))
        setup = time.perf_counter() - t0
        scans = []
        for _ in range(3):
            t0 = time.perf_counter()
            found = wf.recovery_scan(store.unit_of_work)
            scans.append(time.perf_counter() - t0)
    finally:
        store.close()
    if len(found) != size:
        raise RuntimeError(f"recovery scan found {len(found)} of {size}")
    progress(f"recovery {kind} {size}: scan {wf.median(scans) * 1000:.1f} ms (scan only)")
    return {"executions": size, "setup_s": setup, "scan_s": wf.median(scans)}


def scaling_section(plan: Plan, workdir: Path, progress: wf.Progress) -> dict[str, Any]:
    return {
        kind: scaling.bench_scaling(
            kind, sizes, plan.scaling_running, plan.scaling_reps, workdir, progress
        )
        for kind, sizes in plan.scaling
    }


def concurrency_section(plan: Plan, workdir: Path, progress: wf.Progress) -> dict[str, Any]:
    return wf.bench_concurrency(plan.threads, plan.per_thread, plan.contended, workdir, progress)


def memory_section(plan: Plan, workdir: Path, progress: wf.Progress) -> dict[str, Any]:
    out = {}
    for kind, count, warmup, every in plan.memory:
        progress(f"memory {kind}: {count} workflows in a fresh interpreter")
        out[kind] = wf.memory_in_subprocess(kind, count, warmup, every, workdir)
        out[kind]["interpretation"] = interpret_memory(out[kind])
    return out


def interpret_memory(m: dict[str, Any]) -> str:
    heap = m["py_blocks_growth_ratio"]
    per_k = m["rss_growth_mb_per_1k"]
    disk = m.get("disk_growth_mb_per_1k") or 0.0
    cache = f"cache {m['cache_entries_after_warmup']:.0f} -> {m['cache_entries_end']:.0f} entries"
    if heap < 1.05:
        heap_note = (
            f"Python heap x{heap:.3f} after warm-up ({cache}): flat, govkernel and the SDK keep "
            "nothing per workflow"
        )
    else:
        heap_note = f"Python heap x{heap:.3f} after warm-up ({cache}): GROWING with the count"
    if per_k <= 1.0:
        return f"{heap_note}; RSS flat ({per_k:+.1f} MB per 1k workflows)"
    where = (
        f"disk grows {disk:.1f} MB per 1k"
        if disk > 0
        else "a mem:// store holds all its data in memory"
    )
    if heap >= 1.05:
        return f"{heap_note}; RSS +{per_k:.1f} MB per 1k workflows ({where})"
    return (
        f"{heap_note}; RSS +{per_k:.1f} MB per 1k workflows outside the Python heap, i.e. in "
        f"the embedded SurrealDB engine, growing with the data stored ({where})"
    )


SECTIONS: tuple[tuple[str, Callable[..., dict[str, Any]]], ...] = (
    ("kernel", kernel_section),
    ("workflow", workflow_section),
    ("recovery", recovery_section),
    ("scaling", scaling_section),
    ("concurrency", concurrency_section),
    ("memory", memory_section),
)


def run_all(
    plan: Plan,
    results_dir: Path,
    *,
    progress: wf.Progress = wf.stderr_progress,
    only: Sequence[str] = (),
) -> dict[str, Any]:
    started = time.perf_counter()
    report: dict[str, Any] = {
        "schema": 1,
        "quick": plan.quick,
        "scale": plan.scale,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_start": load(),
        "plan": asdict(plan),
        "sections": {},
        "section_seconds": {},
        "errors": {},
    }
    with tempfile.TemporaryDirectory(prefix="govkernel-bench-") as tmp:
        workdir = Path(tmp)
        for name, section in SECTIONS:
            if only and name not in only:
                continue
            t0 = time.perf_counter()
            progress(f"== {name}")
            try:
                if name == "kernel":
                    report["sections"][name] = section(plan, progress)
                else:
                    report["sections"][name] = section(plan, workdir / name, progress)
            except Exception as exc:
                report["errors"][name] = f"{type(exc).__name__}: {exc}"[:1000]
                progress(f"{name} FAILED: {report['errors'][name]}")
            report["section_seconds"][name] = round(time.perf_counter() - t0, 1)
    report["load_average_end"] = load()
    report["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    write_results(report, results_dir)
    return report


def write_results(report: dict[str, Any], results_dir: Path) -> list[Path]:
    results_dir.mkdir(parents=True, exist_ok=True)
    prefix = "quick-" if report["quick"] else ""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(report, indent=2, sort_keys=False, default=str) + "\n"
    paths = [results_dir / f"{prefix}latest.json", results_dir / f"{prefix}bench-{stamp}.json"]
    for path in paths:
        path.write_text(text)
    report["files"] = [str(p) for p in paths]
    return paths


# -- rendering ---------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )

    return "\n".join([fmt(list(headers)), line, *(fmt(r) for r in cells)])


def render(report: dict[str, Any]) -> str:
    s = report["sections"]
    m = report["machine"]
    out = [
        f"govkernel benchmark  {report['started_at']}  ({'quick' if report['quick'] else 'full'}"
        f", scale {report['scale']})",
        f"machine: {m['cpu']} x{m['cpu_count']}, {m['memory']}, {m['platform']}, {m['python']}, "
        f"surrealdb SDK {m['surrealdb_sdk']}, git {m['git']}",
        f"load average: start {report['load_average_start']}, end {report['load_average_end']}",
        "",
    ]
    renderers = {
        "kernel": _render_kernel,
        "workflow": _render_workflow,
        "recovery": _render_recovery,
        "scaling": _render_scaling,
        "concurrency": _render_concurrency,
        "memory": _render_memory,
    }
    for name, renderer in renderers.items():
        if name in report["section_seconds"]:  # the section was attempted
            out += renderer(s.get(name))
    for name, error in report["errors"].items():
        out.append(f"ERROR in {name}: {error}")
    times = ", ".join(f"{k} {v:.0f}s" for k, v in report["section_seconds"].items())
    out.append(f"total {report['total_seconds']:.0f} s ({times})")
    out += [f"results: {p}" for p in report.get("files", [])]
    return "\n".join(out)


def _render_kernel(k: dict[str, Any] | None) -> list[str]:
    out = ["1. Kernel commit (source + evidence + event) vs one hand-written transaction"]
    if k is None:
        return [*out, "   (section failed)", ""]
    if not k.get("run"):
        return [*out, f"   skipped: {k.get('reason')}", ""]
    rows = k["rows"]
    headers = list(dict.fromkeys(key for r in rows for key in r))
    out.append(table(headers, [[r.get(h) for h in headers] for r in rows]))
    hot = k.get("hot_path") or []
    if hot:
        out.append("   hot path (cProfile of kernel commits on mem://, by own time):")
        headers = list(hot[0])
        out.append(table(headers, [[r.get(h) for h in headers] for r in hot]))
    return [*out, ""]


def _render_workflow(w: dict[str, Any] | None) -> list[str]:
    out = ["2. knowledge_publication end to end (1 document of ~300 chars per workflow)"]
    if w is None:
        return [*out, "   (section failed)", ""]
    out.append(
        f"   {w['workflows_per_round']} workflows per round, {w['rounds']} alternating rounds, "
        "medians"
    )
    rows = []
    for st in w["stores"].values():
        trips = st.get("round_trips_per_workflow", st.get("commits_per_workflow"))
        unit = "round trips" if "round_trips_per_workflow" in st else "commits"
        engine = st.get("engine_ms_per_workflow")
        rows.append(
            [
                st["label"],
                st["workflows_per_s"],
                f"{_fmt(trips)} {unit}",
                f"{_fmt(engine)} ms" if engine else "-",
                " ".join(_fmt(x) for x in st["rounds_workflows_per_s"]),
            ]
        )
    peer = w["peer"]
    if peer.get("run"):
        rows.append(
            [
                peer["name"],
                peer["workflows_per_s"],
                "-",
                "-",
                " ".join(_fmt(x) for x in peer["rounds_workflows_per_s"]),
            ]
        )
    headers = ["store", "workflows/s", "per workflow", "in the engine", "rounds"]
    out.append(table(headers, rows))
    if peer.get("run"):
        out.append(
            f"   ratio govkernel surrealkv / DBOS: {_fmt(w['ratio_surrealkv_over_peer'])}x "
            f"(target >= {_fmt(w['target_ratio'])}x)"
        )
        ceiling = w.get("engine_ceiling_ratio_over_peer")
        if ceiling:
            out.append(
                f"   the engine's own time per workflow caps that ratio at {_fmt(ceiling)}x "
                "even if all Python cost nothing"
            )
    else:
        out.append(f"   DBOS peer {peer['reason']}")
    return [*out, ""]


def _render_recovery(r: dict[str, Any] | None) -> list[str]:
    out = ["3. Recovery of interrupted executions (running, lease expired, no step done)"]
    if r is None:
        return [*out, "   (section failed)", ""]
    rows = [
        [
            x["label"],
            x["executions"],
            x["scan_s"] * 1000,
            x.get("recover_s"),
            x.get("executions_per_s"),
            x.get("round_trips_per_execution"),
        ]
        for x in r["rows"]
    ]
    out.append(table(["store", "executions", "scan ms", "recover s", "exec/s", "trips/exec"], rows))
    if any(not x["full"] for x in r["rows"]):
        out.append(
            "   '-': scan only (running them all would exceed the time budget; raise "
            f"{SCALE_ENV} or see the 1k rate)"
        )
    return [*out, ""]


def _render_scaling(sc: dict[str, Any] | None) -> list[str]:
    out = ["4. Scaling with stored executions (+3 events each); median ms per operation"]
    if sc is None:
        return [*out, "   (section failed)", ""]
    for result in sc.values():
        sizes = [r["executions"] for r in result["rows"]]
        out.append(f"   {result['label']} ({result['running_executions']} of them running)")
        headers = [
            "operation",
            *(f"{n:,}" for n in sizes),
            "largest/smallest",
            "(of minima)",
            "flat",
        ]
        rows = []
        for name, _desc in scaling.OPERATIONS:
            ratio = result["ratio_largest_over_smallest"][name]
            rows.append(
                [
                    name,
                    *(r["ms"][name] for r in result["rows"]),
                    ratio,
                    result["min_ratio_largest_over_smallest"][name],
                    ratio <= result["flat_threshold"],
                ]
            )
        out.append(table(headers, rows))
        for name in result["not_flat"]:
            out.append(f"   NOT FLAT {name}: {result['operations'][name]}")
            for q in result["plans"][name]:
                out.append(f"     {q['query']}")
                out.append(f"       EXPLAIN: {q['plan']}")
                if q.get("rows_matched") is not None:
                    out.append(f"       rows matched before LIMIT: {q['rows_matched']:,}")
    return [*out, ""]


def _render_concurrency(c: dict[str, Any] | None) -> list[str]:
    out = ["5. Concurrent workers (one Orchestrator per thread) on one surrealkv store"]
    if c is None:
        return [*out, "   (section failed)", ""]
    rows = [
        [
            x["mode"],
            x["threads"],
            x["workflows"],
            x["workflows_per_s"],
            x["commits"],
            x["concurrency_conflicts"],
            x["lost_or_duplicated"],
        ]
        for x in c["rows"]
    ]
    out.append(
        table(["mode", "threads", "workflows", "wf/s", "commits", "conflicts", "lost/dup"], rows)
    )
    for x in c["rows"]:
        for p in x["problems"]:
            out.append(f"   PROBLEM ({x['mode']}, {x['threads']}): {p}")
    return [*out, ""]


def _render_memory(mm: dict[str, Any] | None) -> list[str]:
    out = [
        "6. Memory while running workflows (each store in a fresh interpreter; growth is "
        "measured from the end of warm-up)"
    ]
    if mm is None:
        return [*out, "   (section failed)", ""]
    rows = [
        [
            m["label"],
            m["workflows"],
            m["warmup_workflows"],
            m["rss_after_warmup_mb"],
            m["rss_end_mb"],
            m["rss_growth_mb_per_1k"],
            m["disk_growth_mb_per_1k"],
            m["py_blocks_growth_ratio"],
            m["peak_rss_mb"],
            m["first_chunk_workflows_per_s"],
            m["last_chunk_workflows_per_s"],
        ]
        for m in mm.values()
    ]
    out.append(
        table(
            [
                "store",
                "workflows",
                "warm-up",
                "RSS MB",
                "RSS end MB",
                "RSS MB/1k wf",
                "disk MB/1k wf",
                "py heap x",
                "peak MB",
                "wf/s first",
                "wf/s last",
            ],
            rows,
        )
    )
    out += [f"   {m['label']}: {m['interpretation']}" for m in mm.values()]
    return [*out, ""]


# -- entry point -------------------------------------------------------------------------------


def scale_from_env() -> float:
    raw = os.environ.get(SCALE_ENV, "1")
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"{SCALE_ENV} must be a positive number, got {raw!r}") from None
    if value <= 0:
        raise SystemExit(f"{SCALE_ENV} must be a positive number, got {raw!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="tiny counts, no DBOS peer")
    parser.add_argument("--no-peer", action="store_true", help="do not run the DBOS peer")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        choices=[name for name, _ in SECTIONS],
        help="run only these sections",
    )
    args = parser.parse_args(argv)
    plan = Plan.tiny() if args.quick else Plan.full(scale_from_env(), peer=not args.no_peer)
    report = run_all(plan, args.results_dir, only=args.only)
    print(render(report))
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
