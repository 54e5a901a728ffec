"""Time to verdict: from the last canary becoming visible at the API to the ``RunFinished`` event.

Measured from outside the engine on the real local stack: the run's trace book says when the API probe
first saw each canary (the run's monotonic clock); the moment the ``RunFinished`` event reaches the
handler is read on the same clock. The difference is what a deploy gate waits after the data is there:
the engine noticing completion, the probes' last looks and shutdown, the summary and the SLA checks.
"""

from __future__ import annotations

import asyncio
import os
import statistics
from typing import Any

import numpy as np

from benchmarks.common import PIPELINE_FILE, Figure
from pipeline_check.config import PipelineConfig, load_config
from pipeline_check.runs.injected import Run
from pipeline_check.runs.plan import Plan
from pipeline_check.verdict.events import RunFinished

RUNS = 3
COUNT = 1_000
RATE = 200.0
GOAL_S = 1.0


def stack_config(exports: dict[str, str]) -> PipelineConfig:
    """compose/pipeline.toml pointed at a stack with these exports."""
    return load_config(PIPELINE_FILE, {**os.environ, **exports})


async def _one(config: PipelineConfig) -> dict[str, Any]:
    run = Run(Plan.build(config))
    finished_at = None
    finished: RunFinished | None = None
    async for event in run.events():
        if isinstance(event, RunFinished):
            finished_at = run.clock.now()
            finished = event
    assert finished is not None and finished_at is not None
    api = run.book.first_seen("api")
    last_visible = float(np.nanmax(api)) if np.isfinite(api).any() else float("nan")
    return {
        "seconds": round(finished_at - last_visible, 3),
        "delivered": finished.summary.delivered,
        "injected": finished.summary.injected,
        "verdict": finished.verdict.name,
        "e2e_p99_s": round(finished.summary.e2e.get("p99", float("nan")), 3),
    }


def run(exports: dict[str, str]) -> Figure:
    """``RUNS`` validations of ``COUNT`` canaries at ``RATE``/s; the time to verdict of each."""
    config = stack_config(exports).with_overrides(None, count=COUNT, rate=RATE, background_rate=0, drain_timeout=60)
    runs = [asyncio.run(_one(config)) for _ in range(RUNS)]
    times = [r["seconds"] for r in runs]
    worst = max(times)
    complete = all(r["delivered"] == r["injected"] for r in runs)
    return Figure(
        name="time_to_verdict",
        title="Time to verdict",
        headline=f"median {statistics.median(times):.2f} s, max {worst:.2f} s after the last canary reached the API",
        goal=f"<= {GOAL_S:g} s",
        met=worst <= GOAL_S and complete,
        values={"seconds": times, "median_s": statistics.median(times), "max_s": worst, "runs": runs},
        notes=f"{RUNS} runs of {COUNT} canaries at {RATE:g}/s on the local stack, all stages probed; judged on the "
        "worst run",
    )
