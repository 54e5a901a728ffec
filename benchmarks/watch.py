"""``pipeline-check watch`` costs: resident memory over a million canaries (it must level off once the
ring has wrapped, not keep growing), and CPU at a steady 100 canaries/s.

Both run the real watch (ring, window evaluations, metrics, HTTP server) in a fresh interpreter over
in-process plugins like the test suite's memory plugins, but with a bounded pipe: the test plugins keep
every message, which over a million canaries would measure them, not the watch. Not wired into
``python -m benchmarks``; run ``python -m benchmarks.watch`` (prints the figure as JSON).
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

from pydantic import Field

from benchmarks.common import ROOT, Figure
from pipeline_check.backends.capabilities import INJECTORS, PROBES
from pipeline_check.backends.injector import InjectorContext
from pipeline_check.backends.probe import ProbeContext, Ref
from pipeline_check.canary.trades import TRADE_FIELDS, Trade
from pipeline_check.core.plugins import PluginSettings

MEMORY_CANARIES = 1_000_000
MEMORY_RATE = 5_000.0  # canaries/s asked; the loop delivers what one core allows (3-5k/s here)
MEMORY_EVERY = 100_000  # canaries between two RSS samples
CPU_RATE = 100.0
CPU_WARMUP = 10.0  # seconds before CPU is counted (imports, first evaluations)
CPU_SECONDS = 60.0
KEEP = 50_000  # messages a pipe keeps for readers that lag
LOOK_EVERY = 0.05  # seconds between two looks of a bench stage: a real probe's pace, not a busy loop


class _Pipe:
    """Messages in send order; readers hold absolute positions, the oldest messages are dropped."""

    def __init__(self) -> None:
        self.entries: list[tuple[float, Trade]] = []
        self.base = 0  # position of entries[0]

    def append(self, at: float, trade: Trade) -> None:
        self.entries.append((at, trade))
        if len(self.entries) > 2 * KEEP:
            drop = len(self.entries) - KEEP
            del self.entries[:drop]
            self.base += drop


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
        self.cursor = self.pipe.base + len(self.pipe.entries)  # from now on, like a probe's baseline

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
        while self.cursor - pipe.base < len(pipe.entries):
            at, trade = pipe.entries[self.cursor - pipe.base]
            if at + delay > now:
                break
            self.cursor += 1
            seq = trade.seq or 0
            ctx.recorder.seen(ctx.stage, trade.trade_id, now, ref=Ref(seq % self.settings.shards, seq))


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
    """Process CPU over ``CPU_SECONDS`` at ``CPU_RATE`` canaries/s with the default 5 min window."""
    import psutil

    watch = _watch(CONFIG.format(kafka=0.01, api=0.05, freshness="30s"), rate=CPU_RATE)
    process = psutil.Process()

    async def main() -> dict[str, Any]:
        stop = asyncio.Event()
        task = asyncio.create_task(watch.run(stop))
        await asyncio.sleep(CPU_WARMUP)
        cpu0, wall0, sent0 = process.cpu_times(), time.perf_counter(), watch.ring.next_index
        await asyncio.sleep(CPU_SECONDS)
        cpu1, wall1, sent1 = process.cpu_times(), time.perf_counter(), watch.ring.next_index
        stop.set()
        await task
        used = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        return {
            "rate": CPU_RATE,
            "seconds": round(wall1 - wall0, 1),
            "canaries": sent1 - sent0,
            "cpu_seconds": round(used, 2),
            "cpu_percent_of_one_core": round(100 * used / (wall1 - wall0), 2),
            "window_canaries": watch.last.canaries,
            "last_verdict": watch.last.label,
        }

    return asyncio.run(main())


def _child(kind: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.watch", kind],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def run() -> Figure:
    """Memory after a million canaries (steady once the ring wrapped) and CPU at 100/s, each in a fresh process."""
    memory = _child("memory")
    cpu = _child("cpu")
    rss = memory["rss"]
    wrapped = [(n, r) for n, r in rss if n >= 2 * memory["ring_capacity"]]  # every ring page touched
    growth = (wrapped[-1][1] - wrapped[0][1]) / wrapped[0][1] if len(wrapped) > 1 else None
    mib = rss[-1][1] / 2**20
    headline = (
        f"{mib:.0f} MiB after {memory['canaries']:,} canaries "
        f"({'n/a' if growth is None else f'{100 * growth:+.1f}%'} since the ring wrapped twice); "
        f"{cpu['cpu_percent_of_one_core']:.1f}% of a core at {cpu['rate']:g}/s"
    )
    return Figure(
        name="watch_cost",
        title="pipeline-check watch: memory and CPU",
        headline=headline,
        goal="RSS within 5% from the ring's second wrap to 1M canaries; < 5% of a core at 100 canaries/s",
        met=growth is not None and growth < 0.05 and cpu["cpu_percent_of_one_core"] < 5,
        values={"memory": memory, "cpu": cpu, "rss_growth_after_wrap": growth},
        notes="in-process plugins with a bounded pipe (two stages; its 50k-100k kept messages swing RSS by "
        "~15 MiB); RSS sampled every 100,000 canaries",
    )


if __name__ == "__main__":
    if len(sys.argv) > 1:
        print(json.dumps(measure_memory() if sys.argv[1] == "memory" else measure_cpu()), flush=True)
    else:
        print(json.dumps(run().to_json(), indent=2), flush=True)
