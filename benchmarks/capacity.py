"""Reference pipeline capacity: the highest steady rate the local pipeline carries WS -> API with p99
freshness under 5 s, and what limits it.

A ramp of validation runs on the real local stack (canaries only, no background), ``STEP_SECONDS`` at
each rate; a step holds when nothing is lost, e2e p99 < 5 s and the delivered throughput is within 5%
of the rate. The ramp stops at the first rate that does not hold twice in a row; the knee is the last
one that held. During every step the CPU time
of each process (Kafka, the three services, the validator) is sampled, and py-spy records the Python
services, so the limiting stage is named from evidence, not guessed. CPU per delivered record (each
process, and the pipeline's four together) is the figure that survives a shared machine: the knee moves
with the neighbours' load, the CPU a record costs much less.
"""

from __future__ import annotations

import asyncio
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import Figure
from benchmarks.verdict import stack_config
from pipeline_check.runs.injected import Run
from pipeline_check.runs.plan import Plan
from pipeline_check.verdict.events import RunFinished

RATES = (1_000, 2_000, 3_000, 5_000, 7_000, 10_000, 14_000, 20_000)
STEP_SECONDS = 15.0
FRESHNESS_S = 5.0
THROUGHPUT_SHARE = 0.95  # delivered throughput against the offered rate
GOAL_RATE = 20_000
PROFILED = ("ingestor", "consumer", "api", "validator")
PIPELINE = ("kafka", "ingestor", "consumer", "api")
SAMPLE_HZ = 50


class _CpuMeter:
    """CPU seconds each process used between ``start`` and ``stop``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._before: dict[str, float] = {}
        self._began = 0.0
        self._machine = psutil.cpu_times()

    @staticmethod
    def _cpu(process: psutil.Process) -> float:
        times = process.cpu_times()
        return float(times.user + times.system)

    def start(self) -> None:
        self._began = time.monotonic()
        self._before = {name: self._cpu(p) for name, p in self.processes.items()}
        self._machine = psutil.cpu_times()

    def stop(self) -> dict[str, float]:
        """Cores used on average per process (1.0 = one core busy all the time), and by the whole machine
        (``machine``: every process, other tenants included)."""
        wall = time.monotonic() - self._began
        cores = {name: round((self._cpu(p) - self._before[name]) / wall, 2) for name, p in self.processes.items()}
        now = psutil.cpu_times()
        idle = (now.idle + getattr(now, "iowait", 0.0)) - (self._machine.idle + getattr(self._machine, "iowait", 0.0))
        cores["machine"] = round((os.cpu_count() or 1) - idle / wall, 2)
        return cores


class _Profiler:
    """py-spy recording the Python services during one step (collapsed stacks, non-blocking)."""

    def __init__(self, pids: dict[str, int], seconds: float, folder: Path) -> None:
        self.outputs: dict[str, Path] = {}
        self._procs: list[subprocess.Popen[bytes]] = []
        spy = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")
        self.available = spy is not None
        if spy is None:
            return
        for name, pid in pids.items():
            out = folder / f"{name}.txt"
            self.outputs[name] = out
            self._procs.append(
                subprocess.Popen(
                    [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", str(SAMPLE_HZ),
                     "--format", "raw", "--nonblocking", "--output", str(out)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip

    def stop(self) -> dict[str, dict[str, Any]]:
        """Wait for the recordings (killing any that overrun) and summarise each."""
        for proc in self._procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return {name: _summarise(path) for name, path in self.outputs.items() if path.exists()}


def _frame(text: str) -> str:
    """``func (path/to/file.py:12)`` -> ``file.py:func``."""
    name, _, where = text.partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0].rsplit("/", 1)[-1]
    return f"{file}:{name}"


def _summarise(path: Path, top: int = 6) -> dict[str, Any]:
    """From py-spy's collapsed stacks: samples, the hottest leaf functions (self time) and the hottest
    functions of the service's own code (inclusive time)."""
    leaves: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if not frames:
            continue
        total += count
        leaves[_frame(frames[-1])] += count
        for name in {_frame(f) for f in frames if "(services/" in f or "/services/" in f}:
            own[name] += count
    share = {k: round(v / total, 3) for k, v in leaves.most_common(top)} if total else {}
    inclusive = {k: round(v / total, 3) for k, v in own.most_common(top)} if total else {}
    return {"samples": total, "self": share, "services_inclusive": inclusive}


async def _step(config_rate: Any) -> RunFinished:
    run = Run(Plan.build(config_rate))
    finished: RunFinished | None = None
    async for event in run.events():
        if isinstance(event, RunFinished):
            finished = event
    assert finished is not None
    return finished


def _measure(base: Any, rate: int, pids: dict[str, int], folder: Path) -> dict[str, Any]:
    """One step of the ramp at ``rate``: the validation run, CPU per process, py-spy profiles."""
    config = base.with_overrides(
        None, count=int(rate * STEP_SECONDS), rate=rate, background_rate=0, drain_timeout=30,
        thresholds=(f"e2e.p99 < {FRESHNESS_S:g}s",),
    )  # fmt: skip
    meter = _CpuMeter(pids)
    folder.mkdir(parents=True, exist_ok=True)
    profiler = _Profiler({n: pids[n] for n in PROFILED}, STEP_SECONDS, folder)
    meter.start()
    finished = asyncio.run(_step(config))
    cpu = meter.stop()
    profiles = profiler.stop()
    summary = finished.summary
    e2e = summary.e2e
    held = (
        summary.lost == 0
        and e2e.get("p99", float("inf")) < FRESHNESS_S
        and summary.throughput.delivered >= THROUGHPUT_SHARE * rate
    )
    return {
        "rate": rate,
        "held": held,
        "delivered": summary.delivered,
        "lost": summary.lost,
        "throughput": round(summary.throughput.delivered),
        "e2e_p50_s": round(e2e.get("p50", float("nan")), 3),
        "e2e_p99_s": round(e2e.get("p99", float("nan")), 3),
        "stage_latency_s": {s.name: {k: round(v, 3) for k, v in s.latency.items() if k != "n"} for s in summary.stages},
        "achieved_injection_rate": round(summary.injection.achieved_rate),
        "injection_lateness_p99_ms": round(summary.injection.lateness_p99 * 1000, 1),
        "injection_pauses": summary.injection.pauses,
        "cpu_cores": cpu,
        "cpu_us_per_record": _per_record(cpu, summary.throughput.delivered),
        "profiles": profiles,
    }


def _per_record(cores: dict[str, float], delivered_per_s: float) -> dict[str, float]:
    """CPU microseconds each process spent per delivered record (its fixed costs - polls, heartbeats,
    commits - included, so the figure falls as the rate grows), and the four pipeline processes together."""
    if delivered_per_s <= 0:
        return {}
    per = {name: round(cores[name] / delivered_per_s * 1e6, 1) for name in (*PIPELINE, "validator")}
    per["pipeline"] = round(sum(per[name] for name in PIPELINE), 1)
    return per


def run(stack: Any) -> Figure:
    """Ramp the rate until freshness, loss or throughput fails (twice in a row: a shared machine has
    hiccups); report the knee and what limited it."""
    base = stack_config(dict(stack.spec.exports))
    pids = {name: stack.pid(name) for name in ("kafka", "ingestor", "consumer", "api")}
    pids["validator"] = os.getpid()
    steps: list[dict[str, Any]] = []
    knee = 0
    with tempfile.TemporaryDirectory(prefix="pc-bench-spy-") as tmp:
        for rate in RATES:
            step = _measure(base, rate, pids, Path(tmp) / str(rate))
            steps.append(step)
            if not step["held"]:
                step = _measure(base, rate, pids, Path(tmp) / f"{rate}-again")
                step["repeat"] = True
                steps.append(step)
            if not step["held"]:
                break
            knee = rate
    last = steps[-1]
    busiest = max(
        (n for n in last["cpu_cores"] if n not in {"validator", "machine"}), key=lambda n: last["cpu_cores"][n]
    )
    held = [s for s in steps if s["held"] and s["rate"] == knee]
    at_knee = f", e2e p99 {held[-1]['e2e_p99_s']} s" if held else ""
    headline = f"knee {'>= ' if last['held'] else ''}{knee:,} msg/s (p99 freshness < {FRESHNESS_S:g} s{at_knee})"
    if not last["held"]:
        headline += (
            f"; at {last['rate']:,}/s: e2e p99 {last['e2e_p99_s']} s, lost {last['lost']}, "
            f"throughput {last['throughput']:,}/s"
        )
    return Figure(
        name="pipeline_capacity",
        title="Reference pipeline capacity",
        headline=headline,
        goal=f">= {GOAL_RATE:,} msg/s WS -> API with p99 freshness < {FRESHNESS_S:g} s",
        met=knee >= GOAL_RATE,
        values={
            "knee": knee,
            "e2e_p99_s_at_knee": held[-1]["e2e_p99_s"] if held else None,
            "cpu_us_per_record_at_knee": held[-1]["cpu_us_per_record"] if held else None,
            "steps": steps,
            "busiest_process_at_last_step": busiest,
        },
        notes=(
            f"{STEP_SECONDS:g} s per rate, canaries only; a step holds with nothing lost, e2e p99 < "
            f"{FRESHNESS_S:g} s and delivered throughput >= {THROUGHPUT_SHARE:.0%} of the rate; a step that fails "
            f"is repeated once; cpu_cores = CPU seconds per wall second of each process during the step, "
            f"'machine' = every process on the box, other tenants included ({os.cpu_count()} cores); profiles: "
            f"py-spy at {SAMPLE_HZ} Hz, share of samples per leaf function ('self') and per service function on "
            f"the stack ('services_inclusive'); cpu_us_per_record = CPU microseconds per delivered record of each "
            f"process (fixed costs included) and of the four pipeline processes together ('pipeline'); busiest "
            f"pipeline process at the last step: {busiest} "
            f"({last['cpu_cores'][busiest]} cores)"
        ),
    )
