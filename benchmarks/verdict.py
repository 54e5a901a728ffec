"""Time to verdict: from the end of the settle window to the ``RunFinished`` event, with the settle beside it.

Measured from outside the engine on the real local stack, on the run's own monotonic clock: the engine
stamps when its watch ended (``Run.settled_at``: the settle window over, every stage holding every canary);
the moment the ``RunFinished`` event reaches the handler is read on the same clock. The difference is what a
deploy gate waits once the run has seen what it waited for: the probes' last looks (in waves, a stage after
its upstream stage's) and shutdown, the summary and the SLA checks. The settle window itself (at least 2 s,
or twice the longest gap between deliveries) is a deliberate wait for late copies and retractions and is
reported beside it, as is the time from the last canary reaching the API.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import numpy as np

from benchmarks.common import PIPELINE_FILE, ROUNDS, Figure, Spread
from pipeline_check.config import PipelineConfig, load_config
from pipeline_check.runs.injected import Run
from pipeline_check.runs.plan import Plan
from pipeline_check.verdict.events import RunFinished

COUNT = 1_000
RATE = 200.0
GOAL_S = 0.2


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
    assert finished is not None and finished_at is not None and finished.summary is not None
    if run.settled_at is None:
        raise RuntimeError("the run ended without its watch ending (no settle time)")
    api = run.book.first_seen("api")
    last_visible = float(np.nanmax(api)) if np.isfinite(api).any() else float("nan")
    return {
        "seconds": round(finished_at - run.settled_at, 3),
        "settle_s": round(finished.summary.settle_s, 3),
        "after_last_canary_s": round(finished_at - last_visible, 3),
        "delivered": finished.summary.delivered,
        "injected": finished.summary.injected,
        "verdict": finished.verdict.name,
        "e2e_p99_s": round(finished.summary.e2e.get("p99", float("nan")), 3),
    }


def run(exports: dict[str, str]) -> Figure:
    """``ROUNDS`` validations of ``COUNT`` canaries at ``RATE``/s; the time to verdict of each."""
    config = stack_config(exports).with_overrides(None, count=COUNT, rate=RATE, background_rate=0, drain_timeout=60)
    runs = [asyncio.run(_one(config)) for _ in range(ROUNDS)]
    seconds = Spread.of([r["seconds"] for r in runs])
    settle = Spread.of([r["settle_s"] for r in runs])
    after = Spread.of([r["after_last_canary_s"] for r in runs])
    complete = all(r["delivered"] == r["injected"] for r in runs)
    return Figure(
        name="time_to_verdict",
        title="Time to verdict",
        headline=f"{seconds.text()} s after the settle window ({settle.text('{:.1f}')} s of settle; "
        f"{after.text()} s after the last canary reached the API)",
        goal=f"<= {GOAL_S:g} s after the settle window",
        met=seconds.median <= GOAL_S and complete,
        values={"seconds": seconds.to_json(), "settle_s": settle.to_json(), "after_last_canary_s": after.to_json(),
                "runs": runs},
        notes=f"{ROUNDS} runs of {COUNT} canaries at {RATE:g}/s on the local stack, all stages probed"
        + ("" if complete else "; a run did not deliver every canary"),
    )  # fmt: skip
