"""Kernel commit vs one hand-written transaction, on the same SurrealDB connection.

    python -m benchmarks.kernel [N] [--profile]

For `mem://` and `surrealkv://` (a temporary directory; the adapter turns on per-commit fsync
with SURREAL_SYNC_DATA, unless the environment already says otherwise), each commit writes
a knowledge source, its evidence manifest and an event: once through the unit of work, once
as a hand-written `BEGIN TRANSACTION; CREATE ...; COMMIT TRANSACTION;` with bound params over
`query_raw`. Rounds alternate between the two (and swap which goes first) so drift and noise
hit both alike; the ratio is the median over paired rounds, so a burst of load elsewhere on
the machine skews one pair, not the figure. The kernel's ratio to raw should be at least 0.8,
with one round trip per commit.

On `surrealkv://` every kernel commit also carries the journal that lets a transaction torn
by a crash be undone on the next open (compiler.repair), and the source's key record (its
natural key read by id, schema.KEYED); a third side, the same hand-written transaction with
that journal and key record, shows the kernel's own cost apart from what it writes.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from surrealdb import RecordID

from adapters.contract import samples
from adapters.surrealdb import SurrealConfig, SurrealStore
from adapters.surrealdb.compiler import COMMITTED_MARKER, EVENTS_COUNTER, key_record
from adapters.surrealdb.schema import KEYED
from domain.model.evidence import EventEnvelope, EvidenceManifest
from domain.model.knowledge import KnowledgeSource
from ports import records

ROUNDS = 20
WARMUP = 20
Mutation = tuple[KnowledgeSource, EvidenceManifest, EventEnvelope]


def mutations(count: int) -> list[Mutation]:
    out = []
    for _ in range(count):
        source = samples.source()
        out.append((source, samples.evidence(source.id), samples.event()))
    return out


def kernel_commit(store: SurrealStore, mutation: Mutation) -> None:
    source, manifest, event = mutation
    with store.unit_of_work() as uow:
        uow.sources.add(source)
        uow.evidence.add(manifest)
        uow.events.append(event)
        uow.commit()


# The event needs its gapless position from the same counter the kernel uses, taken inside
# the transaction, so the hand-written version does that work too.
_EVENT_FIELDS = sorted(records.event_doc(samples.event()))
RAW_TEXT = (
    "BEGIN TRANSACTION;\n"
    "CREATE $s CONTENT $sd RETURN NONE;\n"
    "CREATE $e CONTENT $ed RETURN NONE;\n"
    "LET $p = (UPSERT ONLY $ctr SET n += 1 RETURN VALUE n);\n"
    f"CREATE $v SET {', '.join(f'{f} = $vd.{f}' for f in _EVENT_FIELDS)}, position = $p"
    " RETURN NONE;\n"
    "COMMIT TRANSACTION;"
)


# The same writes with the crash journal a `surrealkv://` commit carries (see
# compiler.repair) and the source's key record: the hand-written equal of what the kernel
# writes there.
JOURNALED_RAW_TEXT = (
    "BEGIN TRANSACTION;\n"
    "LET $p = (UPSERT ONLY $ctr SET n += 1, journal = { txn: $txn, base: n - 1,"
    " created: [$s, $k, $e, $v], before: [] } RETURN VALUE n);\n"
    "CREATE $s CONTENT $sd RETURN NONE;\n"
    "UPSERT $k SET ref = $s RETURN NONE;\n"
    "CREATE $e CONTENT $ed RETURN NONE;\n"
    f"CREATE $v SET {', '.join(f'{f} = $vd.{f}' for f in _EVENT_FIELDS)}, position = $p"
    " RETURN NONE;\n"
    "UPSERT ONLY $done SET txn = $txn RETURN VALUE $p;\n"
    "COMMIT TRANSACTION;"
)


def raw_params(mutation: Mutation, *, journaled: bool = False) -> dict[str, Any]:
    source, manifest, event = mutation
    return {
        "s": RecordID("knowledge_source", source.id),
        "sd": records.source_doc(source),
        "e": RecordID("evidence", manifest.id),
        "ed": records.evidence_doc(manifest),
        "v": RecordID("event", event.id),
        "vd": records.event_doc(event),
        "ctr": EVENTS_COUNTER,
    } | (
        {
            "txn": uuid.uuid4().hex,
            "done": COMMITTED_MARKER,
            "k": key_record(*KEYED["knowledge_source"][0], records.source_doc(source)),
        }
        if journaled
        else {}
    )


def raw_commit(connection: Any, params: dict[str, Any]) -> None:
    response = connection.query_raw(JOURNALED_RAW_TEXT if "txn" in params else RAW_TEXT, params)
    failed = [r for r in response.get("result", []) if r.get("status") != "OK"]
    if "error" in response or failed:  # a baseline that fails would flatter nobody
        raise RuntimeError(f"hand-written transaction failed: {response}")


def measure(label: str, store: SurrealStore, n: int) -> dict[str, Any]:
    # The raw side goes straight to the store's own SDK connection: same engine, same session.
    connection = store._db
    kernel_work = mutations(n + WARMUP)
    raw_work = [raw_params(m) for m in mutations(n + WARMUP)]  # built outside the timing
    journaled_work = [raw_params(m, journaled=True) for m in mutations(n + WARMUP)]
    for mutation, params, journaled in zip(
        kernel_work[:WARMUP], raw_work[:WARMUP], journaled_work[:WARMUP], strict=True
    ):
        kernel_commit(store, mutation)
        raw_commit(connection, params)
        raw_commit(connection, journaled)
    kernel_work, raw_work = kernel_work[WARMUP:], raw_work[WARMUP:]
    journaled_work = journaled_work[WARMUP:]

    kernel_seconds = raw_seconds = 0.0
    ratios: list[float] = []  # kernel rate / raw rate, per pair of rounds
    journaled_ratios: list[float] = []  # kernel rate / journaled raw rate
    trips = 0
    per_round = max(1, n // ROUNDS)
    for start in range(0, n, per_round):
        batch = slice(start, start + per_round)

        def run_kernel(batch: slice = batch) -> float:
            nonlocal trips
            before = store.round_trips
            began = time.perf_counter()
            for mutation in kernel_work[batch]:
                kernel_commit(store, mutation)
            elapsed = time.perf_counter() - began
            trips += store.round_trips - before
            return elapsed

        def run_raw(batch: slice = batch) -> float:
            began = time.perf_counter()
            for params in raw_work[batch]:
                raw_commit(connection, params)
            return time.perf_counter() - began

        def run_journaled(batch: slice = batch) -> float:
            began = time.perf_counter()
            for params in journaled_work[batch]:
                raw_commit(connection, params)
            return time.perf_counter() - began

        order: list[Callable[[], float]] = [run_kernel, run_raw]
        if store.journaled:
            order.append(run_journaled)
        if (start // per_round) % 2:
            order.reverse()
        results = {fn: fn() for fn in order}
        kernel_seconds += results[run_kernel]
        raw_seconds += results[run_raw]
        ratios.append(results[run_raw] / results[run_kernel])
        if store.journaled:
            journaled_ratios.append(results[run_journaled] / results[run_kernel])

    kernel_rate, raw_rate = n / kernel_seconds, n / raw_seconds
    return {
        "store": label,
        "commits": n,
        "kernel_commits_per_s": round(kernel_rate, 1),
        "raw_commits_per_s": round(raw_rate, 1),
        "kernel_over_raw": round(statistics.median(ratios), 3),
        # On surrealkv:// the kernel also journals each commit against torn transactions:
        # against a hand-written transaction doing the same, journal included.
        "kernel_over_journaled_raw": (
            round(statistics.median(journaled_ratios), 3) if journaled_ratios else None
        ),
        "round_trips_per_commit": trips / n,
    }


def run(n: int) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="govkernel-kernel-bench-") as tmp:
        for label, url in (("surrealkv", f"surrealkv://{tmp}/store"), ("mem", "mem://")):
            with SurrealStore(SurrealConfig(url)) as store:
                rows.append(measure(label, store, n))
    return rows


def profile(n: int) -> str:
    """cProfile of kernel commits alone on mem://: where the kernel's own time goes."""
    with SurrealStore(SurrealConfig("mem://")) as store:
        work = mutations(n)
        profiler = cProfile.Profile()
        profiler.enable()
        for mutation in work:
            kernel_commit(store, mutation)
        profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(20)
    return out.getvalue()


def hot_path(n: int, top: int = 10) -> list[dict[str, Any]]:
    """Where a kernel commit's own time goes on `mem://`: cProfile over `n` commits, the
    `top` functions by time spent in themselves (the engine's call among them, for scale)."""
    with SurrealStore(SurrealConfig("mem://")) as store:
        work = mutations(n + WARMUP)
        for mutation in work[:WARMUP]:
            kernel_commit(store, mutation)
        profiler = cProfile.Profile()
        profiler.enable()
        for mutation in work[WARMUP:]:
            kernel_commit(store, mutation)
        profiler.disable()
    stats: dict[Any, tuple[int, int, float, float, Any]] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = sum(own for _, _, own, _, _ in stats.values()) or 1.0
    ranked = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:top]
    return [
        {
            "function": f"{Path(file).name}:{line}({name})" if line else name,
            "calls_per_commit": round(calls / n, 2),
            "own_us_per_commit": round(own / n * 1e6, 1),
            "share": round(own / total, 3),
        }
        for (file, line, name), (_, calls, own, _, _) in ranked
    ]


def render(rows: list[dict[str, Any]]) -> str:
    headers = list(rows[0])
    cells = [[str(row[h]) for h in headers] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    n = next((int(a) for a in argv if a.isdigit()), 2000)
    print(render(run(n)))
    if "--profile" in argv:
        print(profile(n))


if __name__ == "__main__":
    main(sys.argv[1:])
