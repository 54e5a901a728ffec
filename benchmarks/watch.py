"""``pipeline-check watch`` costs: resident memory over a million canaries (it must level off once the
ring has wrapped, not keep growing), and CPU at a steady 100 canaries/s.

Both run the real watch (ring, window evaluations, metrics, HTTP server) in a fresh interpreter over
in-process plugins like the test suite's memory plugins, but with a bounded pipe in fixed arrays: the test
plugins keep every message, which over a million canaries would measure them, not the watch.
``python -m benchmarks.watch`` prints the figure as JSON.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from benchmarks.common import ROOT, ROUNDS, Figure, Spread
from pipeline_check.backends.capabilities import INJECTORS, PROBES
from pipeline_check.backends.injector import InjectorContext
from pipeline_check.backends.probe import ProbeContext, Ref
from pipeline_check.canary.trades import TRADE_FIELDS, Trade
from pipeline_check.core.plugins import PluginSettings

MEMORY_CANARIES = 1_000_000
MEMORY_RATE = 20_000.0  # canaries/s asked: more than one core delivers, so the run takes what the loop can do
MEMORY_EVERY = 100_000  # canaries between two RSS samples
CPU_RATE = 100.0
CPU_WARMUP = 10.0  # seconds before CPU is counted (imports, first evaluations)
CPU_SECONDS = 20.0  # per round
GROWTH_GOAL = 2.0  # percent
KEEP = 50_000  # messages a pipe keeps for readers that lag
LOOK_EVERY = 0.05  # seconds between two looks of a bench stage: a real probe's pace, not a busy loop


class _Pipe:
    """The last ``KEEP`` messages in send order, in fixed numpy arrays (so the pipe's own memory is flat and
    only the watch's can grow); readers hold absolute positions, older messages are overwritten."""

    def __init__(self) -> None:
        self.at = np.zeros(KEEP, np.float64)
        self.tag = np.zeros(KEEP, np.int64)
        self.seq = np.zeros(KEEP, np.int64)
        self.end = 0  # position after the newest message

    @property
    def base(self) -> int:
        """Position of the oldest message kept."""
        return max(0, self.end - KEEP)

    def append(self, at: float, trade: Trade) -> None:
        slot = self.end % KEEP
        self.at[slot], self.tag[slot], self.seq[slot] = at, trade.trade_id, trade.seq or 0
        self.end += 1


PIPES: dict[str, _Pipe] = {}


class BenchSourceSettings(PluginSettings):
    pipe: str = "bench"


class BenchSource:
    Settings: ClassVar[type[PluginSettings]] = BenchSourceSettings
    feeds_stage: ClassVar[str | None] = None

    @classmethod
    def sent_fields(cls, settings: BenchSourceSettings) -> tuple[str, ...]:
        return TRADE_FIELDS

    def __init__(self, settings: BenchSourceSettings, ctx: InjectorContext) -> None:
        self.pipe = PIPES.setdefault(settings.pipe, _Pipe())
        self.clock = ctx.clock

    async def start(self) -> None:
        pass

    async def send(self, trade: Trade) -> None:
        self.pipe.append(self.clock.now(), trade)

    async def flush(self) -> None:
        pass

    async def close(self) -> None:
        pass


class BenchStageSettings(PluginSettings):
    pipe: str = "bench"
    delay: float = Field(default=0.01, ge=0)
    shards: int = 3


class BenchStage:
    """Sees each message ``delay`` after it was sent, on shard ``seq % shards`` at position ``seq``."""

    Settings: ClassVar[type[PluginSettings]] = BenchStageSettings

    def __init__(self, settings: BenchStageSettings, ctx: ProbeContext) -> None:
        self.settings = settings
        self.ctx = ctx
        self.pipe = PIPES.setdefault(settings.pipe, _Pipe())
        self.cursor = self.pipe.end  # from now on, like a probe's baseline

    async def start(self) -> None:
        self.ctx.recorder.declare_shards(self.ctx.stage, range(self.settings.shards))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._look()
            await asyncio.sleep(LOOK_EVERY)

    async def finish(self) -> None:
        self._look()

    @property
    def resolution(self) -> float:
        return LOOK_EVERY

    def _look(self) -> None:
        pipe, ctx, delay = self.pipe, self.ctx, self.settings.delay
        now = ctx.clock.now()
        self.cursor = max(self.cursor, pipe.base)
        while self.cursor < pipe.end:
            slot = self.cursor % KEEP
            if pipe.at[slot] + delay > now:
                break
            self.cursor += 1
            seq = int(pipe.seq[slot])
            ctx.recorder.seen(ctx.stage, int(pipe.tag[slot]), now, ref=Ref(seq % self.settings.shards, seq))


CONFIG = """
[source]
type = "bench"

[stages.kafka]
type = "bench"
delay = {kafka}

[stages.api]
type = "bench"
delay = {api}

[sla]
thresholds = ["e2e.p99 < {freshness}", "lost == 0", "duplicates == 0"]
"""


def _watch(config: str, **settings: Any) -> Any:
    """A Watch over the bench plugins (registered in this process)."""
    from pipeline_check.config import load_config
    from pipeline_check.runs.plan import Plan
    from pipeline_check.runs.watch import Watch, WatchSettings

    INJECTORS.add("bench", f"{__name__}:BenchSource")
    PROBES.add("bench", f"{__name__}:BenchStage")
    path = Path(tempfile.mkdtemp()) / "pipeline.toml"
    path.write_text(config)
    return Watch(Plan.build(load_config(path, {})), WatchSettings(listen="127.0.0.1:0", **settings))


def measure_memory() -> dict[str, Any]:
    """RSS every ``MEMORY_EVERY`` canaries up to ``MEMORY_CANARIES``, at ``MEMORY_RATE`` with a 2 s window."""
    import psutil

    watch = _watch(CONFIG.format(kafka=0.002, api=0.01, freshness="1s"), rate=MEMORY_RATE, window=2.0, grace=1.0)
    process = psutil.Process()
    samples: list[tuple[int, int]] = []

    async def main() -> float:
        stop = asyncio.Event()
        task = asyncio.create_task(watch.run(stop))
        began = time.perf_counter()
        next_sample = MEMORY_EVERY
        while watch.ring.next_index < MEMORY_CANARIES:
            await asyncio.sleep(0.05)
            if watch.ring.next_index >= next_sample:
                samples.append((watch.ring.next_index, process.memory_info().rss))
                next_sample += MEMORY_EVERY
            if task.done():
                task.result()
        seconds = time.perf_counter() - began
        stop.set()
        await task
        return seconds

    seconds = asyncio.run(main())
    registry = watch.metrics.registry
    lost = sum(
        registry.get_sample_value("pipeline_check_canaries_lost_total", {"stage_reached": stage}) or 0.0
        for stage in watch.metrics.lost
    )
    return {
        "canaries": watch.ring.next_index,
        "seconds": round(seconds, 1),
        "achieved_rate": round(watch.ring.next_index / seconds),
        "ring_capacity": watch.ring.capacity,
        "lost": lost,
        "last_verdict": watch.last.label,
        "rss": samples,
    }


def measure_cpu() -> dict[str, Any]:
    """Process CPU over ``ROUNDS`` windows of ``CPU_SECONDS`` at ``CPU_RATE`` canaries/s, default 5 min window."""
    import psutil

    watch = _watch(CONFIG.format(kafka=0.01, api=0.05, freshness="30s"), rate=CPU_RATE)
    process = psutil.Process()

    async def main() -> dict[str, Any]:
        stop = asyncio.Event()
        task = asyncio.create_task(watch.run(stop))
        await asyncio.sleep(CPU_WARMUP)
        rounds = []
        for _ in range(ROUNDS):
            cpu0, wall0, sent0 = process.cpu_times(), time.perf_counter(), watch.ring.next_index
            await asyncio.sleep(CPU_SECONDS)
            cpu1, wall1, sent1 = process.cpu_times(), time.perf_counter(), watch.ring.next_index
            used = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
            rounds.append({
                "seconds": round(wall1 - wall0, 1),
                "canaries": sent1 - sent0,
                "cpu_seconds": round(used, 2),
                "cpu_percent_of_one_core": round(100 * used / (wall1 - wall0), 2),
            })  # fmt: skip
        stop.set()
        await task
        return {"rate": CPU_RATE, "rounds": rounds, "window_canaries": watch.last.canaries,
                "last_verdict": watch.last.label}  # fmt: skip

    return asyncio.run(main())


def _child(kind: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.watch", kind],
        cwd=ROOT, capture_output=True, text=True, timeout=1200, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def growth(memory: dict[str, Any]) -> float:
    """RSS growth from the first sample after the ring's second wrap (every slot reused once) to the last."""
    wrapped = [rss for n, rss in memory["rss"] if n >= 2 * memory["ring_capacity"]]
    if len(wrapped) < 2:
        raise RuntimeError(f"too few samples after the ring's second wrap: {memory['rss']}")
    return (wrapped[-1] - wrapped[0]) / wrapped[0]


def run() -> Figure:
    """Memory over a million canaries (flat once the ring wrapped twice), ``ROUNDS`` fresh processes; CPU at
    100/s over ``ROUNDS`` windows of one process."""
    memories = [_child("memory") for _ in range(ROUNDS)]
    cpu = _child("cpu")
    grown = Spread.of([100 * growth(m) for m in memories])
    mib = Spread.of([m["rss"][-1][1] / 2**20 for m in memories])
    core = Spread.of([r["cpu_percent_of_one_core"] for r in cpu["rounds"]])
    return Figure(
        name="watch_cost",
        title="pipeline-check watch: memory and CPU",
        headline=f"RSS {grown.text('{:+.1f}')}% from the ring's second wrap to {MEMORY_CANARIES:,} canaries "
        f"({mib.text('{:.0f}')} MiB); {core.text('{:.1f}')}% of a core at {CPU_RATE:g}/s",
        goal=f"RSS growth <= {GROWTH_GOAL:g}% from the ring's second wrap to 1M canaries; < 5% of a core at 100/s",
        met=grown.median <= GROWTH_GOAL and core.median < 5,
        values={
            "rss_growth_pct": grown.to_json(2),
            "rss_mib": mib.to_json(1),
            "cpu_percent": core.to_json(2),
            "memory": memories,
            "cpu": cpu,
        },
        notes=f"in-process plugins whose pipe keeps the last {KEEP:,} messages in fixed arrays; RSS sampled every "
        f"{MEMORY_EVERY:,} canaries, the rate as fast as the loop goes ({MEMORY_RATE:,.0f}/s asked)",
    )


if __name__ == "__main__":
    if len(sys.argv) > 1:
        print(json.dumps(measure_memory() if sys.argv[1] == "memory" else measure_cpu()), flush=True)
    else:
        print(json.dumps(run().to_json(), indent=2), flush=True)
