"""Measurement resolution: pipeline-check's Kafka-stage latency against Kafka's ``EndToEndLatency``.

Ours: a real validation run with a Kafka source and only the ``kafka`` stage; per canary, first seen by
the ``kafka_topic`` probe minus injection (``book.hop_latencies("kafka")``). Theirs:
``org.apache.kafka.tools.EndToEndLatency broker topic N all SIZE`` (Kafka 4.1 positional form): one
record at a time, a synchronous acks=all send then a consumer poll until it arrives, linger.ms=0 and
fetch.max.wait.ms=0. Same broker, same record size; our producer is set to linger 0 like theirs. The
tool prints whole milliseconds (truncated); its average keeps the fraction.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from benchmarks.common import ROUNDS, Figure, Spread, create_topic, java_tool, number, percentiles
from benchmarks.injection import canary_size
from pipeline_check.config import PipelineConfig
from pipeline_check.runs.driver import run_async

OURS_COUNT = 3_000
OURS_RATE = 300.0
JAVA_COUNT = 3_000
GOAL_MS = 2.0


def _ours(bootstrap: str, topic: str) -> dict[str, Any]:
    config = PipelineConfig.model_validate(
        {
            "source": {"type": "kafka", "linger": 0},
            "stages": {"kafka": {"bootstrap": bootstrap, "topic": topic}},
            "load": {"count": OURS_COUNT, "rate": OURS_RATE, "drain_timeout": "30s"},
            "sla": {"thresholds": ["lost == 0"]},
        }
    )
    outcome = asyncio.run(run_async(config))
    hops = outcome.book.hop_latencies("kafka") * 1000
    found = hops[np.isfinite(hops)]
    return {
        **{k: round(v, 3) for k, v in percentiles(found, (50, 99, 99.9)).items()},
        "avg": round(float(found.mean()), 3),
        "n": len(found),
        "lost": outcome.finished.summary.lost,
        "probe_resolution_ms": round(outcome.finished.resolution.get("kafka", 0.0) * 1000, 2),
    }


def _java(bootstrap: str, topic: str, size: int) -> dict[str, Any]:
    out = java_tool("EndToEndLatency", [bootstrap, topic, str(JAVA_COUNT), "all", str(size)], timeout=300)
    return {
        "p50": number(r"50th = (\d+)", out),
        "p99": number(r"99th = (\d+)", out),
        "p99.9": number(r"99\.9th = (\d+)", out),
        "avg": number(r"Avg latency: ([\d.]+) ms", out),
        "n": JAVA_COUNT,
    }


def run(bootstrap: str) -> Figure:
    """Kafka-stage latency p50/p99: pipeline-check vs EndToEndLatency on the same broker, ``ROUNDS`` each."""
    size = canary_size()
    ours_rounds, theirs_rounds = [], []
    for round_ in range(ROUNDS):
        create_topic(bootstrap, f"bench-e2e-ours-{round_}")
        create_topic(bootstrap, f"bench-e2e-java-{round_}")
        theirs_rounds.append(_java(bootstrap, f"bench-e2e-java-{round_}", size))
        ours_rounds.append(_ours(bootstrap, f"bench-e2e-ours-{round_}"))
    ours = {k: Spread.of([r[k] for r in ours_rounds]) for k in ("p50", "p99", "probe_resolution_ms")}
    theirs = {k: Spread.of([r[k] for r in theirs_rounds]) for k in ("p50", "p99")}
    diff = Spread.of([abs(o["p50"] - t["p50"]) for o, t in zip(ours_rounds, theirs_rounds, strict=True)])
    # the tool truncates to whole ms: its p50 of N means [N, N+1) ms; the nearest point of that interval
    interval = Spread.of(
        [
            max(0.0, t["p50"] - o["p50"], o["p50"] - (t["p50"] + 1))
            for o, t in zip(ours_rounds, theirs_rounds, strict=True)
        ]
    )
    lost = sum(r["lost"] for r in ours_rounds)
    return Figure(
        name="measurement_resolution",
        title="Measurement resolution: Kafka stage",
        headline=(
            f"p50 {ours['p50'].text()} vs {theirs['p50'].text('{:g}')} ms, p99 {ours['p99'].text()} vs "
            f"{theirs['p99'].text('{:g}')} ms (ours vs EndToEndLatency); probe resolution "
            f"{ours['probe_resolution_ms'].text()} ms"
        ),
        goal=f"p50 within {GOAL_MS:g} ms of EndToEndLatency",
        met=diff.median <= GOAL_MS and lost == 0,
        values={
            "ours_ms": {k: v.to_json(3) for k, v in ours.items()},
            "end_to_end_latency_ms": {k: v.to_json(3) for k, v in theirs.items()},
            "p50_difference_ms": diff.to_json(3),
            "p50_difference_to_tool_interval_ms": interval.to_json(3),
            "rounds": {"ours": ours_rounds, "theirs": theirs_rounds},
            "record_bytes": size,
        },
        notes=(
            f"ours: {OURS_COUNT} canaries paced at {OURS_RATE:g}/s, injection to first seen by the kafka_topic "
            f"probe; theirs: {JAVA_COUNT} records one at a time (send, ack, poll); acks=all and linger 0 on "
            f"both; the tool reports whole milliseconds; {ROUNDS} rounds, theirs then ours"
        ),
    )
