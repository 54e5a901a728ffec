"""Memory per traced message: RSS growth while the trace book follows N canaries through every stage.

Each size runs in a fresh interpreter (``python -m benchmarks.memory N`` prints one JSON line), so one
measurement's allocator state never flatters the next. The child imports everything first, then records
for each canary an injection and a first sighting at all four stages (with broker time, offset and
partition where a probe has them), then builds the summary and the SLA measurements. Growth is the
resident set after minus before; the peak (the kernel's high-water mark, reset at the baseline) covers
the summary's temporaries too.
"""

from __future__ import annotations

import gc
import json
import resource
import subprocess
import sys
import time
from typing import Any

from benchmarks.common import ROOT, ROUNDS, Figure, Spread

SIZES = (100_000, 1_000_000)
GOAL_BYTES = 500
STAGES = ("kafka", "consumer", "iceberg", "api")


def _reset_peak() -> None:
    """Start the kernel's peak-RSS mark afresh (Linux), so imports before the baseline do not count."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak() -> int:
    """Peak RSS in bytes since :func:`_reset_peak`: VmHWM of this process's address space. (``ru_maxrss``
    would not do: Linux carries it over ``exec`` from the forking parent.)"""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(n: int) -> dict[str, Any]:
    """Trace ``n`` canaries through every stage in this process; RSS figures in bytes."""
    import psutil

    from pipeline_check.canary.tags import RunId
    from pipeline_check.canary.trades import TradeFactory
    from pipeline_check.core.clock import Clock
    from pipeline_check.trace.book import Ref, TraceBook
    from pipeline_check.trace.stages import BUILTIN, Route
    from pipeline_check.verdict.measurements import measurements
    from pipeline_check.verdict.summary import InjectionStats, summarise

    gc.collect()
    process = psutil.Process()
    before = process.memory_info().rss
    _reset_peak()
    began = time.perf_counter()
    clock = Clock(offset=1_750_000_000.0)
    run = RunId.new(clock.wall(1000.0))
    route = Route.of({s: (BUILTIN[s].upstream, BUILTIN[s].branch) for s in STAGES})
    book = TraceBook(run, TradeFactory(run, seed=1, count=n, symbols=("CANARYUSDT",)), route, clock)
    book.declare_shards("kafka", [0, 1, 2])
    for seq in range(n):
        at = 1000.0 + seq * 1e-4
        tag = run.tag(seq)
        book.inject(seq, at)
        book.seen("kafka", tag, at + 0.002, source_ms=clock.wall_ms(at + 0.001), ref=Ref(seq % 3, seq))
        book.seen("consumer", tag, at + 0.3)
        book.seen("iceberg", tag, at + 0.8, source_ms=clock.wall_ms(at + 0.7), ref=Ref(-1, seq // 1000), copies=1)
        book.seen("api", tag, at + 1.0, copies=1)
    traced = process.memory_info().rss
    summary = summarise(book, InjectionStats(n, 0, 10_000.0, 10_000.0, 0.0, 0), settle_s=2.0)
    measurements(summary, book)
    after = process.memory_info().rss
    peak = _peak()
    assert summary.delivered == n, summary.delivered
    return {
        "n": n,
        "rss_before": before,
        "rss_traced": traced,
        "rss_after_summary": after,
        "rss_peak": peak,
        "seconds": round(time.perf_counter() - began, 1),
    }


def run() -> Figure:
    """Bytes per canary at each size, each round in a fresh subprocess."""
    results = []
    for _ in range(ROUNDS):
        for n in SIZES:
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks.memory", str(n)],
                cwd=ROOT, capture_output=True, text=True, timeout=600, check=True,
            )  # fmt: skip
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    per: dict[str, dict[str, Spread]] = {}
    for n in SIZES:
        mine = [r for r in results if r["n"] == n]
        per[str(n)] = {
            "retained_bytes_per_msg": Spread.of([(r["rss_after_summary"] - r["rss_before"]) / n for r in mine]),
            "traced_bytes_per_msg": Spread.of([(r["rss_traced"] - r["rss_before"]) / n for r in mine]),
            "peak_bytes_per_msg": Spread.of([(r["rss_peak"] - r["rss_before"]) / n for r in mine]),
            "seconds": Spread.of([r["seconds"] for r in mine]),
        }
    worst = max(v["peak_bytes_per_msg"].median for v in per.values())
    big = per[str(SIZES[-1])]
    return Figure(
        name="memory_per_message",
        title="Memory per traced message",
        headline=(
            f"{big['retained_bytes_per_msg'].text('{:.0f}')} B retained, {big['peak_bytes_per_msg'].text('{:.0f}')} B "
            f"peak per canary at {SIZES[-1]:,}"
        ),
        goal=f"<= {GOAL_BYTES} B per canary (peak RSS growth, summary included) at every size",
        met=worst <= GOAL_BYTES,
        values={"per_size": {n: {k: v.to_json(1) for k, v in f.items()} for n, f in per.items()}, "raw": results},
        notes="RSS growth over a fresh interpreter's baseline (imports done); inject + first seen at kafka, "
        "consumer, iceberg, api + summary + SLA measurements",
    )


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]))), flush=True)
