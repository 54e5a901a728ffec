"""Background trades as Trogdor ``ProduceBenchSpec`` tasks, one per agent, each a share of the rate (pure:
no I/O).

What ProduceBench can express, and how close it gets to the validator's own background trades:

- **Key scheme**: the key is the trade's symbol, as the ingestor and the Kafka injector key records, and
  the producer's own partitioner places it (``useConfiguredPartitioner``: Kafka's murmur2, the same as
  aiokafka's), so a symbol's trades land on the partition the pipeline's own put them on.
- **Record shape**: the values are trades of the same generator (``TradeFactory.background``), JSON as the
  feed's. Trogdor's payload generators cannot format a record per message, so each agent draws from a pool
  of pre-made trades (``pool_size``: 100 in all, as many per symbol), one at random per record. A
  ``randomComponent`` generator picks its component from ``Random(seed + position)``; the key generator
  has one component per pooled trade too, its symbol, with the same seed and shares, so every record's
  value is a trade of its key's symbol (one draw, not two: Java's first draws of nearby seeds are
  correlated, so a second, nested draw would favour some trades of a symbol).
- **What differs**: trade ids, prices and quantities repeat over the pool (a pipeline that deduplicates
  by trade id keeps only the pool); event and trade times are those of the moment the spec was built, not
  of the send; shares are whole percents (with 3 symbols, 33 trades each and one of them drawn twice as
  often); the records go straight to the topic, not through the feed and the ingestor.
- **Rate**: Trogdor throttles per 100 ms, so an agent's rate is a multiple of 10 records/s (at least 10);
  the rate is split so the shares add up to the rate asked, rounded to 10/s (``BenchPlan.target``).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PRODUCE_BENCH = "org.apache.kafka.trogdor.workload.ProduceBenchSpec"
THROTTLE_STEP = 10  # records/s: Trogdor counts per 100 ms period, whole records
COMPONENTS = 100  # randomComponent shares are whole percents: at most 100 pooled trades
DEFAULT_PRODUCER = {"acks": "all", "linger.ms": "5"}  # the Java producer's defaults add idempotence


@dataclass(frozen=True, slots=True)
class AgentTask:
    """One ProduceBench task: its id, the agent it runs on, its share of the rate and its spec (JSON)."""

    task_id: str
    agent: str
    rate: int
    spec: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class BenchPlan:
    """The tasks for one run; ``target`` is the rate they add up to (the rate asked, rounded to 10/s)."""

    tasks: tuple[AgentTask, ...]
    target: int
    asked: float

    @property
    def rounded(self) -> bool:
        return self.target != round(self.asked)


def split_rate(rate: float, agents: Sequence[str]) -> dict[str, int]:
    """``rate`` as multiples of ``THROTTLE_STEP`` per agent, in order, adding up to it rounded to a step;
    agents without a step of their own get none (a rate below 10/s per agent cannot be throttled)."""
    steps = max(1, round(rate / THROTTLE_STEP))
    whole, extra = divmod(steps, len(agents))
    shares = {agent: (whole + (i < extra)) * THROTTLE_STEP for i, agent in enumerate(agents)}
    return {agent: share for agent, share in shares.items() if share}


def percents(count: int) -> list[int]:
    """``count`` whole percents, as even as they go, adding up to 100."""
    if not 0 < count <= 100:
        raise ValueError(f"1 to 100 shares, not {count}")
    whole, extra = divmod(100, count)
    return [whole + (i < extra) for i in range(count)]


def constant(payload: bytes) -> dict[str, Any]:
    """Trogdor's ``constant`` generator of exactly ``payload`` (Jackson reads byte arrays as base64)."""
    return {"type": "constant", "size": len(payload), "value": base64.b64encode(payload).decode()}


def random_component(seed: int, components: Sequence[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """Trogdor's ``randomComponent`` generator: each record one of ``components`` (percent, generator)."""
    return {
        "type": "randomComponent",
        "seed": seed,
        "components": [{"percent": p, "component": c} for p, c in components],
    }


def pool_size(symbols: int) -> int:
    """Trades pooled per symbol: as many as fit ``COMPONENTS`` evenly."""
    if not 0 < symbols <= COMPONENTS:
        raise ValueError(f"1 to {COMPONENTS} symbols, not {symbols}")
    return COMPONENTS // symbols


def generators(trades: Mapping[str, Sequence[bytes]], seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Key and value generators over the pooled trades: one draw per record picks a trade (the same
    draw for both: same seed, same shares), its symbol the key."""
    pooled = [(symbol, trade) for symbol, pool in trades.items() for trade in pool]
    shares = percents(len(pooled))
    keys = random_component(seed, [(p, constant(s.encode())) for p, (s, _) in zip(shares, pooled, strict=True)])
    values = random_component(seed, [(p, constant(t)) for p, (_, t) in zip(shares, pooled, strict=True)])
    return keys, values


def produce_bench(
    *,
    run: str,
    rate: float,
    agents: Sequence[str],
    bootstrap: str,
    topic: str,
    partitions: int,
    replication: int,
    trades: Mapping[str, Sequence[bytes]],
    duration_s: float,
    producer: Mapping[str, str] | None = None,
    seed: int = 42,
) -> BenchPlan:
    """One ProduceBench task per agent with a share of ``rate``, producing ``trades`` to ``topic`` (an
    existing topic: Trogdor checks its partition count) for at most ``duration_s`` (the run stops them
    sooner; the bound ends them should the validator die)."""
    shares = split_rate(rate, agents)
    conf = {**DEFAULT_PRODUCER, **(producer or {})}
    tasks = []
    for i, (agent, share) in enumerate(shares.items()):
        task_id = f"pipeline-check-{run}-{agent}"
        keys, values = generators(trades, seed + 1000 * i)  # each agent its own draw of the same trades
        spec = {
            "class": PRODUCE_BENCH,
            "startMs": 0,
            "durationMs": int(duration_s * 1000),
            "producerNode": agent,
            "bootstrapServers": bootstrap,
            "targetMessagesPerSec": share,
            "maxMessages": int(share * duration_s) + 1,
            "keyGenerator": keys,
            "valueGenerator": values,
            "producerConf": {**conf, "client.id": task_id},
            "activeTopics": {topic: {"numPartitions": partitions, "replicationFactor": replication}},
            "useConfiguredPartitioner": True,  # keyed: the symbol's partition, as the pipeline's producers
            "skipFlush": True,  # batches as a production producer's, not flushed every 100 ms
        }
        tasks.append(AgentTask(task_id, agent, share, spec))
    return BenchPlan(tuple(tasks), sum(shares.values()), rate)
