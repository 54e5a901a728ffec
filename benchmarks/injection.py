"""Injection capacity: how fast pipeline-check can feed a pipeline.

- Kafka: records/s of the whole injection path (``pacing.inject``: trace book, message factory, the
  Kafka injector; acks=all, idempotent) against Kafka's own ``ProducerPerformance`` with the same record
  size and acks, on the same broker. Rounds alternate (ours, theirs, ours, theirs); the best of each side
  makes the ratio, so a noisy neighbour slows both alike.
- WebSocket: the highest paced rate the feed server holds with achieved/offered >= 0.99, and the p99 of
  how late each send started (``Pacing.lateness``), with one subscriber in its own process that only
  counts frames (benchmarks/ws_subscriber.py).
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import time
from typing import Any

import numpy as np

from benchmarks.common import (
    ROOT,
    ROUNDS,
    Figure,
    Spread,
    book_for,
    create_topic,
    free_ports,
    java_tool,
    number,
    versus,
)
from pipeline_check.backends.capabilities import INJECTORS
from pipeline_check.backends.injector import Injector, InjectorContext
from pipeline_check.canary.tags import RunId
from pipeline_check.canary.trades import TradeFactory
from pipeline_check.config import PipelineConfig
from pipeline_check.core.clock import Clock
from pipeline_check.runs.pacing import Pacing, inject
from pipeline_check.verdict.summary import InjectionStats

OURS_RECORDS = 200_000
JAVA_RECORDS = 500_000
KAFKA_GOAL = 0.5
WS_RATES = (2_000, 5_000, 10_000, 20_000, 30_000, 40_000, 60_000)
WS_SECONDS = 3.0
WS_GOAL_RATE = 10_000  # twice the reference pipeline's capacity goal: the feed is never the bottleneck
WS_RATIO = 0.99
UNLIMITED = 1e9  # an offered rate no injector reaches: measures the maximum


def canary_size() -> int:
    """Bytes of one canary's JSON value (the record size both producers use)."""
    run = RunId.new()
    return len(TradeFactory(run, seed=1, count=1, symbols=("CANARYUSDT",)).canary(0, 1_750_000_000_000).to_json())


async def _inject(injector: Injector, config: PipelineConfig, count: int, rate: float) -> tuple[InjectionStats, Pacing]:
    """One paced injection through the real path: book, factory, pacing, injector."""
    book = book_for(config, count)
    pacing = Pacing(count, rate, 0.0)
    stats = await inject(injector, book, book.factory, pacing, book.clock)
    return stats, pacing


def injector_for(config: PipelineConfig, clock: Clock) -> Injector:
    """The injector ``config`` names, as the engine makes it."""
    return INJECTORS.get(config.source.type)(config.source.settings, InjectorContext(clock, lambda _: None))


def _kafka_config(bootstrap: str, topic: str) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {"source": {"type": "kafka"}, "stages": {"kafka": {"bootstrap": bootstrap, "topic": topic}}}
    )


async def _ours(bootstrap: str, topic: str) -> float:
    config = _kafka_config(bootstrap, topic)
    injector = injector_for(config, Clock())
    await injector.start()
    try:
        began = time.perf_counter()
        stats, _ = await _inject(injector, config, OURS_RECORDS, UNLIMITED)
        return stats.sent / (time.perf_counter() - began)  # flush (every ack) included
    finally:
        await injector.close()


def _java(bootstrap: str, topic: str, size: int) -> float:
    out = java_tool(
        "ProducerPerformance",
        ["--topic", topic, "--num-records", str(JAVA_RECORDS), "--record-size", str(size), "--throughput", "-1",
         "--producer-props", f"bootstrap.servers={bootstrap}", "acks=all"],
        timeout=300,
    )  # fmt: skip
    return number(rf"{JAVA_RECORDS} records sent, ([\d.]+) records/sec", out)


def kafka_capacity(bootstrap: str) -> Figure:
    """Records/s of pipeline-check's Kafka injection vs ProducerPerformance, same broker and size."""
    size = canary_size()
    ours: list[float] = []
    theirs: list[float] = []
    for round_ in range(ROUNDS):
        topic_ours, topic_java = f"bench-inject-{round_}", f"bench-perf-{round_}"
        create_topic(bootstrap, topic_ours)
        create_topic(bootstrap, topic_java)
        ours.append(asyncio.run(_ours(bootstrap, topic_ours)))
        theirs.append(_java(bootstrap, topic_java, size))
    headline, values, ratio = versus(ours, theirs, "ProducerPerformance")
    return Figure(
        name="injection_kafka",
        title="Injection capacity: Kafka",
        headline=headline,
        goal=f"ratio >= {KAFKA_GOAL}",
        met=ratio.median >= KAFKA_GOAL,
        values={
            **values,
            "record_bytes": size,
            "ours_records": OURS_RECORDS,
            "producer_performance_records": JAVA_RECORDS,
        },
        notes=(
            f"acks=all, idempotent, 1 partition each, {size}-byte values (ours also carry a 10-byte key); "
            f"ours is the whole injection path (trace book + message factory + injector, flush included); "
            f"{ROUNDS} rounds, ours then theirs, the ratio taken per round"
        ),
    )


# -- WebSocket ------------------------------------------------------------------------------------------


async def _ws_steps(port: int) -> tuple[list[dict[str, Any]], int]:
    """Serve the feed, wait for the counting subscriber, inject at each rate; (steps, frames sent)."""
    config = PipelineConfig.model_validate(
        {
            "source": {"type": "websocket", "port": port, "subscribe_timeout": "30s"},
            "stages": {"kafka": {"bootstrap": "127.0.0.1:1", "topic": "unused"}},
        }
    )
    injector = injector_for(config, Clock())
    subscriber = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.ws_subscriber", f"ws://127.0.0.1:{port}/ws/canaryusdt@trade"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    steps: list[dict[str, Any]] = []
    sent = 0
    try:
        await injector.start()
        for rate in WS_RATES:
            count = int(rate * WS_SECONDS)
            stats, pacing = await _inject(injector, config, count, rate)
            sent += stats.sent
            late = pacing.lateness[: stats.sent]
            ratio = stats.achieved_rate / rate
            steps.append(
                {
                    "offered": rate,
                    "achieved": round(stats.achieved_rate),
                    "ratio": round(ratio, 4),
                    "lateness_p50_ms": round(float(np.percentile(late, 50)) * 1000, 3),
                    "lateness_p99_ms": round(float(np.percentile(late, 99)) * 1000, 3),
                    "pauses": stats.pauses,
                }
            )
            if ratio < WS_RATIO:
                break
    finally:
        await injector.close()
    try:
        out, _ = subscriber.communicate(timeout=30)
    finally:
        if subscriber.poll() is None:
            subscriber.kill()
            subscriber.wait()
    received = int(json.loads(out.strip().splitlines()[-1])["frames"]) if out.strip() else -1
    return steps, sent - received


def websocket_capacity() -> Figure:
    """The highest paced rate the WebSocket feed holds, and its send-time jitter there (``ROUNDS`` ramps)."""
    ramps: list[dict[str, Any]] = []
    for _ in range(ROUNDS):
        port = free_ports(["feed"])["feed"]
        steps, undelivered = asyncio.run(_ws_steps(port))
        held = [s for s in steps if s["ratio"] >= WS_RATIO]
        best = held[-1] if held else None
        ramps.append({
            "max_rate": best["offered"] if best else 0,
            "lateness_p99_ms": best["lateness_p99_ms"] if best else math.nan,
            "capped": bool(held) and held[-1] is steps[-1],  # every rate tried was held
            "steps": steps,
            "frames_not_received": undelivered,
        })  # fmt: skip
    rate = Spread.of([r["max_rate"] for r in ramps])
    late = Spread.of([r["lateness_p99_ms"] for r in ramps])
    capped = all(r["capped"] for r in ramps)
    undelivered = sum(r["frames_not_received"] for r in ramps)
    return Figure(
        name="injection_websocket",
        title="Injection capacity: WebSocket",
        headline=f"{'>= ' if capped else ''}{rate.text('{:,.0f}')} msg/s at achieved/offered >= {WS_RATIO}; "
        f"send lateness p99 {late.text('{:.1f}')} ms there",
        goal=f"max paced rate >= {WS_GOAL_RATE:,} msg/s (2x the pipeline's capacity goal) with achieved/offered "
        f">= {WS_RATIO}",
        met=rate.median >= WS_GOAL_RATE and undelivered == 0,
        values={"max_rate": rate.to_json(0), "lateness_p99_ms": late.to_json(2), "ramps": ramps},
        notes=f"{ROUNDS} ramps of {WS_SECONDS:g} s per rate, one subscriber process counting frames; the first rate "
        f"not held ends a ramp; frames sent but not received by the subscriber: {undelivered}",
    )
