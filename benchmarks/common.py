"""Shared helpers: figure results, the machine, brokers and stacks on free ports, Kafka's own tools.

Everything a benchmark starts (a broker, a whole stack, a java tool) is stopped by the context manager
or function that started it, also when the benchmark fails.
"""

from __future__ import annotations

import asyncio
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import psutil

from pipeline_check.pytest_plugin import free_ports

if TYPE_CHECKING:
    from pipeline_check.backends.probe import Probe
    from pipeline_check.config import PipelineConfig
    from pipeline_check.trace.book import TraceBook

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose"
KAFKA_LIBS = COMPOSE / "kafka" / "libs"
STACK_FILE = COMPOSE / "stack.toml"
PIPELINE_FILE = COMPOSE / "pipeline.toml"
RAW_TOPIC = "market.trades.raw"


ROUNDS = 3  # every figure is the median of this many rounds, shown with their min and max


@dataclass(frozen=True, slots=True)
class Spread:
    """A figure over rounds: the median, with the lowest and highest round."""

    median: float
    low: float
    high: float
    rounds: tuple[float, ...]

    @classmethod
    def of(cls, rounds: Sequence[float]) -> Spread:
        if not rounds:
            raise ValueError("a figure needs at least one round")
        return cls(float(statistics.median(rounds)), float(min(rounds)), float(max(rounds)), tuple(rounds))

    def text(self, form: str = "{:,.2f}") -> str:
        """``0.15 (0.14 to 0.17)``: the median, then the range of the rounds."""
        return f"{form.format(self.median)} ({form.format(self.low)} to {form.format(self.high)})"

    def to_json(self, digits: int = 4) -> dict[str, Any]:
        return {
            "median": round(self.median, digits),
            "min": round(self.low, digits),
            "max": round(self.high, digits),
            "rounds": [round(r, digits) for r in self.rounds],
        }


def versus(ours: Sequence[float], theirs: Sequence[float], tool: str) -> tuple[str, dict[str, Any], Spread]:
    """Our rate against a Kafka tool's, rounds taken side by side: the headline, the values and the ratio
    (taken per round, so a noisy neighbour slows both sides of it alike)."""
    ratio = Spread.of([o / t for o, t in zip(ours, theirs, strict=True)])
    rate, tools = Spread.of(ours), Spread.of(theirs)
    headline = f"{rate.text('{:,.0f}')} vs {tools.text('{:,.0f}')} records/s ({tool}): ratio {ratio.text()}"
    values = {
        "ratio": ratio.to_json(3),
        "ours_records_per_s": rate.to_json(0),
        f"{tool}_records_per_s": tools.to_json(0),
    }
    return headline, values, ratio


@dataclass(slots=True)
class Figure:
    """One benchmark figure: its values, the goal in words, whether the goal was met, and notes."""

    name: str
    title: str
    headline: str  # the one-line result for the table: medians of ROUNDS rounds (min to max)
    goal: str
    met: bool
    values: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    seconds: float = 0.0  # wall time the figure took
    load: dict[str, Any] = field(default_factory=dict)  # how busy the machine was meanwhile (BoxLoad)
    taken_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "headline": self.headline,
            "goal": self.goal,
            "met": self.met,
            "values": self.values,
            "notes": self.notes,
            "seconds": round(self.seconds, 1),
            "load": self.load,
            "taken_at": self.taken_at,
        }


class BoxLoad:
    """How busy the whole machine was between ``start`` and ``stop`` (other tenants included): the cores busy
    on average and the 1-minute load average at each end."""

    def __init__(self) -> None:
        self._times = psutil.cpu_times()
        self._began = time.monotonic()
        self._loadavg = os.getloadavg()[0]

    def stop(self) -> dict[str, Any]:
        wall = max(time.monotonic() - self._began, 1e-9)
        now = psutil.cpu_times()
        idle = (now.idle + getattr(now, "iowait", 0.0)) - (self._times.idle + getattr(self._times, "iowait", 0.0))
        cores = os.cpu_count() or 1
        return {
            "busy_cores": round(max(0.0, cores - idle / wall), 2),
            "cores": cores,
            "loadavg_1m": [round(self._loadavg, 2), round(os.getloadavg()[0], 2)],
        }


def failed_figure(name: str, title: str, goal: str, exc: BaseException) -> Figure:
    """A figure whose benchmark raised: reported as not met, with the error."""
    return Figure(name, title, f"error: {type(exc).__name__}", goal, False, notes=f"{type(exc).__name__}: {exc}")


# -- the machine ---------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the figures were taken on: cores, RAM, CPU model, Python, Java and Kafka versions."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    java = "not found"
    if shutil.which("java"):
        done = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
        java = (done.stderr or done.stdout).splitlines()[0] if (done.stderr or done.stdout) else "unknown"
    kafka = sorted(KAFKA_LIBS.glob("kafka-clients-*.jar"))
    return {
        "nproc": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu_model": cpu,
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "java": java,
        "kafka": kafka[0].stem.removeprefix("kafka-clients-") if kafka else "unknown",
    }


# -- statistics ---------------------------------------------------------------------------------------


def percentiles(samples: Sequence[float] | npt.NDArray[np.float64], qs: Sequence[float] = (50, 99)) -> dict[str, float]:
    """``{"p50": ..., "p99": ...}`` of the finite samples (empty when there are none)."""
    data = np.asarray(samples, dtype=np.float64)
    data = data[np.isfinite(data)]
    if not len(data):
        return {}
    values = np.percentile(data, list(qs))
    return {f"p{q:g}": float(v) for q, v in zip(qs, values, strict=True)}


# -- processes ----------------------------------------------------------------------------------------


@contextmanager
def local_stack(services: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Iterator[Any]:
    """A local stack (compose/stack.toml) in a temp run folder on free ports; yields the ``LocalStack``.

    ``services``: start only these (in order, e.g. ``["kafka"]``); default: every non-optional one.
    ``env`` overrides service environment variables. Everything started is stopped on the way out.
    """
    from pipeline_check.stack import LocalStack, load_stack

    with tempfile.TemporaryDirectory(prefix="pc-bench-") as tmp:
        spec = load_stack(STACK_FILE)
        stack = LocalStack(load_stack(STACK_FILE, run_dir=Path(tmp), ports=free_ports(list(spec.ports))))
        try:
            if services is None:
                if env:
                    for name in stack.spec.start_order({n for n, s in stack.spec.services.items() if not s.optional}):
                        stack.start(name, env)
                else:
                    stack.up()
            else:
                for name in services:
                    stack.start(name, env)
            yield stack
        finally:
            stack.down()


def bootstrap_of(stack: Any) -> str:
    return f"127.0.0.1:{stack.spec.ports['kafka']}"


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    """Create ``name`` on the broker (auto-creation is off in the reference broker)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        finally:
            await admin.close()

    asyncio.run(create())


def java_tool(tool: str, args: Sequence[str], timeout: float) -> str:
    """Run ``org.apache.kafka.tools.<tool>`` from compose/kafka/libs; its stdout (raises on failure).

    ``subprocess.run`` kills the tool if it outlives ``timeout``.
    """
    cmd = [
        "java", "-Xms256m", "-Xmx512m",
        f"-Dlog4j2.configurationFile={COMPOSE / 'kafka' / 'log4j2.properties'}",
        "-cp", f"{KAFKA_LIBS}/*", f"org.apache.kafka.tools.{tool}", *args,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{tool} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done.stdout


def number(pattern: str, text: str) -> float:
    """The first number captured by ``pattern`` in ``text`` (raises naming the pattern if absent)."""
    match = re.search(pattern, text)
    if match is None:
        raise ValueError(f"no match for {pattern!r} in:\n{text[-1500:]}")
    return float(match.group(1))


def book_for(config: PipelineConfig, count: int) -> TraceBook:
    """A trace book for ``count`` canaries of a new run over ``config``'s stages."""
    from pipeline_check.canary.tags import RunId
    from pipeline_check.canary.trades import TradeFactory
    from pipeline_check.core.clock import Clock
    from pipeline_check.trace.book import TraceBook

    clock = Clock()
    run = RunId.new(clock.wall(clock.now()))
    factory = TradeFactory(run, seed=1, count=count, symbols=("CANARYUSDT",))
    return TraceBook(run, factory, config.route, clock)


def probe_for(config: PipelineConfig, stage: str, book: TraceBook) -> Probe:
    """The probe ``config`` names for ``stage``, wired to ``book`` as the engine wires it."""
    from pipeline_check.backends.capabilities import PROBES
    from pipeline_check.backends.probe import ProbeContext

    section = config.stage(stage)
    if section is None:
        raise ValueError(f"no stage {stage!r} in the config")
    ctx = ProbeContext(stage, config.route.upstream[stage], book.clock, book.run, book, note=lambda _: None)
    return PROBES.get(section.type)(section.settings, ctx)
