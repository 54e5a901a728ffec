"""Observer cost: what watching costs the pipeline, in one run on the local stack.

- **CPU per delivered record.** Validation runs of ``RATE`` records/s (canaries and background trades) for
  ``SECONDS``, alternating: all four probes watching, all but the API probe, only the Kafka probe. The CPU
  seconds of the pipeline's processes (Kafka, ingestor, consumer, API) over the run, per record delivered,
  against Kafka only: the API answering the API probe, the broker answering the consumer-group probe, the
  catalog's files read by the Iceberg probe are the observer's cost. Goal: at most 5 % more.
- **Capacity knee.** The same ladder of rates run with all probes and with only the Kafka and consumer-group
  probes (the consumer stage then closes the route: it commits after the table write, so its freshness is the
  write path's), a rate after the other at each step; a step holds with nothing lost, p99 freshness under 5 s
  and the delivered throughput within 5 % of the rate, and each configuration's ladder stops at its first
  rate that fails twice. The knee with the API and Iceberg probes against the knee without.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psutil

from benchmarks.common import ROUNDS, Figure, Spread
from benchmarks.verdict import stack_config
from pipeline_check.config import PipelineConfig
from pipeline_check.runs.injected import Run
from pipeline_check.runs.plan import Plan
from pipeline_check.verdict.events import RunFinished

PIPELINE = ("kafka", "ingestor", "consumer", "api")
RATE = 2_000  # records/s: CANARY_RATE canaries and the rest background trades
CANARY_RATE = 200
SECONDS = 15.0
GOAL = 0.05
LADDER = (1_000, 1_500, 2_000, 3_000, 4_000, 5_000, 6_000, 8_000, 10_000, 12_000)
STEP_SECONDS = 12.0
FRESHNESS_S = 5.0
THROUGHPUT_SHARE = 0.95


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds each process has used so far."""
    used = {}
    for name, pid in pids.items():
        times = psutil.Process(pid).cpu_times()
        used[name] = times.user + times.system
    return used


async def _validate(config: PipelineConfig) -> tuple[RunFinished, Run]:
    run = Run(Plan.build(config))
    finished: RunFinished | None = None
    async for event in run.events():
        if isinstance(event, RunFinished):
            finished = event
    assert finished is not None and finished.summary is not None
    return finished, run


def _only(config: PipelineConfig, *names: str) -> PipelineConfig:
    """``config`` probing only the stages ``names``; the consumer stage, when kept, closes the route (it commits
    after the table write, so its freshness is the write path's) rather than branching off it."""
    stages = tuple(
        s.model_copy(update={"branch": False}) if s.name == "consumer" else s for s in config.stages if s.name in names
    )
    return config.model_copy(update={"stages": stages})


def _cost_round(config: PipelineConfig, pids: dict[str, int]) -> dict[str, Any]:
    """One validation; the pipeline's CPU per record over it, and what its probes asked."""
    before, began = _cpu(pids), time.monotonic()
    finished, _ = asyncio.run(_validate(config))
    wall = time.monotonic() - began
    after = _cpu(pids)
    summary = finished.summary
    assert summary is not None
    records = summary.injection.sent + summary.injection.background
    cpu = {name: after[name] - before[name] for name in pids}
    return {
        "records": records,
        "delivered_canaries": summary.delivered,
        "lost": summary.lost,
        "cpu_s": {k: round(v, 2) for k, v in cpu.items()},
        "cpu_ms_per_1k_records": round(1e6 * sum(cpu.values()) / records, 1),
        "wall_s": round(wall, 1),
        "probe_load": {stage: load.text() for stage, load in finished.probe_load.items()},
        "api_requests": finished.probe_load["api"].calls.get("requests", 0) if "api" in finished.probe_load else 0,
    }


def _cost(base: PipelineConfig, pids: dict[str, int]) -> dict[str, Any]:
    config = base.with_overrides(
        None, count=int(CANARY_RATE * SECONDS), rate=CANARY_RATE, background_rate=RATE - CANARY_RATE, drain_timeout=30
    )
    configs = {
        "all_probes": config,
        "without_api": _only(config, "kafka", "consumer", "iceberg"),
        "kafka_only": _only(config, "kafka"),
    }
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    for _ in range(ROUNDS):
        for name, each in configs.items():
            rounds[name].append(_cost_round(each, pids))

    def overhead(name: str) -> Spread:
        pairs = zip(rounds[name], rounds["kafka_only"], strict=True)
        return Spread.of([a["cpu_ms_per_1k_records"] / k["cpu_ms_per_1k_records"] - 1 for a, k in pairs])

    api_ms = Spread.of([1000 * r["cpu_s"]["api"] / max(1, r["api_requests"]) for r in rounds["all_probes"]])
    spreads = {"overhead": overhead("all_probes"), "overhead_without_api": overhead("without_api"), "api_ms": api_ms}
    return spreads | rounds


def _step(base: PipelineConfig, rate: int) -> dict[str, Any]:
    config = base.with_overrides(
        None, count=int(rate * STEP_SECONDS), rate=rate, background_rate=0, drain_timeout=30,
        thresholds=(f"e2e.p99 < {FRESHNESS_S:g}s",),
    )  # fmt: skip
    finished, _ = asyncio.run(_validate(config))
    s = finished.summary
    assert s is not None
    p99 = s.e2e.get("p99", float("inf"))
    held = s.lost == 0 and p99 < FRESHNESS_S and s.throughput.delivered >= THROUGHPUT_SHARE * rate
    return {"rate": rate, "held": held, "e2e_p99_s": round(p99, 3), "lost": s.lost,
            "throughput": round(s.throughput.delivered), "final": s.final}  # fmt: skip


def _knees(base: PipelineConfig) -> dict[str, Any]:
    """Both configurations up the ladder, a step of one after the same step of the other."""
    configs = {"all_probes": base, "without_iceberg_and_api": _only(base, "kafka", "consumer")}
    steps: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    knee = dict.fromkeys(configs, 0)
    climbing = set(configs)
    for rate in LADDER:
        for name in [n for n in configs if n in climbing]:
            step = _step(configs[name], rate)
            if not step["held"]:  # a shared machine has hiccups: a step must fail twice
                step = _step(configs[name], rate) | {"repeat": True}
            steps[name].append(step)
            if step["held"]:
                knee[name] = rate
            else:
                climbing.discard(name)
        if not climbing:
            break
    return {"knee": knee, "steps": steps, "capped": sorted(climbing)}


def run(stack: Any) -> Figure:
    base = stack_config(dict(stack.spec.exports))
    pids = {name: stack.pid(name) for name in PIPELINE}
    cost = _cost(base, pids)
    knees = _knees(base)
    overhead: Spread = cost["overhead"]
    without_api: Spread = cost["overhead_without_api"]
    api_ms: Spread = cost["api_ms"]
    knee = knees["knee"]
    knee_share = 1 - knee["all_probes"] / knee["without_iceberg_and_api"] if knee["without_iceberg_and_api"] else 0.0
    top = " (the ladder's top)" if knees["capped"] else ""
    return Figure(
        name="observer_cost",
        title="Observer cost on the pipeline",
        headline=f"pipeline CPU per record {overhead.text('{:+.1%}')} with all four probes vs the Kafka probe only "
        f"({without_api.text('{:+.1%}')} without the API probe; the API spends {api_ms.text('{:.0f}')} ms of CPU per "
        f"probe request); knee {knee['all_probes']:,} msg/s with the Iceberg and API probes, "
        f"{knee['without_iceberg_and_api']:,} without{top}",
        goal=f"probes cost <= {GOAL:.0%} of the pipeline's capacity (CPU per record, knee)",
        met=overhead.median <= GOAL and knee_share <= GOAL,
        values={
            "cpu_per_record_overhead": overhead.to_json(),
            "cpu_per_record_overhead_without_api": without_api.to_json(),
            "api_cpu_ms_per_probe_request": api_ms.to_json(1),
            "all_probes": cost["all_probes"],
            "without_api": cost["without_api"],
            "kafka_only": cost["kafka_only"],
            "knee": knee,
            "knee_share_lost": round(knee_share, 3),
            "ladder": knees["steps"],
        },
        notes=f"CPU: {RATE:,} records/s ({CANARY_RATE}/s canaries) for {SECONDS:g} s per round, rounds alternating; "
        f"CPU seconds of {', '.join(PIPELINE)} over each validation (its drain and settle included) per record "
        f"sent; knee: {STEP_SECONDS:g} s per step of {', '.join(f'{r:,}' for r in LADDER)} msg/s, canaries only, "
        f"held = nothing lost, p99 freshness < {FRESHNESS_S:g} s, throughput >= {THROUGHPUT_SHARE:.0%}; the knee is "
        "one ladder step per configuration (a step is the resolution of its ratio)",
    )
