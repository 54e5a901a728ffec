"""Background load: how fast Trogdor's agents send background trades, with 1 and 2 agents, against
pipeline-check's own background generator (``pacing.inject`` through the Kafka injector), in one run, to
one topic on the same brokers (the cluster profile's three, without the pipeline).

Each side is asked for more than it can send for ``SECONDS`` and its achieved rate read as a run reads it
(``backends.trogdor.load.TrogdorLoad``: final counts over the time it was seen sending; the local engine's
background count over its injection). The agents share the 2 cores with three brokers and each other, so
the figure says how the rate grows with agents here; past this machine (agents on hosts of their own) the
growth is a claim about Trogdor's design, not a measurement.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.common import COMPOSE, ROUNDS, Figure, Spread, create_topic, free_ports
from benchmarks.injection import _kafka_config, injector_for
from pipeline_check.canary.tags import RunId
from pipeline_check.canary.trades import TradeFactory
from pipeline_check.config import PipelineConfig
from pipeline_check.core.clock import Clock
from pipeline_check.runs.background import trogdor_load
from pipeline_check.runs.pacing import Pacing, inject
from pipeline_check.trace.book import TraceBook

SECONDS = 15.0  # each side's send
ASKED = 1_000_000  # records/s asked of each side: more than any reaches here
TOPIC = "bench.background"
SYMBOLS = ("BTCUSDT", "ETHUSDT")
SERVICES = ["kafka", "kafka2", "kafka3", "trogdor-agent1", "trogdor-agent2", "trogdor-coordinator"]
GOAL = "2 agents reach more than pipeline-check's own generator"


@contextmanager
def cluster() -> Iterator[Any]:
    """The cluster profile's brokers and Trogdor (no pipeline services) on free ports; yields the stack."""
    from pipeline_check.stack import LocalStack, load_stack
    from pipeline_check.stack.spec import profile_file

    profile = profile_file("cluster", COMPOSE / "stack.toml")
    with tempfile.TemporaryDirectory(prefix="pc-bench-cluster-") as tmp:
        declared = load_stack(profile)
        stack = LocalStack(load_stack(profile, run_dir=Path(tmp), ports=free_ports(list(declared.ports))))
        try:
            stack.up(only=SERVICES)  # up() stops everything it started if one fails
            yield stack
        finally:
            stack.down()


def _factory() -> TradeFactory:
    return TradeFactory(RunId.new(), seed=1, count=1, symbols=("CANARYUSDT",), background_symbols=SYMBOLS)


async def _trogdor(stack: Any, agents: tuple[str, ...], round_: str) -> dict[str, Any]:
    """Trogdor's agents asked for more than they can send, as a run asks them (``runs.background``)."""
    config = _config(stack.spec.exports["PC_KAFKA_BOOTSTRAP"], stack.spec.exports["PC_TROGDOR_URL"], agents)
    clock = Clock()
    load = await trogdor_load(config, config.load, _factory(), f"bench-{round_}", clock, lambda _: None, SECONDS * 4)
    try:
        await load.start()
        await asyncio.sleep(SECONDS)
    finally:
        figures = await load.stop()
    return {
        "agents": len(agents),
        "records_per_s": round(figures.achieved_rate or 0),
        "sent": figures.sent,
        "seconds": round(figures.seconds, 2),
        "per_agent": {a.agent: a.sent for a in figures.agents},
    }


def _config(bootstrap: str, coordinator: str, agents: tuple[str, ...]) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "source": {"type": "kafka"},
            "stages": {"kafka": {"bootstrap": bootstrap, "topic": TOPIC}},
            "messages": {"background_symbols": list(SYMBOLS)},
            "load": {
                "background_rate": ASKED,
                "background": {"engine": "trogdor", "coordinator": coordinator, "agents": list(agents)},
            },
        }
    )


async def _local(bootstrap: str) -> dict[str, Any]:
    """pipeline-check's own background generator at its fastest: one canary a second beside it."""
    config = _kafka_config(bootstrap, TOPIC)
    clock = Clock()
    run = RunId.new(clock.wall(clock.now()))
    count = int(SECONDS)
    factory = TradeFactory(run, seed=1, count=count, symbols=("CANARYUSDT",), background_symbols=SYMBOLS)
    book = TraceBook(run, factory, config.route, clock)
    injector = injector_for(config, clock)
    await injector.start()
    try:
        pacing = Pacing(count, 1.0, ASKED)
        stats = await inject(injector, book, factory, pacing, clock)
    finally:
        await injector.close()
    load = stats.background_load
    return {"records_per_s": round(load.achieved_rate or 0) if load else 0, "sent": stats.background}


def run(stack: Any) -> Figure:
    """Background records/s over ROUNDS rounds, each: the local generator, then Trogdor with 1 and with 2 agents."""
    bootstrap = stack.spec.exports["PC_KAFKA_BOOTSTRAP"]
    create_topic(bootstrap, TOPIC, partitions=3)
    began = time.monotonic()
    rounds: list[dict[str, dict[str, Any]]] = []
    for n in range(ROUNDS):
        rounds.append(
            {
                "local": asyncio.run(_local(bootstrap)),
                "trogdor_1_agent": asyncio.run(_trogdor(stack, ("agent1",), f"{n}-1")),
                "trogdor_2_agents": asyncio.run(_trogdor(stack, ("agent1", "agent2"), f"{n}-2")),
            }
        )
    rate = {side: Spread.of([r[side]["records_per_s"] for r in rounds]) for side in rounds[0]}
    growth = Spread.of(
        [r["trogdor_2_agents"]["records_per_s"] / max(r["trogdor_1_agent"]["records_per_s"], 1) for r in rounds]
    )
    local, one, two = rate["local"], rate["trogdor_1_agent"], rate["trogdor_2_agents"]
    return Figure(
        name="trogdor_background",
        title="Background load: Trogdor agents vs pipeline-check's generator",
        headline=(
            f"2 agents {two.text('{:,.0f}')}/s, 1 agent {one.text('{:,.0f}')}/s (x{growth.text()}); "
            f"pipeline-check's own {local.text('{:,.0f}')}/s"
        ),
        goal=GOAL,
        met=two.median > local.median,
        values={
            **{f"{side}_records_per_s": spread.to_json(0) for side, spread in rate.items()},
            "growth_1_to_2": growth.to_json(3),
            "rounds": rounds,
        },
        notes=(
            f"{SECONDS:g} s each, asked {ASKED:,}/s; topic {TOPIC} (3 partitions, RF 1) on the cluster profile's "
            "three brokers, nothing else of the pipeline running; trades of the run's generator keyed by symbol "
            "(Trogdor: a pool of 50 per symbol, acks=all, linger 5 ms; local: the Kafka injector, acks=all, "
            f"idempotent); the agents and brokers share the machine's cores; took {time.monotonic() - began:.0f} s"
        ),
    )
